package caddymodule

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
)

func TestRunningAppAndUserChecksTheNameThenTheApp(t *testing.T) {
	src := strings.Replace(validGlobal, "\t\tsync_interval 2s\n", "\t\tsync_interval 2s\n\t\tuser_names case_insensitive\n", 1)
	app, err := LoadApp(loadTestConfig(t, src))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { currentApp.Store(nil) })
	for _, tt := range []struct {
		name       string
		running    *App
		user       string
		wantUser   string
		wantStatus int
		wantErr    string
	}{
		{"the canonical name", app, "ALICE", "alice", 0, ""},
		{"a name as it is", app, "bob", "bob", 0, ""},
		{"a slash, with an app", app, "al/ice", "", http.StatusBadRequest, "holds a slash or a control character"},
		{"a slash, before any app", nil, "al/ice", "", http.StatusBadRequest, "holds a slash or a control character"},
		{"no name", app, "", "", http.StatusBadRequest, "no user name"},
		{"no jit app", nil, "alice", "", http.StatusNotFound, "caddy-jit is not configured"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			currentApp.Store(tt.running)
			got, user, err := runningAppAndUser(tt.user)
			if tt.wantStatus == 0 {
				if err != nil || got != tt.running || user != tt.wantUser {
					t.Errorf("got %p, %q, %v; want the running app and %q", got, user, err, tt.wantUser)
				}
				return
			}
			var apiErr caddy.APIError
			if !errors.As(err, &apiErr) || apiErr.HTTPStatus != tt.wantStatus || !strings.Contains(err.Error(), tt.wantErr) || got != nil || user != "" {
				t.Errorf("got %p, %q, %v; want an API error %d saying %q", got, user, err, tt.wantStatus, tt.wantErr)
			}
		})
	}
}
