package commands

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	"github.com/caddy-jit/caddy-jit/internal/adminapi"
	"github.com/caddy-jit/caddy-jit/session"
)

// adminStub stands in for Caddy's admin API in the operator command tests: it records
// every request with its query and answers with a fixed status and JSON body.
type adminStub struct {
	status int
	body   string

	mu       sync.Mutex
	requests []adminStubRequest
}

type adminStubRequest struct {
	method, path, escapedPath string
	query                     url.Values
}

func (s *adminStub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.requests = append(s.requests, adminStubRequest{r.Method, r.URL.Path, r.URL.EscapedPath(), r.URL.Query()})
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(s.status)
	io.WriteString(w, s.body)
}

func (s *adminStub) start(t *testing.T) (addr string) {
	t.Helper()
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

// only returns the single request the stub got.
func (s *adminStub) only(t *testing.T) adminStubRequest {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.requests) != 1 {
		t.Fatalf("the admin API got %d requests, want 1: %+v", len(s.requests), s.requests)
	}
	return s.requests[0]
}

// runJitStreams runs `caddy jit ARGS...` as Caddy would build it, and returns its
// stdout and stderr.
func runJitStreams(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	cmd := jitCommand()
	var out, errOut bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs(args)
	err = cmd.Execute()
	return out.String(), errOut.String(), err
}

// listJSON is a session list as the admin API answers it.
func listJSON(t *testing.T, infos ...adminapi.Session) string {
	t.Helper()
	b, err := json.Marshal(adminapi.SessionList{Sessions: infos})
	if err != nil {
		t.Fatal(err)
	}
	return string(b) + "\n"
}

var cliTestStart = time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)

func cliTestRecord(id, user string) *session.Record {
	return &session.Record{
		ID: id, User: user, Role: "console-admin", Audience: "http://localhost:8080",
		Justification: "restart the stuck queue worker", Ticket: "INC-7", Methods: []string{"otp"},
		Start: cliTestStart, Expires: cliTestStart.Add(time.Hour),
	}
}

