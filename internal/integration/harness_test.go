package integration

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

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

// reload has the running Caddy load the Caddyfile again (reloadCommand), and waits
// until the new config serves and the old one's listeners are closed.
func (e *env) reload() {
	t := e.t
	t.Helper()
	before := strings.Count(e.logs.String(), `"load complete"`)
	stoppedBefore := strings.Count(e.logs.String(), `"stopped previous server"`)
	out, err := e.reloadCommand().CombinedOutput()
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

// reloadCommand is `caddy reload --force` of the env's Caddyfile: without --force Caddy
// skips a load whose config is unchanged, and no module would be re-provisioned.
func (e *env) reloadCommand() *exec.Cmd {
	cmd := exec.Command(e.bin, "reload", "--config", e.cfgFile, "--adapter", "caddyfile",
		"--address", fmt.Sprintf("localhost:%d", e.data.AdminPort), "--force")
	cmd.Dir = e.dir
	cmd.Env = append(os.Environ(), "HOME="+e.dir)
	return cmd
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
