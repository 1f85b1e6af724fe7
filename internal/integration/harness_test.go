package integration

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/base32"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"text/template"
	"time"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"
	"golang.org/x/crypto/bcrypt"
	"golang.org/x/net/html"
	"golang.org/x/net/websocket"

	"github.com/caddy-jit/caddy-jit/internal/adminapi"
	"github.com/caddy-jit/caddy-jit/internal/testkit"
)

// The role most tests use, and the page the tests ask for.
const (
	roleAdmin  = "console-admin"
	roleViewer = "viewer"
	adminURI   = "/admin/page?x=1"
	cookieName = "jit_session"
)

// caddyBin is the binary TestMain builds from ./cmd/caddy.
var caddyBin string

// moduleRoot is the module's directory and binDir the temporary directory that holds
// caddyBin, for tests that build another binary (see faultsBinary).
var moduleRoot, binDir string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	if os.Getenv("GOTOOLCHAIN") == "" {
		os.Setenv("GOTOOLCHAIN", "go1.27.3")
	}
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil || strings.TrimSpace(string(gomod)) == "" || strings.TrimSpace(string(gomod)) == os.DevNull {
		fmt.Fprintf(os.Stderr, "integration: cannot find the module root (go env GOMOD: %q): %v\n", gomod, err)
		return 1
	}
	root := filepath.Dir(strings.TrimSpace(string(gomod)))
	dir, err := os.MkdirTemp("", "caddy-jit-integration-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	moduleRoot, binDir = root, dir
	caddyBin = filepath.Join(dir, "caddy")
	build := exec.Command("go", "build", "-o", caddyBin, "./cmd/caddy")
	build.Dir = root
	build.Env = os.Environ()
	start := time.Now()
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "integration: building ./cmd/caddy in %s failed: %v\n%s", root, err, out)
		return 1
	}
	fmt.Fprintf(os.Stderr, "integration: built %s in %s\n", caddyBin, time.Since(start).Round(time.Millisecond))
	return m.Run()
}

// ---------------------------------------------------------------------------
// Users and their basic_auth hashes.

// allUsers are the basic_auth users of every test site; each one's password is
// password(name). Which of them is eligible for what is set in jitOptions.
var allUsers = []string{
	"alice", "bob", "carol", "dave", "erin", "frank", "locky",
	"r1", "r2", "r3", "r4", "r5", "r6",
	// p1…p8 are eligible for nothing unless a test says so (envOptions.ExtraEligible):
	// a pool of users for tests that need many activations at once, since each user's
	// TOTP codes are single-use per 30 s time step.
	"p1", "p2", "p3", "p4", "p5", "p6", "p7", "p8",
}

func password(user string) string { return user + "-secret-pw" }

type userHash struct{ Name, Hash string }

var (
	hashesOnce sync.Once
	hashes     []userHash
	hashesErr  error
)

// userHashes computes bcrypt hashes of cost 4 once per process.
func userHashes(t *testing.T) []userHash {
	t.Helper()
	hashesOnce.Do(func() {
		for _, u := range allUsers {
			h, err := bcrypt.GenerateFromPassword([]byte(password(u)), 4)
			if err != nil {
				hashesErr = err
				return
			}
			hashes = append(hashes, userHash{Name: u, Hash: string(h)})
		}
	})
	if hashesErr != nil {
		t.Fatalf("bcrypt: %v", hashesErr)
	}
	return hashes
}

// ---------------------------------------------------------------------------
// Caddyfile.

// standardRoles is the jit global option's body that most tests use. Extra lines
// (e.g. eligibility windows) go into console-admin via envOptions.ExtraEligible.
// carol is eligible for viewer only: the standard site (`jit console-admin`) forbids
// her, yet she can open a viewer activation form and so hold a valid CSRF token.
const standardRoles = `
		role console-admin {
			max_duration 1h
			default_duration 15m
			justification required 10
			eligible alice bob frank locky r1 r2 r3 r4 r5 r6
{{- range .ExtraEligible}}
			eligible {{.}}
{{- end}}
		}
		role viewer {
			max_duration 1h
			justification optional
			eligible alice carol
		}`

var caddyfileTemplate = template.Must(template.New("Caddyfile").Parse(`{
	admin localhost:{{.AdminPort}}
	persist_config off
	storage file_system "{{.StorageDir}}"
{{- if .Global}}
{{.Global}}
{{- end}}
	jit {
		issuer "caddy-jit integration"
{{- if .JitOptions}}
{{.JitOptions}}
{{- end}}
{{- if .Batched}}
		audit {
{{- if .AuditOutput}}
			{{.AuditOutput}}
{{- else}}
			output file "{{.AuditLog}}"
{{- end}}
{{- if .AuditSettings}}
{{.AuditSettings}}
{{- end}}
		}
{{- end}}
` + standardRoles + `
	}
{{- if not .Batched}}
	log audit {
{{- if .AuditOutput}}
		{{.AuditOutput}}
{{- else}}
		output file "{{.AuditLog}}"
{{- end}}
		include http.handlers.jit.audit
		format json
	}
{{- end}}
}
{{range .Sites}}
{{if .TLS}}https{{else}}http{{end}}://{{if .Host}}{{.Host}}{{else}}localhost{{end}}:{{.Port}} {
{{- if .Bind}}
	bind {{.Bind}}
{{- end}}
{{- if .TLS}}
	tls internal
{{- end}}
{{- if .Auth}}
	basic_auth {
{{- range $.Users}}
		{{.Name}} {{.Hash}}
{{- end}}
	}
{{- end}}
{{.Jit}}
	reverse_proxy {{if .Upstream}}{{.Upstream}}{{else}}{{$.Upstream}}{{end}}{{if .Proxy}} {
{{.Proxy}}
	}{{end}}
}
{{end}}
`))