func TestSessionsAndChangesRequestTheAdminAPI(t *testing.T) {
	by := operatorLogin()
	if by == "" {
		t.Fatal("no OS login and no $USER: the commands would send an empty by")
	}
	ended := cliTestRecord("AAAAAAAAAAAAAAAAAAAAAA", "alice")
	ended.Ended = cliTestStart.Add(time.Minute)
	revoked := listJSON(t, adminapi.Session{Record: ended, Revoked: true})
	tests := []struct {
		name        string
		args        []string
		body        string
		wantMethod  string
		wantEscaped string // r.URL.EscapedPath() at the API
		wantQuery   url.Values
	}{
		{
			name: "sessions", args: []string{"sessions"}, body: listJSON(t),
			wantMethod: http.MethodGet, wantEscaped: "/jit/sessions", wantQuery: url.Values{},
		},
		{
			name: "sessions filtered", args: []string{"sessions", "--user", "Jürgen Müller&x=1", "--role", "console-admin"}, body: listJSON(t),
			wantMethod: http.MethodGet, wantEscaped: "/jit/sessions",
			wantQuery: url.Values{"user": {"Jürgen Müller&x=1"}, "role": {"console-admin"}},
		},
		{
			name: "revoke id", args: []string{"revoke", "AAAAAAAAAAAAAAAAAAAAAA", "--reason", "left the call; done"}, body: revoked,
			wantMethod: http.MethodDelete, wantEscaped: "/jit/sessions/AAAAAAAAAAAAAAAAAAAAAA",
			wantQuery: url.Values{"by": {by}, "reason": {"left the call; done"}},
		},
		{
			name: "revoke id escaped", args: []string{"revoke", "a/b?c#d"}, body: revoked,
			wantMethod: http.MethodDelete, wantEscaped: "/jit/sessions/a%2Fb%3Fc%23d",
			wantQuery: url.Values{"by": {by}, "reason": {""}},
		},
		{
			name: "revoke id with a leading dash", args: []string{"revoke", "--", "-AAAAAAAAAAAAAAAAAAAAA"}, body: revoked,
			wantMethod: http.MethodDelete, wantEscaped: "/jit/sessions/-AAAAAAAAAAAAAAAAAAAAA",
			wantQuery: url.Values{"by": {by}, "reason": {""}},
		},
		{
			name: "revoke user", args: []string{"revoke", "--user", "bob smith&reason=x", "--reason", "laptop stolen"}, body: revoked,
			wantMethod: http.MethodDelete, wantEscaped: "/jit/sessions",
			wantQuery: url.Values{"user": {"bob smith&reason=x"}, "by": {by}, "reason": {"laptop stolen"}},
		},
		{
			name: "unlock", args: []string{"unlock", "ops/carol", "--reason", "verified by phone"}, body: `{"user":"ops/carol","result":"unlocked"}`,
			wantMethod: http.MethodPost, wantEscaped: "/jit/lockouts/ops%2Fcarol/clear",
			wantQuery: url.Values{"by": {by}, "reason": {"verified by phone"}},
		},
		{
			name: "rotate-keys", args: []string{"rotate-keys"}, body: `{"kid":"k2","keys":["k1","k2"]}`,
			wantMethod: http.MethodPost, wantEscaped: "/jit/keys/rotate",
			wantQuery: url.Values{"by": {by}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			stub := &adminStub{status: http.StatusOK, body: tc.body}
			addr := stub.start(t)

			args := append([]string{tc.args[0], "--address", addr}, tc.args[1:]...)
			out, _, err := runJitStreams(t, args...)
			if err != nil {
				t.Fatalf("%v: %v\n%s", args, err, out)
			}
			req := stub.only(t)
			if req.method != tc.wantMethod || req.escapedPath != tc.wantEscaped {
				t.Errorf("request %s %s, want %s %s", req.method, req.escapedPath, tc.wantMethod, tc.wantEscaped)
			}
			if !reflect.DeepEqual(req.query, tc.wantQuery) {
				t.Errorf("query %v, want %v", req.query, tc.wantQuery)
			}
		})
	}
}

func TestSessionsTableAndJSON(t *testing.T) {
	saved := now
	t.Cleanup(func() { now = saved })
	now = func() time.Time { return cliTestStart.Add(20*time.Minute + 30*time.Second) }

	first := cliTestRecord("AAAAAAAAAAAAAAAAAAAAAA", "alice")
	first.Expires = cliTestStart.Add(30 * time.Minute)
	second := cliTestRecord("BBBBBBBBBBBBBBBBBBBBBB", "Jürgen")
	second.Justification = "evil\x1b[2J\u202eecnetnes a naht regnol hcum si taht noitacifitsuj a"
	second.Ticket = ""
	body := listJSON(t, adminapi.Session{Record: first}, adminapi.Session{Record: second, Revoked: true})

	tests := []struct {
		name  string
		args  []string
		body  string
		want  []string // lines, after collapsing runs of spaces
		exact string   // the whole output, when set
	}{
		{
			name: "table", args: []string{"sessions"}, body: body,
			want: []string{
				"ID USER ROLE STARTED EXPIRES LEFT JUSTIFICATION TICKET",
				"AAAAAAAAAAAAAAAAAAAAAA alice console-admin 2026-03-01 09:00 UTC 2026-03-01 09:30 UTC 9m30s restart the stuck queue worker INC-7",
				"BBBBBBBBBBBBBBBBBBBBBB Jürgen console-admin 2026-03-01 09:00 UTC 2026-03-01 10:00 UTC revoked evil?[2J?ecnetnes a naht regnol hcum si… -",
			},
		},
		{name: "json", args: []string{"sessions", "--json"}, body: body, exact: body},
		{name: "json gets a newline", args: []string{"sessions", "--json"}, body: strings.TrimSpace(body), exact: body},
		{name: "none", args: []string{"sessions"}, body: listJSON(t), exact: "No active sessions.\n"},
		{name: "none filtered", args: []string{"sessions", "--user", "alice", "--role", "db"}, body: listJSON(t), exact: "No active sessions of \"alice\" in role \"db\".\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			stub := &adminStub{status: http.StatusOK, body: tc.body}
			out, stderr, err := runJitStreams(t, append(tc.args, "--address", stub.start(t))...)
			if err != nil {
				t.Fatalf("sessions: %v", err)
			}
			if stderr != "" {
				t.Errorf("stderr %q, want nothing through the admin API", stderr)
			}
			if tc.exact != "" && out != tc.exact {
				t.Errorf("output:\n%q\nwant\n%q", out, tc.exact)
			}
			if tc.want == nil {
				return
			}
			lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
			if len(lines) != len(tc.want) {
				t.Fatalf("output has %d lines, want %d:\n%s", len(lines), len(tc.want), out)
			}
			col := runeIndex(lines[0], "LEFT")
			for i, line := range lines {
				if got := strings.Join(strings.Fields(line), " "); got != tc.want[i] {
					t.Errorf("line %d:\n got %q\nwant %q", i, got, tc.want[i])
				}
				if i > 0 && runeIndex(line, []string{"9m30s", "revoked"}[i-1]) != col {
					t.Errorf("line %d: LEFT is not aligned under its header:\n%s", i, out)
				}
			}
		})
	}
}

