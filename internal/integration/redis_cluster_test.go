package integration

import (
	"cmp"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-jit/caddy-jit/internal/testkit"
)

// Three Caddy instances on one redis-server, under concurrent requests (issue 15): a
// session made on one works on all; a revocation on one is refused by the others at
// once (measured); one TOTP code sent to all three at the same moment admits exactly
// one; approvals, max_active and lockouts hold when their requests race across
// instances. The revocation sync runs every 20 s (quietSync), so what reaches another
// instance within a test came through Redis.

// fleetRole is the role of the tests whose users only activate.
const fleetRole = "fleet"

// fleetRoleBlock declares fleetRole for users.
func fleetRoleBlock(users []string) string {
	return "\t\trole " + fleetRole + " {\n\t\t\tmax_duration 1h\n\t\t\tdefault_duration 30m\n\t\t\tjustification optional\n" +
		eligibleLines(users) + "\t\t}"
}

// A session made on A works on B and C, and each of 200 sessions revoked on A is
// refused by B and C within the announcement's delay, although both had it in their
// verified-token cache. The delay, from the admin API's answer on A until both refuse,
// is measured by asking both every 2 ms, and logged (p50, p99, max).
func TestRedisThreeInstancesRevocationLatency(t *testing.T) {
	const revocations = 200
	users := userNames("rv", revocations)
	envs := newRedisInstances(t, testkit.StartRedis(t), 3, fleetRole, fleetRoleBlock(users))
	a, b, c := envs[0], envs[1], envs[2]
	siteA := a.site(0)
	codes := a.enrollAll(users)
	tokens := make([]string, revocations)
	began := time.Now()
	for i, u := range users {
		br := a.headerUser(u)
		tokens[i] = br.mustActivate(siteA, fleetRole, adminURI, codes[u], nil)
		br.client.CloseIdleConnections()
	}
	t.Logf("%d users activated on A in %s", revocations, time.Since(began).Round(time.Millisecond))

	t.Run("a session made on A works on B and C", func(t *testing.T) {
		u, token := users[0], tokens[0]
		sid := sessionID(t, token)
		for _, e := range []*env{b, c} {
			hits := e.up.count()
			r := a.headerUser(u).raw(http.MethodGet, e.site(0)+adminURI, withToken(token))
			if !wantStatus(t, r, http.StatusOK, "the session made on A, on "+e.site(0)) {
				continue
			}
			if n := e.up.count(); n != hits+1 {
				t.Errorf("%s: the upstream got %d requests, want 1", e.site(0), n-hits)
			}
			got := e.up.last(t)
			if got.Header.Get("X-Jit-Session") != sid || got.Header.Get("X-Jit-User") != u {
				t.Errorf("%s: upstream X-Jit-Session=%q X-Jit-User=%q, want %s and %s", e.site(0),
					got.Header.Get("X-Jit-Session"), got.Header.Get("X-Jit-User"), sid, u)
			}
		}
	})

	probeA, probeB, probeC := newTokenProbe(t, siteA), newTokenProbe(t, b.site(0)), newTokenProbe(t, c.site(0))
	others := []*tokenProbe{probeB, probeC}
	latencies := make([]time.Duration, 0, revocations)
	cutOffs := 0 // polls in flight when B or C learned of the revocation, ended there
	began = time.Now()
	for i, u := range users {
		token := tokens[i]
		// B and C admit it first, so that each holds it in its verified-token cache.
		for _, p := range others {
			if ok, err := p.admits(u, token); err != nil || !ok {
				t.Fatalf("session %d of %s before its revocation: %s admits it: %v (%v)", i, u, p.site, ok, err)
			}
		}
		// Meanwhile B and C are polled: the revocation cuts off what is in flight.
		stop := make(chan struct{})
		var wg sync.WaitGroup
		cut := make([]int, len(others))
		for j, p := range others {
			wg.Go(func() { cut[j] = p.pollUntil(u, token, 2*time.Millisecond, stop) })
		}
		sent := time.Now()
		applied := a.revokeApplied(sessionID(t, token))
		latencies = append(latencies, time.Since(sent))
		close(stop)
		wg.Wait()
		cutOffs += cut[0] + cut[1]
		if applied == nil || applied.Instances != 3 || applied.Confirmed != 3 {
			t.Fatalf("session %d of %s, revoked on A: the answer says applied %+v, want confirmed by 3 of 3 instances", i, u, applied)
		}
		// Confirmed means refused: the first request after the answer, on every one.
		for _, p := range []*tokenProbe{probeA, probeB, probeC} {
			if ok, err := p.admits(u, token); err != nil || ok {
				t.Fatalf("session %d of %s: %s right after the revocation's answer (confirmed by all): admits %v (%v), want refused", i, u, p.site, ok, err)
			}
		}
	}
	total := time.Since(began)

	// Refused once, refused for good: no instance admits any of them again.
	for i, u := range users {
		for _, p := range []*tokenProbe{probeA, probeB, probeC} {
			if ok, err := p.admits(u, tokens[i]); err != nil || ok {
				t.Errorf("session %d of %s after all revocations: %s admits %v (%v), want refused", i, u, p.site, ok, err)
			}
		}
	}

	// The slowest ones, by their place in the run: a slow start is not a slow steady state.
	order := make([]int, revocations)
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(i, j int) int { return cmp.Compare(latencies[j], latencies[i]) })
	var slowest []string
	for _, i := range order[:3] {
		slowest = append(slowest, fmt.Sprintf("#%d %s", i+1, latencies[i].Round(10*time.Microsecond)))
	}
	t.Logf("the slowest revocations: %s", strings.Join(slowest, ", "))
	slices.Sort(latencies)
	p50, p99, worst := durationPercentile(latencies, 50), durationPercentile(latencies, 99), latencies[len(latencies)-1]
	t.Logf("%d revocations on A, from the admin API's request until its answer that B and C both refuse (each confirmed it): p50 %s, p99 %s, max %s, min %s (the loop took %s; %d polls in flight were cut off by the revocation, 499)",
		revocations, p50.Round(10*time.Microsecond), p99.Round(10*time.Microsecond), worst.Round(10*time.Microsecond),
		latencies[0].Round(10*time.Microsecond), total.Round(time.Millisecond), cutOffs)
	if p99 >= time.Second {
		t.Errorf("p99 of the revocation's answer, confirmed by all instances, is %s, want under 1s (the announcement, not the 20 s sync)", p99)
	}
	if n := len(settledEvents(envs, match{"event": "revoked", "role": fleetRole}, revocations)); n != revocations {
		t.Errorf("audit: %d revoked events over the three instances, want %d", n, revocations)
	}

	// A session revoked before is listed, not revoked again: nothing to apply, nor to
	// wait for.
	if got := a.revokeApplied(sessionID(t, tokens[0])); got != nil {
		t.Errorf("revoking a session revoked before: applied %+v, want none (nothing new to apply)", got)
	}

	revocationsLeaveStoppedAndDeadInstances(t, a, b, c, users, codes)
}

