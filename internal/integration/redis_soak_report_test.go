package integration

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddy-jit/caddy-jit/audit"
)

// What the soak run (redis_soak_test.go) measures of the instances themselves once
// the load is over: their goroutines and memory, and their audit logs.

// soakStats are a Caddy process's own numbers, from its admin API's /metrics.
type soakStats struct {
	goroutines, heapInuse, rss float64
}

// soakStatsOf scrapes e's /metrics five times, 100 ms apart, and keeps the least of
// each number: under load the goroutines of the requests in flight come and go, and
// the least is the count the process holds on to.
func soakStatsOf(t *testing.T, e *env) soakStats {
	t.Helper()
	var least soakStats
	for n := range 5 {
		if n > 0 {
			time.Sleep(100 * time.Millisecond)
		}
		status, body := e.admin(http.MethodGet, "/metrics")
		if status != http.StatusOK {
			t.Fatalf("GET /metrics on %s's admin API: %d %.300s", e.site(0), status, body)
		}
		var s soakStats
		for name, into := range map[string]*float64{"go_goroutines": &s.goroutines,
			"go_memstats_heap_inuse_bytes": &s.heapInuse, "process_resident_memory_bytes": &s.rss} {
			v, ok := metricValue(t, body, name)
			if !ok {
				t.Fatalf("GET /metrics on %s's admin API: no %s", e.site(0), name)
			}
			*into = v
		}
		if n == 0 {
			least = s
			continue
		}
		least = soakStats{min(least.goroutines, s.goroutines), min(least.heapInuse, s.heapInuse), min(least.rss, s.rss)}
	}
	return least
}

const mib = 1 << 20

// soakAudit is what one instance's audit log holds.
type soakAudit struct {
	files     []string
	events    int
	instances []string // the chain instance ids in the log: one, the process's
	// gaps counts the seqs missing between consecutive events of an instance (and
	// before its first, since every chain of the run starts at 1); repeats, the events
	// whose seq does not move forward.
	gaps, repeats int64
	// access200 counts the access events of requests the upstream answered 200.
	access200 int
	// breaks counts what audit.VerifyChain finds broken (seq and hash chain), first
	// its first few.
	breaks int
	first  []string
}

// soakAuditOf reads e's audit log: the rolled files first (Caddy rolls a log at
// 100 MiB; their names sort oldest first), then the current one.
func soakAuditOf(t *testing.T, e *env) soakAudit {
	t.Helper()
	rolled, err := filepath.Glob(filepath.Join(e.dir, "audit-*"))
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(rolled)
	a := soakAudit{files: append(rolled, e.data.AuditLog)}
	inputs := audit.Files(a.files...)
	last := map[string]int64{}
	err = audit.Scan(inputs, func(l *audit.Line) error {
		if l.Problem != "" {
			return nil // VerifyChain counts it as a break
		}
		a.events++
		instance := l.Text(audit.FieldInstance)
		seq, _ := l.Int(audit.FieldSeq)
		prev, seen := last[instance]
		if !seen {
			a.instances = append(a.instances, instance)
		}
		switch {
		case seq > prev+1:
			a.gaps += seq - prev - 1
		case seq <= prev:
			a.repeats++
		}
		last[instance] = max(prev, seq)
		if status, _ := l.Int("status"); l.Event() == audit.EventAccess && status == http.StatusOK {
			a.access200++
		}
		return nil
	})
	if err != nil {
		t.Fatalf("reading %s's audit log: %v", e.site(0), err)
	}
	v, err := audit.VerifyChain(inputs, audit.VerifyOptions{})
	if err != nil {
		t.Fatalf("verifying %s's audit log: %v", e.site(0), err)
	}
	a.breaks = v.BreakCount
	for _, b := range v.Breaks[:min(len(v.Breaks), 5)] {
		a.first = append(a.first, b.String())
	}
	return a
}

