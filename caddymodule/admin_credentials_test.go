package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/caddy-jit/caddy-jit/audit"
	"github.com/caddy-jit/caddy-jit/authority"
	"github.com/caddy-jit/caddy-jit/internal/testkit"
	"github.com/caddy-jit/caddy-jit/stepup"
)

// credentialsSite is where the fixture's passkeys are registered: validGlobal's rp_id
// is example.com.
var credentialsSite = stepup.Site{Origin: "https://admin.example.com"}

// credentialsFixture is a running jit app (user_names case_insensitive) over a file
// storage, whose audit events are observed: alice has two passkeys, "laptop" (bound
// to its device, used once) and "phone" (synced, never used); bob has none, and is
// enrolled for TOTP.
type credentialsFixture struct {
	app           *App
	storage       string
	logs          *observer.ObservedLogs
	laptop, phone *testkit.SoftKey
}

var credentialsEpoch = time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)

func newCredentialsFixture(t *testing.T) *credentialsFixture {
	t.Helper()
	src := strings.Replace(validGlobal, "\t\tsync_interval 2s\n", "\t\tsync_interval 2s\n\t\tuser_names case_insensitive\n", 1)
	app, err := LoadApp(loadTestConfig(t, src))
	if err != nil {
		t.Fatal(err)
	}
	f := &credentialsFixture{app: app, storage: t.TempDir()}
	core, logs := observer.New(zap.InfoLevel)
	f.logs = logs
	clock := testkit.NewClock(credentialsEpoch)
	app.authority, err = authority.New(context.Background(), &certmagic.FileStorage{Path: f.storage}, app.AuthorityConfig(zap.New(core), clock.Now))
	if err != nil {
		t.Fatal(err)
	}
	f.laptop = f.register(t, "alice", "laptop", false)
	clock.Add(time.Hour)
	f.phone = f.register(t, "alice", "phone", true)
	clock.Add(time.Hour)
	f.signIn(t, "alice", f.laptop)
	if _, err := app.authority.StepUp.Enroll(context.Background(), "bob", "test setup"); err != nil {
		t.Fatal(err)
	}
	currentApp.Store(app)
	t.Cleanup(func() { currentApp.Store(nil) })
	return f
}

// register registers a new software passkey of user, as the enrollment page would.
func (f *credentialsFixture) register(t *testing.T, user, name string, synced bool) *testkit.SoftKey {
	t.Helper()
	ctx := context.Background()
	k := testkit.NewSoftKey(t, credentialsSite.Origin)
	k.Synced = synced
	p := f.app.authority.StepUp.Passkeys()
	options, ceremony, err := p.BeginRegistration(ctx, user, credentialsSite)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.FinishRegistration(ctx, user, credentialsSite, ceremony, name, k.Create(options)); err != nil {
		t.Fatalf("registering %s's %s: %v", user, name, err)
	}
	return k
}

// signIn steps up as user with k, which marks the passkey used.
func (f *credentialsFixture) signIn(t *testing.T, user string, k *testkit.SoftKey) {
	t.Helper()
	ctx := context.Background()
	p := f.app.authority.StepUp.Passkeys()
	options, ceremony, err := p.BeginLogin(ctx, user, credentialsSite)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.FinishLogin(ctx, user, credentialsSite, ceremony, k.Get(options)); err != nil {
		t.Fatalf("stepping up as %s: %v", user, err)
	}
}

// ids lists the credential ids user has now.
func (f *credentialsFixture) ids(t *testing.T, user string) []string {
	t.Helper()
	list, err := f.app.authority.StepUp.Passkeys().List(context.Background(), user)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, pk := range list {
		ids = append(ids, pk.ID)
	}
	return ids
}

// callAdmin serves one request with the admin routes, and turns an API error into
// Caddy's answer to it: the status and {"error": "…"}.
func callAdmin(t *testing.T, method, target string) (int, string) {
	t.Helper()
	mux := http.NewServeMux()
	for _, route := range (AdminAPI{}).Routes() {
		mux.HandleFunc(route.Pattern, func(w http.ResponseWriter, r *http.Request) {
			err := route.Handler.ServeHTTP(w, r)
			if err == nil {
				return
			}
			var apiErr caddy.APIError
			if !errors.As(err, &apiErr) {
				t.Errorf("%s %s: a plain error, which Caddy answers with 500: %v", method, target, err)
				apiErr = caddy.APIError{HTTPStatus: http.StatusInternalServerError, Err: err}
			}
			_ = writeJSON(w, apiErr.HTTPStatus, map[string]string{"error": apiErr.Err.Error()})
		})
	}
	r := httptest.NewRequest(method, target, nil)
	r.RemoteAddr = "192.0.2.9:4321"
	w := httptest.NewRecorder()
	mux.ServeHTTP(w, r)
	return w.Code, w.Body.String()
}

