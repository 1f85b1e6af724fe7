package caddymodule

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-jit/caddy-jit/internal/adminapi"
	"github.com/caddy-jit/caddy-jit/internal/printable"
	"github.com/caddy-jit/caddy-jit/session"
	"github.com/caddy-jit/caddy-jit/stepup"
)

func init() {
	caddy.RegisterModule(AdminAPI{})
}

// AdminAPI adds caddy-jit's routes to Caddy's admin endpoint:
//
//	POST   /jit/enrollments/{user}        make (or replace) a user's TOTP secret
//	POST   /jit/enrollments/{user}?link=1[&ttl=24h][&replace=1]  make a self-service enrollment link
//	GET    /jit/sessions[?user=U&role=R]  list active sessions
//	DELETE /jit/sessions/{id}             revoke one session
//	DELETE /jit/sessions?user=U           revoke all of a user's sessions
//	POST   /jit/lockouts/{user}/clear     end a user's TOTP lockout
//	GET    /jit/credentials/{user}        list a user's passkeys ([] for none)
//	DELETE /jit/credentials/{user}/{id}   remove one of a user's passkeys
//	POST   /jit/keys/rotate               make a new signing key
//
// Changes take `by` (who asks, e.g. the operator's login) and `reason` query
// parameters, which go into the audit event with the caller's address. A passkey
// removal takes `by` only: its audit event has no reason, and it refuses one rather
// than lose it.
type AdminAPI struct{}

// CaddyModule returns the Caddy module information.
func (AdminAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.jit",
		New: func() caddy.Module { return new(AdminAPI) },
	}
}

// Routes returns the admin routes.
func (AdminAPI) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{
		{Pattern: "/jit/enrollments/", Handler: caddy.AdminHandlerFunc(handleEnrollment)},
		{Pattern: "/jit/sessions", Handler: caddy.AdminHandlerFunc(handleSessions)},
		{Pattern: "/jit/sessions/", Handler: caddy.AdminHandlerFunc(handleSession)},
		{Pattern: "/jit/lockouts/", Handler: caddy.AdminHandlerFunc(handleLockout)},
		{Pattern: credentialsRoute, Handler: caddy.AdminHandlerFunc(handleCredentials)},
		{Pattern: "/jit/keys/rotate", Handler: caddy.AdminHandlerFunc(handleRotateKeys)},
	}
}

func handleEnrollment(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodPost {
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("method %s not allowed: use POST /jit/enrollments/{user}", r.Method)}
	}
	app, user, err := runningAppAndUser(strings.TrimPrefix(r.URL.Path, "/jit/enrollments/"))
	if err != nil {
		return err
	}
	if link, err := wantsEnrollLink(r.URL.Query()); err != nil {
		return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: err}
	} else if link {
		return handleEnrollLink(w, r, app, user)
	}
	// An operator's direct enrollment replaces any earlier one at once, and cancels
	// the user's outstanding link (Enroll).
	uri, err := app.authority.StepUp.Enroll(r.Context(), user, operator(r))
	if err != nil {
		return caddy.APIError{HTTPStatus: http.StatusServiceUnavailable, Err: fmt.Errorf("enrolling %s: %v", user, err)}
	}
	return writeJSON(w, http.StatusOK, adminapi.Enrollment{User: user, OTPAuthURI: uri})
}

// replaceFlag reads a link's ?replace=1 (or true): the link may replace the user's
// current enrollment without a code of it.
func replaceFlag(q url.Values) (bool, error) {
	switch q.Get("replace") {
	case "1", "true":
		return true, nil
	case "", "0", "false":
		return false, nil
	}
	return false, fmt.Errorf("replace=%q: want replace=1 for a link that replaces the current authenticator without a code of it", printable.Truncate(q.Get("replace"), 32))
}

// wantsEnrollLink reads ?link=1 (or true) and refuses a ttl or a replace without it:
// a plain enrollment always replaces.
func wantsEnrollLink(q url.Values) (bool, error) {
	switch q.Get("link") {
	case "1", "true":
		if _, err := replaceFlag(q); err != nil {
			return false, err
		}
		return true, nil
	case "", "0", "false":
		if q.Has("ttl") {
			return false, errors.New("ttl applies to enrollment links: add link=1")
		}
		if q.Has("replace") {
			return false, errors.New("replace applies to enrollment links (a plain enrollment always replaces the current one): add link=1")
		}
		return false, nil
	}
	return false, fmt.Errorf("link=%q: want link=1 for an enrollment link", q.Get("link"))
}

