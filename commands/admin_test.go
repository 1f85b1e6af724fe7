package commands

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

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
