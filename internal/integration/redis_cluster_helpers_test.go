package integration

import (
	"cmp"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-jit/caddy-jit/internal/testkit"
)

// Helpers of the tests that run three instances on one redis-server under concurrent
// requests (redis_cluster_test.go): the instances, requests released at one moment,
// and a client that watches a token until an instance refuses it.

// quietSync reads revocations every 20 s only, and trusts a revocation set that old:
// within a test, a revocation made on one instance reaches another only through the
// Redis announcement (pub/sub), never through the interval.
const quietSync = "\t\tsync_interval 20s\n\t\tmax_staleness 60s"

// newRedisInstances starts n instances whose state is in r, all at once. Each serves
// clusterHost on 127.0.0.1 (see clusterHost) with `jit ROLES` and takes its identity
// from the X-Test-User header (headerIdentityOptions), so that a test can have as many
// users as it needs; roleBlocks declares the roles. They sync quietly (quietSync).
func newRedisInstances(t *testing.T, r *testkit.Redis, n int, roles, roleBlocks string) []*env {
	t.Helper()
	return newRedisInstancesWith(t, r, n, redisClusterOptions{}, roles, roleBlocks)
}

// redisClusterOptions change what newRedisInstancesWith starts.
type redisClusterOptions struct {
	// Sync is the jit option lines of the revocation sync; quietSync when empty.
	Sync string
	// Upstream, if set, is where every instance proxies to, instead of an upstream of
	// its own that keeps every request (see siteSpec.Upstream).
	Upstream string
}

// newRedisInstancesWith is newRedisInstances with options.
func newRedisInstancesWith(t *testing.T, r *testkit.Redis, n int, o redisClusterOptions, roles, roleBlocks string) []*env {
	t.Helper()
	sync := cmp.Or(o.Sync, quietSync)
	opts := envOptions{Stopped: true, JitOptions: headerIdentityOptions + "\n" + sync +
		"\n\t\tstore redis {\n\t\t\taddress " + r.Addr + "\n\t\t}\n" + roleBlocks}
	envs := make([]*env, n)
	for i := range envs {
		opts.Sites = []siteSpec{{Host: clusterHost, Bind: "127.0.0.1", Upstream: o.Upstream,
			Jit: "\tjit " + roles + " {\n\t\taudience http://" + clusterHost + "\n\t}"}}
		envs[i] = newEnv(t, opts)
	}
	startTogether(envs...)
	return envs
}

// userNames are n user names: prefix000, prefix001, …
func userNames(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%03d", prefix, i)
	}
	return out
}

// eligibleLines are `eligible …` lines for a role block, twenty users a line.
func eligibleLines(users []string) string {
	var sb strings.Builder
	for chunk := range slices.Chunk(users, 20) {
		sb.WriteString("\t\t\teligible " + strings.Join(chunk, " ") + "\n")
	}
	return sb.String()
}

// enrollAll enrolls each user through e's admin API.
func (e *env) enrollAll(users []string) map[string]*totpUser {
	e.t.Helper()
	out := make(map[string]*totpUser, len(users))
	for _, u := range users {
		out[u] = e.enroll(u)
	}
	return out
}

// clearOfStepEdge waits for the next TOTP step when fewer than margin remain of this
// one, so that what follows runs within one step.
func clearOfStepEdge(t *testing.T, margin time.Duration) {
	t.Helper()
	next := time.Unix((currentStep()+1)*30, 0)
	if time.Until(next) < margin {
		sleepUntil(t, next.Add(50*time.Millisecond), "a trial must not straddle a TOTP step")
	}
}

// ---------------------------------------------------------------------------
// Requests released at one moment.

// prepared is a request made in full beforehand, on the client of the browser that
// will send it: the browser's connection to that instance is open and idle (it just
// fetched the form), so the request goes out without a handshake when released.
type prepared struct {
	client *http.Client
	req    *http.Request
}

