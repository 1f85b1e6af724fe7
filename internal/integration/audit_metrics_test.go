package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// metricValue reads one sample from Prometheus text: the value of the line that starts
// with name and carries every label given.
func metricValue(t *testing.T, text, name string, labels ...string) (float64, bool) {
	t.Helper()
	for line := range strings.SplitSeq(text, "\n") {
		if !strings.HasPrefix(line, name) || strings.HasPrefix(line, "#") {
			continue
		}
		rest := line[len(name):]
		if rest != "" && rest[0] != '{' && rest[0] != ' ' {
			continue
		}
		ok := true
		for _, l := range labels {
			ok = ok && strings.Contains(rest, l)
		}
		if !ok {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		return v, true
	}
	return 0, false
}

func (e *env) metrics() string {
	e.t.Helper()
	resp, err := http.Get(e.adminURL("/metrics"))
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		e.t.Fatalf("GET /metrics: %d %s", resp.StatusCode, body)
	}
	return string(body)
}

// A5. The metrics appear on Caddy's /metrics, count what happened, and survive a reload.
func TestAuditMetricsOnCaddyMetricsSurviveReload(t *testing.T) {
	e := newEnv(t, envOptions{})
	site := e.site(0)
	alice := e.enroll("alice")
	b := e.browser("alice")
	wantActivationRedirect(t, b.get(site+adminURI), roleAdmin, adminURI)
	r := b.activate(site, roleAdmin, adminURI, alice.wrong(t), nil)
	wantStatus(t, r, http.StatusBadRequest, "a wrong code")
	b.mustActivate(site, roleAdmin, adminURI, alice, nil)
	for range 3 {
		b.get(site + adminURI)
	}
	b.get(site + "/admin/missing-page-404") // the upstream answers 200 to everything; still a 2xx

	check := func(what string, want map[string]float64) {
		t.Helper()
		text := e.metrics()
		for key, min := range want {
			name, labels, _ := strings.Cut(key, "|")
			var ls []string
			if labels != "" {
				ls = strings.Split(labels, ",")
			}
			got, ok := metricValue(t, text, name, ls...)
			if !ok || got < min {
				t.Errorf("%s: %s{%s} = %v (present %v), want ≥ %v", what, name, labels, got, ok, min)
			}
		}
	}
	want := map[string]float64{
		`caddy_jit_activations_total|role="console-admin",result="succeeded"`:    1,
		`caddy_jit_activations_total|role="console-admin",result="totp_invalid"`: 1,
		`caddy_jit_requests_total|role="console-admin",code="2xx"`:               4,
		`caddy_jit_denials_total|reason="no_session"`:                            1,
		`caddy_jit_totp_failures_total|reason="totp_invalid"`:                    1,
		`caddy_jit_revocation_sync_age_seconds`:                                  0,
	}
	check("before the reload", want)
	e.reload()
	b.get(site + adminURI)
	want[`caddy_jit_requests_total|role="console-admin",code="2xx"`] = 5
	check("after the reload", want)
	if _, ok := metricValue(t, e.metrics(), "caddy_jit_lockouts_total"); !ok {
		t.Error("caddy_jit_lockouts_total is missing")
	}
	// The active-sessions gauge is recounted from storage soon after a session starts
	// or ends here (and every 30 s for the rest of the cluster).
	waitMetric := func(want float64) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			got, _ := metricValue(t, e.metrics(), "caddy_jit_active_sessions", `role="console-admin"`)
			if got == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("caddy_jit_active_sessions{role=console-admin} = %v, want %v", got, want)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	waitMetric(1)
	f := formFields(t, b.get(site+"/.jit/").Body, "/.jit/deactivate")
	wantStatus(t, b.postForm(site+"/.jit/deactivate", f), http.StatusSeeOther, "the deactivation")
	waitMetric(0)
}