func TestCredentialsAdminAPIListsAUsersPasskeys(t *testing.T) {
	f := newCredentialsFixture(t)
	laptop := map[string]any{
		"id": f.laptop.ID(), "name": "laptop", "aaguid": testkit.SoftKeyAAGUID, "rp_id": "example.com",
		"created": "2026-03-01T09:00:00Z", "last_used": "2026-03-01T11:00:00Z", "synced": false,
	}
	phone := map[string]any{
		"id": f.phone.ID(), "name": "phone", "aaguid": testkit.SoftKeyAAGUID, "rp_id": "example.com",
		"created": "2026-03-01T10:00:00Z", "last_used": nil, "synced": true,
	}
	for _, tt := range []struct {
		name, path string
		want       []map[string]any
	}{
		{"oldest first", "/jit/credentials/alice", []map[string]any{laptop, phone}},
		{"the canonical name", "/jit/credentials/ALICE", []map[string]any{laptop, phone}},
		{"a user with none", "/jit/credentials/bob", []map[string]any{}},
		{"a user unknown to the config", "/jit/credentials/nobody", []map[string]any{}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			status, body := callAdmin(t, http.MethodGet, tt.path)
			if status != http.StatusOK {
				t.Fatalf("GET %s: %d %s", tt.path, status, body)
			}
			if len(tt.want) == 0 && body != "[]\n" {
				t.Errorf("GET %s = %q, want [] for a user with no passkey", tt.path, body)
			}
			var got []map[string]any
			if err := json.Unmarshal([]byte(body), &got); err != nil {
				t.Fatalf("GET %s: not a JSON array: %v: %s", tt.path, err, body)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("GET %s listed %d passkeys, want %d: %s", tt.path, len(got), len(tt.want), body)
			}
			for i := range got {
				if !maps.Equal(got[i], tt.want[i]) {
					t.Errorf("passkey %d:\n got %v\nwant %v", i, got[i], tt.want[i])
				}
			}
		})
	}
}

func TestCredentialsAdminAPIRemovesAPasskey(t *testing.T) {
	for _, tt := range []struct {
		name, path      string
		wantBy, wantWhy string
	}{
		{"by the caller, for a reason", "/jit/credentials/alice/%s?by=ops&reason=key+lost", "ops via admin API (192.0.2.9:4321)", "key lost"},
		{"the canonical name, anonymously", "/jit/credentials/Alice/%s", "admin API (192.0.2.9:4321)", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newCredentialsFixture(t)
			status, body := callAdmin(t, http.MethodDelete, strings.Replace(tt.path, "%s", f.laptop.ID(), 1))
			if status != http.StatusOK {
				t.Fatalf("DELETE: %d %s", status, body)
			}
			var got struct {
				User         string         `json:"user"`
				Removed      map[string]any `json:"removed"`
				Remaining    int            `json:"remaining"`
				TOTPEnrolled bool           `json:"totp_enrolled"`
			}
			if err := json.Unmarshal([]byte(body), &got); err != nil {
				t.Fatalf("DELETE answered %s: %v", body, err)
			}
			if got.User != "alice" || got.Removed["id"] != f.laptop.ID() || got.Removed["name"] != "laptop" || got.Remaining != 1 || got.TOTPEnrolled {
				t.Errorf("DELETE answered %s; want alice's laptop removed, 1 left, no TOTP", body)
			}
			if ids := f.ids(t, "alice"); !slices.Equal(ids, []string{f.phone.ID()}) {
				t.Errorf("alice has %v after the removal, want only her phone %s", ids, f.phone.ID())
			}
			removed := testkit.Events(f.logs, audit.EventPasskeyRemoved)
			if len(removed) != 1 {
				t.Fatalf("%d passkey_removed events, want 1", len(removed))
			}
			want := map[string]any{"event": audit.EventPasskeyRemoved, "user": "alice", "credential_id": f.laptop.ID(), "rp_id": "example.com", "by": tt.wantBy}
			if tt.wantWhy != "" {
				want["reason"] = tt.wantWhy
			}
			if fields := testkit.Fields(removed[0]); !maps.Equal(fields, want) {
				t.Errorf("passkey_removed\n got %v\nwant %v", fields, want)
			}
		})
	}
}

// The last passkey of a user enrolled for TOTP: none remain, and the answer says they
// can register another with a code.
func TestCredentialsAdminAPIRemovesTheLastPasskey(t *testing.T) {
	f := newCredentialsFixture(t)
	k := f.register(t, "bob", "key", false)
	status, body := callAdmin(t, http.MethodDelete, "/jit/credentials/bob/"+k.ID())
	if status != http.StatusOK || !strings.Contains(body, `"remaining":0`) || !strings.Contains(body, `"totp_enrolled":true`) {
		t.Errorf("DELETE bob's only passkey: %d %s; want remaining 0, totp_enrolled true", status, body)
	}
	if ids := f.ids(t, "bob"); len(ids) != 0 {
		t.Errorf("bob still has %v", ids)
	}
}

