package integration

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-jit/caddy-jit/internal/adminapi"
)

// The moving parts of the soak run (redis_soak_test.go): the clients that keep the
// load steady, the revoker and the probes that watch each revoked token, and the
// record of everything they saw. They run in goroutines of their own, so nothing here
// may fail the test: they record, and the test judges at the end.

// soakUpstream answers every request 200, as the harness's upstream does, but keeps
// nothing of it: over a long run the test process must not grow with the load.
type soakUpstream struct {
	srv  *httptest.Server
	hits atomic.Int64
}

func newSoakUpstream(t *testing.T) *soakUpstream {
	u := &soakUpstream{}
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.hits.Add(1)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("X-Upstream", "soak") // what tokenProbe takes for the upstream's answer
		_, _ = io.WriteString(w, "console page\n")
	}))
	t.Cleanup(u.srv.Close)
	return u
}

func (u *soakUpstream) addr() string { return strings.TrimPrefix(u.srv.URL, "http://") }

// soakFailure is a request that did not get the answer it should have: sent and done
// place it against the Redis outage.
type soakFailure struct {
	sent, done time.Time
	what       string
}

// soakRevocation is one session revoked during the run, and what the instances did
// with its token afterwards.
type soakRevocation struct {
	user, token, sid string
	// on is the instance whose admin API revoked it; at is when that call returned,
	// that is, when the revocation was in Redis and announced; confirmed, whether the
	// answer said every live instance had applied it then.
	on        int
	at        time.Time
	confirmed bool
	// lag is, per instance, how long after at it first refused the token.
	lag []time.Duration
}

// soakRun is what the run's goroutines saw, under mu.
type soakRun struct {
	envs []*env
	// probes ask each instance about a token (one client per instance, shared).
	probes []*tokenProbe
	// pause is held by the Redis outage: the revoker does nothing meanwhile, since
	// activating and revoking need Redis (they answer 503 without it, by design).
	pause sync.RWMutex
	// watchers are the goroutines that watch a revoked token until every instance
	// refuses it.
	watchers sync.WaitGroup

	// began is when the load started: failures are placed against it.
	began time.Time

	mu          sync.Mutex
	served      []int // 200s from the upstream, per instance
	revocations int
	loadServed  int
	failures    []soakFailure
	revoked     []*soakRevocation // every instance refused each of them
	violations  []string          // a revoked session admitted where it must not be
	propagating int               // 200s for a revoked token before the instance learned of it (unconfirmed revocations)
	unconfirmed int               // revocations whose answer did not say every instance applied them
	cutOff      int               // requests under a revoked token ended in flight (499)
	outageFrom  time.Time
	outageTo    time.Time
	reloads     [][2]time.Time // from the reload command's start to its end
}

func newSoakRun(t *testing.T, envs []*env) *soakRun {
	r := &soakRun{envs: envs, served: make([]int, len(envs))}
	for _, e := range envs {
		p := newTokenProbe(t, e.site(0))
		// Correctness, not speed: a slow answer on a busy machine is still an answer.
		p.client.Timeout = 15 * time.Second
		r.probes = append(r.probes, p)
	}
	return r
}

func (r *soakRun) fail(sent time.Time, format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failures = append(r.failures, soakFailure{sent: sent, done: time.Now(), what: fmt.Sprintf(format, args...)})
}

func (r *soakRun) violation(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.violations = append(r.violations, fmt.Sprintf(format, args...))
}

func (r *soakRun) admitted(instance int, load bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.served[instance]++
	if load {
		r.loadServed++
	}
}

// name is an instance's name in messages: A, B, C.
func (r *soakRun) name(i int) string { return string(rune('A' + i)) }

// load sends user's requests under token to the instances in turn, a pause apart,
// until ctx ends; each must reach the upstream.
func (r *soakRun) load(ctx context.Context, client int, user, token string, pause time.Duration) {
	probes := make([]*tokenProbe, len(r.envs))
	for i, p := range r.probes {
		// A client of its own, as each browser has: its kept-alive connections are
		// its own to lose at a reload.
		probes[i] = &tokenProbe{site: p.site, client: &http.Client{Timeout: p.client.Timeout,
			Transport:     &http.Transport{MaxIdleConnsPerHost: 2},
			CheckRedirect: p.client.CheckRedirect}}
		defer probes[i].client.CloseIdleConnections()
	}
	for n := 0; ctx.Err() == nil; n++ {
		i := (client + n) % len(probes)
		sent := time.Now()
		switch v, err := probes[i].ask(user, token); {
		case err != nil:
			r.fail(sent, "load client %d (%s) on %s: %v", client, user, r.name(i), err)
		case v == probeAdmitted:
			r.admitted(i, true)
		case v == probeCutOff:
			r.fail(sent, "load client %d (%s) on %s: 499, a request under a live session ended in flight", client, user, r.name(i))
		default:
			r.fail(sent, "load client %d (%s) on %s: its live session was refused (302 to the activation page)", client, user, r.name(i))
		}
		select {
		case <-ctx.Done():
		case <-time.After(pause):
		}
	}
}