// verifySavedHeads runs `caddy jit audit verify --config` over every instance's log
// once they have stopped: besides the chain, it compares each instance's last event
// with the chain head the instance saved in Redis as it stopped, so that events lost
// at the end of a log are found too. It returns the problems found.
func verifySavedHeads(t *testing.T, envs []*env, logs []soakAudit) []string {
	t.Helper()
	args := []string{"jit", "audit", "verify", "--config", envs[0].cfgFile, "--adapter", "caddyfile", "--json"}
	for _, a := range logs {
		args = append(args, a.files...)
	}
	cmd := exec.Command(envs[0].bin, args...)
	cmd.Dir = envs[0].dir
	cmd.Env = append(os.Environ(), "HOME="+envs[0].dir)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var exit *exec.ExitError
	// Exit 1 is a break and 3 events missing (a cut): both are listed as problems.
	if err != nil && (!errors.As(err, &exit) || (exit.ExitCode() != 1 && exit.ExitCode() != 3)) {
		t.Fatalf("caddy jit audit verify --config: %v\n%s%s", err, out, stderr.String())
	}
	var v audit.ChainVerification
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatalf("caddy jit audit verify --json answered no JSON: %v\n%s%s", err, out, stderr.String())
	}
	var problems []string
	for _, b := range v.Breaks {
		problems = append(problems, b.String())
	}
	if v.BreakCount > len(v.Breaks) {
		problems = append(problems, fmt.Sprintf("and %d more breaks", v.BreakCount-len(v.Breaks)))
	}
	for _, c := range v.Cuts {
		problems = append(problems, c.String())
	}
	for _, in := range v.Instances {
		if in.SavedHeadSeq == nil {
			problems = append(problems, fmt.Sprintf("instance %s saved no chain head in Redis", in.Instance))
		} else if *in.SavedHeadSeq != in.LastSeq {
			problems = append(problems, fmt.Sprintf("instance %s: the log ends at seq %d, its saved chain head is seq %d", in.Instance, in.LastSeq, *in.SavedHeadSeq))
		}
	}
	if len(v.Instances) != len(envs) {
		problems = append(problems, fmt.Sprintf("the logs hold the chains of %d instances, want %d", len(v.Instances), len(envs)))
	}
	return problems
}

// soakSummary is the run's machine-readable summary: one line of key=value pairs,
// for a script that compares runs.
type soakSummary struct {
	pairs []string
}

func (s *soakSummary) add(key string, value any) {
	s.pairs = append(s.pairs, fmt.Sprintf("%s=%v", key, value))
}

// perInstance adds A:warm→end,B:…,C:… under key.
func (s *soakSummary) perInstance(key string, warm, end []soakStats, of func(soakStats) string) {
	var parts []string
	for i := range warm {
		parts = append(parts, fmt.Sprintf("%c:%s→%s", 'A'+i, of(warm[i]), of(end[i])))
	}
	s.add(key, strings.Join(parts, ","))
}

func (s *soakSummary) String() string { return "soak: " + strings.Join(s.pairs, " ") }

// lagStats are the median and the largest of lags.
func lagStats(lags []time.Duration) (p50, worst time.Duration) {
	if len(lags) == 0 {
		return 0, 0
	}
	sorted := slices.Clone(lags)
	slices.Sort(sorted)
	return durationPercentile(sorted, 50), sorted[len(sorted)-1]
}

// soakVerdict is what the test measured beside what the run's goroutines recorded.
type soakVerdict struct {
	duration     time.Duration
	reloads      int
	outage       soakOutage
	warm, last   []soakStats
	logs         []soakAudit
	headProblems []string
	upstreamHits int64
}

