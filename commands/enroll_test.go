package commands

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/caddy-jit/caddy-jit/internal/qrcode"
)

// testOTPAuthURI is an enrollment's URI, as the admin API answers it.
const testOTPAuthURI = "otpauth://totp/caddy-jit:alice?algorithm=SHA1&digits=6&issuer=caddy-jit&period=30&secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"

// fakeAdmin stands in for Caddy's admin API: it records the requests and answers
// with a fixed status, content type and body.
type fakeAdmin struct {
	status      int
	contentType string
	body        string

	mu       sync.Mutex
	requests []fakeAdminRequest
}

type fakeAdminRequest struct {
	method, path, escapedPath, origin string
}

func (f *fakeAdmin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.requests = append(f.requests, fakeAdminRequest{r.Method, r.URL.Path, r.URL.EscapedPath(), r.Header.Get("Origin")})
	f.mu.Unlock()
	if f.contentType != "" {
		w.Header().Set("Content-Type", f.contentType)
	}
	w.WriteHeader(f.status)
	io.WriteString(w, f.body)
}

func (f *fakeAdmin) start(t *testing.T) (addr string) {
	t.Helper()
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

func enrollmentJSON(t *testing.T, user, uri string) string {
	t.Helper()
	b, err := json.Marshal(map[string]string{"user": user, "otpauth_uri": uri})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// runJit runs `caddy jit ARGS...` as Caddy would build it, and returns its stdout.
func runJit(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := jitCommand()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(io.Discard)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}

// qrLines returns the lines of the terminal QR code in the output of enroll: the
// run of lines made only of half blocks.
func qrLines(out string) []string {
	var lines []string
	for line := range strings.SplitSeq(out, "\n") {
		if line != "" && strings.Trim(line, "█▀▄ ") == "" {
			lines = append(lines, line)
		} else if len(lines) > 0 {
			break
		}
	}
	return lines
}

// checkTerminalQR checks that lines are the terminal QR code of content, exactly as
// package qrcode draws it (its tests check that drawing module by module).
func checkTerminalQR(t *testing.T, lines []string, content string) {
	t.Helper()
	var want bytes.Buffer
	if err := qrcode.WriteTerminal(&want, content); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(lines, "\n") + "\n"; got != want.String() {
		t.Errorf("the QR code printed is not the one of %q:\n%s\nwant\n%s", content, got, want.String())
	}
}

// checkPNGQR checks that path holds the PNG image of the QR code of content, byte for
// byte as package qrcode writes it (its tests check the image module by module), and
// that only its owner may read it.
func checkPNGQR(t *testing.T, path, content string) {
	t.Helper()
	if fi, err := os.Stat(path); err != nil {
		t.Fatal(err)
	} else if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("%s has mode %v, want 0600", path, perm)
	}
	want := filepath.Join(t.TempDir(), "want.png")
	if err := qrcode.WritePNG(want, content); err != nil {
		t.Fatal(err)
	}
	if got, want := readFile(t, path), readFile(t, want); !bytes.Equal(got, want) {
		t.Errorf("%s is not the PNG image of the QR code of %q", path, content)
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestEnrollCommand(t *testing.T) {
	tests := []struct {
		name        string
		user        string
		respUser    string // the user in the answer
		wantPath    string // r.URL.Path at the API
		wantEscaped string // r.URL.EscapedPath() at the API
	}{
		{"plain", "alice", "alice", "/jit/enrollments/alice", "/jit/enrollments/alice"},
		{"space and umlaut", "Jürgen Müller", "Jürgen Müller", "/jit/enrollments/Jürgen Müller", "/jit/enrollments/J%C3%BCrgen%20M%C3%BCller"},
		{"email", "bob@example.com", "bob@example.com", "/jit/enrollments/bob@example.com", "/jit/enrollments/bob@example.com"},
		{"slash escaped", "ops/carol", "ops/carol", "/jit/enrollments/ops/carol", "/jit/enrollments/ops%2Fcarol"},
		{"query characters escaped", "a?b#c", "a?b#c", "/jit/enrollments/a?b#c", "/jit/enrollments/a%3Fb%23c"},
		{"answer without user", "dave", "", "/jit/enrollments/dave", "/jit/enrollments/dave"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			admin := &fakeAdmin{status: http.StatusOK, contentType: "application/json", body: enrollmentJSON(t, tc.respUser, testOTPAuthURI)}
			addr := admin.start(t)

			out, err := runJit(t, "enroll", tc.user, "--address", addr)
			if err != nil {
				t.Fatalf("enroll: %v\n%s", err, out)
			}

			if len(admin.requests) != 1 {
				t.Fatalf("admin API got %d requests, want 1", len(admin.requests))
			}
			req := admin.requests[0]
			if req.method != http.MethodPost {
				t.Errorf("method %s, want POST", req.method)
			}
			if req.path != tc.wantPath || req.escapedPath != tc.wantEscaped {
				t.Errorf("path %q (escaped %q), want %q (escaped %q)", req.path, req.escapedPath, tc.wantPath, tc.wantEscaped)
			}
			if req.origin != "http://"+addr {
				t.Errorf("Origin %q, want http://%s (as caddycmd.AdminAPIRequest sets it)", req.origin, addr)
			}

			if !strings.Contains(out, "\n"+testOTPAuthURI+"\n") {
				t.Errorf("output does not hold the URI on a line of its own:\n%s", out)
			}
			if !strings.Contains(out, "Enrolled "+tc.user+".") {
				t.Errorf("output does not name the user %q:\n%s", tc.user, out)
			}
			lines := qrLines(out)
			if len(lines) == 0 {
				t.Fatalf("no QR code in the output:\n%s", out)
			}
			checkTerminalQR(t, lines, testOTPAuthURI)
		})
	}
}

func TestEnrollCommandPNG(t *testing.T) {
	admin := &fakeAdmin{status: http.StatusOK, contentType: "application/json", body: enrollmentJSON(t, "alice", testOTPAuthURI)}
	addr := admin.start(t)
	path := filepath.Join(t.TempDir(), "alice.png")

	out, err := runJit(t, "enroll", "alice", "--address", addr, "--png", path)
	if err != nil {
		t.Fatalf("enroll: %v\n%s", err, out)
	}
	checkPNGQR(t, path, testOTPAuthURI)
	if !strings.Contains(out, testOTPAuthURI) || !strings.Contains(out, path) {
		t.Errorf("output does not name the URI and the file:\n%s", out)
	}
	if len(qrLines(out)) != 0 {
		t.Errorf("output holds a terminal QR code despite --png:\n%s", out)
	}
}

func TestEnrollCommandPNGFailure(t *testing.T) {
	admin := &fakeAdmin{status: http.StatusOK, contentType: "application/json", body: enrollmentJSON(t, "alice", testOTPAuthURI)}
	addr := admin.start(t)
	path := filepath.Join(t.TempDir(), "missing", "alice.png")

	out, err := runJit(t, "enroll", "alice", "--address", addr, "--png", path)
	if err == nil {
		t.Fatalf("enroll succeeded writing to a missing directory:\n%s", out)
	}
	for _, want := range []string{"alice is enrolled", path, "enter the URI printed above"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "secret=") {
		t.Errorf("error (which gets logged) holds the secret: %q", err)
	}
	if !strings.Contains(out, testOTPAuthURI) {
		t.Errorf("the URI was not printed, so the enrollment is lost:\n%s", out)
	}
}

func TestEnrollCommandConfigFlag(t *testing.T) {
	admin := &fakeAdmin{status: http.StatusOK, contentType: "application/json", body: enrollmentJSON(t, "alice", testOTPAuthURI)}
	addr := admin.start(t)
	config := filepath.Join(t.TempDir(), "caddy.json")
	if err := os.WriteFile(config, []byte(`{"admin":{"listen":"`+addr+`"}}`), 0o600); err != nil {
		t.Fatal(err)
	}

	out, err := runJit(t, "enroll", "alice", "--config", config)
	if err != nil {
		t.Fatalf("enroll: %v\n%s", err, out)
	}
	if len(admin.requests) != 1 {
		t.Fatalf("the admin address in --config was not used: %d requests", len(admin.requests))
	}
}

func TestEnrollCommandErrors(t *testing.T) {
	tests := []struct {
		name        string
		status      int
		contentType string
		body        string
		want        []string
		notWant     []string
	}{
		{
			name: "jit not configured", status: http.StatusNotFound, contentType: "application/json",
			body:    `{"error":"caddy-jit is not configured: the running config has no jit app (global ` + "`jit`" + ` option)"}` + "\n",
			want:    []string{`enrolling "alice"`, "HTTP 404", "caddy-jit is not configured: the running config has no jit app"},
			notWant: []string{`{"error"`},
		},
		{
			name: "bad user name", status: http.StatusBadRequest, contentType: "application/json",
			body:    `{"error":"the user name \"alice\" holds a slash or a control character"}`,
			want:    []string{"HTTP 400", `the user name "alice" holds a slash`},
			notWant: []string{`{"error"`},
		},
		{
			name: "storage failure", status: http.StatusServiceUnavailable, contentType: "application/json",
			body: `{"error":"enrolling alice: storage is read-only"}`,
			want: []string{"HTTP 503", "enrolling alice: storage is read-only"},
		},
		{
			name: "no jit endpoint", status: http.StatusNotFound, contentType: "text/plain",
			body: "404 page not found\n",
			want: []string{"HTTP 404", "404 page not found", "built with caddy-jit"},
		},
		{
			name: "plain text error", status: http.StatusForbidden, contentType: "text/plain",
			body: "host not allowed",
			want: []string{"HTTP 403", "host not allowed"},
		},
		{
			name: "not JSON", status: http.StatusOK, contentType: "text/html",
			body: "<html>hello</html>",
			want: []string{"something other than JSON", "caddy with caddy-jit"},
		},
		{
			name: "JSON without URI", status: http.StatusOK, contentType: "application/json",
			body: `{"user":"alice"}`,
			want: []string{"without an otpauth:// URI"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			admin := &fakeAdmin{status: tc.status, contentType: tc.contentType, body: tc.body}
			addr := admin.start(t)
			out, err := runJit(t, "enroll", "alice", "--address", addr)
			if err == nil {
				t.Fatalf("enroll succeeded:\n%s", out)
			}
			msg := err.Error()
			for _, want := range append(tc.want, addr) {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q does not contain %q", msg, want)
				}
			}
			for _, notWant := range tc.notWant {
				if strings.Contains(msg, notWant) {
					t.Errorf("error %q contains %q", msg, notWant)
				}
			}
			if out != "" {
				t.Errorf("printed something despite the error:\n%s", out)
			}
		})
	}
}

func TestEnrollCommandUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	_, err = runJit(t, "enroll", "alice", "--address", addr)
	if err == nil {
		t.Fatal("enroll succeeded against a closed port")
	}
	for _, want := range []string{"the admin API at " + addr + " is not reachable", "is caddy running?", "--address"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
}

func TestEnrollCommandArgs(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no user", []string{"enroll"}, "want exactly one user name, got 0"},
		{"two users", []string{"enroll", "alice", "bob"}, "want exactly one user name, got 2"},
		{"empty user", []string{"enroll", "", "--address", "127.0.0.1:1"}, "no user name"},
		{"unknown flag", []string{"enroll", "alice", "--qr"}, "unknown flag"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := runJit(t, tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestEnrollCommandRegistered(t *testing.T) {
	reg, ok := caddycmd.Commands()["jit"]
	if !ok {
		t.Fatal("`caddy jit` is not registered")
	}
	if reg.CobraFunc == nil || reg.Short == "" || reg.Long == "" {
		t.Fatalf("registration lacks CobraFunc, Short or Long: %+v", reg)
	}
	cmd := &cobra.Command{Use: "jit"}
	reg.CobraFunc(cmd)
	var names []string
	// The subcommands that talk to a running Caddy locate it as Caddy's own commands do;
	// the audit log tools read files (and a config, for its storage and roles).
	adminCommands := []string{"enroll", "sessions", "revoke", "unlock", "rotate-keys"}
	for _, sub := range cmd.Commands() {
		names = append(names, sub.Name())
		if sub.Short == "" || sub.Long == "" || (sub.RunE == nil && !sub.HasSubCommands()) {
			t.Errorf("subcommand %s lacks Short, Long, or RunE and subcommands", sub.Name())
		}
		if !slices.Contains(adminCommands, sub.Name()) {
			continue
		}
		for _, flag := range []string{"address", "config", "adapter"} {
			if sub.Flags().Lookup(flag) == nil {
				t.Errorf("subcommand %s lacks --%s", sub.Name(), flag)
			}
		}
	}
	for _, want := range append(adminCommands, "audit", "report") {
		if !slices.Contains(names, want) {
			t.Errorf("subcommands %v lack %s", names, want)
		}
	}
	if !slices.Contains(names, "enroll") {
		t.Fatalf("subcommands %v lack enroll", names)
	}
	enroll, _, err := cmd.Find([]string{"enroll"})
	if err != nil {
		t.Fatal(err)
	}
	if enroll.Flags().Lookup("png") == nil {
		t.Errorf("enroll lacks --png")
	}
}

func TestEnrollAddJitSubcommand(t *testing.T) {
	saved := slices.Clone(jitSubcommands)
	t.Cleanup(func() { jitSubcommands = saved })

	ran := false
	addJitSubcommand(func() *cobra.Command {
		return &cobra.Command{Use: "probe", Short: "test", RunE: func(*cobra.Command, []string) error { ran = true; return nil }}
	})
	if _, err := runJit(t, "probe"); err != nil {
		t.Fatal(err)
	}
	if !ran {
		t.Error("the added subcommand did not run")
	}
	// enroll is still there
	if _, err := runJit(t, "enroll"); err == nil || !strings.Contains(err.Error(), "want exactly one user name") {
		t.Errorf("enroll is gone after adding a subcommand: %v", err)
	}
}