// A6. Write errors on the audit sink are counted and reported in Caddy's own log.
func TestAuditWriteErrorsAreCountedAndReported(t *testing.T) {
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skip("no /dev/full on this system")
	}
	e := newEnv(t, envOptions{AuditOutput: `output file /dev/full {
			roll_disabled
		}`})
	site := e.site(0)
	alice := e.enroll("alice")
	b := e.browser("alice")
	b.mustActivate(site, roleAdmin, adminURI, alice, nil)
	b.get(site + adminURI)
	got, ok := metricValue(t, e.metrics(), "caddy_jit_audit_write_errors_total")
	if !ok || got < 2 {
		t.Errorf("caddy_jit_audit_write_errors_total = %v (present %v), want ≥ 2", got, ok)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(e.logs.String(), "writing audit events failed") {
		if time.Now().After(deadline) {
			t.Fatalf("Caddy's log does not report the failed audit writes:\n%s", e.logTail(40))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A7. `caddy jit audit session` and `caddy jit report` tell the right figures about a
// log that a real Caddy wrote while users worked.
func TestAuditSessionStoryAndReportOnARealLog(t *testing.T) {
	waitsForTOTPSteps(t)
	e := newEnv(t, envOptions{JitOptions: `
		role breakglass-admin {
			max_duration 1h
			eligible alice
			approval {
				approvers dave
			}
			break_glass
		}`,
		Sites: []siteSpec{{Auth: true, Jit: "\tjit " + roleAdmin + " breakglass-admin"}},
	})
	site := e.site(0)
	alice, bob := e.enroll("alice"), e.enroll("bob")
	a, b := e.browser("alice"), e.browser("bob")

	// alice: one session, three GETs and a POST, then she deactivates it.
	token := a.mustActivate(site, roleAdmin, adminURI, alice, nil)
	sid := sessionID(t, token)
	for i := range 3 {
		a.get(fmt.Sprintf("%s/admin/view-%d", site, i))
	}
	a.do(http.MethodPost, site+"/admin/change", strings.NewReader("x=1"), withHeader("Content-Type", "application/x-www-form-urlencoded"))
	f := formFields(t, a.get(site+"/.jit/").Body, "/.jit/deactivate")
	wantStatus(t, a.postForm(site+"/.jit/deactivate", f), http.StatusSeeOther, "alice's deactivation")
	// A second activation of the same role: with --noisy 1 that is one too many.
	a.mustActivate(site, roleAdmin, adminURI, alice, nil)
	// bob: one session, two requests, and two wrong codes before it.
	for range 2 {
		b.activate(site, roleAdmin, adminURI, bob.wrong(t), nil)
	}
	b.mustActivate(site, roleAdmin, adminURI, bob, nil)
	b.get(site + "/admin/x")
	b.get(site + "/admin/y")
	// alice breaks the glass on the role that needs approval.
	bg := a.activate(site, "breakglass-admin", adminURI, alice.next(t), url.Values{"break_glass": {"on"}, "justification": {"the database is down, fixing it"}})
	wantStatus(t, bg, http.StatusSeeOther, "alice's break-glass activation")
	e.stop()
	log := e.data.AuditLog

	code, out := jitCLI(t, "audit", "session", sid, log, "--json")
	if code != 0 {
		t.Fatalf("audit session: exit %d\n%s", code, out)
	}
	var story struct {
		User     string `json:"user"`
		Role     string `json:"role"`
		Accesses []struct {
			Method string `json:"method"`
			URI    string `json:"uri"`
			Status int    `json:"status"`
		} `json:"accesses"`
		End struct {
			How string `json:"how"`
			By  string `json:"by"`
		} `json:"end"`
		Totals struct {
			Requests int64 `json:"requests"`
		} `json:"totals"`
	}
	if err := json.Unmarshal([]byte(out), &story); err != nil {
		t.Fatalf("audit session --json is not JSON: %v\n%s", err, out)
	}
	if story.User != "alice" || story.Role != roleAdmin || story.Totals.Requests != 4 || len(story.Accesses) != 4 {
		t.Errorf("story: user %q role %q, %d requests (%d listed), want alice, %s, 4:\n%s", story.User, story.Role, story.Totals.Requests, len(story.Accesses), roleAdmin, out)
	} else if story.Accesses[3].Method != "POST" || story.Accesses[3].URI != "/admin/change" {
		t.Errorf("the fourth request is %+v, want POST /admin/change", story.Accesses[3])
	}
	if story.End.How != "deactivated" || story.End.By != "alice" {
		t.Errorf("the story ends %+v, want deactivated by alice", story.End)
	}
	if code, text := jitCLI(t, "audit", "session", sid, log); code != 0 || !strings.Contains(text, "alice") || !strings.Contains(text, "/admin/change") {
		t.Errorf("audit session as text: exit %d\n%s", code, text)
	}
	if code, _ := jitCLI(t, "audit", "session", "AAAAAAAAAAAAAAAAAAAAAA", log); code != 1 {
		t.Errorf("audit session of an unknown id: exit %d, want 1", code)
	}

	code, out = jitCLI(t, "report", log, "--since", "1d", "--noisy", "1", "--json", "--config", e.cfgFile)
	if code != 1 {
		t.Fatalf("report with alerts: exit %d, want 1\n%s", code, out)
	}
	var rep struct {
		Rows []struct {
			Role        string `json:"role"`
			User        string `json:"user"`
			Activations int64  `json:"activations"`
			BreakGlass  int64  `json:"break_glass"`
			Requests    int64  `json:"requests"`
		} `json:"rows"`
		Alerts []struct {
			Kind string `json:"kind"`
			User string `json:"user"`
			Role string `json:"role"`
		} `json:"alerts"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("report --json is not JSON: %v\n%s", err, out)
	}
	rows := map[string][3]int64{}
	for _, r := range rep.Rows {
		rows[r.User+"/"+r.Role] = [3]int64{r.Activations, r.Requests, r.BreakGlass}
	}
	for key, want := range map[string][3]int64{
		"alice/" + roleAdmin:     {2, 4, 0},
		"bob/" + roleAdmin:       {1, 2, 0},
		"alice/breakglass-admin": {1, 0, 1},
	} {
		if rows[key] != want {
			t.Errorf("report row %s: activations, requests, break-glass = %v, want %v\n%s", key, rows[key], want, out)
		}
	}
	kinds := map[string]bool{}
	for _, a := range rep.Alerts {
		kinds[a.Kind+"/"+a.User] = true
	}
	for _, want := range []string{"noisy/alice", "break_glass/alice"} {
		if !kinds[want] {
			t.Errorf("report alerts lack %s: %v", want, kinds)
		}
	}
	if kinds["noisy/bob"] {
		t.Errorf("bob activated once, yet is reported noisy")
	}
	// As text, with a --noisy no one reaches, the break-glass alert alone keeps exit 1.
	if code, out := jitCLI(t, "report", log, "--noisy", "100"); code != 1 || !strings.Contains(out, "break") {
		t.Errorf("report as text: exit %d, want 1 for the break-glass alert\n%s", code, out)
	}
}