func TestCredentialsAdminAPIRefusals(t *testing.T) {
	for _, tt := range []struct {
		name, method, path string
		noApp              bool
		wantStatus         int
		wantErr            string
	}{
		{"an id alice does not have", http.MethodDelete, "/jit/credentials/alice/AAAAAAAAAAAAAAAAAAAAAA", false, http.StatusNotFound, `alice has no passkey with the id "AAAAAAAAAAAAAAAAAAAAAA": list their passkeys`},
		{"alice's id, under bob", http.MethodDelete, "/jit/credentials/bob/{laptop}", false, http.StatusNotFound, "bob has no passkey with the id"},
		{"an id with padding", http.MethodDelete, "/jit/credentials/alice/AAAA%3D", false, http.StatusBadRequest, "is not base64url"},
		{"an id in standard base64", http.MethodDelete, "/jit/credentials/alice/AA+A", false, http.StatusBadRequest, "is not base64url"},
		{"an id with a slash", http.MethodDelete, "/jit/credentials/alice/AA/AA", false, http.StatusBadRequest, "base64url, which has no slash"},
		{"an id of one character", http.MethodDelete, "/jit/credentials/alice/A", false, http.StatusBadRequest, "is not base64url"},
		{"an id too long", http.MethodDelete, "/jit/credentials/alice/" + strings.Repeat("A", 1400), false, http.StatusBadRequest, "more than a passkey's can have (1364)"},
		{"an empty id", http.MethodDelete, "/jit/credentials/alice/", false, http.StatusBadRequest, "no credential id"},
		{"a name with an escaped slash", http.MethodGet, "/jit/credentials/ops%2Fcarol", false, http.StatusBadRequest, "holds a slash or a control character"},
		{"a name with a control character", http.MethodDelete, "/jit/credentials/al%01ice/{laptop}", false, http.StatusBadRequest, "holds a slash or a control character"},
		{"no name", http.MethodGet, "/jit/credentials/", false, http.StatusBadRequest, "no user name: use /jit/credentials/{user}"},
		{"a list by POST", http.MethodPost, "/jit/credentials/alice", false, http.StatusMethodNotAllowed, "use GET /jit/credentials/{user}"},
		{"a delete without an id", http.MethodDelete, "/jit/credentials/alice", false, http.StatusMethodNotAllowed, "DELETE /jit/credentials/{user}/{id} to remove one"},
		{"a GET of one passkey", http.MethodGet, "/jit/credentials/alice/{laptop}", false, http.StatusMethodNotAllowed, "use DELETE /jit/credentials/{user}/{id}"},
		{"no jit app", http.MethodGet, "/jit/credentials/alice", true, http.StatusNotFound, "caddy-jit is not configured"},
		{"a bad name before any app", http.MethodGet, "/jit/credentials/al%0Aice", true, http.StatusBadRequest, "holds a slash or a control character"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newCredentialsFixture(t)
			if tt.noApp {
				currentApp.Store(nil)
			}
			path := strings.ReplaceAll(tt.path, "{laptop}", f.laptop.ID())
			status, body := callAdmin(t, tt.method, path)
			var answer struct {
				Error string `json:"error"`
			}
			if err := json.Unmarshal([]byte(body), &answer); err != nil || status != tt.wantStatus || !strings.Contains(answer.Error, tt.wantErr) {
				t.Errorf("%s %s = %d %s; want %d saying %q", tt.method, path, status, body, tt.wantStatus, tt.wantErr)
			}
			if ids := f.ids(t, "alice"); !slices.Equal(ids, []string{f.laptop.ID(), f.phone.ID()}) {
				t.Errorf("a refused call changed alice's passkeys to %v", ids)
			}
			if removed := testkit.Events(f.logs, audit.EventPasskeyRemoved); len(removed) != 0 {
				t.Errorf("a refused call audited %d removals", len(removed))
			}
		})
	}
}

// A storage that fails is a 503 that says so, and nothing is removed.
func TestCredentialsAdminAPIStorageFailure(t *testing.T) {
	f := newCredentialsFixture(t)
	folder := filepath.Join(f.storage, "jit", "passkeys")
	if err := os.RemoveAll(folder); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(folder, []byte("not a folder"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, method := range []string{http.MethodGet, http.MethodDelete} {
		path := "/jit/credentials/alice"
		if method == http.MethodDelete {
			path += "/" + f.laptop.ID()
		}
		status, body := callAdmin(t, method, path)
		if status != http.StatusServiceUnavailable || !strings.Contains(body, "the storage failed") {
			t.Errorf("%s %s on a failing storage = %d %s; want 503 saying the storage failed", method, path, status, body)
		}
	}
	if removed := testkit.Events(f.logs, audit.EventPasskeyRemoved); len(removed) != 0 {
		t.Errorf("%d removals audited on a failing storage", len(removed))
	}
}
