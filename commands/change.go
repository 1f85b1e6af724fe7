package commands

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/caddy-jit/caddy-jit/internal/adminapi"
	"github.com/caddy-jit/caddy-jit/internal/printable"
	"github.com/caddy-jit/caddy-jit/internal/words"
)

// caddy jit revoke, unlock and rotate-keys: the commands that change what is allowed,
// through the admin API or, with it off, on the storage directly.

func init() {
	addJitSubcommand(revokeCommand)
	addJitSubcommand(unlockCommand)
	addJitSubcommand(rotateKeysCommand)
}

func revokeCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "revoke <id> | --user <user> [--reason <text>] [--address <listen>] [--config <path> [--adapter <name>]]",
		Short: "Ends a just-in-time session, or all of a user's, at once",
		Long: `
Ends a session before it expires: the one with the given id (as 'caddy jit
sessions' lists it), or with --user every active session of that user. The
next request under the session is refused and requests still in flight
under it are cut off. The revocation is audited with your login and the
--reason.

An id with no stored session is revoked all the same, since a token may
carry it: the revocation lasts as long as any role's session can (max_duration
or max_total) plus the 7 days a start can be scheduled ahead. An id that is not
22 characters of base64url is refused. With --user, fails if the user has no
active session. An id that starts with '-' goes after '--', as in
'caddy jit revoke -- -3q2-7wEAAAAAAAAAAAAAA'.
` + reachingCaddy,
		Example: `  $ caddy jit revoke 3q2-7wEAAAAAAAAAAAAAAA --reason "left the incident call"
  $ caddy jit revoke --user alice --reason "laptop stolen"
  $ caddy jit revoke --user alice --config /etc/caddy/Caddyfile`,
		Args: func(cmd *cobra.Command, args []string) error {
			user, _ := cmd.Flags().GetString("user")
			switch {
			case user != "" && len(args) > 0:
				return errors.New("give a session id or --user, not both: caddy jit revoke <id> | --user <user>")
			case user == "" && len(args) != 1:
				return fmt.Errorf("want exactly one session id or --user, got %d arguments: caddy jit revoke <id> | --user <user>", len(args))
			}
			return nil
		},
		RunE: runWithStreams(cmdRevoke),
	}
	cmd.Flags().StringP("user", "", "", "Revoke every active session of this user")
	cmd.Flags().StringP("reason", "", "", "Why, for the audit log")
	addAdminFlags(cmd)
	return cmd
}

// cmdRevoke runs `caddy jit revoke`.
func cmdRevoke(stdout, stderr io.Writer, fl caddycmd.Flags) (int, error) {
	id, user, reason := fl.Arg(0), fl.String("user"), fl.String("reason")
	if id == "" && user == "" {
		return caddy.ExitCodeFailedStartup, errors.New("no session id or user: caddy jit revoke <id> | --user <user>")
	}
	return withControl(fl, stderr, func(ctl jitControl) error {
		var list adminapi.SessionList
		var err error
		if user != "" {
			list, err = ctl.revokeUser(user, operatorLogin(), reason)
			if err == nil && len(list.Sessions) == 0 {
				err = fmt.Errorf("%s has no active session: nothing was revoked", strconv.Quote(user))
			}
		} else {
			list, err = ctl.revokeSession(id, operatorLogin(), reason)
		}
		if err != nil {
			return err
		}
		for _, s := range list.Sessions {
			if err := writeRevoked(stdout, s); err != nil {
				return err
			}
		}
		return writeApplied(stdout, list.Applied)
	})
}

// writeApplied says how many instances refuse the revoked sessions now (on Redis,
// where the instances confirm it); nothing elsewhere.
func writeApplied(w io.Writer, a *adminapi.Applied) error {
	if a == nil {
		return nil
	}
	var err error
	switch {
	case a.Confirmed == a.Instances:
		_, err = fmt.Fprintf(w, "In force on all %d instances: each has confirmed that it refuses what was revoked.\n", a.Instances)
	default:
		detail := ""
		if a.Error != "" {
			detail = " (" + a.Error + ")"
		}
		_, err = fmt.Fprintf(w, "Confirmed by %d of %d instances%s; the others (%s) apply it at their next sync.\n",
			a.Confirmed, a.Instances, detail, strings.Join(a.Missing, ", "))
	}
	return err
}

