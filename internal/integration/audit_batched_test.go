package integration

import (
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-jit/caddy-jit/audit"
)

// The batched audit output (issue 16): what a crash, a reload, a graceful stop and a
// full queue do to the events of a Caddy under load.

// answered is one request of a load run that Caddy answered 200: its number and when.
type answered struct {
	n  int64
	at time.Time
}

// runLoad sends GET /admin/load?n=N under the session at conns connections until stop
// is closed or max requests went out (0: no max), and returns the requests answered
// 200. It must not touch t: it runs beside the test's own goroutine.
func runLoad(site, user, token string, conns int, max int64, stop <-chan struct{}) []answered {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: conns}, Timeout: 20 * time.Second}
	defer client.CloseIdleConnections()
	var next atomic.Int64
	var mu sync.Mutex
	var out []answered
	var wg sync.WaitGroup
	for range conns {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				n := next.Add(1)
				if max > 0 && n > max {
					return
				}
				req, _ := http.NewRequest(http.MethodGet, site+"/admin/load?n="+strconv.FormatInt(n, 10), nil)
				req.SetBasicAuth(user, password(user))
				req.Header.Set("Cookie", cookieName+"="+token)
				resp, err := client.Do(req)
				if err != nil {
					time.Sleep(5 * time.Millisecond) // Caddy is stopping or reloading
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					mu.Lock()
					out = append(out, answered{n: n, at: time.Now()})
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	return out
}

// batchedEnvWithSession starts Caddy with the batched audit output (settings are the
// audit block's lines besides output) and activates console-admin for alice.
func batchedEnvWithSession(t *testing.T, settings string) (e *env, site, token string) {
	t.Helper()
	e = newEnv(t, envOptions{Batched: true, AuditSettings: settings})
	site = e.site(0)
	alice := e.enroll("alice")
	return e, site, e.browser("alice").mustActivate(site, roleAdmin, adminURI, alice, nil)
}

// loadEvents counts the access events of each load request number in events, and fails
// the test on an access event of the load that names no number.
func loadEvents(t *testing.T, events []map[string]any) map[int64]int {
	t.Helper()
	seen := map[int64]int{}
	for _, ev := range events {
		uri, _ := ev["uri"].(string)
		if ev["event"] != "access" || !strings.HasPrefix(uri, "/admin/load") {
			continue
		}
		u, err := url.Parse(uri)
		n, err2 := strconv.ParseInt(u.Query().Get("n"), 10, 64)
		if err != nil || err2 != nil {
			t.Fatalf("an access event of the load with uri %q", uri)
		}
		seen[n]++
	}
	return seen
}

func countEvents(events []map[string]any, name string) int {
	n := 0
	for _, ev := range events {
		if ev["event"] == name {
			n++
		}
	}
	return n
}

// B1. kill -9 under load: the events lost are those of the last flush interval at
// most, and verify reports what it can see of the loss as a cut, never as corruption.
func TestAuditBatchedKillLosesAtMostAFlushInterval(t *testing.T) {
	const flush = 100 * time.Millisecond
	e, site, token := batchedEnvWithSession(t, "\t\t\tflush_interval 100ms")

	stop := make(chan struct{})
	done := make(chan []answered)
	go func() { done <- runLoad(site, "alice", token, 8, 0, stop) }()
	time.Sleep(1500 * time.Millisecond)
	killed := time.Now()
	_ = e.proc.cmd.Process.Kill()
	<-e.proc.done
	e.proc = nil
	close(stop)
	load := <-done
	if len(load) < 100 {
		t.Fatalf("only %d requests answered before the kill", len(load))
	}

	logged := loadEvents(t, chainedEvents(t, e.data.AuditLog))
	var oldestLost time.Time
	lost := 0
	for _, a := range load {
		switch logged[a.n] {
		case 1:
		case 0:
			lost++
			if oldestLost.IsZero() || a.at.Before(oldestLost) {
				oldestLost = a.at
			}
		default:
			t.Errorf("request %d has %d access events", a.n, logged[a.n])
		}
	}
	window := time.Duration(0)
	if lost > 0 {
		window = killed.Sub(oldestLost)
	}
	t.Logf("%d requests answered, %d events lost, answered in the last %v before the kill (flush_interval %v)", len(load), lost, window, flush)
	// The slack is the scheduling of a loaded 2-core machine, not a bound we promise.
	if window > flush+750*time.Millisecond {
		t.Errorf("lost the events of requests answered %v before the kill, want within flush_interval %v (+ slack)", window, flush)
	}

	// Before a restart: the saved head is at or past the log's end.
	code, v, out := verifyChain(t, "--config", e.cfgFile, e.data.AuditLog)
	if (code != 0 && code != 3) || !v.Intact {
		t.Fatalf("verify after kill -9: exit %d, want 0 or 3 (a cut) and intact\n%s", code, out)
	}
	// After a restart: audit_started says unclean, and the chain goes on past the cut.
	e.start()
	e.browser("alice").get(site + "/admin/after-crash")
	e.stop()
	events := chainedEvents(t, e.data.AuditLog)
	last := ""
	for _, ev := range events {
		if ev["event"] == "audit_started" {
			last, _ = ev["previous_stop"].(string)
		}
	}
	if last != "unclean" {
		t.Errorf("audit_started after kill -9 says previous_stop %q, want unclean", last)
	}
	code, v, out = verifyChain(t, "--config", e.cfgFile, e.data.AuditLog)
	if (code != 0 && code != 3) || !v.Intact {
		t.Fatalf("verify after the restart: exit %d, want 0 or 3 (a cut) and intact\n%s", code, out)
	}
	for _, c := range v.Cuts {
		if c.Source != audit.CutCrash {
			t.Errorf("after the restart, a cut that is not the crash's: %s\n%s", c, out)
		}
	}
}

// B2. Two reloads and a graceful stop under load lose no event of an answered request,
// and the log they leave verifies with no cut.
func TestAuditBatchedReloadAndStopLoseNothing(t *testing.T) {
	e, site, token := batchedEnvWithSession(t, "\t\t\tflush_interval 200ms")

	stop := make(chan struct{})
	done := make(chan []answered)
	go func() { done <- runLoad(site, "alice", token, 8, 0, stop) }()
	time.Sleep(700 * time.Millisecond)
	e.reload()
	time.Sleep(700 * time.Millisecond)
	e.reload()
	time.Sleep(500 * time.Millisecond)
	e.stop()
	close(stop)
	load := <-done

	logged := loadEvents(t, chainedEvents(t, e.data.AuditLog))
	missing := 0
	for _, a := range load {
		if logged[a.n] != 1 {
			missing++
			if missing <= 5 {
				t.Errorf("request %d, answered 200, has %d access events", a.n, logged[a.n])
			}
		}
	}
	if missing > 0 || len(load) < 100 {
		t.Fatalf("%d of %d answered requests without exactly one event", missing, len(load))
	}
	if code, out := jitCLI(t, "audit", "verify", "--config", e.cfgFile, e.data.AuditLog); code != 0 {
		t.Fatalf("verify after reloads and a graceful stop: exit %d\n%s", code, out)
	}
}

// B3. A queue far too small for the load: requests wait for room, the waits are
// counted, and no event is lost.
func TestAuditBatchedFullQueueWaitsAndLosesNothing(t *testing.T) {
	const requests = 2000
	e, site, token := batchedEnvWithSession(t, "\t\t\tqueue 2\n\t\t\tflush_interval 1s")
	load := runLoad(site, "alice", token, 16, requests, make(chan struct{}))
	if len(load) != requests {
		t.Fatalf("%d of %d requests answered 200", len(load), requests)
	}
	waits, ok := metricValue(t, e.metrics(), "caddy_jit_audit_queue_waits_total")
	if !ok || waits < 1 {
		t.Errorf("caddy_jit_audit_queue_waits_total = %v (found %v), want > 0 with a queue of 2 at 16 connections", waits, ok)
	}
	e.stop()
	logged := loadEvents(t, chainedEvents(t, e.data.AuditLog))
	for _, a := range load {
		if logged[a.n] != 1 {
			t.Fatalf("request %d has %d access events, want 1", a.n, logged[a.n])
		}
	}
	t.Logf("%d requests, %v waited for room in the queue", requests, waits)
}
