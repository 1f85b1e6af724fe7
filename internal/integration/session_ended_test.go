package integration

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddy-jit/caddy-jit/internal/testkit"
)

// wantSessionEnded waits for e's session_ended event of sid and checks it against
// the session's access events in the same log: how it ended, by whom, and every count.
func wantSessionEnded(t *testing.T, e *env, sid, how, by string, within time.Duration) {
	t.Helper()
	ended := e.waitEventWithin(match{"event": "session_ended", "session_id": sid}, within)
	if n := len(e.events(match{"event": "session_ended", "session_id": sid})); n != 1 {
		t.Errorf("%d session_ended events of %s in one log, want 1", n, sid)
	}
	var requests, mutating, bytesIn, bytesOut int
	statuses := map[string]int{}
	for _, a := range e.events(match{"event": "access", "session_id": sid}) {
		requests++
		if a.str("body_sha256") != "" {
			mutating++
		}
		n, _ := strconv.Atoi(a.str("bytes"))
		bytesOut += n
		in, _ := strconv.Atoi(a.str("body_bytes"))
		bytesIn += in
		statuses["status_"+a.str("status")[:1]+"xx"]++
	}
	// The admin API names the operator and where the call came from.
	if got := ended.str("by"); got != by && !strings.HasPrefix(got, by+" via admin API") {
		t.Errorf("session_ended of %s: by = %q, want %q", sid, got, by)
	}
	want := map[string]string{"how": how, "requests": strconv.Itoa(requests),
		"mutating_requests": strconv.Itoa(mutating), "bytes_in": strconv.Itoa(bytesIn), "bytes_out": strconv.Itoa(bytesOut)}
	for _, class := range []string{"status_1xx", "status_2xx", "status_3xx", "status_4xx", "status_5xx"} {
		want[class] = strconv.Itoa(statuses[class])
	}
	for k, v := range want {
		if got := ended.str(k); got != v {
			t.Errorf("session_ended of %s: %s = %q, want %q (from the log's %d access events): %s", sid, k, got, v, requests, ended)
		}
	}
	if requests == 0 {
		t.Errorf("session %s has no access event: the test must use it", sid)
	}
}

