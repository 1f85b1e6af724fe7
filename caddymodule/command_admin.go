package caddymodule

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/user"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/caddy-jit/caddy-jit/policy"
	"github.com/caddy-jit/caddy-jit/session"
)

func init() {
	addJitSubcommand(sessionsCommand)
	addJitSubcommand(revokeCommand)
	addJitSubcommand(unlockCommand)
	addJitSubcommand(rotateKeysCommand)
}

// reachingCaddy is the part of every operator command's help that says how it finds
// the running Caddy, or works without one.
var reachingCaddy = `
This command asks the admin API of the running Caddy, at '` + caddy.DefaultAdminListen + `'
by default. You may explicitly specify the --address, or use the --config flag
to load the admin address from your config, if not using the default.

If the config given with --config turns the admin API off ('admin off'), the
command works on the config's storage directly, and says so. Running
instances pick up a change made that way on their next sync with storage
(within the jit app's sync_interval, 1s by default).`

// jitControl is what the operator commands act through: the admin API of a running
// Caddy, or the storage itself when the admin API is off. Both run the same
// session.Authority methods and answer with the admin API's types.
type jitControl interface {
	// sessions returns the admin API's JSON of the active sessions that pass f.
	sessions(f session.Filter) ([]byte, error)
	revokeSession(id, by, reason string) (sessionList, error)
	revokeUser(user, by, reason string) (sessionList, error)
	unlock(user, by, reason string) error
	rotateKeys(by string) (keyRotation, error)
	enroll(user, by string) (*enrollmentResponse, error)
	// enrollLink makes an enrollment link and cancels the user's earlier one; ttl 0
	// takes the config's enroll_link_ttl; replace lets the link replace a confirmed
	// enrollment without a code of it.
	enrollLink(user, by string, ttl time.Duration, replace bool) (*enrollLinkResponse, error)
	close()
}

// keyRotation is the answer to POST /jit/keys/rotate.
type keyRotation struct {
	KeyID string   `json:"kid"`
	Keys  []string `json:"keys"`
}

// openControl picks how to reach caddy-jit from the admin flags, the way Caddy's own
// commands find the admin API: --address wins; else the admin address in --config;
// else the default. A --config whose admin API is off means working on its storage.
// Notes about working offline go to stderr.
func openControl(fl caddycmd.Flags, stderr io.Writer) (jitControl, error) {
	address, configFile, adapter := fl.String("address"), fl.String("config"), fl.String("adapter")
	var config []byte
	if address == "" && configFile != "" {
		var err error
		if config, _, _, err = caddycmd.LoadConfig(configFile, adapter); err != nil {
			return nil, fmt.Errorf("loading %s: %v", configFile, err)
		}
		var cfg caddy.Config
		if err := json.Unmarshal(config, &cfg); err != nil {
			return nil, fmt.Errorf("reading the config in %s: %v", configFile, err)
		}
		if cfg.Admin != nil && cfg.Admin.Disabled {
			return openOffline(&cfg, configFile, stderr)
		}
	}
	addr, err := caddycmd.DetermineAdminAPIAddress(address, config, configFile, adapter)
	if err != nil {
		return nil, fmt.Errorf("couldn't determine admin API address: %v", err)
	}
	return adminControl{addr: addr}, nil
}

// adminControl acts through the admin API of a running Caddy.
type adminControl struct {
	addr string
}

// request calls the admin API and returns the body of a successful answer. doing
// describes the call for errors.
func (c adminControl) request(method, path string, query url.Values, doing string) ([]byte, error) {
	uri := path
	if len(query) > 0 {
		uri += "?" + query.Encode()
	}
	resp, err := caddycmd.AdminAPIRequest(c.addr, method, uri, make(http.Header), nil)
	if err != nil {
		return nil, explainAdminError(c.addr, doing, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxAdminResponse))
	if err != nil {
		return nil, fmt.Errorf("%s: reading the answer of the admin API at %s: %v", doing, c.addr, err)
	}
	return body, nil
}

// decode reads an answer into v, or says that the admin API is not caddy-jit's.
func (c adminControl) decode(body []byte, v any, doing string) error {
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("%s: the admin API at %s answered with something other than caddy-jit's JSON (is it caddy with caddy-jit?): %v", doing, c.addr, err)
	}
	return nil
}

func (c adminControl) sessions(f session.Filter) ([]byte, error) {
	q := url.Values{}
	if f.User != "" {
		q.Set("user", f.User)
	}
	if f.Role != "" {
		q.Set("role", f.Role)
	}
	const doing = "listing sessions"
	body, err := c.request(http.MethodGet, "/jit/sessions", q, doing)
	if err != nil {
		return nil, err
	}
	// Checked here so that --json never passes on what is not a session list.
	var list sessionList
	if err := c.decode(body, &list, doing); err != nil {
		return nil, err
	}
	return body, nil
}