// runeIndex is the column of substr in s on a terminal.
func runeIndex(s, substr string) int {
	i := strings.Index(s, substr)
	if i < 0 {
		return -1
	}
	return utf8.RuneCountInString(s[:i])
}

func TestRevokeCommandOutput(t *testing.T) {
	ended := func(id, user string) adminapi.Session {
		r := cliTestRecord(id, user)
		r.Ended, r.EndedBy, r.EndReason = cliTestStart.Add(time.Minute), "root via admin API (127.0.0.1:1)", "why"
		return adminapi.Session{Record: r, Revoked: true}
	}
	tests := []struct {
		name string
		args []string
		body string
		want string
	}{
		{
			name: "one", args: []string{"revoke", "AAAAAAAAAAAAAAAAAAAAAA"}, body: listJSON(t, ended("AAAAAAAAAAAAAAAAAAAAAA", "alice")),
			want: "Revoked session AAAAAAAAAAAAAAAAAAAAAA of alice (role console-admin, started 2026-03-01 09:00 UTC, would have expired 2026-03-01 10:00 UTC).\n",
		},
		{
			name: "all of a user", args: []string{"revoke", "--user", "bob"},
			body: listJSON(t, ended("AAAAAAAAAAAAAAAAAAAAAA", "bob"), ended("BBBBBBBBBBBBBBBBBBBBBB", "bob")),
			want: "Revoked session AAAAAAAAAAAAAAAAAAAAAA of bob (role console-admin, started 2026-03-01 09:00 UTC, would have expired 2026-03-01 10:00 UTC).\n" +
				"Revoked session BBBBBBBBBBBBBBBBBBBBBB of bob (role console-admin, started 2026-03-01 09:00 UTC, would have expired 2026-03-01 10:00 UTC).\n",
		},
		{
			name: "expired before", args: []string{"revoke", "CCCCCCCCCCCCCCCCCCCCCC"},
			body: listJSON(t, adminapi.Session{Record: cliTestRecord("CCCCCCCCCCCCCCCCCCCCCC", "alice")}),
			want: "Session CCCCCCCCCCCCCCCCCCCCCC of alice (role console-admin) had already expired at 2026-03-01 10:00 UTC: nothing to revoke.\n",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			stub := &adminStub{status: http.StatusOK, body: tc.body}
			out, _, err := runJitStreams(t, append(tc.args, "--address", stub.start(t))...)
			if err != nil {
				t.Fatalf("revoke: %v", err)
			}
			if out != tc.want {
				t.Errorf("output:\n%s\nwant\n%s", out, tc.want)
			}
		})
	}
}