// handleEnrollLink answers POST /jit/enrollments/{user}?link=1[&ttl=DURATION][&replace=1]
// with a single-use link the user opens to enroll themselves (see enroll_pages.go). It
// cancels the user's earlier link.
func handleEnrollLink(w http.ResponseWriter, r *http.Request, app *App, user string) error {
	var requested time.Duration
	if raw := r.URL.Query().Get("ttl"); raw != "" {
		d, err := caddy.ParseDuration(raw)
		if err != nil {
			return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: fmt.Errorf("ttl %q is not a duration such as 24h or 7d", printable.Truncate(raw, 32))}
		}
		if d <= 0 {
			return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: fmt.Errorf("ttl %q: want a positive duration", printable.Truncate(raw, 32))}
		}
		requested = d
	}
	ttl, err := app.EnrollLinkLifetime(requested)
	if err != nil {
		return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: err}
	}
	replace, err := replaceFlag(r.URL.Query())
	if err != nil {
		return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: err}
	}
	token, expires, err := app.authority.StepUp.IssueEnrollmentLink(r.Context(), stepup.EnrollLinkRequest{User: user, TTL: ttl, By: operator(r), Replace: replace})
	if err != nil {
		return storageError("making an enrollment link for "+user, err)
	}
	return writeJSON(w, http.StatusOK, adminapi.NewEnrollLink(user, EnrollLinkPath(token), expires))
}

func handleSessions(w http.ResponseWriter, r *http.Request) error {
	app, err := runningApp()
	if err != nil {
		return err
	}
	q := r.URL.Query()
	switch r.Method {
	case http.MethodGet:
		user := q.Get("user")
		if user != "" {
			if user, err = app.CanonicalUser(user); err != nil {
				return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: fmt.Errorf("GET /jit/sessions?user=NAME: %v", err)}
			}
		}
		recs, err := app.authority.Records.Active(r.Context(), session.Filter{User: user, Role: q.Get("role")}, now())
		if err != nil {
			return storageError("listing sessions", err)
		}
		return writeJSON(w, http.StatusOK, adminapi.ListSessions(app.authority.Revocations, recs))
	case http.MethodDelete:
		user, err := app.CanonicalUser(q.Get("user"))
		if err != nil {
			return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: fmt.Errorf("DELETE /jit/sessions needs ?user=NAME (or use /jit/sessions/{id}): %v", err)}
		}
		since := now()
		ended, err := app.authority.EndUser(r.Context(), user, operator(r), q.Get("reason"))
		if err != nil {
			return storageError("revoking sessions", err)
		}
		list := adminapi.ListSessions(app.authority.Revocations, ended)
		list.Applied = app.shared.awaitApplied(r.Context(), revokedSince(ended, since))
		return writeJSON(w, http.StatusOK, list)
	}
	return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("method %s not allowed: use GET or DELETE", r.Method)}
}

func handleSession(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodDelete {
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("method %s not allowed: use DELETE /jit/sessions/{id}", r.Method)}
	}
	app, err := runningApp()
	if err != nil {
		return err
	}
	id := strings.TrimPrefix(r.URL.Path, "/jit/sessions/")
	if err := session.CheckSessionID(id); err != nil {
		return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: fmt.Errorf("DELETE /jit/sessions/{id}: %v", err)}
	}
	// An id with no stored session is revoked all the same (a token may carry it):
	// the answer then lists it with no user or role.
	since := now()
	rec, err := app.authority.RevokeByID(r.Context(), id, operator(r), r.URL.Query().Get("reason"), session.UnrecordedRevocationKeep(app.roles))
	if errors.Is(err, session.ErrRevokedLocallyOnly) {
		return caddy.APIError{HTTPStatus: http.StatusServiceUnavailable, Err: err}
	}
	if err != nil {
		return storageError("revoking the session", err)
	}
	list := adminapi.ListSessions(app.authority.Revocations, []*session.Record{rec})
	list.Applied = app.shared.awaitApplied(r.Context(), revokedSince([]*session.Record{rec}, since))
	return writeJSON(w, http.StatusOK, list)
}

