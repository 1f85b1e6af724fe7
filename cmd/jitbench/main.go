// Command jitbench measures what the caddy-jit gate costs per request: it runs the same
// Caddy binary as a plain reverse proxy, behind basic_auth, behind basic_auth with a
// gated request's shape made by request_header (its cookie, its identity headers),
// behind basic_auth and `jit`, and behind basic_auth and forward_auth (the
// Authelia/oauth2-proxy pattern), all over one
// local upstream, drives each with a Go load generator on keep-alive connections, and
// prints the results as Markdown.
//
// Usage (from the caddy-jit module):
//
//	GOTOOLCHAIN=go1.27.3 go run ./cmd/jitbench [-caddy PATH] [-duration 5s] [-rounds 3] [-conns 1,16,64] [-interleaved 10s] [-out FILE]
//
// Every address it uses is on the loopback interface.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// warmup is the start of every run whose requests are not measured.
const warmup = time.Second

type options struct {
	caddy    string
	duration time.Duration
	rounds   int
	conns    []int
	out      string
	// profile, when set, is a folder for CPU profiles of each Caddy taken during its
	// last round at every connection count.
	profile string
	// interleaved is the measured time of the interleaved latency run (0: none).
	interleaved time.Duration
}

func main() {
	opts, err := parseFlags(os.Args[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "jitbench:", err)
		os.Exit(2)
	}
	if os.Getenv("GOTOOLCHAIN") == "" {
		// The same toolchain the project builds with (see docs/security-model.md).
		os.Setenv("GOTOOLCHAIN", "go1.27.3")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		// After the first signal, a second one kills jitbench at once; the Caddy
		// processes still die with it (see procattr_linux.go).
		<-ctx.Done()
		stop()
	}()
	err = run(ctx, opts)
	if ctx.Err() != nil {
		fmt.Fprintln(os.Stderr, "jitbench: interrupted; processes stopped and temporary files removed")
		os.Exit(130)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "jitbench:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string) (options, error) {
	fs := flag.NewFlagSet("jitbench", flag.ContinueOnError)
	var o options
	var conns string
	fs.StringVar(&o.caddy, "caddy", "", "caddy binary with caddy-jit (default: build ./cmd/caddy of this module into a temporary directory)")
	fs.DurationVar(&o.duration, "duration", 5*time.Second, "measured time per run, after a 1s warm-up")
	fs.IntVar(&o.rounds, "rounds", 3, "runs of each config per connection count")
	fs.StringVar(&conns, "conns", "1,16,64", "comma-separated connection counts")
	fs.StringVar(&o.out, "out", "", "also write the Markdown report to this file")
	fs.DurationVar(&o.interleaved, "interleaved", 10*time.Second, "measured time of the interleaved run at 1 connection, which sends A', S and B one request each in a random order, again and again, for latencies measured under the same noise (0: skip it)")
	fs.StringVar(&o.profile, "profile", "", "write a CPU profile of each Caddy's last run per connection count into this folder (KEY-CONNS.pprof, for go tool pprof)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q; all settings are flags (see -h)", fs.Args())
	}
	if o.duration <= 0 {
		return o, fmt.Errorf("-duration %s: must be positive", o.duration)
	}
	if o.interleaved < 0 {
		return o, fmt.Errorf("-interleaved %s: must be 0 (skip) or positive", o.interleaved)
	}
	if o.rounds < 1 {
		return o, fmt.Errorf("-rounds %d: must be at least 1", o.rounds)
	}
	var err error
	if o.conns, err = parseConns(conns); err != nil {
		return o, err
	}
	if o.caddy != "" {
		if o.caddy, err = filepath.Abs(o.caddy); err != nil {
			return o, err
		}
	}
	if o.profile != "" {
		if err := os.MkdirAll(o.profile, 0o755); err != nil {
			return o, fmt.Errorf("-profile %s: %v", o.profile, err)
		}
	}
	return o, nil
}

// maxConns bounds -conns: every connection is a goroutine and a socket on this machine.
const maxConns = 4096

// parseConns parses -conns: positive, distinct counts, kept in the given order.
func parseConns(s string) ([]int, error) {
	var out []int
	seen := map[int]bool{}
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 || n > maxConns {
			return nil, fmt.Errorf("-conns %q: %q is not a connection count between 1 and %d", s, f, maxConns)
		}
		if seen[n] {
			return nil, fmt.Errorf("-conns %q: %d appears twice", s, n)
		}
		seen[n] = true
		out = append(out, n)
	}
	return out, nil
}