// One user's current code, posted to A, B and C at the same moment, admits exactly one
// of the three: the others are refused as replayed, wherever the winner ran. A hundred
// trials, each with a user of its own (a code is accepted once per user and step).
func TestRedisOneCodeAtOnceAdmitsOne(t *testing.T) {
	const trials, spares = 100, 20
	users := userNames("oc", trials+spares)
	envs := newRedisInstances(t, testkit.StartRedis(t), 3, fleetRole, fleetRoleBlock(users))
	codes := envs[0].enrollAll(users)

	names := []string{"A", "B", "C"}
	winsOn := map[string]int{}
	var counted []string // the users of the trials that count
	retried, failed := 0, 0
	began := time.Now()
	for next := 0; len(counted) < trials; next++ {
		if next == len(users) {
			t.Fatalf("no user left for trial %d: %d trials straddled a TOTP step and were retried", len(counted)+1, retried)
		}
		u := users[next]
		reqs := make([]prepared, len(envs))
		browsers := make([]*browser, len(envs))
		forms := make([]url.Values, len(envs))
		for i, e := range envs {
			browsers[i] = envs[0].headerUser(u)
			forms[i] = browsers[i].activationForm(e.site(0), fleetRole, adminURI)
			forms[i].Set("justification", "integration test: one code, three instances")
		}
		clearOfStepEdge(t, 2*time.Second)
		step := currentStep()
		code := codeAt(t, codes[u].secret, step)
		for i, e := range envs {
			forms[i].Set("code", code)
			reqs[i] = browsers[i].prepare(e.site(0)+"/.jit/activate", forms[i])
		}
		answers := releaseTogether(reqs...)
		for _, br := range browsers {
			br.client.CloseIdleConnections()
		}
		var admitted, replayed, invalid []int
		for i, an := range answers {
			switch {
			case an.err != nil:
			case an.StatusCode == http.StatusSeeOther && an.session() != "":
				admitted = append(admitted, i)
			case an.StatusCode == http.StatusBadRequest && strings.Contains(an.Body, "already used"):
				replayed = append(replayed, i)
			case an.StatusCode == http.StatusBadRequest && strings.Contains(an.Body, "code is wrong"):
				invalid = append(invalid, i)
			}
		}
		if len(invalid) > 0 && currentStep() != step {
			// The step ended during the trial: a code refused as wrong then says
			// something about the clock, not about the race. Another user tries again.
			retried++
			t.Logf("trial %d (%s) straddled the TOTP step %d: retried with another user", len(counted)+1, u, step)
			continue
		}
		counted = append(counted, u)
		if len(admitted) != 1 || len(replayed) != 2 {
			failed++
			t.Errorf("trial %d (%s): one code posted to A, B and C at once: want exactly one 303 with a session and two 400s (replayed), got:\n A: %s\n B: %s\n C: %s",
				len(counted), u, answers[0], answers[1], answers[2])
			if failed >= 5 {
				t.FailNow()
			}
			continue
		}
		winsOn[names[admitted[0]]]++
	}
	t.Logf("%d trials in %s (%d retried at a step edge); the admitted code was the one posted to A %d times, B %d, C %d",
		trials, time.Since(began).Round(time.Millisecond), retried, winsOn["A"], winsOn["B"], winsOn["C"])

	// The instances' audit logs agree: one activation per user, two replays refused.
	succeeded := countBy(settledEvents(envs, match{"event": "activation_succeeded", "role": fleetRole}, trials), "user")
	replays := countBy(settledEvents(envs, match{"event": "activation_failed", "reason": "totp_replayed"}, 2*trials), "user")
	held := map[string]int{}
	for _, s := range envs[1].sessions("?role=" + fleetRole) {
		held[s.User]++
	}
	for _, u := range counted {
		if succeeded[u] != 1 || replays[u] != 2 || held[u] != 1 {
			t.Errorf("%s: %d activation_succeeded and %d totp_replayed events over the three audit logs, %d active sessions; want 1, 2 and 1",
				u, succeeded[u], replays[u], held[u])
		}
	}
}