// judge logs the run's numbers and its summary line, and fails the test on what must
// not happen. The goroutines have stopped.
func (r *soakRun) judge(t *testing.T, v soakVerdict) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	var outside, inside, resets []soakFailure
	for _, f := range r.failures {
		switch {
		case r.inOutage(f):
			inside = append(inside, f)
		case r.reloadReset(f):
			resets = append(resets, f)
		default:
			outside = append(outside, f)
		}
	}
	// The delay of each revocation on the instances that learned of it through Redis,
	// and apart those made just after the outage: the announcements must work again
	// once Redis is back, not only the sync.
	var lags, afterOutage []time.Duration
	for _, rev := range r.revoked {
		for i, lag := range rev.lag {
			if i == rev.on {
				continue
			}
			lags = append(lags, lag)
			if !v.outage.to.IsZero() && rev.at.After(v.outage.to) && rev.at.Before(v.outage.to.Add(10*time.Second)) {
				afterOutage = append(afterOutage, lag)
			}
		}
	}
	p50, worst := lagStats(lags)
	_, worstAfter := lagStats(afterOutage)
	served, events, access := 0, 0, 0
	var gaps, repeats int64
	breaks, lost := 0, 0
	for i, a := range v.logs {
		served += r.served[i]
		events += a.events
		access += a.access200
		gaps += a.gaps
		repeats += a.repeats
		breaks += a.breaks
		// Every request the upstream answered 200 through an instance is an access
		// event in its log; more events than answers is a client that lost an answer
		// (a failure above), fewer is an event lost.
		lost += max(r.served[i]-a.access200, 0)
		t.Logf("%s: %d requests admitted, %d audit events (%d access 200) of chain %v in %d files; seq gaps %d, repeats %d, chain breaks %d %v",
			r.name(i), r.served[i], a.events, a.access200, a.instances, len(a.files), a.gaps, a.repeats, a.breaks, a.first)
		t.Logf("%s: goroutines %.0f → %.0f, heap in use %.1f → %.1f MiB, resident %.1f → %.1f MiB (after warm-up → at the end, both under load)",
			r.name(i), v.warm[i].goroutines, v.last[i].goroutines, v.warm[i].heapInuse/mib, v.last[i].heapInuse/mib, v.warm[i].rss/mib, v.last[i].rss/mib)
	}

	var s soakSummary
	s.add("duration", v.duration)
	s.add("requests", served)
	s.add("load_requests", r.loadServed)
	s.add("upstream_hits", v.upstreamHits)
	s.add("errors_outside_outage", len(outside))
	s.add("errors_in_outage", len(inside))
	s.add("reload_connection_races", len(resets))
	s.add("reloads", v.reloads)
	s.add("revocations", r.revocations)
	s.add("revoked_admitted", len(r.violations))
	s.add("unconfirmed_revocations", r.unconfirmed)
	s.add("admitted_while_propagating", r.propagating)
	s.add("cut_off", r.cutOff)
	s.add("propagation_p50", p50.Round(10*time.Microsecond))
	s.add("propagation_max", worst.Round(10*time.Microsecond))
	s.add("propagation_max_after_outage", worstAfter.Round(10*time.Microsecond))
	s.add("outage", v.outage.to.Sub(v.outage.from).Round(time.Millisecond))
	s.add("audit_events", events)
	s.add("audit_gaps", gaps)
	s.add("audit_repeats", repeats)
	s.add("audit_breaks", breaks)
	s.add("audit_access_missing", lost)
	s.add("audit_head_problems", len(v.headProblems))
	s.perInstance("goroutines", v.warm, v.last, func(x soakStats) string { return fmt.Sprintf("%.0f", x.goroutines) })
	s.perInstance("heap_inuse_mib", v.warm, v.last, func(x soakStats) string { return fmt.Sprintf("%.1f", x.heapInuse/mib) })
	s.perInstance("rss_mib", v.warm, v.last, func(x soakStats) string { return fmt.Sprintf("%.1f", x.rss/mib) })
	t.Logf("outage: Redis stopped at +%s, started %s later, every instance read it again %s after that; %d failed requests overlapped it",
		v.outage.from.Sub(r.began).Round(time.Millisecond), v.outage.started.Sub(v.outage.from).Round(time.Millisecond),
		v.outage.to.Sub(v.outage.started).Round(time.Millisecond), len(inside))
	for _, f := range inside[:min(len(inside), 10)] {
		t.Logf("during the outage, +%s: %s", f.sent.Sub(r.began).Round(time.Millisecond), f.what)
	}
	for _, f := range resets[:min(len(resets), 10)] {
		t.Logf("a connection race of the reload, not the gate (see reloadReset), +%s: %s", f.sent.Sub(r.began).Round(time.Millisecond), f.what)
	}
	t.Log(s.String())

	for _, f := range outside[:min(len(outside), 30)] {
		t.Errorf("+%s (took %s): %s", f.sent.Sub(r.began).Round(time.Millisecond), f.done.Sub(f.sent).Round(time.Millisecond), f.what)
	}
	if len(outside) > 30 {
		t.Errorf("and %d more failed requests outside the Redis outage", len(outside)-30)
	}
	for _, msg := range r.violations[:min(len(r.violations), 30)] {
		t.Errorf("revoked session admitted: %s", msg)
	}
	if gaps > 0 || repeats > 0 || breaks > 0 || lost > 0 {
		t.Errorf("audit: %d events missing from the seq order, %d repeated, %d chain breaks, %d admitted requests without their access event", gaps, repeats, breaks, lost)
	}
	for _, p := range v.headProblems {
		t.Errorf("caddy jit audit verify --config, after the instances stopped: %s", p)
	}
	for i, a := range v.logs {
		if len(a.instances) != 1 {
			t.Errorf("%s's audit log holds the chains %v, want the one of its process", r.name(i), a.instances)
		}
	}
	// A sanity bound only: the 30 s run reloads each instance once at most, so a leak
	// of a goroutine per reload or per revocation is lost in the noise of the requests
	// in flight; what it catches is a runaway, such as a goroutine per request. Each
	// reload also leaves its old reverse_proxy's upstream connections open (two
	// goroutines each) until their 2 min idle timeout: Caddy closes a transport's idle
	// connections when the old config is cleaned up, but its requests still in flight
	// then go idle later. So the count rises after a reload and levels off within
	// minutes. The ten-minute run (about 55 reloads, 570 revocations) is where flatness
	// is judged, from the numbers logged above.
	for i := range v.warm {
		if v.last[i].goroutines > 2*v.warm[i].goroutines+50 {
			t.Errorf("%s: %.0f goroutines at the end, %.0f after warm-up: more than twice as many, plus 50", r.name(i), v.last[i].goroutines, v.warm[i].goroutines)
		}
	}
	if r.revocations == 0 || served == 0 || (v.duration >= 20*time.Second && v.reloads == 0) || v.outage.to.IsZero() {
		t.Errorf("the run did not do its work: %d revocations, %d requests admitted, %d reloads, outage %v", r.revocations, served, v.reloads, !v.outage.to.IsZero())
	}
}