// prepare makes a form POST as b.postForm would send it.
func (b *browser) prepare(rawURL string, form url.Values) prepared {
	b.t.Helper()
	req := b.newRequest(http.MethodPost, rawURL, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return prepared{client: b.client, req: req}
}

// releasedAnswer is what one request sent by releaseTogether got back.
type releasedAnswer struct {
	*response
	err error
}

// session is the session cookie the answer sets, or "".
func (a releasedAnswer) session() string {
	if a.err != nil {
		return ""
	}
	if c := setCookie(a.response, cookieName); c != nil {
		return c.Value
	}
	return ""
}

func (a releasedAnswer) String() string {
	if a.err != nil {
		return "error: " + a.err.Error()
	}
	return a.response.String()
}

// releaseTogether sends every request at the same moment, each from a goroutine of
// its own that was waiting for the signal, and returns the answers in order.
func releaseTogether(reqs ...prepared) []releasedAnswer {
	out := make([]releasedAnswer, len(reqs))
	var ready, done sync.WaitGroup
	start := make(chan struct{})
	for i, p := range reqs {
		ready.Add(1)
		done.Add(1)
		go func() {
			defer done.Done()
			ready.Done()
			<-start
			resp, err := p.client.Do(p.req)
			if err != nil {
				out[i] = releasedAnswer{err: err}
				return
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			out[i] = releasedAnswer{response: &response{Response: resp, Body: string(body)}, err: err}
		}()
	}
	ready.Wait()
	close(start)
	done.Wait()
	return out
}

// ---------------------------------------------------------------------------
// Watching a token.

// tokenProbe asks one instance, over a kept-alive connection, whether it admits a
// token: the cheapest request that tells, so that it can be repeated every few
// milliseconds.
type tokenProbe struct {
	client *http.Client
	site   string
}

func newTokenProbe(t *testing.T, site string) *tokenProbe {
	client := &http.Client{
		Timeout:       5 * time.Second,
		Transport:     &http.Transport{MaxIdleConnsPerHost: 4},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	t.Cleanup(client.CloseIdleConnections)
	return &tokenProbe{client: client, site: site}
}

// probeVerdict is what an instance did with a request under a token.
type probeVerdict int

const (
	probeAdmitted probeVerdict = iota
	probeRefused
	// probeCutOff: the request was in flight under the session when the instance
	// learned of its revocation, and was ended there (reverse_proxy answers 499).
	probeCutOff
)

// ask sends the protected page's request under the token as user: probeAdmitted for a
// 200 from the upstream, probeRefused for the redirect to the activation page,
// probeCutOff for the 499 of a request ended by the revocation, an error for anything
// else.
func (p *tokenProbe) ask(user, token string) (probeVerdict, error) {
	req, err := http.NewRequest(http.MethodGet, p.site+adminURI, nil)
	if err != nil {
		return 0, err
	}
	req.Host = clusterHost
	req.Header.Set("X-Test-User", user)
	req.Header.Set("Cookie", cookieName+"="+token)
	req.Header.Set("Accept", "text/html")
	resp, err := p.client.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusOK && resp.Header.Get("X-Upstream") != "":
		return probeAdmitted, nil
	case resp.StatusCode == http.StatusFound && strings.HasPrefix(resp.Header.Get("Location"), "/.jit/activate?"):
		return probeRefused, nil
	case resp.StatusCode == 499:
		return probeCutOff, nil
	default:
		return 0, fmt.Errorf("%s: want 200 from the upstream or 302 to the activation page, got %s (Location %q)",
			p.site, resp.Status, resp.Header.Get("Location"))
	}
}

// admits reports whether the instance admits the token: an error unless it admits or
// refuses it.
func (p *tokenProbe) admits(user, token string) (bool, error) {
	v, err := p.ask(user, token)
	if err == nil && v == probeCutOff {
		err = fmt.Errorf("%s cut off a request under a session it was not asked to end", p.site)
	}
	return v == probeAdmitted, err
}

// pollUntil asks again and again, a pause of every apart, until stop is closed or the
// instance refuses the token, and returns how many requests in flight it cut off
// meanwhile (answered 499: the revocation ended them).
func (p *tokenProbe) pollUntil(user, token string, every time.Duration, stop <-chan struct{}) (cut int) {
	for {
		select {
		case <-stop:
			return cut
		default:
		}
		v, err := p.ask(user, token)
		switch {
		case err != nil || v == probeRefused:
			return cut
		case v == probeCutOff:
			cut++
		}
		time.Sleep(every)
	}
}

// ---------------------------------------------------------------------------
// The instances' audit logs, together.

// eventsOn are the events of every instance's audit log that match.
func eventsOn(envs []*env, m match) []event {
	var out []event
	for _, e := range envs {
		out = append(out, e.events(m)...)
	}
	return out
}

// settledEvents waits up to 3 s until the instances' audit logs hold at least want
// events that match (they are written just after the response), then a little longer
// for any beyond want, and returns them all: whether more than want is wrong is for
// the caller to judge.
func settledEvents(envs []*env, m match, want int) []event {
	deadline := time.Now().Add(3 * time.Second)
	for {
		evs := eventsOn(envs, m)
		if len(evs) >= want {
			time.Sleep(100 * time.Millisecond)
			return eventsOn(envs, m)
		}
		if time.Now().After(deadline) {
			return evs
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// countBy counts events by the value of key.
func countBy(evs []event, key string) map[string]int {
	out := map[string]int{}
	for _, ev := range evs {
		out[ev.str(key)]++
	}
	return out
}

// durationPercentile is the nearest-rank percentile p (0 < p ≤ 100) of sorted.
func durationPercentile(sorted []time.Duration, p float64) time.Duration {
	rank := int(math.Ceil(float64(len(sorted)) * p / 100))
	return sorted[max(rank, 1)-1]
}

// revocationsLeaveStoppedAndDeadInstances: an instance that stops says so, and
// revocations do not wait for it; one that dies is waited for, up to 2 s, and named in
// the answer as not confirmed. It stops c and kills b.
func revocationsLeaveStoppedAndDeadInstances(t *testing.T, a, b, c *env, users []string, codes map[string]*totpUser) {
	t.Helper()
	siteA := a.site(0)
	c.stop()
	token := a.headerUser(users[0]).mustActivate(siteA, fleetRole, adminURI, codes[users[0]], nil)
	if got := a.revokeApplied(sessionID(t, token)); got == nil || got.Instances != 2 || got.Confirmed != 2 {
		t.Errorf("a revocation after C stopped: applied %+v, want confirmed by 2 of 2", got)
	}
	_ = b.proc.cmd.Process.Kill()
	<-b.proc.done
	b.proc = nil
	token = a.headerUser(users[1]).mustActivate(siteA, fleetRole, adminURI, codes[users[1]], nil)
	sent := time.Now()
	got := a.revokeApplied(sessionID(t, token))
	if got == nil || got.Instances != 2 || got.Confirmed != 1 || len(got.Missing) != 1 {
		t.Errorf("a revocation after B died: applied %+v, want 1 of 2 confirmed and B missing", got)
	}
	if waited := time.Since(sent); waited < 2*time.Second {
		t.Errorf("a revocation after B died answered after %s: want it to wait 2 s for B", waited)
	}
}