// The workflow's rules hold when their requests race across instances: two approvers
// who approve the same request at once, on B and C, start one session; of three users
// who activate a role with max_active 1 at once, on A, B and C, one is admitted; and a
// lockout counts wrong codes sent at once to all three as one count, then holds on all.
func TestRedisApprovalsAndMaxActiveAcrossInstances(t *testing.T) {
	const rounds = 5
	requesters, approvers := userNames("rq", rounds), userNames("ap", 2*rounds)
	holders, locked := userNames("ma", 3*rounds), userNames("lk", 2)
	roles := "\t\trole deploy {\n\t\t\tmax_duration 1h\n\t\t\tjustification optional\n" + eligibleLines(requesters) +
		"\t\t\tapproval {\n\t\t\t\tapprovers " + strings.Join(approvers, " ") + "\n\t\t\t\tcount 1\n\t\t\t}\n\t\t}\n" +
		"\t\trole primary-db {\n\t\t\tmax_duration 1h\n\t\t\tjustification optional\n" + eligibleLines(holders) +
		"\t\t\tmax_active 1\n\t\t}\n" + fleetRoleBlock(locked)
	envs := newRedisInstances(t, testkit.StartRedis(t), 3, "deploy primary-db "+fleetRole, roles)
	a, b, c := envs[0], envs[1], envs[2]
	siteA, siteB, siteC := a.site(0), b.site(0), c.site(0)
	codes := a.enrollAll(slices.Concat(requesters, approvers, holders, locked))

	t.Run("two approvers on two instances at once start one session", func(t *testing.T) {
		counted := map[string]int{} // whose approval counted: B's or C's
		defer func() {
			t.Logf("%d rounds: the approval that counted was the one on B %d times, on C %d", rounds, counted["B"], counted["C"])
		}()
		for i, rq := range requesters {
			asker := a.headerUser(rq)
			id := wfRequestID(t, asker.activate(siteA, "deploy", adminURI, codes[rq].next(t), nil), rq+"'s request on A")
			onB, onC := approvers[2*i], approvers[2*i+1]
			var reqs []prepared
			for _, ap := range []struct {
				name, site string
			}{{onB, siteB}, {onC, siteC}} {
				br := a.headerUser(ap.name)
				form := br.approvalForm(ap.site, id)
				if form == nil {
					t.Fatalf("%s's approvals page on %s does not list %s's request %s made on A", ap.name, ap.site, rq, id)
				}
				form.Set("decision", "approve")
				form.Set("comment", "")
				form.Set("code", codes[ap.name].next(t))
				reqs = append(reqs, br.prepare(ap.site+"/.jit/approvals", form))
			}
			answers := releaseTogether(reqs...)
			var approved, conflict int
			for j, an := range answers {
				switch {
				case an.err != nil:
				case an.StatusCode == http.StatusOK && strings.Contains(pageText(t, an.Body), "You approved "+rq+"'s request for deploy (1 of 1)."):
					approved++
					counted[[]string{"B", "C"}[j]]++
				case an.StatusCode == http.StatusConflict:
					conflict++
				}
			}
			if approved != 1 || conflict != 1 {
				t.Errorf("round %d: %s on B and %s on C approve %s's request at once: want one 200 (approved) and one 409, got:\n B: %s\n C: %s",
					i+1, onB, onC, rq, answers[0], answers[1])
			}

			// The one session reaches the asking browser on A, and works on B and C.
			r := asker.get(siteA + "/.jit/requests/" + id)
			if !wantStatus(t, r, http.StatusSeeOther, rq+"'s waiting page on A after the approvals") {
				continue
			}
			token := wfSessionCookie(t, r, rq+"'s waiting page on A after the approvals")
			sid := sessionID(t, token)
			for _, site := range []string{siteB, siteC} {
				if ok, err := newTokenProbe(t, site).admits(rq, token); err != nil || !ok {
					t.Errorf("%s's approved session on %s: admitted %v (%v), want admitted", rq, site, ok, err)
				}
			}
			if ss := c.sessions("?user=" + rq); len(ss) != 1 || ss[0].ID != sid {
				t.Errorf("%s's sessions after two approvals at once: %+v, want the one session %s", rq, ss, sid)
			}
			started := settledEvents(envs, match{"event": "activation_succeeded", "request_id": id}, 1)
			if len(started) != 1 || started[0].str("session_id") != sid {
				t.Errorf("audit: activation_succeeded for request %s over the three instances: %v, want one, for session %s", id, started, sid)
			}
			if n := len(settledEvents(envs, match{"event": "request_approved", "request_id": id}, 1)); n != 1 {
				t.Errorf("audit: %d request_approved events for request %s, want 1", n, id)
			}
			if n := len(settledEvents(envs, match{"event": "approval_failed", "request_id": id, "reason": "already_decided"}, 1)); n != 1 {
				t.Errorf("audit: %d approval_failed events (already_decided) for request %s, want 1 (the approver who came second)", n, id)
			}
		}
	})

	t.Run("max_active 1: three activations at once on A, B and C admit one", func(t *testing.T) {
		winsOn := map[string]int{}
		defer func() {
			t.Logf("%d rounds: the one admitted activation was the one on A %d times, B %d, C %d", rounds, winsOn["A"], winsOn["B"], winsOn["C"])
		}()
		for i := range rounds {
			users := holders[3*i : 3*i+3]
			reqs := make([]prepared, len(envs))
			for j, e := range envs {
				br := a.headerUser(users[j])
				form := br.activationForm(e.site(0), "primary-db", adminURI)
				form.Set("justification", "integration test: the only place")
				form.Set("code", codes[users[j]].next(t))
				reqs[j] = br.prepare(e.site(0)+"/.jit/activate", form)
			}
			answers := releaseTogether(reqs...)
			var winners []int
			var refused int
			for j, an := range answers {
				switch {
				case an.err != nil:
				case an.StatusCode == http.StatusSeeOther && an.session() != "":
					winners = append(winners, j)
				case an.StatusCode == http.StatusForbidden && strings.Contains(pageText(t, an.Body), "max_active"):
					refused++
				}
			}
			if len(winners) != 1 || refused != 2 {
				t.Fatalf("round %d: %v activate primary-db (max_active 1) at once on A, B and C: want one 303 with a session and two 403s (max_active), got:\n A: %s\n B: %s\n C: %s",
					i+1, users, answers[0], answers[1], answers[2])
			}
			winner := users[winners[0]]
			winsOn[[]string{"A", "B", "C"}[winners[0]]]++
			ss := b.sessions("?role=primary-db")
			if len(ss) != 1 || ss[0].User != winner {
				t.Fatalf("round %d: the active primary-db sessions are %+v, want %s's alone", i+1, ss, winner)
			}
			// The place is free again for the next round.
			a.revoke(ss[0].ID)
		}
		if n := len(settledEvents(envs, match{"event": "activation_failed", "role": "primary-db", "reason": "max_active_reached"}, 2*rounds)); n != 2*rounds {
			t.Errorf("audit: %d activation_failed events (max_active_reached) over the three instances, want %d", n, 2*rounds)
		}
		if n := len(settledEvents(envs, match{"event": "activation_succeeded", "role": "primary-db"}, rounds)); n != rounds {
			t.Errorf("audit: %d activation_succeeded events for primary-db, want %d", n, rounds)
		}
	})

	t.Run("a lockout made on A holds on B and C", func(t *testing.T) {
		// wrongAtOnce posts u's wrong code once per site listed, all at the same moment,
		// and counts the 400s (wrong code) and the 429s (locked out).
		wrongAtOnce := func(u string, sites ...string) (wrong, lockedOut int, answers []releasedAnswer) {
			t.Helper()
			var reqs []prepared
			for _, site := range sites {
				br := a.headerUser(u)
				form := br.activationForm(site, fleetRole, adminURI)
				form.Set("code", codes[u].wrong(t))
				reqs = append(reqs, br.prepare(site+"/.jit/activate", form))
			}
			answers = releaseTogether(reqs...)
			for _, an := range answers {
				switch {
				case an.err != nil:
				case an.StatusCode == http.StatusBadRequest && strings.Contains(an.Body, "code is wrong"):
					wrong++
				case an.StatusCode == http.StatusTooManyRequests:
					lockedOut++
				}
			}
			return wrong, lockedOut, answers
		}

		// Five wrong codes at once on A: four counted as wrong, the fifth locks.
		u := locked[0]
		if wrong, lockedOut, answers := wrongAtOnce(u, siteA, siteA, siteA, siteA, siteA); wrong != 4 || lockedOut != 1 {
			t.Errorf("five wrong codes at once on A: want four 400s and one 429, got %d and %d: %v", wrong, lockedOut, answers)
		}
		// The right code, at once on B and C: refused before it is looked at.
		code := codes[u].next(t)
		var reqs []prepared
		for _, site := range []string{siteB, siteC} {
			br := a.headerUser(u)
			form := br.activationForm(site, fleetRole, adminURI)
			form.Set("code", code)
			reqs = append(reqs, br.prepare(site+"/.jit/activate", form))
		}
		for j, an := range releaseTogether(reqs...) {
			if an.err != nil || an.StatusCode != http.StatusTooManyRequests || an.session() != "" {
				t.Errorf("the right code on %s while locked out on A: want 429 and no session, got %s", []string{"B", "C"}[j], an)
			}
		}
		// Cleared on C, the right code that the lockout refused still works, on B.
		var out map[string]string
		c.adminOK(http.MethodPost, "/jit/lockouts/"+u+"/clear?by=integration&reason=test", &out)
		br := a.headerUser(u)
		form := br.activationForm(siteB, fleetRole, adminURI)
		form.Set("code", code)
		if r := br.postForm(siteB+"/.jit/activate", form); wantStatus(t, r, http.StatusSeeOther, "the right code on B after the lockout was cleared on C") {
			wfSessionCookie(t, r, "the right code on B after the lockout was cleared on C")
		}

		// Ten wrong codes at once over A, B and C count as ten: four wrong, then the
		// lockout, which begins once.
		u = locked[1]
		wrong, lockedOut, answers := wrongAtOnce(u, siteA, siteB, siteC, siteA, siteB, siteC, siteA, siteB, siteC, siteA)
		if wrong != 4 || lockedOut != 6 {
			t.Errorf("ten wrong codes at once over A, B and C: want four 400s and six 429s, got %d and %d: %v", wrong, lockedOut, answers)
		}
		if n := len(settledEvents(envs, match{"event": "locked_out", "user": u}, 1)); n != 1 {
			t.Errorf("audit: the lockout of %s began %d times over the three instances, want once", u, n)
		}
		if n := len(settledEvents(envs, match{"event": "activation_failed", "user": u, "reason": "totp_invalid"}, 4)); n != 4 {
			t.Errorf("audit: %d activation_failed events (totp_invalid) for %s, want 4", n, u)
		}
	})
}