// writeRevoked says what became of one session.
func writeRevoked(w io.Writer, s adminapi.Session) error {
	if s.Record == nil {
		return nil
	}
	if s.User == "" && s.Revoked {
		// The id names no stored session; it is revoked all the same, in case a token
		// carries it.
		_, err := fmt.Fprintf(w, "Revoked %s: no session with that id is stored (it may never have existed, or its record was pruned); a token carrying it is refused until %s.\n",
			cell(s.ID), words.Time(s.Expires))
		return err
	}
	if s.Ended.IsZero() && !s.Revoked {
		// EndByID leaves a session alone that expired before it could be revoked.
		_, err := fmt.Fprintf(w, "Session %s of %s (role %s) had already expired at %s: nothing to revoke.\n",
			cell(s.ID), cell(s.User), cell(s.Role), words.Time(s.Expires))
		return err
	}
	_, err := fmt.Fprintf(w, "Revoked session %s of %s (role %s, started %s, would have expired %s).\n",
		cell(s.ID), cell(s.User), cell(s.Role), words.Time(s.Start), words.Time(s.Expires))
	return err
}

func unlockCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "unlock <user> [--reason <text>] [--address <listen>] [--config <path> [--adapter <name>]]",
		Short: "Ends a user's lockout after too many wrong codes",
		Long: `
Clears the lockout that wrong TOTP codes put on a user (5 in a row lock
activation for 15 minutes by default), so that their next correct code is
accepted. The unlock is audited with your login and the --reason.
` + reachingCaddy,
		Example: `  $ caddy jit unlock alice --reason "verified by phone"
  $ caddy jit unlock alice --config /etc/caddy/Caddyfile`,
		Args: oneUserArg("unlock"),
		RunE: runWithStreams(cmdUnlock),
	}
	cmd.Flags().StringP("reason", "", "", "Why, for the audit log")
	addAdminFlags(cmd)
	return cmd
}

// cmdUnlock runs `caddy jit unlock`.
func cmdUnlock(stdout, stderr io.Writer, fl caddycmd.Flags) (int, error) {
	user := fl.Arg(0)
	if user == "" {
		return caddy.ExitCodeFailedStartup, errors.New("no user name: caddy jit unlock <user>")
	}
	return withControl(fl, stderr, func(ctl jitControl) error {
		if err := ctl.unlock(user, operatorLogin(), fl.String("reason")); err != nil {
			return err
		}
		_, err := fmt.Fprintf(stdout, "Unlocked %s: their next correct code is accepted.\n", printable.String(user))
		return err
	})
}

func rotateKeysCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rotate-keys [--address <listen>] [--config <path> [--adapter <name>]]",
		Short: "Makes a new key to sign session tokens",
		Long: `
Adds a new Ed25519 key that signs session tokens from now on. Tokens signed
with the previous keys stay valid until they expire, so no one is logged
out. The keyring keeps the three newest keys: a key is dropped two rotations
after it was replaced, so rotate less often than the longest max_duration.

Prints the new key id and the ids of the keys now in use, oldest first (they
are the 'kid' values in /.jit/jwks.json). The rotation is audited with your
login.
` + reachingCaddy,
		Example: `  $ caddy jit rotate-keys
  $ caddy jit rotate-keys --config /etc/caddy/Caddyfile`,
		Args: cobra.NoArgs,
		RunE: runWithStreams(cmdRotateKeys),
	}
	addAdminFlags(cmd)
	return cmd
}

// cmdRotateKeys runs `caddy jit rotate-keys`.
func cmdRotateKeys(stdout, stderr io.Writer, fl caddycmd.Flags) (int, error) {
	return withControl(fl, stderr, func(ctl jitControl) error {
		rot, err := ctl.rotateKeys(operatorLogin())
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(stdout, "New signing key: %s\nKeys in use, oldest first (the last one signs): %s\n",
			printable.String(rot.KeyID), printable.String(strings.Join(rot.Keys, ", ")))
		return err
	})
}
