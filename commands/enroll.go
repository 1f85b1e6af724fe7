package commands

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/caddy-jit/caddy-jit/caddymodule"
	"github.com/caddy-jit/caddy-jit/internal/adminapi"
	"github.com/caddy-jit/caddy-jit/internal/printable"
	"github.com/caddy-jit/caddy-jit/internal/qrcode"
	"github.com/caddy-jit/caddy-jit/internal/words"
)

func enrollCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "enroll <user> [--png <file> | --link [--replace] [--ttl <duration>] [--site <origin>]] [--address <listen>] [--config <path> [--adapter <name>]]",
		Short: "Enrolls a user for TOTP and shows the QR code to scan",
		Long: `
Makes a new TOTP secret for the user and prints its otpauth:// URI and a QR
code of it, for the user to scan with an authenticator app (Google
Authenticator, Aegis, 1Password, ...). If the user was enrolled before, the
old secret stops working at once: the operator's command needs no code of it.
It also cancels the user's outstanding enrollment link, if any.

With --link, makes a single-use enrollment link instead, and prints it: the
user opens it on any site caddy-jit protects, signed in as themselves, scans
the QR code it shows and confirms with a code. Until then their current
authenticator, if any, keeps working. The link expires after --ttl (the jit
option's enroll_link_ttl, 24h by default). With --site <origin> (e.g.
https://console.example.com) the full URL is printed, else the path to put
after a protected site's address. The link is for that user alone: send it
to them only. Making a link cancels the user's earlier one.

Each opening of the link shows a new secret, bound to the browser that
opened it; only that browser can confirm it. If the user is enrolled, the
link replaces their authenticator only with a code of it as well; with
--replace (for a user who lost it), the link replaces it without one.

<user> is the identity caddy-jit sees for the user: by default the name they
log in with through basic_auth or forward_auth ({http.auth.user.id}).

The QR code is drawn in the terminal with light modules as blocks, which
shows correctly on a terminal with a dark background. On a light background,
or to send the code to the user, write it as a PNG image with --png <file>
instead (created with mode 0600); delete the file once it has been scanned.

The URI and the QR code hold the user's secret: hand them over only to that
user, keep them out of chat, tickets and logs. They are not shown again;
enroll again to replace a lost secret.

This command asks the admin API of the running Caddy, at '` + caddy.DefaultAdminListen + `'
by default. You may explicitly specify the --address, or use the --config flag
to load the admin address from your config, if not using the default.`,
		Example: `  $ caddy jit enroll alice
  $ caddy jit enroll alice --png alice-totp.png
  $ caddy jit enroll alice --link --site https://console.example.com
  $ caddy jit enroll alice --link --ttl 2h
  $ caddy jit enroll alice --link --replace
  $ caddy jit enroll alice --address localhost:2020
  $ caddy jit enroll alice --config /etc/caddy/Caddyfile`,
		Args: oneUserArg("enroll"),
		RunE: runWithStreams(cmdEnroll),
	}
	cmd.Flags().StringP("png", "", "", "Write the QR code as a PNG image to this file instead of printing it")
	cmd.Flags().BoolP("link", "", false, "Make a single-use link the user opens to enroll themselves")
	cmd.Flags().StringP("ttl", "", "", "With --link: how long the link works (default: the jit option's enroll_link_ttl, 24h)")
	cmd.Flags().BoolP("replace", "", false, "With --link: the link replaces the user's current authenticator without a code of it")
	cmd.Flags().StringP("site", "", "", "With --link: the origin of a protected site, e.g. https://console.example.com, to print the full URL")
	addAdminFlags(cmd)
	return cmd
}

// oneUserArg checks that a subcommand got exactly one user name.
func oneUserArg(subcommand string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != 1 {
			return fmt.Errorf("want exactly one user name, got %d arguments: caddy jit %s <user>", len(args), subcommand)
		}
		return nil
	}
}

