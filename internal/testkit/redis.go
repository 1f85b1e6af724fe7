package testkit

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Redis is a redis-server the test started: on 127.0.0.1 at Addr, with nothing saved
// to disk, stopped when the test ends.
type Redis struct {
	Addr string
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
	port := freeLocalPort(t)
	conf := []string{"port " + strconv.Itoa(port), "bind 127.0.0.1", `save ""`, "appendonly no", "daemonize no",
		"dir " + t.TempDir(), "loglevel warning"}
	conf = append(conf, extra...)
	cmd := exec.Command(bin, "-")
	cmd.Stdin = strings.NewReader(strings.Join(conf, "\n") + "\n")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting redis-server: %v", err)
	}
	var log strings.Builder
	go func() {
		s := bufio.NewScanner(out)
		for s.Scan() {
			log.WriteString(s.Text() + "\n")
		}
	}()
	r := &Redis{Addr: "127.0.0.1:" + strconv.Itoa(port), cmd: cmd}
	t.Cleanup(r.Stop)
	for deadline := time.Now().Add(10 * time.Second); ; {
		if c, err := net.DialTimeout("tcp", r.Addr, 200*time.Millisecond); err == nil {
			c.Close()
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("redis-server did not listen on %s within 10s:\n%s", r.Addr, log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop kills the server; nothing of its data survives.
func (r *Redis) Stop() {
	if r.cmd.Process != nil {
		_ = r.cmd.Process.Kill()
		_ = r.cmd.Wait()
	}
}

// freeLocalPort is a port nothing listens on now, below the kernel's range for
// outgoing connections (from 32768), so that no client's socket takes it before the
// server binds, and below the integration harness's range (20000 to 32000).
func freeLocalPort(t testing.TB) int {
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