func TestUnlockAndRotateKeysOutput(t *testing.T) {
	tests := []struct {
		name string
		args []string
		body string
		want string
	}{
		{"unlock", []string{"unlock", "alice"}, `{"user":"alice","result":"unlocked"}`, "Unlocked alice: their next correct code is accepted.\n"},
		{"rotate-keys", []string{"rotate-keys"}, `{"kid":"k3","keys":["k1","k2","k3"]}`, "New signing key: k3\nKeys in use, oldest first (the last one signs): k1, k2, k3\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			stub := &adminStub{status: http.StatusOK, body: tc.body}
			out, _, err := runJitStreams(t, append(tc.args, "--address", stub.start(t))...)
			if err != nil {
				t.Fatal(err)
			}
			if out != tc.want {
				t.Errorf("output %q, want %q", out, tc.want)
			}
		})
	}
}

func TestRevokeUnlockRotateErrorsArePlain(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		status  int
		body    string
		want    []string
		notWant []string
	}{
		{
			name: "no such session", args: []string{"revoke", "AAAAAAAAAAAAAAAAAAAAAA"}, status: http.StatusNotFound,
			body:    `{"error":"no session with id \"AAAAAAAAAAAAAAAAAAAAAA\""}` + "\n",
			want:    []string{`revoking session "AAAAAAAAAAAAAAAAAAAAAA"`, "HTTP 404", `no session with id "AAAAAAAAAAAAAAAAAAAAAA"`},
			notWant: []string{`{"error"`},
		},
		{
			name: "user without sessions", args: []string{"revoke", "--user", "alice"}, status: http.StatusOK,
			body: `{"sessions":[]}`,
			want: []string{`"alice" has no active session: nothing was revoked`},
		},
		{
			name: "bad user name", args: []string{"unlock", "al\x01ice"}, status: http.StatusBadRequest,
			body:    `{"error":"the user name \"al\\u0001ice\" holds a slash or a control character"}`,
			want:    []string{"clearing the lockout of", "HTTP 400", "holds a slash or a control character"},
			notWant: []string{`{"error"`},
		},
		{
			name: "jit not configured", args: []string{"sessions"}, status: http.StatusNotFound,
			body: `{"error":"caddy-jit is not configured: the running config has no jit app (global ` + "`jit`" + ` option)"}`,
			want: []string{"listing sessions", "HTTP 404", "caddy-jit is not configured"},
		},
		{
			name: "storage failure", args: []string{"rotate-keys"}, status: http.StatusServiceUnavailable,
			body: `{"error":"rotating the signing key: the storage failed: disk full"}`,
			want: []string{"HTTP 503", "the storage failed: disk full"},
		},
		{
			name: "not caddy-jit", args: []string{"sessions", "--json"}, status: http.StatusOK,
			body: "<html>hello</html>",
			want: []string{"something other than caddy-jit's JSON", "caddy with caddy-jit"},
		},
		{
			name: "rotation without key id", args: []string{"rotate-keys"}, status: http.StatusOK,
			body: `{}`,
			want: []string{"without the new key id"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			stub := &adminStub{status: tc.status, body: tc.body}
			addr := stub.start(t)
			out, _, err := runJitStreams(t, append(tc.args, "--address", addr)...)
			if err == nil {
				t.Fatalf("%v succeeded:\n%s", tc.args, out)
			}
			for _, want := range tc.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
			for _, notWant := range tc.notWant {
				if strings.Contains(err.Error(), notWant) {
					t.Errorf("error %q contains %q", err, notWant)
				}
			}
			if out != "" {
				t.Errorf("printed something despite the error:\n%s", out)
			}
		})
	}
}

