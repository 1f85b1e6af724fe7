package caddymodule

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/caddyserver/caddy/v2"
)

func init() {
	caddy.RegisterModule(AdminAPI{})
}

// AdminAPI adds caddy-jit's routes to Caddy's admin endpoint:
//
//	POST /jit/enrollments/{user}   make (or replace) a user's TOTP secret
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
	}
}

// enrollmentResponse is the answer to an enrollment. The URI holds the secret: it is
// shown to the operator once and never logged.
type enrollmentResponse struct {
	User       string `json:"user"`
	OTPAuthURI string `json:"otpauth_uri"`
}

func handleEnrollment(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodPost {
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("method %s not allowed: use POST /jit/enrollments/{user}", r.Method)}
	}
	user := strings.TrimPrefix(r.URL.Path, "/jit/enrollments/")
	if err := checkUserName(user); err != nil {
		return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: err}
	}
	app, err := runningApp()
	if err != nil {
		return err
	}
	uri, err := app.authority.Enroll(r.Context(), user, "admin API ("+r.RemoteAddr+")")
	if err != nil {
		return caddy.APIError{HTTPStatus: http.StatusServiceUnavailable, Err: fmt.Errorf("enrolling %s: %v", user, err)}
	}
	return writeJSON(w, http.StatusOK, enrollmentResponse{User: user, OTPAuthURI: uri})
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

// checkUserName accepts the names that can be identities: printable, bounded.
func checkUserName(user string) error {
	switch {
	case user == "":
		return errors.New("no user name: use /jit/enrollments/{user}")
	case len(user) > maxUserLength:
		return fmt.Errorf("the user name is longer than %d bytes", maxUserLength)
	case !utf8.ValidString(user) || strings.ContainsFunc(user, isControl) || strings.Contains(user, "/"):
		return fmt.Errorf("the user name %q holds a slash or a control character", user)
	}
	return nil
}

// Interface guards.
var _ caddy.AdminRouter = AdminAPI{}
