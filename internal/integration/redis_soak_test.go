package integration

import (
	"context"
	"net/http"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/caddy-jit/caddy-jit/internal/testkit"
)

// The soak run of issue 15: three instances on one redis-server that persists every
// write, under steady load for JIT_SOAK_DURATION (default 30 s: the run CI makes under
// go test -race ./...). Meanwhile one instance after another reloads its config every
// 10 s, a session is activated and revoked every second, and Redis is killed and
// started again half-way. The long run, where flat memory is judged:
//
//	JIT_SOAK_DURATION=10m GOTOOLCHAIN=go1.27.3 go test -run TestRedisSoak -v -timeout 30m ./internal/integration
//
// It asserts correctness only, never speed (the machines are noisy): no failed request
// outside the Redis outage, no revoked session admitted where it must be refused, no
// audit event lost, no runaway goroutines. It logs a one-line summary that starts
// with "soak:".

const (
	soakRole = "soak"
	// soakDefaultDuration is the CI run's length: with start-up, under a minute.
	soakDefaultDuration = 30 * time.Second
	// soakLoadClients send requests under live sessions, each a pause apart: a steady
	// load that leaves the two cores room for the reloads, and keeps the audit logs of
	// the ten-minute run far below Caddy's 100 MiB roll.
	soakLoadClients = 6
	soakLoadPause   = 20 * time.Millisecond
	soakReloadEvery = 10 * time.Second
	soakRevokeEvery = time.Second
	soakRedisDown   = 2 * time.Second
	// soakRevokers take turns at the sessions to revoke: each one comes back after 40 s,
	// in a later TOTP step, since a code is accepted once per user and step.
	soakRevokers = 40
)

// soakSync is the default revocation sync, written out: the soak judges what an
// operator runs. The cluster tests' quietSync (20 s) would hide the periodic work the
// sync loop does every second (saving the audit chain head, pruning, sweeps), which a
// soak must run hundreds of times; and max_staleness 30 s trusts the revocation set
// through a Redis restart of a few seconds, so sessions must keep working through it.
const soakSync = "\t\tsync_interval 1s\n\t\tmax_staleness 30s"

// soakMaxDuration bounds JIT_SOAK_DURATION below the soak role's 12 h sessions.
const soakMaxDuration = 11 * time.Hour

func soakRoleBlock(users []string) string {
	return "\t\trole " + soakRole + " {\n\t\t\tmax_duration 12h\n\t\t\tdefault_duration 12h\n\t\t\tjustification optional\n" +
		eligibleLines(users) + "\t\t}"
}

