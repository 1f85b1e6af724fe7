package commands

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
	"time"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	"github.com/caddy-jit/caddy-jit/internal/adminapi"
	"github.com/caddy-jit/caddy-jit/session"
)

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
// authority.Authority methods and answer with the admin API's types.
type jitControl interface {
	// sessions returns the admin API's JSON of the active sessions that pass f.
	sessions(f session.Filter) ([]byte, error)
	revokeSession(id, by, reason string) (adminapi.SessionList, error)
	revokeUser(user, by, reason string) (adminapi.SessionList, error)
	unlock(user, by, reason string) error
	rotateKeys(by string) (adminapi.KeyRotation, error)
	enroll(user, by string) (*adminapi.Enrollment, error)
	// enrollLink makes an enrollment link and cancels the user's earlier one; ttl 0
	// takes the config's enroll_link_ttl; replace lets the link replace a confirmed
	// enrollment without a code of it.
	enrollLink(user, by string, ttl time.Duration, replace bool) (*adminapi.EnrollLink, error)
	// passkeys returns the admin API's JSON of the user's passkeys (credentials.go).
	passkeys(user string) ([]byte, error)
	// removePasskey removes the user's passkey with the credential id and says what
	// the user has left; an id the user has no passkey with is refused, saying so.
	removePasskey(user, id, by, reason string) (adminapi.PasskeyRemoval, error)
	close()
}

// openControl picks how to reach caddy-jit from the admin flags, the way Caddy's own
// commands find the admin API: --address wins; else the admin address in --config;
// else the default. A --config whose admin API is off means working on its storage.
// Notes about working offline go to stderr.
func openControl(fl caddycmd.Flags, stderr io.Writer) (jitControl, error) {
	address, configFile, adapter := fl.String("address"), fl.String("config"), fl.String("adapter")
	var config []byte
	if address == "" && configFile != "" {
		var cfg *caddy.Config
		var err error
		if config, cfg, err = readConfig(configFile, adapter); err != nil {
			return nil, err
		}
		if cfg.Admin != nil && cfg.Admin.Disabled {
			return openOffline(cfg, configFile, stderr)
		}
	}
	addr, err := caddycmd.DetermineAdminAPIAddress(address, config, configFile, adapter)
	if err != nil {
		return nil, fmt.Errorf("couldn't determine admin API address: %v", err)
	}
	return adminControl{addr: addr}, nil
}

// withControl runs an operator command's work on the jit control the admin flags
// pick (openControl) and closes it after. Every failure, reaching caddy-jit
// included, exits as Caddy's own commands do when they cannot do their job.
func withControl(fl caddycmd.Flags, stderr io.Writer, work func(jitControl) error) (int, error) {
	ctl, err := openControl(fl, stderr)
	if err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	defer ctl.close()
	if err := work(ctl); err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	return caddy.ExitCodeSuccess, nil
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
	var list adminapi.SessionList
	if err := c.decode(body, &list, doing); err != nil {
		return nil, err
	}
	return body, nil
}

func (c adminControl) revokeSession(id, by, reason string) (adminapi.SessionList, error) {
	doing := "revoking session " + strconv.Quote(id)
	var list adminapi.SessionList
	body, err := c.request(http.MethodDelete, "/jit/sessions/"+url.PathEscape(id), changeQuery(by, reason), doing)
	if err == nil {
		err = c.decode(body, &list, doing)
	}
	return list, err
}

func (c adminControl) revokeUser(user, by, reason string) (adminapi.SessionList, error) {
	doing := "revoking the sessions of " + strconv.Quote(user)
	q := changeQuery(by, reason)
	q.Set("user", user)
	var list adminapi.SessionList
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

func (c adminControl) rotateKeys(by string) (adminapi.KeyRotation, error) {
	const doing = "rotating the signing key"
	var rot adminapi.KeyRotation
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
func (c adminControl) enroll(user, by string) (*adminapi.Enrollment, error) {
	return enrollViaAdmin(c.addr, user, by)
}

// enrollLink makes an enrollment link through the admin API.
func (c adminControl) enrollLink(user, by string, ttl time.Duration, replace bool) (*adminapi.EnrollLink, error) {
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

// maxAdminResponse bounds what is read of an admin API answer.
const maxAdminResponse = 1 << 20

// explainAdminError turns an error of caddycmd.AdminAPIRequest into one that says what
// to do. AdminAPIRequest formats its errors with %v, so they are told apart by text:
// "performing request: …" when the request did not get through, and "caddy responded
// with error: HTTP <status>: <body>" when the API refused it, where the body of an
// API error is JSON {"error": "…"}. Anything else is returned as it is, with context.
func explainAdminError(adminAddr, doing string, err error) error {
	msg := err.Error()
	if rest, ok := strings.CutPrefix(msg, "performing request: "); ok {
		return fmt.Errorf("%s: the admin API at %s is not reachable: is caddy running? Start it, or point at its admin endpoint with --address or --config (%s)",
			doing, adminAddr, rest)
	}
	if rest, ok := strings.CutPrefix(msg, "caddy responded with error: HTTP "); ok {
		statusText, body, _ := strings.Cut(rest, ": ")
		status, _ := strconv.Atoi(statusText)
		var apiErr struct {
			Error string `json:"error"`
		}
		if json.Unmarshal([]byte(body), &apiErr) == nil && apiErr.Error != "" {
			return fmt.Errorf("%s: the admin API at %s refused (HTTP %d): %s", doing, adminAddr, status, apiErr.Error)
		}
		body = strings.TrimSpace(body)
		if status == http.StatusNotFound {
			return fmt.Errorf("%s: the admin API at %s has no /jit/ endpoint (HTTP 404: %s): is the running caddy built with caddy-jit?", doing, adminAddr, body)
		}
		return fmt.Errorf("%s: the admin API at %s refused (HTTP %d): %s", doing, adminAddr, status, body)
	}
	return fmt.Errorf("%s: %v", doing, err)
}