func TestRevokeUnlockRotateArgs(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"revoke nothing", []string{"revoke"}, "want exactly one session id or --user, got 0"},
		{"revoke two ids", []string{"revoke", "a", "b"}, "want exactly one session id or --user, got 2"},
		{"revoke id and user", []string{"revoke", "a", "--user", "bob"}, "not both"},
		{"revoke empty id", []string{"revoke", "", "--address", "127.0.0.1:1"}, "no session id or user"},
		{"unlock nobody", []string{"unlock"}, "want exactly one user name, got 0"},
		{"unlock empty", []string{"unlock", "", "--address", "127.0.0.1:1"}, "no user name"},
		{"sessions with an argument", []string{"sessions", "alice"}, "unknown command"},
		{"rotate-keys with an argument", []string{"rotate-keys", "now"}, "unknown command"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := runJitStreams(t, tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// TestEnrollCommandRegistered checks the admin flags of every subcommand.
func TestSessionsRevokeUnlockRotateAreRegistered(t *testing.T) {
	cmd := jitCommand()
	want := map[string][]string{"sessions": {"user", "role", "json"}, "revoke": {"user", "reason"}, "unlock": {"reason"}, "rotate-keys": nil}
	for name, flags := range want {
		sub, _, err := cmd.Find([]string{name})
		if err != nil || sub.Name() != name {
			t.Errorf("caddy jit %s: %v", name, err)
			continue
		}
		for _, flag := range flags {
			if sub.Flags().Lookup(flag) == nil {
				t.Errorf("caddy jit %s lacks --%s", name, flag)
			}
		}
	}
	seen := map[string]bool{}
	for _, sub := range cmd.Commands() {
		if seen[sub.Name()] {
			t.Errorf("caddy jit %s is registered twice", sub.Name())
		}
		seen[sub.Name()] = true
	}
}

// A --config whose admin API is on is only where the address comes from: the
// command goes to that admin API, not to storage.
func TestSessionsWithConfigUsesItsAdminAPI(t *testing.T) {
	stub := &adminStub{status: http.StatusOK, body: `{"sessions":[]}`}
	addr := stub.start(t)
	storage := t.TempDir()
	config := filepath.Join(t.TempDir(), "caddy.json")
	cfg := `{"admin":{"listen":"` + addr + `"},"storage":{"module":"file_system","root":"` + storage + `"},` +
		`"apps":{"jit":{"roles":{"r":{"max_duration":3600000000000,"eligible":[{"subjects":["alice"]}]}}}}}`
	if err := os.WriteFile(config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}

	out, stderr, err := runJitStreams(t, "sessions", "--config", config)
	if err != nil {
		t.Fatalf("sessions: %v", err)
	}
	if req := stub.only(t); req.method != http.MethodGet || req.path != "/jit/sessions" {
		t.Errorf("request %s %s, want GET /jit/sessions", req.method, req.path)
	}
	if out != "No active sessions.\n" || stderr != "" {
		t.Errorf("stdout %q, stderr %q", out, stderr)
	}
	if entries, _ := os.ReadDir(storage); len(entries) != 0 {
		t.Errorf("the command touched the storage although the admin API is on: %v", entries)
	}
}

func TestWithControlExitsAsCaddyDoesWhenTheWorkFails(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "no-such-Caddyfile")
	for _, tt := range []struct {
		name     string
		flags    []string
		work     error
		wantRun  bool
		wantCode int
		wantErr  string
	}{
		{"the work is done", []string{"--address", "localhost:2999"}, nil, true, caddy.ExitCodeSuccess, ""},
		{"the work fails", []string{"--address", "localhost:2999"}, errors.New("HTTP 503"), true, caddy.ExitCodeFailedStartup, "HTTP 503"},
		{"caddy-jit cannot be reached", []string{"--config", missing}, nil, false, caddy.ExitCodeFailedStartup, "no-such-Caddyfile"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cmd := rotateKeysCommand()
			if err := cmd.ParseFlags(tt.flags); err != nil {
				t.Fatal(err)
			}
			ran := false
			code, err := withControl(caddycmd.Flags{FlagSet: cmd.Flags()}, io.Discard, func(ctl jitControl) error {
				ran = ctl != nil
				return tt.work
			})
			if ran != tt.wantRun || code != tt.wantCode {
				t.Errorf("ran %v, exit %d; want ran %v, exit %d", ran, code, tt.wantRun, tt.wantCode)
			}
			if (err == nil) != (tt.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("error %v, want one saying %q", err, tt.wantErr)
			}
		})
	}
}