// revokeEvery activates a session and revokes it, every interval until ctx ends: the
// n-th on instance n, revoked through the admin API of the next one, by users in turn.
func (r *soakRun) revokeEvery(ctx context.Context, t *testing.T, interval time.Duration, users []string, codes map[string]*totpUser) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for n := 0; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		r.pause.RLock()
		u := users[n%len(users)]
		r.revokeOne(t, u, codes[u], n%len(r.envs), (n+1)%len(r.envs))
		r.pause.RUnlock()
	}
}

// revokeOne activates u's session on instance made, has every instance admit it (so
// that each holds it in its verified-token cache, as a busy instance would), revokes
// it on instance on, and starts watching it.
func (r *soakRun) revokeOne(t *testing.T, u string, code *totpUser, made, on int) {
	sent := time.Now()
	token, err := soakActivate(t, r.envs[made].site(0), u, code)
	if err != nil {
		r.fail(sent, "activating %s's session to revoke on %s: %v", u, r.name(made), err)
		return
	}
	sid, err := tokenSessionID(token)
	if err != nil {
		r.fail(sent, "%s's session made on %s: %v", u, r.name(made), err)
		return
	}
	for i, p := range r.probes {
		sent := time.Now()
		if ok, err := p.admits(u, token); err != nil || !ok {
			r.fail(sent, "%s's new session %s on %s before its revocation: admitted %v (%v)", u, sid, r.name(i), ok, err)
			return
		}
		r.admitted(i, false)
	}
	sent = time.Now()
	applied, err := soakRevoke(r.envs[on], sid)
	if err != nil {
		r.fail(sent, "revoking %s's session %s on %s: %v", u, sid, r.name(on), err)
		return
	}
	confirmed := applied != nil && applied.Confirmed == applied.Instances && applied.Instances == len(r.envs)
	rev := &soakRevocation{user: u, token: token, sid: sid, on: on, at: time.Now(), confirmed: confirmed, lag: make([]time.Duration, len(r.envs))}
	r.mu.Lock()
	r.revocations++
	if !confirmed {
		r.unconfirmed++
	}
	r.mu.Unlock()
	r.watchers.Go(func() { r.watch(rev) })
}

// soakRefusedWithin bounds how long an instance may take to learn of a revocation:
// the announcement takes milliseconds and the sync reads every revocation each
// second (sync_interval 1s) even if the announcement was lost; an instance that
// still admits the token after ten syncs never learned of it.
const soakRefusedWithin = 10 * time.Second

// watch asks every instance about a revoked token, a few milliseconds apart, until
// each has refused it. The instance that revoked it must refuse it at once: its admin
// API answered after adding it to its own revocation set. So must every other when the
// answer said all of them had confirmed it (they had read it from Redis on its
// announcement). Only where the answer did not (an instance reloading, or Redis just
// back), another instance learns of it at its next sync, and a 200 from it before its
// first refusal is that delay, counted apart; after its first refusal, recheck holds it
// to refusing for good.
func (r *soakRun) watch(rev *soakRevocation) {
	pending := map[int]bool{}
	for i := range r.envs {
		pending[i] = true
	}
	deadline := rev.at.Add(soakRefusedWithin)
	for len(pending) > 0 {
		for i := range r.envs {
			if !pending[i] {
				continue
			}
			sent := time.Now()
			switch v, err := r.probes[i].ask(rev.user, rev.token); {
			case err != nil:
				r.fail(sent, "%s's revoked session %s on %s: %v", rev.user, rev.sid, r.name(i), err)
			case v == probeAdmitted && i == rev.on:
				r.admitted(i, false)
				r.violation("%s's session %s: %s, whose admin API revoked it, admitted it %s after the revoke call returned",
					rev.user, rev.sid, r.name(i), sent.Sub(rev.at).Round(time.Microsecond))
			case v == probeAdmitted && rev.confirmed:
				r.admitted(i, false)
				r.violation("%s's session %s, revoked on %s and confirmed by every instance: %s admitted it %s after the revoke call returned",
					rev.user, rev.sid, r.name(rev.on), r.name(i), sent.Sub(rev.at).Round(time.Microsecond))
			case v == probeAdmitted:
				r.admitted(i, false)
				r.mu.Lock()
				r.propagating++
				r.mu.Unlock()
			default: // refused, or cut off in flight: it knows
				if v == probeCutOff {
					r.mu.Lock()
					r.cutOff++
					r.mu.Unlock()
				}
				rev.lag[i] = time.Since(rev.at)
				delete(pending, i)
			}
		}
		if len(pending) > 0 && time.Now().After(deadline) {
			for i := range pending {
				r.violation("%s's session %s, revoked on %s: %s still admits it %s after the revocation reached Redis",
					rev.user, rev.sid, r.name(rev.on), r.name(i), soakRefusedWithin)
			}
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	r.mu.Lock()
	r.revoked = append(r.revoked, rev)
	r.mu.Unlock()
}

// recheck asks, every interval until ctx ends, one instance about one revoked token,
// taking them in turn: once refused, refused for good, through reloads and the
// Redis restart.
func (r *soakRun) recheck(ctx context.Context, interval time.Duration) {
	for n := 0; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-time.After(interval):
		}
		// Three turns in a row ask A, B and C about the same token.
		r.mu.Lock()
		var rev *soakRevocation
		if len(r.revoked) > 0 {
			rev = r.revoked[(n/len(r.envs))%len(r.revoked)]
		}
		r.mu.Unlock()
		if rev != nil {
			r.askRevoked(rev, n%len(r.envs), "later")
		}
	}
}

