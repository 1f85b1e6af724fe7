package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// run sets everything up, runs the benchmark and prints the report. Whatever happens,
// the Caddy processes and the temporary directory are gone when it returns.
func run(ctx context.Context, o options) error {
	started := time.Now()
	rep := report{
		Command:    shellQuote(append([]string{"jitbench"}, os.Args[1:]...)),
		Started:    started,
		Machine:    thisMachine(),
		LoadBefore: loadAverage(),
		Warmup:     warmup,
		Duration:   o.duration,
		Rounds:     o.rounds,
		Configs:    configs,
	}
	rep.WorkDir, _ = os.Getwd()

	dir, err := os.MkdirTemp("", "jitbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	bin := o.caddy
	if bin == "" {
		if bin, err = buildCaddy(ctx, dir); err != nil {
			return err
		}
		rep.Caddy = "(built from ./cmd/caddy): "
	} else {
		rep.Caddy = fmt.Sprintf("`%s`: ", bin)
	}
	if err := checkCaddy(ctx, bin); err != nil {
		return err
	}
	rep.Caddy += describeBinary(bin)

	up, err := startLocalServer(upstreamHandler())
	if err != nil {
		return err
	}
	defer up.Close()
	authToken := rand.Text()
	auth, err := startLocalServer(authHandler(map[string]string{authToken: benchUser}))
	if err != nil {
		return err
	}
	defer auth.Close()

	pass := rand.Text()
	hash, err := bcrypt.GenerateFromPassword([]byte(pass), 4)
	if err != nil {
		return err
	}
	common := caddyfileData{User: benchUser, Hash: string(hash), AuthAddr: auth.addr, Upstream: up.addr}

	// Start all Caddys at once, then wait for each.
	var insts []*instance
	defer func() {
		for _, in := range insts {
			in.stop()
		}
	}()
	for _, cfg := range configs {
		in, err := launchInstance(bin, dir, cfg, common)
		if err != nil {
			return err
		}
		insts = append(insts, in)
	}
	setup := &http.Client{
		Transport:     &http.Transport{Proxy: nil},
		Timeout:       15 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	defer setup.CloseIdleConnections()
	targets := map[string]target{}
	var gated *instance
	for _, in := range insts {
		if err := in.awaitReady(ctx, setup); err != nil {
			return err
		}
		t := target{URL: in.baseURL + "/bench", Header: http.Header{"User-Agent": {"jitbench"}}, BodySize: upstreamBodySize}
		if in.cfg.BasicAuth {
			req, _ := http.NewRequest(http.MethodGet, "/", nil)
			req.SetBasicAuth(benchUser, pass)
			t.Header.Set("Authorization", req.Header.Get("Authorization"))
		}
		if in.cfg.ForwardAuth {
			t.Header.Set("Cookie", (&http.Cookie{Name: authCookie, Value: authToken}).String())
		}
		if in.cfg.Jit {
			gated = in
			secret, err := enroll(ctx, setup, in.adminURL, benchUser)
			if err != nil {
				return err
			}
			token, err := activate(ctx, setup, in.baseURL, benchUser, pass, benchRole, secret)
			if err != nil {
				return err
			}
			t.Header.Set("Cookie", (&http.Cookie{Name: sessionCookie, Value: token}).String())
			logf("%s: enrolled %s and activated %s for %s through /.jit/activate", in.label(), benchUser, benchRole, sessionLength)
		}
		if err := checkTarget(ctx, setup, t); err != nil {
			return fmt.Errorf("%s: the first request failed, so no load was sent: %v\nCaddy's output:\n%s", in.label(), err, in.outputTail(30))
		}
		targets[in.cfg.Key] = t
	}
	if shape, ok := targets["S"]; ok {
		// S is sent what B is: B's session cookie, known once B activated.
		shape.Header = shape.Header.Clone()
		shape.Header.Set("Cookie", targets["B"].Header.Get("Cookie"))
		if err := checkTarget(ctx, setup, shape); err != nil {
			return fmt.Errorf("S with B's cookie: the first request failed, so no load was sent: %v", err)
		}
		targets["S"] = shape
	}
	logf("all %d configs answer 200; temporary files in %s", len(insts), dir)

	gatedOK := 1 // checkTarget's request
	for _, conns := range o.conns {
		runs := map[string][]runResult{}
		for round := 1; round <= o.rounds; round++ {
			for _, in := range insts {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				var prof *profileCapture
				if o.profile != "" && round == o.rounds {
					prof = startProfile(ctx, in.adminURL, filepath.Join(o.profile, fmt.Sprintf("%s-%d.pprof", in.cfg.Key, conns)), warmup, o.duration)
				}
				cpu := startCPU(in.cmd.Process.Pid)
				r := runLoad(ctx, targets[in.cfg.Key], conns, warmup, o.duration)
				if prof == nil {
					r.CaddyCPU, r.BenchCPU, r.CPUKnown = cpu.stop()
				} else if err := prof.wait(); err != nil {
					return fmt.Errorf("%s: CPU profile: %v", in.label(), err)
				}
				if ctx.Err() != nil {
					return ctx.Err()
				}
				r.Key, r.Round = in.cfg.Key, round
				runs[in.cfg.Key] = append(runs[in.cfg.Key], r)
				if in == gated {
					gatedOK += r.OK
				}
				logf("conns %d, round %d/%d, %-16s %8.0f req/s  p50 %s  p99 %s  errors %d",
					conns, round, o.rounds, in.label()+":", r.rps(),
					formatLatency(percentile(r.Latencies, 50)), formatLatency(percentile(r.Latencies, 99)), r.errorCount())
				select {
				case <-in.done:
					return fmt.Errorf("caddy for %s exited during the run (%v); its output:\n%s", in.label(), in.waitErr, in.outputTail(40))
				default:
				}
			}
		}
		var rows []summary
		for _, cfg := range configs {
			rows = append(rows, summarize(cfg, runs[cfg.Key]))
		}
		rep.Tables = append(rep.Tables, newConnTable(conns, rows))
	}

	if o.interleaved > 0 {
		logf("interleaved run at 1 connection: one request to each of %s in a random order, again and again; %s warm-up + %s", strings.Join(interleavedKeys, ", "), warmup, o.interleaved)
		r, err := runInterleaved(ctx, targets, interleavedKeys, warmup, o.interleaved)
		if err != nil {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		gatedOK += r.OK["B"]
		rows, added := summarizeInterleaved(r, interleavedPairs)
		rep.Interleaved = &interleavedReport{Window: o.interleaved, Rows: rows, Added: added, Orders: r.Orders}
		for _, a := range added {
			logf("interleaved: added p50 %s − %s %s, added p99 %s", a.Num, a.Den, formatDelta(a.P50), formatDelta(a.P99))
		}
	}

	if gated != nil {
		// The audit writer may trail the last answers by a moment.
		time.Sleep(200 * time.Millisecond)
		n, err := gated.countAccessEvents()
		if err != nil {
			rep.Audit = fmt.Sprintf("B's audit log could not be read: %v.", err)
		} else {
			rep.Audit = fmt.Sprintf("B's audit log holds %d `access` events for %d successful gated requests (warm-up included).", n, gatedOK)
		}
	}
	rep.LoadAfter = loadAverage()

	md := renderMarkdown(rep)
	fmt.Print(md)
	if o.out != "" {
		if err := os.WriteFile(o.out, []byte(md), 0o644); err != nil {
			return fmt.Errorf("writing -out %s: %v", o.out, err)
		}
		abs, _ := filepath.Abs(o.out)
		logf("report written to %s", abs)
	}
	return nil
}

// checkTarget sends one request as the load will and wants 200 with the full body.
func checkTarget(ctx context.Context, client *http.Client, t target) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.URL, nil)
	if err != nil {
		return err
	}
	req.Header = t.Header.Clone()
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || n != t.BodySize {
		return fmt.Errorf("want 200 with %d bytes, got %s with %d bytes (Location %q)", t.BodySize, resp.Status, n, resp.Header.Get("Location"))
	}
	return nil
}