// siteSpec is one site block: a port of its own, basic_auth or not, and its jit lines.
type siteSpec struct {
	Port int
	Auth bool
	// Jit is the site's jit directive lines (with matchers, if any).
	Jit string
	// TLS serves the site over HTTPS (https://localhost:PORT) with `tls internal`;
	// the global options then need `local_certs` and `skip_install_trust`.
	TLS bool
	// Proxy is the body of the reverse_proxy block (e.g. header_up lines), if any.
	Proxy string
	// Host replaces localhost in the site address (http://HOST:PORT): the site then
	// matches requests whose Host header names HOST, with or without a port. The
	// tests reach it at 127.0.0.1:PORT and send Host: HOST (see browser.host).
	Host string
	// Bind, if set, is the site's bind address.
	Bind string
	// Upstream, if set, is where the site's reverse_proxy goes instead of the env's
	// own upstream (e.g. a real application the test started).
	Upstream string
}

type caddyfileData struct {
	AdminPort     int
	StorageDir    string
	AuditLog      string
	Global        string
	JitOptions    string
	ExtraEligible []string
	Users         []userHash
	Sites         []siteSpec
	Upstream      string
	// AuditOutput replaces the audit log's output line (e.g. to roll it, or to send it
	// somewhere that fails).
	AuditOutput string
	// Batched writes the audit log through the jit option's batched output
	// (`audit { output … }`) instead of a Caddy `log` block; AuditSettings are the
	// audit block's other lines.
	Batched       bool
	AuditSettings string
}

// envOptions change the standard environment.
type envOptions struct {
	// ExtraEligible are extra `eligible …` lines for console-admin.
	ExtraEligible []string
	// Global holds extra global option lines (e.g. local_certs).
	Global string
	// JitOptions holds extra lines for the jit global option (e.g. groups).
	JitOptions string
	// Sites replaces the single standard site (basic_auth, `jit console-admin`).
	// Ports left 0 are chosen freely.
	Sites []siteSpec
	// StorageDir, if set, is the storage directory instead of one of the env's own:
	// two envs given the same one are a cluster.
	StorageDir string
	// Stopped leaves Caddy unstarted: start it with env.start or startTogether.
	Stopped bool
	// Binary, if set, is the Caddy binary to run instead of caddyBin (e.g. the
	// jitfaults build of faultsBinary).
	Binary string
	// AuditOutput replaces the audit log's `output file …` line.
	AuditOutput string
	// Batched and AuditSettings: see caddyfileData.
	Batched       bool
	AuditSettings string
}

// ---------------------------------------------------------------------------
// The environment: one Caddy, its files, one upstream.

type env struct {
	t       *testing.T
	bin     string
	data    caddyfileData
	dir     string
	cfgFile string
	up      *upstream
	logs    *syncBuffer
	proc    *caddyProc
	starts  int
	// browsers are the clients made for this env: a reload or restart drops their idle
	// connections, as a browser retries on a kept-alive connection the server closed.
	browsers []*browser
	// firstPruneSeen is the start (of starts) whose first prune startAfterFirstPrune
	// saw over.
	firstPruneSeen int
}

type caddyProc struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// newEnv writes the Caddyfile and starts Caddy; everything is stopped and removed when
// the test ends, and Caddy's output goes to the test log if the test failed.
func newEnv(t *testing.T, opts envOptions) *env {
	t.Helper()
	e := &env{t: t, dir: t.TempDir(), logs: &syncBuffer{}, bin: opts.Binary}
	if e.bin == "" {
		e.bin = caddyBin
	}
	e.up = newUpstream(t)
	sites := opts.Sites
	if len(sites) == 0 {
		sites = []siteSpec{{Auth: true, Jit: "\tjit " + roleAdmin}}
	}
	for i := range sites {
		if sites[i].Port == 0 {
			sites[i].Port = freePort(t)
		}
	}
	storageDir := opts.StorageDir
	if storageDir == "" {
		storageDir = filepath.Join(e.dir, "storage")
	}
	e.data = caddyfileData{
		AdminPort:     freePort(t),
		StorageDir:    storageDir,
		AuditLog:      filepath.Join(e.dir, "audit.log"),
		Global:        opts.Global,
		JitOptions:    opts.JitOptions,
		ExtraEligible: opts.ExtraEligible,
		Users:         userHashes(t),
		Sites:         sites,
		Upstream:      e.up.addr(),
		AuditOutput:   opts.AuditOutput,
		Batched:       opts.Batched,
		AuditSettings: opts.AuditSettings,
	}
	e.cfgFile = filepath.Join(e.dir, "Caddyfile")
	e.writeCaddyfile()
	t.Cleanup(func() {
		if e.proc != nil {
			e.stop()
		}
		if t.Failed() {
			cfg, _ := os.ReadFile(e.cfgFile)
			t.Logf("Caddyfile (admin port %d):\n%s", e.data.AdminPort, cfg)
			t.Logf("Caddy output (last 120 lines):\n%s", e.logTail(120))
		}
	})
	if !opts.Stopped {
		e.start()
	}
	return e
}

