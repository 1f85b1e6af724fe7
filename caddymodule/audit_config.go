package caddymodule

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/go-jose/go-jose/v4"
	"go.uber.org/zap"

	"github.com/caddy-jit/caddy-jit/audit"
)

// The audit trail's own settings, `audit { … }` in the jit option: where events are
// written (batched), how often the writer flushes, and the signed checkpoints with the
// witness that receives them.

// AuditConfig is the `audit` block.
type AuditConfig struct {
	// OutputRaw is a Caddy log writer (file, net, stdout, stderr, discard) that the
	// events are written to in batches. Without it, each event goes through Caddy's
	// logging as logger http.handlers.jit.audit, one write per event.
	OutputRaw json.RawMessage `json:"output,omitempty" caddy:"namespace=caddy.logging.writers inline_key=output"`
	// FlushInterval bounds how long an event waits before it is written. Default: 50ms.
	FlushInterval caddy.Duration `json:"flush_interval,omitempty"`
	// Queue is how many events may wait to be written; when it is full, requests wait
	// (counted in caddy_jit_audit_queue_waits_total), and no event is dropped.
	// Default: 8192.
	Queue int `json:"queue,omitempty"`
	// CheckpointEvery and CheckpointInterval: a signed checkpoint is written after
	// this many events, or this long after the last one, whichever comes first.
	// Defaults: 1000 and 60s.
	CheckpointEvery    int64          `json:"checkpoint_every,omitempty"`
	CheckpointInterval caddy.Duration `json:"checkpoint_interval,omitempty"`
	// Witness is a URL every checkpoint is POSTed to, off the host.
	Witness string `json:"witness,omitempty"`

	writerKey string
}

// auditWriters are the opened outputs, shared by configs that name the same one, so
// that a reload neither reopens nor closes the file under the writer.
var auditWriters = caddy.NewUsagePool()

type auditWriter struct{ io.WriteCloser }

func (w auditWriter) Destruct() error { return w.Close() }

// provisionAuditOutput opens the output, if the config has one.
func (a *App) provisionAuditOutput(ctx caddy.Context) (io.Writer, error) {
	if a.Audit == nil || a.Audit.OutputRaw == nil {
		return nil, nil
	}
	mod, err := ctx.LoadModule(a.Audit, "OutputRaw")
	if err != nil {
		return nil, fmt.Errorf("jit: audit output: %w", err)
	}
	opener := mod.(caddy.WriterOpener)
	key := "jit-audit:" + opener.WriterKey()
	val, _, err := auditWriters.LoadOrNew(key, func() (caddy.Destructor, error) {
		w, err := opener.OpenWriter()
		if err != nil {
			return nil, err
		}
		return auditWriter{w}, nil
	})
	if err != nil {
		return nil, fmt.Errorf("jit: audit output %s: %w", opener, err)
	}
	a.Audit.writerKey = key
	return val.(auditWriter), nil
}

// startAudit points the shared chain at this config's output and marks: called at
// Start, so that a config that failed to load never takes them over.
func (a *App) startAudit(out io.Writer, log *zap.Logger, errs *auditErrorSink) {
	chain := a.shared.state.Chain
	cfg := a.Audit
	if cfg == nil {
		cfg = &AuditConfig{}
	}
	chain.SetMarks(audit.Marks{Key: a.shared.auditKey, Every: cfg.CheckpointEvery,
		Interval: time.Duration(cfg.CheckpointInterval), Witness: a.shared.witnessFor(cfg.Witness, a.logger), Log: log})
	if out != nil {
		chain.Batch(audit.Output{Writer: out, FlushInterval: time.Duration(cfg.FlushInterval), Queue: cfg.Queue,
			OnError: errs.failed, Now: now})
	} else {
		chain.Unbatch(now())
	}
	a.authority.Audit.Started()
}

// publishedKeys is /.jit/jwks.json: the keys that sign session tokens (use "sig") and
// the audit key that signs checkpoints (use "audit"), for upstreams and auditors.
func (a *App) publishedKeys() ([]byte, error) {
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(a.authority.Keyring.JWKS(), &set); err != nil {
		return nil, fmt.Errorf("reading the signing keys' JWKS: %w", err)
	}
	if k := a.shared.auditKey; k != nil {
		set.Keys = append(set.Keys, k.JWK())
	}
	return json.Marshal(set)
}