// revokedSince are the ids of the sessions that this call ended: a session that had
// ended or expired before is listed, not revoked again, and no instance has anything
// to apply (nor to confirm) for it.
func revokedSince(recs []*session.Record, since time.Time) []string {
	var ids []string
	for _, r := range recs {
		if !r.Ended.Before(since.Truncate(time.Second)) {
			ids = append(ids, r.ID)
		}
	}
	return ids
}

func handleLockout(w http.ResponseWriter, r *http.Request) error {
	user, ok := strings.CutSuffix(strings.TrimPrefix(r.URL.Path, "/jit/lockouts/"), "/clear")
	if !ok {
		return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: errors.New("use POST /jit/lockouts/{user}/clear")}
	}
	if r.Method != http.MethodPost {
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("method %s not allowed: use POST", r.Method)}
	}
	app, user, err := runningAppAndUser(user)
	if err != nil {
		return err
	}
	if err := app.authority.StepUp.Unlock(r.Context(), user, operator(r), r.URL.Query().Get("reason")); err != nil {
		return storageError("clearing the lockout", err)
	}
	return writeJSON(w, http.StatusOK, map[string]string{"user": user, "result": "unlocked"})
}

func handleRotateKeys(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodPost {
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("method %s not allowed: use POST", r.Method)}
	}
	app, err := runningApp()
	if err != nil {
		return err
	}
	id, err := app.authority.RotateKeys(r.Context(), operator(r))
	if err != nil {
		return storageError("rotating the signing key", err)
	}
	return writeJSON(w, http.StatusOK, adminapi.KeyRotation{KeyID: id, Keys: app.authority.Keyring.KeyIDs()})
}

// operator says who made an admin API call, for the audit log: the `by` the caller
// gives (the CLI sends the operator's login) and the address it came from.
func operator(r *http.Request) string {
	by := printable.Truncate(r.URL.Query().Get("by"), 64)
	if strings.ContainsFunc(by, printable.IsControl) {
		by = ""
	}
	if by == "" {
		return "admin API (" + r.RemoteAddr + ")"
	}
	return by + " via admin API (" + r.RemoteAddr + ")"
}

func storageError(doing string, err error) error {
	return caddy.APIError{HTTPStatus: http.StatusServiceUnavailable, Err: fmt.Errorf("%s: the storage failed: %v", doing, err)}
}

// runningApp is the jit app of the running config, or an API error that says how to
// get one.
func runningApp() (*App, error) {
	app := currentApp.Load()
	if app == nil {
		return nil, caddy.APIError{HTTPStatus: http.StatusNotFound, Err: errors.New("caddy-jit is not configured: the running config has no jit app (global `jit` option)")}
	}
	return app, nil
}

// runningAppAndUser is the jit app of the running config and the canonical name of
// the user an admin route names in its path, or the API error that says what is
// wrong: the name (400), no jit app (404), or a name the app refuses (400).
func runningAppAndUser(user string) (*App, string, error) {
	if err := checkUserName(user); err != nil {
		return nil, "", caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: err}
	}
	app, err := runningApp()
	if err != nil {
		return nil, "", err
	}
	if user, err = app.CanonicalUser(user); err != nil {
		return nil, "", caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: err}
	}
	return app, user, nil
}

// checkUserName accepts the names that can be identities: printable, bounded.
func checkUserName(user string) error {
	switch {
	case user == "":
		return errors.New("no user name: use /jit/enrollments/{user}")
	case len(user) > maxUserLength:
		return fmt.Errorf("the user name is longer than %d bytes", maxUserLength)
	case !utf8.ValidString(user) || strings.ContainsFunc(user, printable.IsControl) || strings.Contains(user, "/"):
		return fmt.Errorf("the user name %q holds a slash or a control character", user)
	}
	return nil
}

// Interface guards.
var _ caddy.AdminRouter = AdminAPI{}