// writeCaddyfile renders e.data into the Caddyfile.
func (e *env) writeCaddyfile() {
	e.t.Helper()
	var buf bytes.Buffer
	if err := caddyfileTemplate.Execute(&buf, e.data); err != nil {
		e.t.Fatalf("rendering the Caddyfile: %v", err)
	}
	if err := os.WriteFile(e.cfgFile, buf.Bytes(), 0o600); err != nil {
		e.t.Fatal(err)
	}
}

// reconfigure changes the Caddyfile (through its data) and reloads the running Caddy
// with it.
func (e *env) reconfigure(change func(*caddyfileData)) {
	e.t.Helper()
	change(&e.data)
	e.writeCaddyfile()
	e.reload()
}

// site returns the base URL of site i, e.g. http://localhost:PORT; a site with a Host
// of its own is reached at http://127.0.0.1:PORT (the browser sends its Host header).
func (e *env) site(i int) string {
	scheme := "http"
	if e.data.Sites[i].TLS {
		scheme = "https"
	}
	host := "localhost"
	if e.data.Sites[i].Host != "" {
		host = "127.0.0.1"
	}
	return fmt.Sprintf("%s://%s:%d", scheme, host, e.data.Sites[i].Port)
}

func (e *env) adminURL(path string) string {
	return fmt.Sprintf("http://localhost:%d%s", e.data.AdminPort, path)
}

// start runs `caddy run` and waits until the admin API serves the config and every
// site port accepts connections.
func (e *env) start() {
	e.t.Helper()
	e.launch()
	e.awaitReady()
}

// startTogether launches every env's Caddy at once, then waits until all are ready.
func startTogether(envs ...*env) {
	for _, e := range envs {
		e.t.Helper()
		e.launch()
	}
	for _, e := range envs {
		e.awaitReady()
	}
}

// launch runs `caddy run` without waiting for it.
func (e *env) launch() {
	t := e.t
	t.Helper()
	if e.proc != nil {
		t.Fatal("test bug: Caddy already running")
	}
	e.starts++
	fmt.Fprintf(e.logs, "===== caddy run #%d =====\n", e.starts)
	cmd := exec.Command(e.bin, "run", "--config", e.cfgFile, "--adapter", "caddyfile")
	cmd.Dir = e.dir
	cmd.Stdout = e.logs
	cmd.Stderr = e.logs
	cmd.Env = append(os.Environ(),
		"HOME="+e.dir,
		"XDG_CONFIG_HOME="+filepath.Join(e.dir, "xdg-config"),
		"XDG_DATA_HOME="+filepath.Join(e.dir, "xdg-data"),
	)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting caddy: %v", err)
	}
	p := &caddyProc{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	e.proc = p
}

