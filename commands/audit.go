package commands

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/caddy-jit/caddy-jit/audit"
	"github.com/caddy-jit/caddy-jit/caddymodule"
	"github.com/caddy-jit/caddy-jit/internal/printable"
	"github.com/caddy-jit/caddy-jit/internal/words"
)

func init() {
	addJitSubcommand(auditCommand)
	addJitSubcommand(reportCommand)
}

// Exit codes of the audit commands, for cron jobs and scripts.
const (
	auditExitOK = 0
	// auditExitFinding: a broken chain, a session not in the log, alerts.
	auditExitFinding = 1
	// auditExitError: bad usage, a file or the config that cannot be read.
	auditExitError = 2
	// auditExitCut: verify found the chain intact but events missing (a crash, or a
	// log cut short); a break wins over it.
	auditExitCut = 3
)

// maxListedBreaks is how many breaks verify prints in text; --json has up to
// audit.MaxReportedBreaks.
const maxListedBreaks = 10

// usageExit makes cobra's flag errors exit with auditExitError, as the commands' own
// usage errors do.
func auditUsageExit(cmd *cobra.Command) {
	cmd.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return caddycmd.WrapCommandFuncForCobra(func(caddycmd.Flags) (int, error) {
			return auditExitError, fmt.Errorf("%v: %s", err, c.UseLine())
		})(c, nil)
	})
}

func auditCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "audit <command>",
		Short: "Verifies the audit log's chain and tells a session's story",
		Long: `
Reads the audit log that caddy-jit writes through the logger
http.handlers.jit.audit (one JSON object per line), without a running Caddy:

  verify   checks that no event was edited, removed, inserted or reordered,
           and with --config or --witness that none is missing at the end
  session  tells one session's story: activation, approvals, extensions,
           every request and the end

Give the files oldest first: rotated files before the current one. A glob
such as /var/log/caddy/jit-audit*.log sorts them that way.`,
	}
	cmd.AddCommand(auditVerifyCommand(), auditSessionCommand())
	return cmd
}

func auditVerifyCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "verify <file>… [--config <path> [--adapter <name>]] [--jwks <file>] [--witness <file>] [--json]",
		Short: "Checks the chain of the audit log: no event edited, removed, inserted or reordered",
		Long: `
Checks every instance's chain through the files, in the order given (rotated
files first): each event carries its instance, a sequence number and the
SHA-256 of the instance's previous event, so an edited, removed, inserted or
reordered line breaks the chain where it happened. The first event of an
instance may start anywhere (older files rotated away).

Prints the first break, as file:line and why, and the totals per instance.

Events missing are a cut, not a break: the events that remain still verify.
A crash loses the last batch written (the next start's audit_started says
so, and the gap is listed as a crash cut). With --config, the chain heads
saved in the config's storage are compared too: a log whose events of an
instance end before its saved head was cut short, or its instance did not
stop cleanly. (Without the batched output the saved head lags the log by up
to a second; a log ahead of it is fine.)

Checkpoints, the signed events the chain writes every N events and at a
stop, are checked with the audit key: --jwks FILE (a copy of the server's
/.jit/jwks.json) or, with --config, the key in its storage. Without either
they are counted as unchecked. --witness FILE compares the checkpoints a
witness kept (one per line) with the files: one past the files' end shows a
log cut short even when the host's storage is not to be trusted, and a head
that differs shows a log rewritten after the witness saw it. --witness needs
--jwks or --config.

--json prints the result as JSON.

Exit status: 0 intact, 1 broken, 2 usage or unreadable files, 3 intact but
events missing (a cut).`,
		Example: `  $ caddy jit audit verify /var/log/caddy/jit-audit*.log
  $ caddy jit audit verify jit-audit.log --config /etc/caddy/Caddyfile
  $ caddy jit audit verify jit-audit.log --jwks jwks.json --witness witness.jsonl
  $ caddy jit audit verify jit-audit.log --json`,
		RunE: runWithStreams(cmdAuditVerify),
	}
	cmd.Flags().StringP("config", "c", "", "Configuration file whose storage holds the saved chain heads")
	cmd.Flags().StringP("adapter", "a", "", "Name of config adapter to apply (if --config is used)")
	cmd.Flags().StringP("jwks", "", "", "JWKS file (a copy of /.jit/jwks.json) whose audit keys check the checkpoints")
	cmd.Flags().StringP("witness", "", "", "File of the checkpoints a witness kept, one per line (needs --jwks or --config)")
	cmd.Flags().BoolP("json", "", false, "Print the result as JSON")
	auditUsageExit(cmd)
	return cmd
}

func auditSessionCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "session <id> <file>… [--json] [--har <file> [--origin <url>] [--config <path> [--adapter <name>]]]",
		Short: "Tells one session's story from the audit log",
		Long: `
Tells what the audit log says about one session: its activation (who, which
role, why, the ticket, start and expiry, from where; the approval request and
the approvers' decisions if any), its extensions, every request made under it
(time, method, URI, status, bytes, body SHA-256 when recorded), and its end:
deactivated or revoked by whom and why, or expired. Totals: requests, bytes,
statuses by class and the time it was active.

Give the files oldest first. --json prints the story as JSON.

--har FILE writes the session's requests as an HTTP Archive (HAR 1.2) that
Chrome DevTools and HAR viewers open: method, URL, status, sizes, times and the
identity headers the upstream received (X-Jit-User, X-Jit-Role, X-Jit-Session;
never a cookie, Authorization or X-Jit-Assertion). The audit log keeps each
request's path and query, not its host: --origin names it (default
https://console.invalid). With --config, the request bodies that the role
recorded (record_bodies) are read from its storage and included.

Exit status: 0 found, 1 the session is not in the files, 2 usage or
unreadable files.`,
		Example: `  $ caddy jit audit session 3q2x9f… /var/log/caddy/jit-audit*.log`,
		RunE:    runWithStreams(cmdAuditSession),
	}
	cmd.Flags().BoolP("json", "", false, "Print the story as JSON")
	cmd.Flags().StringP("har", "", "", "Write the session's requests as an HTTP Archive (HAR 1.2) to this file")
	cmd.Flags().StringP("origin", "", "https://console.invalid", "The scheme and host the requests were made to, for --har")
	cmd.Flags().StringP("config", "c", "", "Caddy config whose storage holds the recorded bodies, for --har")
	cmd.Flags().StringP("adapter", "a", "", "Name of config adapter to apply (if --config is used)")
	auditUsageExit(cmd)
	return cmd
}

func reportCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "report <file>… [--since 30d] [--config <path> [--adapter <name>]] [--noisy N] [--json]",
		Short: "Reports privileged access from the audit log, with alerts for review",
		Long: `
Sums up, per role and user, the activations, the time elevated (within the
period; a session not ended counts until it expires or now), the requests made
and the last use, over the period given by --since (default 30d; 12h, 7d,
1d12h... as Caddy takes durations).

Alerts:
  noisy                 a user activated a role more than --noisy times (10)
  unused_eligibility    an eligible user did not activate the role in 30 days
  expiring_eligibility  an eligibility ends within 14 days
  outside_hours         an activation outside the role's allowed_hours
                        (break-glass included)
  totp_failures         5 or more wrong or replayed codes of a user within
                        15 minutes
  locked_out            every refusal for a lockout
  break_glass           every break-glass session

The eligibility and hours alerts need the roles: give the config with
--config; without it they are skipped and the report says so.

Exit status: 0 no alerts, 1 alerts, 2 usage or unreadable files (for cron).`,
		Example: `  $ caddy jit report /var/log/caddy/jit-audit*.log --config /etc/caddy/Caddyfile
  $ caddy jit report jit-audit.log --since 7d --noisy 5 --json`,
		RunE: runWithStreams(cmdReport),
	}
	cmd.Flags().StringP("since", "", "30d", "Length of the period that ends now")
	cmd.Flags().StringP("config", "c", "", "Configuration file with the roles (eligibility, allowed hours)")
	cmd.Flags().StringP("adapter", "a", "", "Name of config adapter to apply (if --config is used)")
	cmd.Flags().IntP("noisy", "", audit.DefaultNoisyActivations, "Alert when a user activates a role more than this many times")
	cmd.Flags().BoolP("json", "", false, "Print the report as JSON")
	auditUsageExit(cmd)
	return cmd
}

// auditInputs are the log files named on the command line, each once.
func auditInputs(files []string) ([]audit.Input, error) {
	seen := make(map[string]bool, len(files))
	for _, f := range files {
		clean := filepath.Clean(f)
		if seen[clean] {
			return nil, fmt.Errorf("the file %s is given twice: give each audit log file once, oldest first", printable.String(f))
		}
		seen[clean] = true
	}
	return audit.Files(files...), nil
}

