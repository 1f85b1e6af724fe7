package commands

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/caddy-jit/caddy-jit/caddymodule"
	"github.com/caddy-jit/caddy-jit/internal/adminapi"
	"github.com/caddy-jit/caddy-jit/internal/printable"
	"github.com/caddy-jit/caddy-jit/internal/words"
	"github.com/caddy-jit/caddy-jit/stepup"
)

// caddy jit credentials: a user's passkeys as a table or as the admin API's JSON; and
// caddy jit credentials remove, which removes one, through the admin API or, with it
// off, on the storage directly.

func credentialsCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "credentials <user> [--json] [--address <listen>] [--config <path> [--adapter <name>]]",
		Short: "Lists a user's passkeys ('credentials remove' removes one)",
		Long: `
Lists the passkeys (WebAuthn credentials) the user registered to step up
with, oldest first: their id, the name the user gave them, the RP ID they
work at, whether they are synced (the authenticator may back them up, so they
can leave the device), when they were registered and last used, and the
AAGUID that names the authenticator's make and model, if it gives one.

--json prints the admin API's JSON instead of a table, for scripts.

'caddy jit credentials remove <user> <id>' removes one, e.g. of a lost
device.
` + reachingCaddy,
		Example: `  $ caddy jit credentials alice
  $ caddy jit credentials alice --json
  $ caddy jit credentials remove alice 3q2-7wEAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA
  $ caddy jit credentials alice --config /etc/caddy/Caddyfile`,
		Args: oneUserArg("credentials"),
		RunE: runWithStreams(cmdCredentials),
	}
	cmd.Flags().BoolP("json", "", false, "Print the admin API's JSON instead of a table")
	addAdminFlags(cmd)
	cmd.AddCommand(removeCredentialCommand())
	return cmd
}

func removeCredentialCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "remove <user> <id> [--by <name>] [--reason <text>] [--address <listen>] [--config <path> [--adapter <name>]]",
		Short: "Removes one of a user's passkeys",
		Long: `
Removes the user's passkey with the given id (as 'caddy jit credentials
<user>' lists it), e.g. of a lost or retired device: from then on it steps
up no more. The removal is audited (passkey_removed) with your login, or the
name given with --by.

Prints what was removed and what the user has left: with a TOTP
authenticator they can register another passkey on /.jit/enroll of a
protected site; with no passkey and no TOTP authenticator left, send them an
enrollment link ('caddy jit enroll <user> --link').

An id that starts with '-' goes after '--', as in
'caddy jit credentials remove alice -- -q2x7wEAAAAAAAAAAAAAAA'.
` + reachingCaddy,
		Example: `  $ caddy jit credentials remove alice 3q2-7wEAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA
  $ caddy jit credentials remove alice 3q2-7wEAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA --by carol
  $ caddy jit credentials remove alice 3q2-7wEAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA --config /etc/caddy/Caddyfile`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 2 {
				return fmt.Errorf("want a user name and a passkey id, got %d arguments: caddy jit credentials remove <user> <id>", len(args))
			}
			return nil
		},
		RunE: runWithStreams(cmdRemoveCredential),
	}
	cmd.Flags().StringP("by", "", "", "Who removes it, for the audit log (default: your login)")
	cmd.Flags().StringP("reason", "", "", "Why, for the audit log (e.g. \"key lost\")")
	addAdminFlags(cmd)
	// One id in 64 starts with '-', which reads as a flag.
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		if strings.HasPrefix(err.Error(), "unknown shorthand flag") || strings.HasPrefix(err.Error(), "unknown flag") {
			return fmt.Errorf("%v; if that is a passkey id, put it after '--': caddy jit credentials remove [flags] -- <user> <id>", err)
		}
		return err
	})
	return cmd
}

// maxByLength is as much of a --by as the admin API keeps.
const maxByLength = 64

// cmdCredentials runs `caddy jit credentials`.
func cmdCredentials(stdout, stderr io.Writer, fl caddycmd.Flags) (int, error) {
	user := fl.Arg(0)
	if user == "" {
		return caddy.ExitCodeFailedStartup, errors.New("no user name: caddy jit credentials <user>")
	}
	return withControl(fl, stderr, func(ctl jitControl) error {
		raw, err := ctl.passkeys(user)
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
		var list []adminapi.Passkey
		if err := json.Unmarshal(raw, &list); err != nil {
			return fmt.Errorf("reading the passkey list: %v", err)
		}
		return writePasskeyTable(stdout, user, list)
	})
}