// awaitReady waits until the launched Caddy serves its config and every site port
// accepts connections.
func (e *env) awaitReady() {
	t := e.t
	t.Helper()
	p := e.proc
	if p == nil {
		t.Fatal("test bug: awaitReady without launch")
	}
	deadline := time.Now().Add(30 * time.Second)
	client := &http.Client{Timeout: time.Second}
	for {
		select {
		case <-p.done:
			e.proc = nil
			t.Fatalf("caddy exited during start-up (%v); output:\n%s", p.err, e.logTail(60))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("caddy did not become ready within 30s; output:\n%s", e.logTail(60))
		}
		if e.ready(client) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (e *env) ready(client *http.Client) bool {
	resp, err := client.Get(e.adminURL("/config/"))
	if err != nil {
		return false
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || strings.TrimSpace(string(body)) == "null" {
		return false
	}
	for _, s := range e.data.Sites {
		addr := fmt.Sprintf("127.0.0.1:%d", s.Port)
		if s.TLS {
			// The port may accept connections before the certificate is ready.
			c, err := tls.DialWithDialer(&net.Dialer{Timeout: time.Second}, "tcp", addr,
				&tls.Config{ServerName: "localhost", InsecureSkipVerify: true})
			if err != nil {
				return false
			}
			c.Close()
			continue
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return false
		}
		c.Close()
	}
	return true
}

// stop sends SIGINT and waits for Caddy to exit (killing it after 15 s).
func (e *env) stop() {
	t := e.t
	t.Helper()
	p := e.proc
	if p == nil {
		return
	}
	_ = p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		t.Errorf("caddy did not exit within 15s of SIGINT; killing it")
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	e.proc = nil
}

// restart stops Caddy and starts it again on the same Caddyfile, storage and ports.
func (e *env) restart() {
	e.t.Helper()
	e.stop()
	e.start()
	e.dropIdleConnections()
}

// reload runs `caddy reload --force` with the same Caddyfile: without --force Caddy
// skips a load whose config is unchanged, and no module would be re-provisioned.
func (e *env) reload() {
	t := e.t
	t.Helper()
	before := strings.Count(e.logs.String(), `"load complete"`)
	stoppedBefore := strings.Count(e.logs.String(), `"stopped previous server"`)
	cmd := exec.Command(e.bin, "reload", "--config", e.cfgFile, "--adapter", "caddyfile",
		"--address", fmt.Sprintf("localhost:%d", e.data.AdminPort), "--force")
	cmd.Dir = e.dir
	cmd.Env = append(os.Environ(), "HOME="+e.dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("caddy reload: %v\n%s", err, out)
	}
	// The running Caddy logs "load complete" once the new config runs, and "stopped
	// previous server" once the old one's listeners are closed: until then a new
	// connection may land on a listener that is closing, and be reset.
	deadline := time.Now().Add(5 * time.Second)
	for strings.Count(e.logs.String(), `"load complete"`) <= before ||
		strings.Count(e.logs.String(), `"stopped previous server"`) <= stoppedBefore {
		if time.Now().After(deadline) {
			t.Fatalf("caddy reload returned, but the running Caddy never logged \"load complete\"; reload output:\n%s", out)
		}
		time.Sleep(20 * time.Millisecond)
	}
	e.dropIdleConnections()
}

func (e *env) logTail(n int) string {
	lines := strings.Split(strings.TrimRight(e.logs.String(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// freePort finds a free TCP port for a Caddy process to bind later. It picks from
// below the kernel's ephemeral range (32768–60999 on Linux), so that no socket bound
// meanwhile with port 0 — an upstream, a test server of another package running at the
// same time — can be handed the number before Caddy binds it; and it never gives the
// same number twice in one run.
func freePort(t *testing.T) int {
	t.Helper()
	portsMu.Lock()
	defer portsMu.Unlock()
	for range 1000 {
		port := 20000 + rand.IntN(12000)
		if portsGiven[port] {
			continue
		}
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			continue
		}
		l.Close()
		portsGiven[port] = true
		return port
	}
	t.Fatal("no free port between 20000 and 32000")
	return 0
}

var (
	portsMu    sync.Mutex
	portsGiven = map[int]bool{}
)

// syncBuffer is a bytes.Buffer safe for the process's writers and the test's readers.
type syncBuffer = testkit.SyncBuffer

// ---------------------------------------------------------------------------
// The upstream: records every request, answers 200 with a JSON echo; a WebSocket
// echo at wsPath and a slow stream at streamPath.

const (
	// wsPath is the upstream's WebSocket echo.
	wsPath = "/ws/echo"
	// streamPath answers with a line every streamEvery for streamLines lines, flushing each.
	streamPath  = "/stream"
	streamEvery = 200 * time.Millisecond
	streamLines = 150
)

// connEnd is the end of a WebSocket or stream as the upstream saw it.
type connEnd struct {
	Path  string
	At    time.Time
	Lines int // lines the stream wrote; 0 for a WebSocket
}

type upstreamRequest struct {
	Method   string      `json:"method"`
	Path     string      `json:"path"`
	RawQuery string      `json:"raw_query"`
	Host     string      `json:"host"`
	Header   http.Header `json:"header"`
	// Body is the request body as received (the first MiB), for mutating requests.
	Body string `json:"body,omitempty"`
}

type upstream struct {
	srv  *httptest.Server
	mu   sync.Mutex
	reqs []upstreamRequest
	// ends learns of every WebSocket or stream that ended.
	ends chan connEnd
	// quit ends the streams when the test is over.
	quit chan struct{}
}

func newUpstream(t *testing.T) *upstream {
	u := &upstream{ends: make(chan connEnd, 64), quit: make(chan struct{})}
	echo := websocket.Server{
		// Origin checks are the proxied application's business, not this test's.
		Handshake: func(*websocket.Config, *http.Request) error { return nil },
		Handler: func(c *websocket.Conn) {
			_, _ = io.Copy(c, c)
			u.ended(connEnd{Path: wsPath, At: time.Now()})
		},
	}
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := upstreamRequest{Method: r.Method, Path: r.URL.Path, RawQuery: r.URL.RawQuery, Host: r.Host, Header: r.Header.Clone()}
		if r.Method != http.MethodGet && r.Method != http.MethodHead && r.Body != nil {
			body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
			rec.Body = string(body)
		}
		u.mu.Lock()
		u.reqs = append(u.reqs, rec)
		u.mu.Unlock()
		switch r.URL.Path {
		case wsPath:
			echo.ServeHTTP(w, r)
			return
		case streamPath:
			u.stream(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Upstream", "integration")
		_ = json.NewEncoder(w).Encode(rec)
	}))
	t.Cleanup(u.srv.Close)
	t.Cleanup(func() { close(u.quit) }) // runs first: Close waits for the streams
	return u
}

// stream writes a numbered line every streamEvery, flushing each, until it has written
// streamLines or the proxy went away.
func (u *upstream) stream(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Upstream", "integration")
	rc := http.NewResponseController(w)
	tick := time.NewTicker(streamEvery)
	defer tick.Stop()
	n := 0
	defer func() { u.ended(connEnd{Path: streamPath, At: time.Now(), Lines: n}) }()
	for n < streamLines {
		if _, err := fmt.Fprintf(w, "line %d\n", n); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
		n++
		select {
		case <-r.Context().Done():
			return
		case <-u.quit:
			return
		case <-tick.C:
		}
	}
}

func (u *upstream) ended(c connEnd) {
	select {
	case u.ends <- c:
	default:
	}
}

// waitEnd waits until the upstream saw a WebSocket or stream at path end; ok is false
// if none did within timeout.
func (u *upstream) waitEnd(path string, timeout time.Duration) (connEnd, bool) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		select {
		case c := <-u.ends:
			if c.Path == path {
				return c, true
			}
		case <-timer.C:
			return connEnd{}, false
		}
	}
}

func (u *upstream) addr() string { return strings.TrimPrefix(u.srv.URL, "http://") }

func (u *upstream) count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.reqs)
}

func (u *upstream) requests() []upstreamRequest {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.reqs)
}

// last returns the last request the upstream received; the test fails if none.
func (u *upstream) last(t *testing.T) upstreamRequest {
	t.Helper()
	reqs := u.requests()
	if len(reqs) == 0 {
		t.Fatal("the upstream received no request")
	}
	return reqs[len(reqs)-1]
}