// Each way a session ends closes its story with one session_ended whose counts equal
// its access events: deactivated by its user, revoked by an operator, expired.
func TestSessionEndedForEachWayASessionEnds(t *testing.T) {
	e := newEnv(t, envOptions{JitOptions: `
		role brief {
			max_duration 3s
			default_duration 2s
			justification optional
			eligible alice
		}`,
		Sites: []siteSpec{{Auth: true, Jit: "\tjit " + roleAdmin + " brief"}},
	})
	site := e.site(0)
	alice, bob := e.enroll("alice"), e.enroll("bob")
	a, b := e.browser("alice"), e.browser("bob")

	t.Run("deactivated", func(t *testing.T) {
		sid := sessionID(t, a.mustActivate(site, roleAdmin, adminURI, alice, nil))
		a.get(site + "/admin/one")
		a.get(site + "/admin/two?page=2")
		a.do(http.MethodPost, site+"/admin/change", strings.NewReader("x=1"), withHeader("Content-Type", "application/x-www-form-urlencoded"))
		f := formFields(t, a.get(site+"/.jit/").Body, "/.jit/deactivate")
		wantStatus(t, a.postForm(site+"/.jit/deactivate", f), http.StatusSeeOther, "alice's deactivation")
		wantSessionEnded(t, e, sid, "deactivated", "alice", 3*time.Second)
		// Its own event comes first: session_ended closes the story.
		var order []string
		for _, ev := range e.events(match{"session_id": sid}) {
			if k := ev.str("event"); k == "deactivated" || k == "session_ended" {
				order = append(order, k)
			}
		}
		if strings.Join(order, ",") != "deactivated,session_ended" {
			t.Errorf("the end's events are in the order %v, want deactivated then session_ended", order)
		}
		// caddy jit audit session tells it, and that the story is complete.
		code, out := jitCLI(t, "audit", "session", sid, e.data.AuditLog, "--json")
		var story struct {
			Closed []struct {
				How      string `json:"how"`
				Requests int    `json:"requests"`
				Complete bool   `json:"complete"`
			} `json:"closed"`
		}
		if err := json.Unmarshal([]byte(out), &story); code != 0 || err != nil || len(story.Closed) != 1 ||
			story.Closed[0].How != "deactivated" || story.Closed[0].Requests != 3 || !story.Closed[0].Complete {
			t.Errorf("audit session --json: exit %d, closed %+v (%v), want one, deactivated, 3 requests, complete", code, story.Closed, err)
		}
	})
	t.Run("revoked by an operator", func(t *testing.T) {
		sid := sessionID(t, b.mustActivate(site, roleAdmin, adminURI, bob, nil))
		b.get(site + "/admin/x")
		e.revoke(sid)
		wantSessionEnded(t, e, sid, "revoked", "integration", 3*time.Second)
	})
	t.Run("expired", func(t *testing.T) {
		token := a.mustActivate(site, "brief", adminURI, alice, url.Values{"duration": {"2s"}})
		sid := sessionID(t, token)
		a.get(site + "/admin/quick")
		wantSessionEnded(t, e, sid, "expired", "", 6*time.Second)
	})
	// A browser holds one session cookie: the session a new activation in the same
	// browser pushes out ends, as replaced by its user.
	t.Run("replaced in its browser", func(t *testing.T) {
		frank := e.enroll("frank")
		f := e.browser("frank")
		old := f.mustActivate(site, roleAdmin, adminURI, frank, nil)
		sid := sessionID(t, old)
		f.get(site + "/admin/old")
		f.do(http.MethodPost, site+"/admin/old", strings.NewReader("z=3"), withHeader("Content-Type", "application/x-www-form-urlencoded"))
		next := sessionID(t, f.mustActivate(site, roleAdmin, adminURI, frank, nil))
		wantSessionEnded(t, e, sid, "replaced", "frank", 3*time.Second)
		ev := e.waitEvent(match{"event": "replaced", "session_id": sid})
		if got := ev.str("reason"); !strings.Contains(got, next) {
			t.Errorf("the replaced event's reason is %q, want it to name the new session %s", got, next)
		}
		wantRefused(t, e, f, "frank", old, "the replaced session's token")
		wantStatus(t, f.get(site+"/admin/new"), http.StatusOK, "frank's new session")
	})
	// A clean stop keeps what the instance served: the session_ended after the restart
	// counts the requests on both sides of it, and a WebSocket the stop closed.
	t.Run("revoked after a restart", func(t *testing.T) {
		token := b.mustActivate(site, roleAdmin, adminURI, bob, nil)
		sid := sessionID(t, token)
		b.get(site + "/admin/before")
		b.do(http.MethodPost, site+"/admin/before", strings.NewReader("y=2"), withHeader("Content-Type", "application/x-www-form-urlencoded"))
		ws, err := dialWebSocket(t, site, "bob", token)
		if err != nil || !wsEcho(t, ws, "before the stop") {
			t.Fatalf("a WebSocket under bob's session: %v", err)
		}
		e.restart()
		waitWSClosed(t, ws, time.Now().Add(5*time.Second), "the WebSocket across the stop")
		wantStatus(t, b.get(site+"/admin/after"), http.StatusOK, "bob's session after the restart")
		e.revoke(sid)
		wantSessionEnded(t, e, sid, "revoked", "integration", 3*time.Second)
		if n := len(e.events(match{"event": "access", "session_id": sid})); n != 4 {
			t.Errorf("%d access events of the session, want 4 (2 and a WebSocket before the restart, 1 after)", n)
		}
	})
}

// On two instances sharing Redis, each one that served the session writes its own
// session_ended, with its own counts; the one that did not end it learns how and by
// whom from the session's record.
func TestSessionEndedOnEveryInstanceThatServedIt(t *testing.T) {
	users := []string{"se000"}
	envs := newRedisInstances(t, testkit.StartRedis(t), 2, fleetRole, fleetRoleBlock(users))
	a, b := envs[0], envs[1]
	codes := a.enrollAll(users)
	br := a.headerUser(users[0])
	token := br.mustActivate(a.site(0), fleetRole, adminURI, codes[users[0]], nil)
	sid := sessionID(t, token)
	for i, e := range []*env{a, b, b} {
		r := br.raw(http.MethodGet, e.site(0)+adminURI+"?n="+strconv.Itoa(i), withToken(token))
		wantStatus(t, r, http.StatusOK, "the session on "+e.site(0))
	}
	a.revoke(sid)
	wantSessionEnded(t, a, sid, "revoked", "integration", 3*time.Second)
	wantSessionEnded(t, b, sid, "revoked", "integration", 5*time.Second)
}
