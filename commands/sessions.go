package commands

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/caddy-jit/caddy-jit/internal/adminapi"
	"github.com/caddy-jit/caddy-jit/internal/printable"
	"github.com/caddy-jit/caddy-jit/internal/words"
	"github.com/caddy-jit/caddy-jit/policy"
	"github.com/caddy-jit/caddy-jit/session"
)

// caddy jit sessions: the active sessions as a table, or as the admin API's JSON; and
// the cells of the tables every command prints.

func init() {
	addJitSubcommand(sessionsCommand)
}

func sessionsCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "sessions [--user <user>] [--role <role>] [--json] [--address <listen>] [--config <path> [--adapter <name>]]",
		Short: "Lists the active just-in-time sessions",
		Long: `
Lists the sessions that are active now, soonest expiry first: their id, user,
role, when they started and expire, the time left, and the justification
and ticket given at activation. --user and --role narrow the list.

--json prints the admin API's JSON instead of a table, for scripts.
` + reachingCaddy,
		Example: `  $ caddy jit sessions
  $ caddy jit sessions --user alice
  $ caddy jit sessions --role console-admin --json
  $ caddy jit sessions --config /etc/caddy/Caddyfile`,
		Args: cobra.NoArgs,
		RunE: runWithStreams(cmdSessions),
	}
	cmd.Flags().StringP("user", "", "", "Only the sessions of this user")
	cmd.Flags().StringP("role", "", "", "Only the sessions of this role")
	cmd.Flags().BoolP("json", "", false, "Print the admin API's JSON instead of a table")
	addAdminFlags(cmd)
	return cmd
}

// cmdSessions runs `caddy jit sessions`.
func cmdSessions(stdout, stderr io.Writer, fl caddycmd.Flags) (int, error) {
	filter := session.Filter{User: fl.String("user"), Role: fl.String("role")}
	return withControl(fl, stderr, func(ctl jitControl) error {
		raw, err := ctl.sessions(filter)
		if err != nil {
			return err
		}
		if fl.Bool("json") {
			if !strings.HasSuffix(string(raw), "\n") {
				raw = append(raw, '\n')
			}
			_, err = stdout.Write(raw)
			return err
		}
		var list adminapi.SessionList
		if err := json.Unmarshal(raw, &list); err != nil {
			return fmt.Errorf("reading the session list: %v", err)
		}
		return writeSessionTable(stdout, list, filter, now())
	})
}

// maxCellRunes keeps a justification from stretching the table past the terminal.
const maxCellRunes = 40

// writeSessionTable prints sessions as an aligned table, times in UTC.
func writeSessionTable(w io.Writer, list adminapi.SessionList, f session.Filter, at time.Time) error {
	if len(list.Sessions) == 0 {
		what := "No active sessions"
		if f.User != "" {
			what += " of " + strconv.Quote(f.User)
		}
		if f.Role != "" {
			what += " in role " + strconv.Quote(f.Role)
		}
		_, err := fmt.Fprintln(w, what+".")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tUSER\tROLE\tSTARTED\tEXPIRES\tLEFT\tJUSTIFICATION\tTICKET")
	for _, s := range list.Sessions {
		if s.Record == nil {
			continue
		}
		left := "revoked"
		if !s.Revoked {
			left = timeLeft(s.Expires.Sub(at))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			cell(s.ID), cell(s.User), cell(s.Role), words.Time(s.Start), words.Time(s.Expires), left, cell(s.Justification), cell(s.Ticket))
	}
	return tw.Flush()
}

func timeLeft(d time.Duration) string {
	if d <= 0 {
		return "expired"
	}
	return policy.FormatDuration(d.Truncate(time.Second))
}

// cell makes a user-supplied string fit one table cell: printable (see
// printable.String), bounded, and "-" when empty.
func cell(s string) string {
	s = printable.String(s)
	if s == "" {
		return "-"
	}
	if t := printable.Truncate(s, maxCellRunes); t != s {
		return strings.TrimRight(t, " ") + "…"
	}
	return s
}