// ---------------------------------------------------------------------------
// TOTP.

// totpUser is an enrolled user, with the last time step the tests used, since the
// server accepts a code only for a step later than the last accepted one.
type totpUser struct {
	name     string
	secret   string
	lastStep int64
}

// enroll enrolls a user through the admin API and returns the secret.
func (e *env) enroll(user string) *totpUser {
	t := e.t
	t.Helper()
	resp, err := http.Post(e.adminURL("/jit/enrollments/"+url.PathEscape(user)), "application/json", nil)
	if err != nil {
		t.Fatalf("enrolling %s: %v", user, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("enrolling %s: POST /jit/enrollments/%s → %d %s", user, user, resp.StatusCode, body)
	}
	var out struct {
		User       string `json:"user"`
		OTPAuthURI string `json:"otpauth_uri"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatalf("enrolling %s: answer is not JSON: %v: %s", user, err, body)
	}
	u, err := url.Parse(out.OTPAuthURI)
	if err != nil || u.Scheme != "otpauth" || u.Host != "totp" {
		t.Fatalf("enrolling %s: otpauth_uri %q is not an otpauth://totp/ URI (%v)", user, out.OTPAuthURI, err)
	}
	q := u.Query()
	secret := q.Get("secret")
	if secret == "" {
		t.Fatalf("enrolling %s: otpauth_uri %q has no secret", user, out.OTPAuthURI)
	}
	if raw, err := base64Std32(secret); err != nil || len(raw) != 20 {
		t.Errorf("enrolling %s: the secret should be 20 bytes of base32, got %d bytes (%v)", user, len(raw), err)
	}
	for k, want := range map[string]string{"digits": "6", "period": "30", "algorithm": "SHA1"} {
		if v := q.Get(k); v != "" && v != want {
			t.Errorf("enrolling %s: otpauth_uri %s=%s, want %s", user, k, v, want)
		}
	}
	if out.User != user {
		t.Errorf("enrolling %s: answer names user %q", user, out.User)
	}
	return &totpUser{name: user, secret: secret}
}

func codeAt(t *testing.T, secret string, step int64) string {
	t.Helper()
	code, err := totp.GenerateCodeCustom(secret, time.Unix(step*30, 0), totp.ValidateOpts{
		Period: 30, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1,
	})
	if err != nil {
		t.Fatalf("generating a TOTP code: %v", err)
	}
	return code
}

func currentStep() int64 { return time.Now().Unix() / 30 }

// next returns a code the server accepts now: for the current step, or for a later
// one than any used before (the server accepts up to one step ahead), waiting if
// even that was used.
func (u *totpUser) next(t *testing.T) string {
	t.Helper()
	cur := currentStep()
	step := max(cur, u.lastStep+1)
	if step > cur+1 {
		// Wait until step is at most one step ahead of the clock.
		wait := time.Until(time.Unix((step-1)*30, 0)) + 200*time.Millisecond
		t.Logf("waiting %s for a fresh TOTP step for %s", wait.Round(time.Millisecond), u.name)
		time.Sleep(wait)
	}
	u.lastStep = step
	return codeAt(t, u.secret, step)
}

// wrong returns a six-digit code that is valid for none of the steps near now.
func (u *totpUser) wrong(t *testing.T) string {
	t.Helper()
	cur := currentStep()
	near := map[string]bool{}
	for s := cur - 3; s <= cur+3; s++ {
		near[codeAt(t, u.secret, s)] = true
	}
	for n := 123456; ; n = (n + 111111) % 1000000 {
		c := fmt.Sprintf("%06d", n)
		if !near[c] {
			return c
		}
	}
}

// ---------------------------------------------------------------------------
// The browser-like client.

type browser struct {
	t      *testing.T
	e      *env
	user   string
	pass   string
	jar    *cookiejar.Jar
	client *http.Client
	// accept is the default Accept header.
	accept string
	// headers are sent with every request (before the per-request options).
	headers http.Header
	// host, if set, is the Host header of every request (for sites with a Host).
	host string
}

// browser returns a client that authenticates as user with basic auth (none when user
// is ""), keeps cookies, and does not follow redirects.
func (e *env) browser(user string) *browser {
	jar, _ := cookiejar.New(nil)
	b := &browser{t: e.t, e: e, user: user, pass: password(user), jar: jar, accept: "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8"}
	b.client = &http.Client{
		Jar:     jar,
		Timeout: 15 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
	if slices.ContainsFunc(e.data.Sites, func(s siteSpec) bool { return s.TLS }) {
		// The sites' certificates come from Caddy's internal CA, which no one trusts.
		b.client.Transport = &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
	}
	if len(e.data.Sites) > 0 {
		b.host = e.data.Sites[0].Host
	}
	e.t.Cleanup(b.client.CloseIdleConnections)
	e.browsers = append(e.browsers, b)
	return b
}

// dropIdleConnections closes the browsers' kept-alive connections to a Caddy that has
// just reloaded or restarted: the old server closes them, and a request sent on one as
// it closes would fail with EOF, which a real browser retries and Go's client need not.
func (e *env) dropIdleConnections() {
	for _, b := range e.browsers {
		b.client.CloseIdleConnections()
	}
}

// response is an answer with its body read.
type response struct {
	*http.Response
	Body string
}

func (r *response) String() string {
	body := r.Body
	if len(body) > 600 {
		body = body[:600] + "…"
	}
	return fmt.Sprintf("%s (Location %q, Set-Cookie %q) body: %s", r.Status, r.Header.Get("Location"), r.Header.Values("Set-Cookie"), body)
}

type reqOption func(*http.Request)

func withHeader(k, v string) reqOption { return func(r *http.Request) { r.Header.Set(k, v) } }

// withRawHeader sets a header under a key exactly as given (no canonicalization).
func withRawHeader(k, v string) reqOption { return func(r *http.Request) { r.Header[k] = []string{v} } }

// withCookieHeader sends a Cookie header as given, in addition to the jar's cookies.
func withCookieHeader(v string) reqOption { return func(r *http.Request) { r.Header.Set("Cookie", v) } }

// withBasicAuth authenticates as another user than the browser's.
func withBasicAuth(user string) reqOption {
	return func(r *http.Request) { r.SetBasicAuth(user, password(user)) }
}

// newRequest makes a request as the browser sends it: its host, credentials, Accept
// and headers.
func (b *browser) newRequest(method, rawURL string, body io.Reader) *http.Request {
	b.t.Helper()
	req, err := http.NewRequest(method, rawURL, body)
	if err != nil {
		b.t.Fatalf("making request %s %s: %v", method, rawURL, err)
	}
	if b.host != "" {
		req.Host = b.host
	}
	if b.user != "" {
		req.SetBasicAuth(b.user, b.pass)
	}
	req.Header.Set("Accept", b.accept)
	req.Header.Set("User-Agent", "caddy-jit-integration-test")
	for k, vs := range b.headers {
		req.Header[k] = slices.Clone(vs)
	}
	return req
}

func (b *browser) do(method, rawURL string, body io.Reader, opts ...reqOption) *response {
	b.t.Helper()
	req := b.newRequest(method, rawURL, body)
	for _, o := range opts {
		o(req)
	}
	resp, err := b.client.Do(req)
	if err != nil {
		b.t.Fatalf("%s %s: %v", method, rawURL, err)
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		// An upgraded connection (a WebSocket the gate let through): its body would
		// never end, so close it at once; the status is what counts.
		resp.Body.Close()
		return &response{Response: resp}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		b.t.Fatalf("%s %s: reading the body: %v", method, rawURL, err)
	}
	return &response{Response: resp, Body: string(data)}
}

func (b *browser) get(rawURL string, opts ...reqOption) *response {
	b.t.Helper()
	return b.do(http.MethodGet, rawURL, nil, opts...)
}

// raw sends a request without the jar's cookies: only what opts add.
func (b *browser) raw(method, rawURL string, opts ...reqOption) *response {
	b.t.Helper()
	saved := b.client.Jar
	b.client.Jar = nil
	defer func() { b.client.Jar = saved }()
	return b.do(method, rawURL, nil, opts...)
}

func (b *browser) postForm(rawURL string, form url.Values, opts ...reqOption) *response {
	b.t.Helper()
	opts = append([]reqOption{withHeader("Content-Type", "application/x-www-form-urlencoded")}, opts...)
	return b.do(http.MethodPost, rawURL, strings.NewReader(form.Encode()), opts...)
}

// cookie returns our session cookie from the jar for site, or "".
func (b *browser) cookie(site string) string {
	u, _ := url.Parse(site)
	for _, c := range b.jar.Cookies(u) {
		if c.Name == cookieName {
			return c.Value
		}
	}
	return ""
}

// setCookie puts another cookie into the jar for site.
func (b *browser) setCookie(site, name, value string) {
	u, _ := url.Parse(site)
	b.jar.SetCookies(u, []*http.Cookie{{Name: name, Value: value, Path: "/"}})
}

// activationPath is the activation page for a role returning to ret.
func activationPath(role, ret string) string {
	return "/.jit/activate?" + url.Values{"role": {role}, "return": {ret}}.Encode()
}

// activationForm opens the activation page and returns the form's fields as the page
// fills them in (hidden inputs, selected duration, …).
func (b *browser) activationForm(site, role, ret string) url.Values {
	b.t.Helper()
	r := b.get(site + activationPath(role, ret))
	if r.StatusCode != http.StatusOK {
		b.t.Fatalf("GET the activation page for %s as %s: %s", role, b.user, r)
	}
	f := formFields(b.t, r.Body, "/.jit/activate")
	if f.Get("csrf") == "" {
		b.t.Fatalf("the activation page has no csrf value: %s", r)
	}
	return f
}

// activate fills in the activation form: justification, the code, and any overrides
// (a field set to "" in overrides is removed), then posts it.
func (b *browser) activate(site, role, ret, code string, overrides url.Values, opts ...reqOption) *response {
	b.t.Helper()
	f := b.activationForm(site, role, ret)
	f.Set("justification", "integration test: checking the console")
	f.Set("code", code)
	for k, vs := range overrides {
		if len(vs) == 1 && vs[0] == "" {
			f.Del(k)
		} else {
			f[k] = vs
		}
	}
	return b.postForm(site+"/.jit/activate", f, opts...)
}

// mustActivate activates and fails the test unless it worked; it returns the token.
func (b *browser) mustActivate(site, role, ret string, u *totpUser, overrides url.Values) string {
	b.t.Helper()
	r := b.activate(site, role, ret, u.next(b.t), overrides)
	if r.StatusCode != http.StatusSeeOther {
		b.t.Fatalf("activating %s for %s: want 303, got %s", role, b.user, r)
	}
	c := setCookie(r, cookieName)
	if c == nil || c.Value == "" {
		b.t.Fatalf("activating %s for %s: no %s cookie set: %s", role, b.user, cookieName, r)
	}
	return c.Value
}

// setCookie returns the named cookie the response sets, or nil.
func setCookie(r *response, name string) *http.Cookie {
	for _, c := range r.Cookies() {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// formFields returns the input fields of the form whose action is action (all forms
// if action is ""): hidden and text inputs with their values, textareas, and selects
// with their selected option.
func formFields(t *testing.T, page, action string) url.Values {
	t.Helper()
	doc, err := html.Parse(strings.NewReader(page))
	if err != nil {
		t.Fatalf("parsing the page: %v", err)
	}
	out := url.Values{}
	var walk func(n *html.Node, inForm bool)
	walk = func(n *html.Node, inForm bool) {
		if n.Type == html.ElementNode {
			switch n.Data {
			case "form":
				inForm = action == "" || attr(n, "action") == action
			case "input":
				if inForm && attr(n, "name") != "" {
					out.Add(attr(n, "name"), attr(n, "value"))
				}
			case "textarea":
				if inForm && attr(n, "name") != "" {
					out.Add(attr(n, "name"), textOf(n))
				}
			case "select":
				if inForm && attr(n, "name") != "" {
					var selected, first string
					var haveFirst bool
					for c := n.FirstChild; c != nil; c = c.NextSibling {
						if c.Type == html.ElementNode && c.Data == "option" {
							v := attr(c, "value")
							if !haveFirst {
								first, haveFirst = v, true
							}
							if hasAttr(c, "selected") {
								selected = v
							}
						}
					}
					if selected == "" {
						selected = first
					}
					out.Add(attr(n, "name"), selected)
				}
			}
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c, inForm)
		}
	}
	walk(doc, false)
	return out
}

func attr(n *html.Node, name string) string {
	for _, a := range n.Attr {
		if a.Key == name {
			return a.Val
		}
	}
	return ""
}

func hasAttr(n *html.Node, name string) bool {
	for _, a := range n.Attr {
		if a.Key == name {
			return true
		}
	}
	return false
}

func textOf(n *html.Node) string {
	var sb strings.Builder
	for c := n.FirstChild; c != nil; c = c.NextSibling {
		if c.Type == html.TextNode {
			sb.WriteString(c.Data)
		}
	}
	return sb.String()
}

// ---------------------------------------------------------------------------
// Admin API.

// admin calls Caddy's admin API and returns the status and the body.
func (e *env) admin(method, path string) (int, string) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.adminURL(path), nil)
	if err != nil {
		e.t.Fatalf("admin API %s %s: %v", method, path, err)
	}
	resp, err := (&http.Client{Timeout: 15 * time.Second}).Do(req)
	if err != nil {
		e.t.Fatalf("admin API %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// adminOK calls the admin API, fails the test unless it answers 200, and decodes the
// JSON answer into out (if not nil).
func (e *env) adminOK(method, path string, out any) {
	e.t.Helper()
	status, body := e.admin(method, path)
	if status != http.StatusOK {
		e.t.Fatalf("admin API %s %s: want 200, got %d %s", method, path, status, body)
	}
	if out != nil {
		if err := json.Unmarshal([]byte(body), out); err != nil {
			e.t.Fatalf("admin API %s %s: the answer is not JSON: %v: %s", method, path, err, body)
		}
	}
}

// adminSession is a session as GET /jit/sessions lists it.
type adminSession struct {
	ID      string `json:"session_id"`
	User    string `json:"user"`
	Role    string `json:"role"`
	Revoked bool   `json:"revoked"`
}

// sessions lists the active sessions through the admin API (query: e.g. "?user=bob").
func (e *env) sessions(query string) []adminSession {
	e.t.Helper()
	var out struct {
		Sessions []adminSession `json:"sessions"`
	}
	e.adminOK(http.MethodGet, "/jit/sessions"+query, &out)
	return out.Sessions
}

// revoke ends a session through the admin API: DELETE /jit/sessions/{id}.
func (e *env) revoke(sid string) { e.revokeApplied(sid) }

// revokeApplied revokes the session through the admin API and returns what the answer
// says of the instances that apply it (nil where the store does not announce).
func (e *env) revokeApplied(sid string) *adminapi.Applied {
	e.t.Helper()
	var out struct {
		Sessions []adminSession    `json:"sessions"`
		Applied  *adminapi.Applied `json:"applied"`
	}
	e.adminOK(http.MethodDelete, "/jit/sessions/"+url.PathEscape(sid)+"?by=integration&reason=test", &out)
	if len(out.Sessions) != 1 || out.Sessions[0].ID != sid || !out.Sessions[0].Revoked {
		e.t.Errorf("DELETE /jit/sessions/%s answered %+v, want that one session, revoked", sid, out.Sessions)
	}
	return out.Applied
}

// ---------------------------------------------------------------------------
// Audit log.

type event map[string]any

func (ev event) str(k string) string {
	switch v := ev[k].(type) {
	case string:
		return v
	case float64:
		return fmt.Sprint(v)
	case nil:
		return ""
	default:
		b, _ := json.Marshal(v)
		return string(b)
	}
}

func (ev event) String() string {
	b, _ := json.Marshal(map[string]any(ev))
	return string(b)
}

// audit reads every event of the audit log.
func (e *env) audit() []event {
	e.t.Helper()
	f, err := os.Open(e.data.AuditLog)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		e.t.Fatalf("reading the audit log: %v", err)
	}
	defer f.Close()
	var out []event
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var ev event
		if err := json.Unmarshal(line, &ev); err != nil {
			e.t.Errorf("audit log line is not JSON: %v: %s", err, line)
			continue
		}
		if key := duplicateKey(line); key != "" {
			e.t.Errorf("audit log line has the key %q twice (a JSON reader keeps only one of them): %s", key, line)
		}
		out = append(out, ev)
	}
	return out
}

// duplicateKey returns a top-level key that a JSON object line repeats, or "".
func duplicateKey(line []byte) string {
	dec := json.NewDecoder(bytes.NewReader(line))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return ""
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return ""
		}
		key, _ := tok.(string)
		if seen[key] {
			return key
		}
		seen[key] = true
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return ""
		}
	}
	return ""
}

func (e *env) auditRaw() string {
	b, _ := os.ReadFile(e.data.AuditLog)
	return string(b)
}

// match is an event filter: every key must have the value (compared as text).
type match map[string]string

func (m match) ok(ev event) bool {
	for k, v := range m {
		if ev.str(k) != v {
			return false
		}
	}
	return true
}

func (e *env) events(m match) []event {
	var out []event
	for _, ev := range e.audit() {
		if m.ok(ev) {
			out = append(out, ev)
		}
	}
	return out
}

// waitEvent waits up to 3 s for an audit event that matches; the event may be written
// just after the response went out.
func (e *env) waitEvent(m match) event {
	e.t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		if evs := e.events(m); len(evs) > 0 {
			return evs[len(evs)-1]
		}
		if time.Now().After(deadline) {
			var sb strings.Builder
			for _, ev := range e.audit() {
				sb.WriteString(ev.String())
				sb.WriteByte('\n')
			}
			e.t.Errorf("no audit event matches %v; the audit log holds:\n%s", map[string]string(m), sb.String())
			return nil
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// ---------------------------------------------------------------------------
// Tokens.

// tokenParts decodes a compact JWS's header and payload (without verifying).
func tokenParts(t *testing.T, token string) (header, payload map[string]any) {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("the session token is not a compact JWS (%d parts): %q", len(parts), token)
	}
	for i, dst := range []*map[string]any{&header, &payload} {
		raw, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil {
			t.Fatalf("token part %d is not base64url: %v", i, err)
		}
		if err := json.Unmarshal(raw, dst); err != nil {
			t.Fatalf("token part %d is not JSON: %v: %s", i, err, raw)
		}
	}
	return header, payload
}

func b64json(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

func tokenExpiry(t *testing.T, token string) time.Time {
	t.Helper()
	_, p := tokenParts(t, token)
	exp, ok := p["exp"].(float64)
	if !ok {
		t.Fatalf("the token has no numeric exp: %v", p)
	}
	return time.Unix(int64(exp), 0)
}

func base64Std32(s string) ([]byte, error) {
	return base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(strings.ToUpper(strings.TrimRight(s, "=")))
}

// ---------------------------------------------------------------------------
// Assertions.

// wantNoUpstream fails if the upstream received more requests than before.
func wantNoUpstream(t *testing.T, u *upstream, before int, what string) {
	t.Helper()
	if n := u.count(); n != before {
		reqs := u.requests()[before:]
		t.Errorf("%s: the upstream was reached %d time(s), want never; it got: %+v", what, n-before, reqs)
	}
}

// wantActivationRedirect checks a 302 to the activation page for role, returning to ret.
func wantActivationRedirect(t *testing.T, r *response, role, ret string) {
	t.Helper()
	if r.StatusCode != http.StatusFound {
		t.Errorf("want 302 to the activation page, got %s", r)
		return
	}
	wantActivateURL(t, r.Header.Get("Location"), role, ret)
}

func wantActivateURL(t *testing.T, loc, role, ret string) {
	t.Helper()
	u, err := url.Parse(loc)
	if err != nil {
		t.Errorf("activation URL %q does not parse: %v", loc, err)
		return
	}
	if u.Scheme != "" || u.Host != "" || u.Path != "/.jit/activate" {
		t.Errorf("activation URL %q: want the relative path /.jit/activate", loc)
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		t.Errorf("activation URL %q: query does not parse: %v", loc, err)
		return
	}
	if got := q.Get("role"); got != role {
		t.Errorf("activation URL %q: role=%q, want %q", loc, got, role)
	}
	if got := q["return"]; len(got) != 1 || got[0] != ret {
		t.Errorf("activation URL %q: return=%q, want exactly [%q] (URL-escaped)", loc, got, ret)
	}
	for k := range q {
		if k != "role" && k != "return" {
			t.Errorf("activation URL %q: unexpected query parameter %q (was the return URI escaped?)", loc, k)
		}
	}
}

func wantStatus(t *testing.T, r *response, want int, what string) bool {
	t.Helper()
	if r.StatusCode != want {
		t.Errorf("%s: want %d, got %s", what, want, r)
		return false
	}
	return true
}

func wantNot2xx(t *testing.T, r *response, what string) {
	t.Helper()
	if r.StatusCode >= 200 && r.StatusCode < 300 {
		t.Errorf("%s: want a refusal, got %s", what, r)
	}
}

// sleepUntil sleeps until at (no-op if past), saying so in the test log.
func sleepUntil(t *testing.T, at time.Time, why string) {
	t.Helper()
	if d := time.Until(at); d > 0 {
		t.Logf("sleeping %s: %s", d.Round(time.Millisecond), why)
		time.Sleep(d)
	}
}