// cmdEnroll runs `caddy jit enroll`.
func cmdEnroll(w, stderr io.Writer, fl caddycmd.Flags) (int, error) {
	user := fl.Arg(0)
	pngFile := fl.String("png")
	if user == "" {
		return caddy.ExitCodeFailedStartup, errors.New("no user name: caddy jit enroll <user>")
	}
	if fl.Bool("link") || fl.String("ttl") != "" || fl.String("site") != "" || fl.Bool("replace") {
		return cmdEnrollLink(w, stderr, fl)
	}
	return withControl(fl, stderr, func(ctl jitControl) error {
		enrollment, err := ctl.enroll(user, operatorLogin())
		if err != nil {
			return err
		}
		// The URI goes to w only, never into an error: errors are logged.
		if pngFile != "" {
			if _, err := fmt.Fprintf(w, "Enrolled %s. Their TOTP secret, for an authenticator app:\n\n%s\n\n",
				enrollment.User, enrollment.OTPAuthURI); err != nil {
				return err
			}
			if err := qrcode.WritePNG(pngFile, enrollment.OTPAuthURI); err != nil {
				return fmt.Errorf("%s is enrolled, but the QR code could not be saved (enter the URI printed above by hand, or fix the path and enroll again): %v",
					enrollment.User, err)
			}
			_, err := fmt.Fprintf(w, "QR code written to %s (mode 0600); delete it once it has been scanned.\n", pngFile)
			return err
		}

		if _, err := fmt.Fprintf(w, "Enrolled %s. Scan this QR code with an authenticator app, or enter the URI:\n\n%s\n\n",
			enrollment.User, enrollment.OTPAuthURI); err != nil {
			return err
		}
		if err := qrcode.WriteTerminal(w, enrollment.OTPAuthURI); err != nil {
			return fmt.Errorf("%s is enrolled, but the QR code could not be drawn (enter the URI above by hand): %v", enrollment.User, err)
		}
		_, err = fmt.Fprintf(w, "\nThe URI and the QR code hold %s's secret; they are not shown again. If the code does not scan (light terminal background), use --png <file>.\n", enrollment.User)
		return err
	})
}

// cmdEnrollLink runs `caddy jit enroll <user> --link [--ttl D] [--site ORIGIN]`.
func cmdEnrollLink(w, stderr io.Writer, fl caddycmd.Flags) (int, error) {
	user := fl.Arg(0)
	if !fl.Bool("link") {
		return caddy.ExitCodeFailedStartup, errors.New("--ttl, --site and --replace go with --link: caddy jit enroll <user> --link [--replace] [--ttl <duration>] [--site <origin>] (a plain enrollment always replaces the current authenticator)")
	}
	if fl.String("png") != "" {
		return caddy.ExitCodeFailedStartup, errors.New("--png and --link do not go together: the link shows the user their QR code")
	}
	var ttl time.Duration
	if raw := fl.String("ttl"); raw != "" {
		d, err := caddy.ParseDuration(raw)
		if err != nil {
			return caddy.ExitCodeFailedStartup, fmt.Errorf("--ttl %q is not a duration such as 2h, 24h or 7d", raw)
		}
		if err := caddymodule.CheckEnrollLinkTTL(d); err != nil {
			return caddy.ExitCodeFailedStartup, fmt.Errorf("--ttl %q: %v", raw, err)
		}
		ttl = d
	}
	site, err := siteOrigin(fl.String("site"))
	if err != nil {
		return caddy.ExitCodeFailedStartup, err
	}

	return withControl(fl, stderr, func(ctl jitControl) error {
		link, err := ctl.enrollLink(user, operatorLogin(), ttl, fl.Bool("replace"))
		if err != nil {
			return err
		}
		expires := link.Expires
		if t, err := time.Parse(time.RFC3339, link.Expires); err == nil {
			expires = words.Time(t)
		}
		// The link goes to w only, never into an error: errors are logged.
		if site != "" {
			_, err = fmt.Fprintf(w, "Enrollment link for %s, single use, valid until %s:\n\n%s%s\n\n"+
				"Send it to %s alone. They open it signed in as %s, scan the QR code and confirm with a code; their current authenticator, if any, keeps working until then.\n%s",
				printable.String(link.User), expires, site, link.LinkPath, printable.String(link.User), printable.String(link.User), replaceNote(fl.Bool("replace")))
		} else {
			_, err = fmt.Fprintf(w, "Enrollment link for %s, single use, valid until %s:\n\n%s\n\n"+
				"Put the address of a site that caddy-jit protects in front of it (e.g. https://console.example.com%s), or give that address with --site.\n"+
				"Send it to %s alone. They open it signed in as %s, scan the QR code and confirm with a code; their current authenticator, if any, keeps working until then.\n%s",
				printable.String(link.User), expires, link.LinkPath, link.LinkPath, printable.String(link.User), printable.String(link.User), replaceNote(fl.Bool("replace")))
		}
		return err
	})
}