// reloaded records a config reload, for reloadReset.
func (r *soakRun) reloaded(from, to time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reloads = append(r.reloads, [2]time.Time{from, to})
}

// reloadReset reports a failure of the connection, not of the gate, during a config
// reload: two races of Caddy's graceful reload that no handler takes part in.
//   - A connection reset while it was being made (the dial): Caddy on Linux binds each
//     new config's listener with SO_REUSEPORT and closes the old one once the new one
//     serves; a connection whose handshake the kernel had assigned to the old socket
//     is reset when it closes (https://lwn.net/Articles/542629/).
//   - EOF on a kept-alive connection: the old server closes its idle connections as
//     it shuts down, and a request the client sent on one at that moment meets the
//     close (HTTP/1.1's keep-alive race, RFC 9112 section 9.6).
//
// Such a request never reached a handler: nothing was admitted or refused, and no
// access event is missing (the audit checks say so). The caller holds mu.
func (r *soakRun) reloadReset(f soakFailure) bool {
	dialReset := strings.Contains(f.what, "dial tcp") && strings.Contains(f.what, "connection reset by peer")
	if !dialReset && !strings.HasSuffix(f.what, ": EOF") {
		return false
	}
	for _, w := range r.reloads {
		if !f.sent.Before(w[0].Add(-time.Second)) && !f.sent.After(w[1].Add(time.Second)) {
			return true
		}
	}
	return false
}
