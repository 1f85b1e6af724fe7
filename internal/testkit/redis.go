package testkit

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Redis is a redis-server the test started: on 127.0.0.1 at Addr, with nothing saved
// to disk, stopped when the test ends.
type Redis struct {
	Addr string
	t    testing.TB
	bin  string
	dir  string
	conf []string
	cmd  *exec.Cmd
}

// StartRedis starts Debian's redis-server with extra config lines (e.g. "requirepass
// s3cret"). Without redis-server the test is skipped, except under CI (CI=true), where
// it fails: .ci/run installs it.
func StartRedis(t testing.TB, extra ...string) *Redis {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("redis-server is not installed (apt-get install redis-server); .ci/run installs it")
		}
		t.Skip("no redis-server (apt-get install redis-server); .ci/run installs it")
	}
	port := FreePort(t)
	dir := t.TempDir()
	conf := []string{"port " + strconv.Itoa(port), "bind 127.0.0.1", `save ""`, "appendonly no", "daemonize no",
		"dir " + dir, "loglevel warning"}
	r := &Redis{Addr: "127.0.0.1:" + strconv.Itoa(port), t: t, bin: bin, dir: dir, conf: append(conf, extra...)}
	t.Cleanup(r.Stop)
	r.Start()
	return r
}

// Start starts the server again after Stop, on the same address, empty: a Redis that
// restarted without its data.
func (r *Redis) Start() {
	r.t.Helper()
	cmd := exec.Command(r.bin, "-")
	cmd.Stdin = strings.NewReader(strings.Join(r.conf, "\n") + "\n")
	out, err := cmd.StdoutPipe()
	if err != nil {
		r.t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		r.t.Fatalf("starting redis-server: %v", err)
	}
	log := &strings.Builder{}
	var mu sync.Mutex
	go func() {
		s := bufio.NewScanner(out)
		for s.Scan() {
			mu.Lock()
			log.WriteString(s.Text() + "\n")
			mu.Unlock()
		}
	}()
	r.cmd = cmd
	for deadline := time.Now().Add(10 * time.Second); ; {
		if c, err := net.DialTimeout("tcp", r.Addr, 200*time.Millisecond); err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			mu.Lock()
			defer mu.Unlock()
			r.t.Fatalf("redis-server did not listen on %s within 10s:\n%s", r.Addr, log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Wipe stops the server, deletes whatever it persisted (with "appendonly yes"), and
// starts it again: a Redis that lost its data.
func (r *Redis) Wipe() {
	r.t.Helper()
	r.Stop()
	entries, err := os.ReadDir(r.dir)
	if err != nil {
		r.t.Fatal(err)
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(r.dir, e.Name())); err != nil {
			r.t.Fatal(err)
		}
	}
	r.Start()
}

// Stop kills the server (SIGKILL). What it keeps is what its config persists:
// nothing by default; with "appendonly yes" and "appendfsync always", every write.
func (r *Redis) Stop() {
	if r.cmd != nil && r.cmd.Process != nil {
		_ = r.cmd.Process.Kill()
		_ = r.cmd.Wait()
		r.cmd = nil
	}
}

// FreePort is a port on 127.0.0.1 that nothing listens on now, below the kernel's range for
// outgoing connections (from 32768), so that no client's socket takes it before the
// server binds, and below the integration harness's range (20000 to 32000).
func FreePort(t testing.TB) int {
	t.Helper()
	for i := 0; i < 200; i++ {
		port := 10000 + int(time.Now().UnixNano()%9000) + i
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			l.Close()
			return port
		}
	}
	t.Fatal("no free port for redis-server")
	return 0
}

// Sentinel is a redis-sentinel the test started, watching one primary under the name
// Master, with a quorum of one and a failover after 1 s without an answer.
type Sentinel struct {
	Addr, Master string
	cmd          *exec.Cmd
}

// StartSentinel starts Debian's redis-sentinel watching primary as master. Skipped or
// failed as StartRedis is without the binary.
func StartSentinel(t testing.TB, master string, primary *Redis) *Sentinel {
	t.Helper()
	bin, err := exec.LookPath("redis-sentinel")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("redis-sentinel is not installed (apt-get install redis-sentinel); .ci/run installs it")
		}
		t.Skip("no redis-sentinel (apt-get install redis-sentinel); .ci/run installs it")
	}
	port := FreePort(t)
	host, primaryPort, _ := net.SplitHostPort(primary.Addr)
	dir := t.TempDir()
	// Sentinel rewrites its config file as it learns; it must be writable.
	conf := filepath.Join(dir, "sentinel.conf")
	lines := []string{"port " + strconv.Itoa(port), "bind 127.0.0.1", "daemonize no", "dir " + dir, "loglevel warning",
		"sentinel monitor " + master + " " + host + " " + primaryPort + " 1",
		"sentinel down-after-milliseconds " + master + " 1000",
		"sentinel failover-timeout " + master + " 5000",
		"sentinel parallel-syncs " + master + " 1"}
	if err := os.WriteFile(conf, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, conf)
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting redis-sentinel: %v", err)
	}
	s := &Sentinel{Addr: "127.0.0.1:" + strconv.Itoa(port), Master: master, cmd: cmd}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	for deadline := time.Now().Add(10 * time.Second); ; {
		if c, err := net.DialTimeout("tcp", s.Addr, 200*time.Millisecond); err == nil {
			c.Close()
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("redis-sentinel did not listen on %s within 10s", s.Addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Freeze stops the server's process (SIGSTOP): it keeps its connections and answers
// nothing, as a server that hangs. Thaw lets it go on.
func (r *Redis) Freeze() { r.signal(syscall.SIGSTOP) }

// Thaw undoes Freeze.
func (r *Redis) Thaw() { r.signal(syscall.SIGCONT) }

func (r *Redis) signal(sig os.Signal) {
	r.t.Helper()
	if r.cmd == nil || r.cmd.Process == nil {
		r.t.Fatal("redis-server is not running")
	}
	if err := r.cmd.Process.Signal(sig); err != nil {
		r.t.Fatal(err)
	}
}