// siteOrigin checks --site: an http or https origin, which the link's path follows.
func siteOrigin(raw string) (string, error) {
	if raw == "" {
		return "", nil
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("--site %q: want the origin of a protected site, such as https://console.example.com", raw)
	}
	return u.Scheme + "://" + u.Host, nil
}

// replaceNote says what --replace means, after the link.
func replaceNote(replace bool) string {
	if !replace {
		return "If they are enrolled, they confirm with a code of their current authenticator as well (lost it? make the link with --replace).\n"
	}
	return "The link replaces their current authenticator, if any, without a code of it (--replace): make sure it reaches them alone.\n"
}

// enrollLinkViaAdmin asks the admin API for an enrollment link: POST
// /jit/enrollments/{user}?link=1[&ttl=…][&replace=1]; ttl 0 leaves it to the running
// config.
func enrollLinkViaAdmin(c adminControl, user, by string, ttl time.Duration, replace bool) (*adminapi.EnrollLink, error) {
	doing := "making an enrollment link for " + strconv.Quote(user)
	q := url.Values{"link": {"1"}}
	if replace {
		q.Set("replace", "1")
	}
	if by != "" {
		q.Set("by", by)
	}
	if ttl > 0 {
		q.Set("ttl", ttl.String())
	}
	body, err := c.request(http.MethodPost, "/jit/enrollments/"+url.PathEscape(user), q, doing)
	if err != nil {
		return nil, err
	}
	var link adminapi.EnrollLink
	if err := c.decode(body, &link, doing); err != nil {
		return nil, err
	}
	// EnrollLinkPath("") is a link's path up to its token.
	if !strings.HasPrefix(link.LinkPath, caddymodule.EnrollLinkPath("")) {
		return nil, fmt.Errorf("%s: the admin API at %s answered without a link_path (is it caddy with caddy-jit, of a version that makes links?)", doing, c.addr)
	}
	if link.User == "" {
		link.User = user
	}
	return &link, nil
}

// enrollViaAdmin asks the admin API at adminAddr to enroll user: POST
// /jit/enrollments/{user}.
func enrollViaAdmin(adminAddr, user, by string) (*adminapi.Enrollment, error) {
	uri := "/jit/enrollments/" + url.PathEscape(user)
	if by != "" {
		uri += "?by=" + url.QueryEscape(by)
	}
	resp, err := caddycmd.AdminAPIRequest(adminAddr, http.MethodPost, uri, make(http.Header), nil)
	if err != nil {
		return nil, explainAdminError(adminAddr, "enrolling "+strconv.Quote(user), err)
	}
	defer resp.Body.Close()

	var enrollment adminapi.Enrollment
	dec := json.NewDecoder(io.LimitReader(resp.Body, maxAdminResponse))
	if err := dec.Decode(&enrollment); err != nil {
		return nil, fmt.Errorf("the admin API at %s answered the enrollment of %q with something other than JSON {\"user\", \"otpauth_uri\"} (is it caddy with caddy-jit?): %v",
			adminAddr, user, err)
	}
	if !strings.HasPrefix(enrollment.OTPAuthURI, "otpauth://") {
		return nil, fmt.Errorf("the admin API at %s answered the enrollment of %q without an otpauth:// URI (is it caddy with caddy-jit?)", adminAddr, user)
	}
	if enrollment.User == "" {
		enrollment.User = user
	}
	return &enrollment, nil
}