// releaseAuditOutput lets go of the output after writing what is queued for it.
func (a *App) releaseAuditOutput() error {
	if a.Audit == nil || a.Audit.writerKey == "" {
		return nil
	}
	if a.shared != nil {
		a.shared.state.Chain.Flush()
	}
	_, err := auditWriters.Delete(a.Audit.writerKey)
	return err
}

func (c *AuditConfig) validate() error {
	if c == nil {
		return nil
	}
	if c.FlushInterval < 0 || c.CheckpointInterval < 0 || c.Queue < 0 || c.CheckpointEvery < 0 {
		return errors.New("jit: audit flush_interval, queue and checkpoint must be positive")
	}
	return checkWitnessURL(c.Witness)
}

func checkWitnessURL(witness string) error {
	if witness == "" {
		return nil
	}
	u, err := url.Parse(witness)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return fmt.Errorf("jit: audit witness %q: want an http or https URL, such as https://witness.example/jit", witness)
	}
	return nil
}

// parseAudit parses
//
//	audit {
//		output <writer> [<args…>] [{ … }]
//		flush_interval <duration>
//		queue <events>
//		checkpoint <events> <duration>
//		witness <url>
//	}
func parseAudit(d *caddyfile.Dispenser) (*AuditConfig, error) {
	c := &AuditConfig{}
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "output":
			if !d.NextArg() {
				return nil, d.Err("audit output: name a Caddy log writer, such as `output file /var/log/caddy/jit-audit.log`")
			}
			name := d.Val()
			opener, err := parseWriter(d)
			if err != nil {
				return nil, err
			}
			c.OutputRaw = caddyconfig.JSONModuleObject(opener, "output", name, nil)
		case "flush_interval":
			if err := durationArg(d, &c.FlushInterval); err != nil {
				return nil, err
			}
		case "queue":
			if err := countArg(d, "audit queue", 1_000_000, &c.Queue); err != nil {
				return nil, err
			}
		case "checkpoint":
			args := d.RemainingArgs()
			if len(args) != 2 {
				return nil, d.Err("audit checkpoint: want a number of events and a duration, such as `checkpoint 1000 60s`")
			}
			n, err := strconv.ParseInt(args[0], 10, 64)
			if err != nil || n < 1 {
				return nil, d.Errf("audit checkpoint %q: want a whole number of events of at least 1", args[0])
			}
			dur, err := caddy.ParseDuration(args[1])
			if err != nil || dur <= 0 {
				return nil, d.Errf("audit checkpoint %q: want a positive duration such as 60s", args[1])
			}
			c.CheckpointEvery, c.CheckpointInterval = n, caddy.Duration(dur)
		case "witness":
			if err := oneArg(d, &c.Witness); err != nil {
				return nil, err
			}
			if err := checkWitnessURL(c.Witness); err != nil {
				return nil, d.Err(err.Error())
			}
		default:
			return nil, d.Errf("unrecognized audit setting %q: expected output, flush_interval, queue, checkpoint or witness", d.Val())
		}
	}
	if err := c.validate(); err != nil {
		return nil, d.Err(err.Error())
	}
	return c, nil
}

// parseWriter reads a log writer as Caddy's `log { output … }` does: the standard
// streams by name, any other through its module's Caddyfile syntax.
func parseWriter(d *caddyfile.Dispenser) (caddy.WriterOpener, error) {
	name := d.Val()
	switch name {
	case "stdout":
		return caddy.StdoutWriter{}, nil
	case "stderr":
		return caddy.StderrWriter{}, nil
	case "discard":
		return caddy.DiscardWriter{}, nil
	}
	if _, err := caddy.GetModule("caddy.logging.writers." + name); err != nil {
		return nil, d.Errf("audit output %q: no such log writer; want file, net, stdout, stderr or discard", name)
	}
	unm, err := caddyfile.UnmarshalModule(d, "caddy.logging.writers."+name)
	if err != nil {
		return nil, err
	}
	opener, ok := unm.(caddy.WriterOpener)
	if !ok {
		return nil, d.Errf("audit output %s is not a log writer", name)
	}
	return opener, nil
}