// savedChainState reads the chain heads and the audit key saved in the config's
// storage, and names the storage.
func savedChainState(cfg *caddy.Config, configFile string) ([]audit.ChainHead, audit.AuditKeys, string, error) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	app, err := caddymodule.LoadApp(cfg)
	if err != nil && !errors.Is(err, caddymodule.ErrNoApp) {
		return nil, nil, "", fmt.Errorf("in %s: %v", configFile, err)
	}
	st, name, err := configuredStore(ctx, cfg, app)
	if err != nil {
		return nil, nil, "", fmt.Errorf("opening the storage of %s: %v", configFile, err)
	}
	heads, err := audit.LoadChainHeads(ctx, st)
	if err != nil {
		return nil, nil, "", fmt.Errorf("reading the saved chain heads from %s: %v", name, err)
	}
	keys, err := audit.LoadAuditKeys(ctx, st)
	if err != nil {
		return nil, nil, "", fmt.Errorf("reading the audit key from %s: %v", name, err)
	}
	return heads, keys, name, nil
}

// auditClock shows a time of the audit story to the second, and "-" where the
// log did not say.
func auditClock(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return words.TimeToSecond(t)
}

// cmdAuditVerify runs `caddy jit audit verify`.
func cmdAuditVerify(stdout, _ io.Writer, fl caddycmd.Flags) (int, error) {
	files := fl.Args()
	if len(files) == 0 {
		return auditExitError, errors.New("no audit log file: caddy jit audit verify <file>… (rotated files first)")
	}
	cfg, configFile, err := flaggedConfig(fl)
	if err != nil {
		return auditExitError, err
	}
	var opts audit.VerifyOptions
	storage := ""
	if cfg != nil {
		var stored audit.AuditKeys
		if opts.Heads, stored, storage, err = savedChainState(cfg, configFile); err != nil {
			return auditExitError, err
		}
		opts.CheckHeads = true
		opts.AuditKeys = stored
	}
	if path := fl.String("jwks"); path != "" {
		published, err := audit.ReadAuditJWKS(path)
		if err != nil {
			return auditExitError, err
		}
		opts.AuditKeys = trustedAuditKeys(opts.AuditKeys, published)
	}
	if len(opts.AuditKeys) == 0 {
		opts.AuditKeys = nil // a storage without an audit key: the checkpoints are unchecked
	}
	if path := fl.String("witness"); path != "" {
		if opts.AuditKeys == nil {
			return auditExitError, errors.New("--witness needs the audit keys that signed the checkpoints: give --jwks FILE (a copy of /.jit/jwks.json) or --config with the storage that holds the audit key")
		}
		if opts.Witnessed, err = audit.ReadWitnessFile(path); err != nil {
			return auditExitError, err
		}
	}
	inputs, err := auditInputs(files)
	if err != nil {
		return auditExitError, err
	}
	res, err := audit.VerifyChain(inputs, opts)
	if err != nil {
		return auditExitError, err
	}
	if fl.Bool("json") {
		err = printJSON(stdout, res)
	} else {
		err = writeAuditVerification(stdout, res, storage, configFile)
	}
	if err != nil {
		return auditExitError, err
	}
	switch {
	case !res.Intact:
		return auditExitFinding, fmt.Errorf("the audit chain is broken: %s", printable.String(res.FirstBreak().String()))
	case res.Cut:
		return auditExitCut, fmt.Errorf("events are missing from the audit log: %s", printable.String(res.Cuts[0].String()))
	}
	return auditExitOK, nil
}

// trustedAuditKeys are the keys of the storage and of the JWKS file together: a
// key rotated out of storage still checks the checkpoints it signed when its JWK
// was kept.
func trustedAuditKeys(stored, published audit.AuditKeys) audit.AuditKeys {
	keys := make(audit.AuditKeys, len(stored)+len(published))
	maps.Copy(keys, stored)
	maps.Copy(keys, published)
	return keys
}