// askRevoked asks instance i about a token every instance has refused before.
func (r *soakRun) askRevoked(rev *soakRevocation, i int, when string) {
	sent := time.Now()
	switch v, err := r.probes[i].ask(rev.user, rev.token); {
	case err != nil:
		r.fail(sent, "%s's revoked session %s on %s (%s): %v", rev.user, rev.sid, r.name(i), when, err)
	case v == probeAdmitted:
		r.admitted(i, false)
		r.violation("%s's session %s, revoked on %s and refused by every instance: %s admitted it again %s after the revocation (%s)",
			rev.user, rev.sid, r.name(rev.on), r.name(i), sent.Sub(rev.at).Round(time.Millisecond), when)
	}
}

// setOutage records the Redis outage: from its stop until every instance had
// recovered.
func (r *soakRun) setOutage(from, to time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.outageFrom, r.outageTo = from, to
}

// inOutage reports whether a request overlapped the outage.
func (r *soakRun) inOutage(f soakFailure) bool {
	return !r.outageFrom.IsZero() && !f.done.Before(r.outageFrom) && !f.sent.After(r.outageTo)
}

// soakActivate activates the soak role for user on site, as a browser would (the
// form, then the post with the user's next code), and returns the session's token.
func soakActivate(t *testing.T, site, user string, code *totpUser) (string, error) {
	jar, _ := cookiejar.New(nil)
	client := &http.Client{Jar: jar, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	defer client.CloseIdleConnections()
	send := func(method, uri string, body io.Reader) (*http.Response, string, error) {
		req, err := http.NewRequest(method, site+uri, body)
		if err != nil {
			return nil, "", err
		}
		req.Host = clusterHost
		req.Header.Set("X-Test-User", user)
		req.Header.Set("Accept", "text/html")
		if body != nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
		resp, err := client.Do(req)
		if err != nil {
			return nil, "", err
		}
		defer resp.Body.Close()
		page, err := io.ReadAll(resp.Body)
		return resp, string(page), err
	}
	resp, page, err := send(http.MethodGet, activationPath(soakRole, adminURI), nil)
	if err != nil {
		return "", fmt.Errorf("the activation page: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("the activation page: %s", resp.Status)
	}
	form := formFields(t, page, "/.jit/activate")
	form.Set("justification", "soak: a session to revoke")
	form.Set("code", code.next(t))
	resp, page, err = send(http.MethodPost, "/.jit/activate", strings.NewReader(form.Encode()))
	if err != nil {
		return "", fmt.Errorf("posting the activation: %w", err)
	}
	for _, c := range resp.Cookies() {
		if c.Name == cookieName && c.Value != "" && resp.StatusCode == http.StatusSeeOther {
			return c.Value, nil
		}
	}
	return "", fmt.Errorf("posting the activation: want 303 with a session cookie, got %s: %.300s", resp.Status, page)
}

// soakRevoke revokes a session through e's admin API, as env.revokeApplied does,
// without failing the test from a goroutine, and returns what the answer says of the
// instances that applied it.
func soakRevoke(e *env, sid string) (*adminapi.Applied, error) {
	req, err := http.NewRequest(http.MethodDelete, e.adminURL("/jit/sessions/"+url.PathEscape(sid)+"?by=soak&reason=soak"), nil)
	if err != nil {
		return nil, err
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var out struct {
		Sessions []adminSession    `json:"sessions"`
		Applied  *adminapi.Applied `json:"applied"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &out) != nil ||
		len(out.Sessions) != 1 || out.Sessions[0].ID != sid || !out.Sessions[0].Revoked {
		return nil, fmt.Errorf("DELETE /jit/sessions/%s: want 200 with that session revoked, got %s: %.300s", sid, resp.Status, body)
	}
	return out.Applied, nil
}

// tokenSessionID is sessionID without a *testing.T, for goroutines.
func tokenSessionID(token string) (string, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return "", errors.New("the token is not a compact JWS")
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", fmt.Errorf("the token's claims are not base64url: %w", err)
	}
	var claims struct {
		SID string `json:"sid"`
	}
	if err := json.Unmarshal(raw, &claims); err != nil || claims.SID == "" {
		return "", fmt.Errorf("the token has no sid claim (%v)", err)
	}
	return claims.SID, nil
}