// writePasskeyTable prints passkeys as an aligned table, times in UTC. Ids are
// printed whole: they are what `remove` takes.
func writePasskeyTable(w io.Writer, user string, list []adminapi.Passkey) error {
	if len(list) == 0 {
		_, err := fmt.Fprintf(w, "No passkeys of %s.\n", strconv.Quote(printable.String(user)))
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tRP_ID\tSYNCED\tCREATED\tLAST_USED\tAAGUID")
	for _, pk := range list {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			printable.String(pk.ID), cell(pk.Name), cell(pk.RPID), yesNo(pk.Synced), words.Time(pk.Created), lastUsed(pk), cell(pk.AAGUID))
	}
	return tw.Flush()
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func lastUsed(pk adminapi.Passkey) string {
	if pk.LastUsed == nil {
		return "never"
	}
	return words.Time(*pk.LastUsed)
}

// cmdRemoveCredential runs `caddy jit credentials remove`.
func cmdRemoveCredential(stdout, stderr io.Writer, fl caddycmd.Flags) (int, error) {
	user, id, by, reason := fl.Arg(0), fl.Arg(1), fl.String("by"), fl.String("reason")
	switch {
	case user == "":
		return caddy.ExitCodeFailedStartup, errors.New("no user name: caddy jit credentials remove <user> <id>")
	case id == "":
		return caddy.ExitCodeFailedStartup, errors.New("no passkey id: caddy jit credentials remove <user> <id>, with an id that 'caddy jit credentials <user>' lists")
	case strings.ContainsFunc(by, printable.IsControl):
		return caddy.ExitCodeFailedStartup, errors.New("--by holds a control character: give a plain name")
	case len([]rune(by)) > maxByLength:
		return caddy.ExitCodeFailedStartup, fmt.Errorf("--by is longer than %d characters, which the audit log keeps: give a shorter name", maxByLength)
	case by == "":
		by = operatorLogin()
	}
	return withControl(fl, stderr, func(ctl jitControl) error {
		removal, err := ctl.removePasskey(user, id, by, reason)
		if err != nil {
			return err
		}
		return writePasskeyRemoved(stdout, removal)
	})
}

// writePasskeyRemoved says what was removed, and how the user gets a passkey again.
func writePasskeyRemoved(w io.Writer, r adminapi.PasskeyRemoval) error {
	user := printable.String(r.User)
	what := "the unnamed passkey"
	if r.Removed.Name != "" {
		what = "the passkey " + strconv.Quote(printable.String(r.Removed.Name))
	}
	var next string
	switch {
	case r.TOTPEnrolled:
		next = fmt.Sprintf("%s can register another passkey on /.jit/enroll of a protected site, with a code of their TOTP authenticator.", user)
	case r.Remaining > 0:
		next = fmt.Sprintf("%s steps up with their other passkeys. Registering another on /.jit/enroll takes a TOTP code, and they have no TOTP authenticator: an enrollment link gives them one (caddy jit enroll %s --link).",
			user, shellWord(user))
	default:
		next = fmt.Sprintf("%s has no passkey and no TOTP authenticator left, so they cannot step up: send them an enrollment link (caddy jit enroll %s --link).",
			user, shellWord(user))
	}
	_, err := fmt.Fprintf(w, "Removed %s of %s (id %s, rp_id %s, registered %s, last used %s). %s has %s left.\n%s\n",
		what, user, printable.String(r.Removed.ID), printable.String(r.Removed.RPID), words.Time(r.Removed.Created), lastUsed(r.Removed),
		user, words.Plural(r.Remaining, "passkey"), next)
	return err
}

// shellSafe are the words a shell takes as they are.
var shellSafe = regexp.MustCompile(`^[A-Za-z0-9@%+=:,./_-]+$`)

// shellWord quotes s for a command line the operator may copy.
func shellWord(s string) string {
	if shellSafe.MatchString(s) && !strings.HasPrefix(s, "-") {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// credentialsPath is the admin API's path of the user's passkeys.
func credentialsPath(user string) string { return "/jit/credentials/" + url.PathEscape(user) }

func (c adminControl) passkeys(user string) ([]byte, error) {
	doing := "listing the passkeys of " + strconv.Quote(user)
	body, err := c.request(http.MethodGet, credentialsPath(user), nil, doing)
	if err != nil {
		return nil, err
	}
	// Checked here so that --json never passes on what is not a passkey list.
	var list []adminapi.Passkey
	if err := c.decode(body, &list, doing); err != nil {
		return nil, err
	}
	return body, nil
}

func (c adminControl) removePasskey(user, id, by, reason string) (adminapi.PasskeyRemoval, error) {
	doing := "removing the passkey " + strconv.Quote(id) + " of " + strconv.Quote(user)
	var removal adminapi.PasskeyRemoval
	body, err := c.request(http.MethodDelete, credentialsPath(user)+"/"+url.PathEscape(id), changeQuery(by, reason), doing)
	if err == nil {
		err = c.decode(body, &removal, doing)
	}
	if err == nil && removal.Removed.ID == "" {
		err = fmt.Errorf("%s: the admin API at %s answered without the passkey it removed (is it caddy with caddy-jit?)", doing, c.addr)
	}
	return removal, err
}

func (c *offlineControl) passkeys(user string) ([]byte, error) {
	var err error
	if user, err = c.app.CanonicalUser(user); err != nil {
		return nil, err
	}
	list, err := c.authority.StepUp.Passkeys().List(c.ctx, user)
	if err != nil {
		return nil, c.fail("listing the passkeys of "+user, err)
	}
	raw, err := json.Marshal(adminapi.ListPasskeys(list))
	if err != nil {
		return nil, err
	}
	c.noteRead()
	return raw, nil
}

func (c *offlineControl) removePasskey(user, id, by, reason string) (adminapi.PasskeyRemoval, error) {
	var err error
	if user, err = c.app.CanonicalUser(user); err != nil {
		return adminapi.PasskeyRemoval{}, err
	}
	if err := caddymodule.CheckCredentialID(id); err != nil {
		return adminapi.PasskeyRemoval{}, err
	}
	removal, err := caddymodule.RemovePasskey(c.ctx, c.authority, user, id, c.by(by), reason)
	if errors.Is(err, stepup.ErrPasskeyUnknownCredential) {
		return adminapi.PasskeyRemoval{}, err
	}
	if err != nil {
		return adminapi.PasskeyRemoval{}, c.fail("removing a passkey of "+user, err)
	}
	// Instances read a user's passkeys from storage at every ceremony: no sync needed.
	fmt.Fprintf(c.stderr, "The admin API is off in %s: changed %s directly; every instance that shares it refuses the passkey at once.\n",
		c.configFile, c.storage)
	return removal, nil
}
