package commands

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
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
		Use:   "verify <file>… [--config <path> [--adapter <name>]] [--jwks <file>] [--witness <file>] [--instance <id>]… [--json]",
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
to a second; a log ahead of it is fine.) With saved heads, an event of an
instance that has none in that storage is a break (not written by the
config's instances, or the storage was reset), and an instance with a saved
head but no event in the files is a cut of its whole chain (an emptied or
replaced log).

Checkpoints, the signed events the chain writes every N events and at a
stop, are checked with the audit key: --jwks FILE (a copy of the server's
/.jit/jwks.json) or, with --config, the key in its storage. Without either
they are counted as unchecked. --witness FILE compares the checkpoints a
witness kept (one per line) with the files: one past the files' end shows a
log cut short even when the host's storage is not to be trusted, and a head
that differs shows a log rewritten after the witness saw it, and one before
the files' first event shows their beginning is not in the files given.
--witness needs --jwks or --config. A saved head or witnessed checkpoint
missing from the files while later events are is a break: a crash never
loses one, so an audit_started claiming it did was forged.

--instance ID (repeatable, or comma-separated) names the instances whose logs
the files hold: a cluster's machines keep their own logs but share the
storage, so verify each machine's files with its instance. The saved heads
and witnessed checkpoints of other instances are then not expected in the
files, and an event of another instance is a break. Without --instance,
every instance the saved heads or the witness know must be in the files.

--json prints the result as JSON.

Exit status: 0 intact, 1 broken (or the witness file edited), 2 usage or
unreadable files, 3 intact but events missing (a cut).`,
		Example: `  $ caddy jit audit verify /var/log/caddy/jit-audit*.log
  $ caddy jit audit verify jit-audit.log --config /etc/caddy/Caddyfile
  $ caddy jit audit verify jit-audit.log --jwks jwks.json --witness witness.jsonl
  $ caddy jit audit verify node2/jit-audit*.log --config /etc/caddy/Caddyfile --instance node2
  $ caddy jit audit verify jit-audit.log --json`,
		RunE: runWithStreams(cmdAuditVerify),
	}
	cmd.Flags().StringP("config", "c", "", "Configuration file whose storage holds the saved chain heads")
	cmd.Flags().StringP("adapter", "a", "", "Name of config adapter to apply (if --config is used)")
	cmd.Flags().StringP("jwks", "", "", "JWKS file (a copy of /.jit/jwks.json) whose audit keys check the checkpoints")
	cmd.Flags().StringP("witness", "", "", "File of the checkpoints a witness kept, one per line (needs --jwks or --config)")
	cmd.Flags().StringSliceP("instance", "", nil, "Instance whose log the files hold (repeatable, or comma-separated); others' saved heads and witnessed checkpoints are not expected")
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