func soakDuration(t *testing.T) time.Duration {
	t.Helper()
	v := os.Getenv("JIT_SOAK_DURATION")
	if v == "" {
		return soakDefaultDuration
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 5*time.Second || d > soakMaxDuration {
		t.Fatalf("JIT_SOAK_DURATION=%q: want a Go duration from 5s to %s (e.g. 10m)", v, soakMaxDuration)
	}
	return d
}

func TestRedisSoak(t *testing.T) {
	duration := soakDuration(t)
	redis := testkit.StartRedis(t, "appendonly yes", "appendfsync always")
	up := newSoakUpstream(t)
	loaders, revokers := userNames("ld", soakLoadClients), userNames("sk", soakRevokers)
	envs := newRedisInstancesWith(t, redis, 3, redisClusterOptions{Sync: soakSync, Upstream: up.addr()},
		soakRole, soakRoleBlock(slices.Concat(loaders, revokers)))
	codes := envs[0].enrollAll(slices.Concat(loaders, revokers))
	run := newSoakRun(t, envs)

	// The load's sessions, made on A, B and C in turn, outlast the run.
	tokens := make([]string, len(loaders))
	for i, u := range loaders {
		e := envs[i%len(envs)]
		tokens[i] = e.headerUser(u).mustActivate(e.site(0), soakRole, adminURI, codes[u], nil)
		if exp := tokenExpiry(t, tokens[i]); exp.Before(time.Now().Add(duration + 5*time.Minute)) {
			t.Fatalf("%s's session ends at %s, before the run does", u, exp)
		}
	}

	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	halt := func() {
		stop()
		wg.Wait()
		run.watchers.Wait() // no watcher starts once the revoker has returned
	}
	defer halt() // also when the test fails on its own goroutine
	began := time.Now()
	run.began = began
	since := func() string { return time.Since(began).Round(100 * time.Millisecond).String() }
	for i, u := range loaders {
		wg.Go(func() { run.load(ctx, i, u, tokens[i], soakLoadPause) })
	}
	wg.Go(func() { run.revokeEvery(ctx, t, soakRevokeEvery, revokers, codes) })
	wg.Go(func() { run.recheck(ctx, 100*time.Millisecond) })

	// Warmed up: the caches filled, the connections open, the runtime's heap grown to
	// the load. The first measure is taken then, under the load, as the last one is.
	time.Sleep(time.Until(began.Add(min(max(duration/10, 3*time.Second), 30*time.Second))))
	warm := make([]soakStats, len(envs))
	for i, e := range envs {
		warm[i] = soakStatsOf(t, e)
	}

	// The schedule from then on, on this goroutine: a reload every 10 s, A, B, C in
	// turn, and the Redis outage half-way between the two reloads nearest the middle.
	// A reload does not overlap the outage, whose failures are excused: a failure a
	// reload caused must not hide among them.
	end, grid := began.Add(duration), time.Now()
	rest := end.Sub(grid)
	outageAt := grid.Add(rest/2/soakReloadEvery*soakReloadEvery + soakReloadEvery/2)
	if outageAt.After(end.Add(-soakRedisDown)) {
		outageAt = grid.Add(rest / 2)
	}
	reloads, outageDone := 0, false
	var outage soakOutage
	for next := grid.Add(soakReloadEvery); ; next = next.Add(soakReloadEvery) {
		if !outageDone && outageAt.Before(next) {
			time.Sleep(time.Until(outageAt))
			outage = run.restartRedis(t, redis, soakRedisDown)
			outageDone = true
			t.Logf("+%s: Redis was down %s; every instance's admin API read it again %s after it started (answers while down: %s)",
				since(), outage.started.Sub(outage.from).Round(time.Millisecond), outage.to.Sub(outage.started).Round(time.Millisecond), outage.whileDown)
		}
		if !next.Before(end) {
			break
		}
		time.Sleep(time.Until(next))
		e := envs[reloads%len(envs)]
		from := time.Now()
		e.reload()
		run.reloaded(from, time.Now())
		reloads++
		t.Logf("+%s: reloaded %s", since(), run.name((reloads-1)%len(envs)))
	}
	time.Sleep(time.Until(end))
	last := make([]soakStats, len(envs))
	for i, e := range envs {
		last[i] = soakStatsOf(t, e)
	}
	halt()

	// Refused once, refused for good: every revoked token, on every instance.
	for _, rev := range run.revoked {
		for i := range envs {
			run.askRevoked(rev, i, "at the end")
		}
	}
	// Stopped, each instance has written its last event and saved its chain head.
	for _, e := range envs {
		e.stop()
	}
	logs := make([]soakAudit, len(envs))
	for i, e := range envs {
		logs[i] = soakAuditOf(t, e)
	}
	headProblems := verifySavedHeads(t, envs, logs)

	run.judge(t, soakVerdict{duration: duration, reloads: reloads, outage: outage, warm: warm, last: last,
		logs: logs, headProblems: headProblems, upstreamHits: up.hits.Load()})
}

// soakOutage is the Redis restart: stopped at from, started at started, and every
// instance working with it again at to.
type soakOutage struct {
	from, started, to time.Time
	// whileDown is what GET /jit/sessions answered on A while Redis was down.
	whileDown string
}

// restartRedis kills Redis, starts it again after down with the data it persisted,
// and waits until every instance works with it again: until each admin API lists the
// sessions, which it reads from Redis. The revoker waits meanwhile.
func (r *soakRun) restartRedis(t *testing.T, redis *testkit.Redis, down time.Duration) soakOutage {
	t.Helper()
	r.pause.Lock()
	defer r.pause.Unlock()
	var o soakOutage
	redis.Stop()
	o.from = time.Now()
	// Asked aside, so that however long the instance takes to give up on Redis, the
	// outage lasts down.
	asked := make(chan string, 1)
	go func() {
		resp, err := (&http.Client{Timeout: 15 * time.Second}).Get(r.envs[0].adminURL("/jit/sessions"))
		if err != nil {
			asked <- err.Error()
			return
		}
		resp.Body.Close()
		asked <- resp.Status
	}()
	time.Sleep(down)
	redis.Start()
	o.started = time.Now()
	for deadline := o.started.Add(time.Minute); ; time.Sleep(50 * time.Millisecond) {
		ok := true
		for _, e := range r.envs {
			if status, _ := e.admin(http.MethodGet, "/jit/sessions"); status != http.StatusOK {
				ok = false
				break
			}
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a minute after Redis came back, an instance's admin API still cannot list the sessions")
		}
	}
	o.to = time.Now()
	o.whileDown = <-asked
	r.setOutage(o.from, o.to)
	return o
}