func (c adminControl) revokeSession(id, by, reason string) (sessionList, error) {
	doing := "revoking session " + strconv.Quote(id)
	var list sessionList
	body, err := c.request(http.MethodDelete, "/jit/sessions/"+url.PathEscape(id), changeQuery(by, reason), doing)
	if err == nil {
		err = c.decode(body, &list, doing)
	}
	return list, err
}

func (c adminControl) revokeUser(user, by, reason string) (sessionList, error) {
	doing := "revoking the sessions of " + strconv.Quote(user)
	q := changeQuery(by, reason)
	q.Set("user", user)
	var list sessionList
	body, err := c.request(http.MethodDelete, "/jit/sessions", q, doing)
	if err == nil {
		err = c.decode(body, &list, doing)
	}
	return list, err
}

func (c adminControl) unlock(user, by, reason string) error {
	_, err := c.request(http.MethodPost, "/jit/lockouts/"+url.PathEscape(user)+"/clear", changeQuery(by, reason),
		"clearing the lockout of "+strconv.Quote(user))
	return err
}

func (c adminControl) rotateKeys(by string) (keyRotation, error) {
	const doing = "rotating the signing key"
	var rot keyRotation
	body, err := c.request(http.MethodPost, "/jit/keys/rotate", url.Values{"by": {by}}, doing)
	if err == nil {
		err = c.decode(body, &rot, doing)
	}
	if err == nil && rot.KeyID == "" {
		err = fmt.Errorf("%s: the admin API at %s answered without the new key id (is it caddy with caddy-jit?)", doing, c.addr)
	}
	return rot, err
}

// enroll enrolls through the admin API.
func (c adminControl) enroll(user, by string) (*enrollmentResponse, error) {
	return enrollViaAdmin(c.addr, user, by)
}

// enrollLink makes an enrollment link through the admin API.
func (c adminControl) enrollLink(user, by string, ttl time.Duration, replace bool) (*enrollLinkResponse, error) {
	return enrollLinkViaAdmin(c, user, by, ttl, replace)
}

func (adminControl) close() {}

// changeQuery holds what every change sends: who asks and why.
func changeQuery(by, reason string) url.Values {
	return url.Values{"by": {by}, "reason": {reason}}
}

// operatorLogin is who runs the command, for the audit log: the OS login.
func operatorLogin() string {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username
	}
	return os.Getenv("USER")
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
	ctl, err := openControl(fl, stderr)
	if err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	defer ctl.close()
	filter := session.Filter{User: fl.String("user"), Role: fl.String("role")}
	raw, err := ctl.sessions(filter)
	if err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	if fl.Bool("json") {
		if !strings.HasSuffix(string(raw), "\n") {
			raw = append(raw, '\n')
		}
		_, err = stdout.Write(raw)
	} else {
		var list sessionList
		if err := json.Unmarshal(raw, &list); err != nil {
			return caddy.ExitCodeFailedStartup, fmt.Errorf("reading the session list: %v", err)
		}
		err = writeSessionTable(stdout, list, filter, now())
	}
	if err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	return caddy.ExitCodeSuccess, nil
}

// maxCellRunes keeps a justification from stretching the table past the terminal.
const maxCellRunes = 40

// writeSessionTable prints sessions as an aligned table, times in UTC.
func writeSessionTable(w io.Writer, list sessionList, f session.Filter, at time.Time) error {
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
			cell(s.ID), cell(s.User), cell(s.Role), clock(s.Start), clock(s.Expires), left, cell(s.Justification), cell(s.Ticket))
	}
	return tw.Flush()
}

// clock formats a time as the pages do.
func clock(t time.Time) string { return t.UTC().Format("2006-01-02 15:04 UTC") }

func timeLeft(d time.Duration) string {
	if d <= 0 {
		return "expired"
	}
	return policy.FormatDuration(d.Truncate(time.Second))
}

// cell makes a user-supplied string fit one table cell: printable (see
// printable), bounded, and "-" when empty.
func cell(s string) string {
	s = printable(s)
	if s == "" {
		return "-"
	}
	if t := truncateRunes(s, maxCellRunes); t != s {
		return strings.TrimRight(t, " ") + "…"
	}
	return s
}

// printable replaces control and bidi characters, which could rewrite what the
// operator's terminal shows, in a string that users or the admin API chose.
func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if isControl(r) || unicode.Is(unicode.Bidi_Control, r) {
			return '?'
		}
		return r
	}, s)
}