func writeAuditVerification(w io.Writer, res *audit.ChainVerification, storage, configFile string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "Read %s, %s: %s of %s.\n", words.Plural(len(res.Files), "file"), words.Plural(res.Lines, "line"),
		words.Plural(res.Events, "event"), words.Plural(len(res.Instances), "instance"))
	if len(res.Instances) > 0 {
		tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  INSTANCE\tSEQ\tEVENTS\tFROM\tTO\tSAVED HEAD")
		for _, in := range res.Instances {
			head := "-"
			if in.SavedHeadSeq != nil {
				head = strconv.FormatInt(*in.SavedHeadSeq, 10)
			}
			fmt.Fprintf(tw, "  %s\t%d…%d\t%d\t%s\t%s\t%s\n", printable.String(in.Instance), in.FirstSeq, in.LastSeq, in.Events,
				printable.String(in.First), printable.String(in.Last), head)
		}
		tw.Flush()
	}
	switch {
	case !res.HeadsChecked && res.Witnessed > 0:
		b.WriteString("Checked for events missing at the end up to the witness's last checkpoint only: give --config to compare with the chain heads saved in storage too.\n")
	case !res.HeadsChecked:
		b.WriteString("Not checked for events missing at the end: give --config to compare with the chain heads saved in storage, or --witness.\n")
	case res.SavedHeads == 0:
		fmt.Fprintf(&b, "Not checked for events missing at the end: %s (the storage of %s) holds no saved chain head. Is it the storage of the instances that wrote the log?\n",
			printable.String(storage), printable.String(configFile))
	default:
		fmt.Fprintf(&b, "Compared with the %s saved in %s (the storage of %s).\n", words.Plural(res.SavedHeads, "chain head"), printable.String(storage), printable.String(configFile))
		for _, h := range res.HeadsNotInFiles {
			fmt.Fprintf(&b, "Note: instance %s has a saved chain head (seq %d) but no event in these files: its log is elsewhere (another instance of a cluster), or gone.\n",
				printable.String(h.Instance), h.Seq)
		}
	}
	writeCheckpointSummary(&b, res)
	switch {
	case res.Intact && res.Cut:
		fmt.Fprintf(&b, "The chain is intact, but events are missing (%s):\n", words.Plural(len(res.Cuts), "cut"))
	case res.Intact:
		b.WriteString("The chain is intact.\n")
	default:
		fmt.Fprintf(&b, "The chain is BROKEN (%s). The first:\n", words.Plural(res.BreakCount, "break"))
		for i, br := range res.Breaks {
			if i == maxListedBreaks {
				fmt.Fprintf(&b, "  … and %d more (--json lists up to %d)\n", res.BreakCount-maxListedBreaks, audit.MaxReportedBreaks)
				break
			}
			if i == 1 {
				b.WriteString("Then:\n")
			}
			fmt.Fprintf(&b, "  %s\n", printable.String(br.String()))
			if br.Suspect != "" {
				fmt.Fprintf(&b, "  %s: the line to look at first\n", printable.String(br.Suspect))
			}
		}
		if res.Cut {
			fmt.Fprintf(&b, "Events missing (%s):\n", words.Plural(len(res.Cuts), "cut"))
		}
	}
	for _, c := range res.Cuts {
		fmt.Fprintf(&b, "  %s\n", printable.String(c.String()))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// writeCheckpointSummary says how many checkpoints were checked, how to check them
// when they were not, and what the witness held.
func writeCheckpointSummary(b *strings.Builder, res *audit.ChainVerification) {
	switch {
	case res.Checkpoints == 0 && res.SignaturesChecked:
		b.WriteString("No checkpoint in the files (the server writes one every N events and at a stop, when it has an audit key).\n")
	case res.Checkpoints == 0:
		// No keys and no checkpoint: a server without an audit key; nothing to say.
	case res.SignaturesChecked:
		fmt.Fprintf(b, "Checkpoints: %d, %d verified with the audit key.\n", res.Checkpoints, res.CheckpointsVerified)
	default:
		fmt.Fprintf(b, "Checkpoints: %d, unchecked: give --jwks FILE (a copy of https://HOST/.jit/jwks.json) or --config to check their signatures.\n",
			res.CheckpointsUnchecked)
	}
	if res.Witnessed > 0 {
		fmt.Fprintf(b, "Compared with %s a witness kept.\n", words.Plural(res.Witnessed, "checkpoint"))
	}
	for _, w := range res.WitnessedNotInFiles {
		fmt.Fprintf(b, "Note: the witness holds a checkpoint of instance %s (seq %d, %s:%d) but the files hold no event of it: its log is elsewhere, or gone.\n",
			printable.String(w.Checkpoint.Instance), w.Seq, printable.String(w.File), w.Line)
	}
}
