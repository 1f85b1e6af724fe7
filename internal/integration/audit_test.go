package integration

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Session logs an auditor can trust (issue 7): the chain on logs a real Caddy writes,
// no lost events under load, bodies of mutating requests, metrics, write errors.

// auditFiles lists the audit log and its rotated files, oldest first, as an operator's
// glob would (lumberjack names rotated files NAME-TIMESTAMP.EXT, gzipped by default,
// which sort first).
func (e *env) auditFiles() []string {
	e.t.Helper()
	dir := filepath.Dir(e.data.AuditLog)
	base := strings.TrimSuffix(filepath.Base(e.data.AuditLog), ".log")
	matches, err := filepath.Glob(filepath.Join(dir, base+"*.log*"))
	if err != nil {
		e.t.Fatal(err)
	}
	sort.Strings(matches)
	return matches
}

// chainedEvents reads every line of the files, in order.
func chainedEvents(t *testing.T, files ...string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		var r io.Reader = fh
		if strings.HasSuffix(f, ".gz") {
			if r, err = gzip.NewReader(fh); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
		}
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
		for sc.Scan() {
			dec := json.NewDecoder(bytes.NewReader(sc.Bytes()))
			dec.UseNumber()
			var m map[string]any
			if err := dec.Decode(&m); err != nil {
				t.Fatalf("%s: a line is not JSON: %v: %s", f, err, sc.Bytes())
			}
			out = append(out, m)
		}
		fh.Close()
	}
	return out
}

// jitCLI runs `caddy jit ARGS…` and returns its exit code and standard output (what
// it wrote to standard error is logged).
func jitCLI(t *testing.T, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(caddyBin, append([]string{"jit"}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if stderr.Len() > 0 {
		t.Logf("caddy jit %s: standard error:\n%s", strings.Join(args, " "), stderr.String())
	}
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode(), string(out)
		}
		t.Fatalf("caddy jit %v: %v", args, err)
	}
	return 0, string(out)
}

// A1. Under load every privileged request yields exactly one access event, written by
// the batched output, the log rolls over into several files, and the chain holds
// across all of them.
func TestAuditEveryRequestOnceAcrossRotatedFiles(t *testing.T) {
	const requests = 10000
	e := newEnv(t, envOptions{Batched: true, AuditOutput: fmt.Sprintf(`output file "%s" {
				roll_size 1MiB
				roll_keep 20
			}`, filepath.Join(t.TempDir(), "jit-audit.log"))})
	// The harness reads e.data.AuditLog; point it at the rolled file.
	e.data.AuditLog = regexp.MustCompile(`output file "([^"]+)"`).FindStringSubmatch(e.data.AuditOutput)[1]
	site := e.site(0)
	alice := e.enroll("alice")
	token := e.browser("alice").mustActivate(site, roleAdmin, adminURI, alice, nil)

	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	var next, failed atomic.Int64
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= requests {
				req, _ := http.NewRequest(http.MethodGet, site+"/admin/load", nil)
				req.SetBasicAuth("alice", password("alice"))
				req.Header.Set("Cookie", cookieName+"="+token)
				resp, err := client.Do(req)
				if err != nil {
					failed.Add(1)
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if n := failed.Load(); n != 0 {
		t.Fatalf("%d of %d requests failed", n, requests)
	}
	if got := e.up.count(); got < requests {
		t.Fatalf("the upstream saw %d requests, want at least %d", got, requests)
	}
	// Stop, so that every event is written and the chain head saved.
	e.stop()

	files := e.auditFiles()
	if len(files) < 3 {
		t.Errorf("the audit log rolled into %d files, want at least 3 (1 MiB each): %v", len(files), files)
	}
	events := chainedEvents(t, files...)
	access := 0
	seen := map[string]bool{}
	var lastSeq int64
	instance := ""
	for i, ev := range events {
		seq, err := ev["seq"].(json.Number).Int64()
		if err != nil {
			t.Fatalf("event %d has no integer seq: %v", i, ev)
		}
		if instance == "" {
			instance, _ = ev["instance"].(string)
		}
		if ev["instance"] != instance || (lastSeq != 0 && seq != lastSeq+1) {
			t.Fatalf("event %d: instance %v seq %d after seq %d: the chain skips or repeats", i, ev["instance"], seq, lastSeq)
		}
		lastSeq = seq
		if ev["event"] == "access" && ev["uri"] == "/admin/load" {
			access++
			key := fmt.Sprint(ev["seq"])
			if seen[key] {
				t.Fatalf("seq %s twice", key)
			}
			seen[key] = true
		}
	}
	if access != requests {
		t.Fatalf("%d access events for %d requests, want exactly one each", access, requests)
	}
	if n := countEvents(events, "checkpoint"); n < requests/1000 {
		t.Errorf("%d checkpoints over %d events, want one every 1000 at least", n, len(events))
	}

	code, out := jitCLI(t, append([]string{"audit", "verify", "--config", e.cfgFile}, files...)...)
	if code != 0 {
		t.Fatalf("caddy jit audit verify over %d rotated files: exit %d\n%s", len(files), code, out)
	}
	// Given out of order, the rotated files no longer make a chain.
	if len(files) >= 2 {
		swapped := append([]string{files[1], files[0]}, files[2:]...)
		if code, out := jitCLI(t, append([]string{"audit", "verify"}, swapped...)...); code != 1 {
			t.Errorf("verify with two files swapped: exit %d, want 1\n%s", code, out)
		}
	}
}

// A2. A restart continues the chain: the events after it link to those before it.
func TestAuditChainContinuesAcrossRestartAndReload(t *testing.T) {
	e := newEnv(t, envOptions{})
	site := e.site(0)
	alice := e.enroll("alice")
	b := e.browser("alice")
	b.mustActivate(site, roleAdmin, adminURI, alice, nil)
	b.get(site + "/admin/before")
	e.reload()
	b.get(site + "/admin/after-reload")
	e.restart()
	b.get(site + "/admin/after-restart")
	e.stop()

	events := chainedEvents(t, e.data.AuditLog)
	if len(events) < 5 {
		t.Fatalf("only %d events", len(events))
	}
	for i := 1; i < len(events); i++ {
		prev, _ := events[i-1]["seq"].(json.Number).Int64()
		seq, _ := events[i]["seq"].(json.Number).Int64()
		if seq != prev+1 || events[i]["instance"] != events[0]["instance"] {
			t.Fatalf("event %d: seq %d of %v after seq %d of %v: the chain did not continue", i, seq, events[i]["instance"], prev, events[i-1]["instance"])
		}
	}
	if code, out := jitCLI(t, "audit", "verify", e.data.AuditLog); code != 0 {
		t.Fatalf("verify after a reload and a restart: exit %d\n%s", code, out)
	}
}

// A3. Tampering with a log a real Caddy wrote is detected and located, through the CLI
// an auditor runs.
func TestAuditVerifyLocatesTamperingInARealLog(t *testing.T) {
	e := newEnv(t, envOptions{})
	site := e.site(0)
	alice := e.enroll("alice")
	b := e.browser("alice")
	b.mustActivate(site, roleAdmin, adminURI, alice, nil)
	for i := range 8 {
		b.get(fmt.Sprintf("%s/admin/page-%d", site, i))
	}
	e.stop()
	raw, err := os.ReadFile(e.data.AuditLog)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(strings.TrimSuffix(string(raw), "\n"), "\n")
	for i := range lines {
		lines[i] = strings.TrimSuffix(lines[i], "\n")
	}
	n := len(lines)
	if n < 8 {
		t.Fatalf("only %d lines", n)
	}
	tests := []struct {
		name     string
		mutate   func([]string) []string
		wantLine int // the line number the report must name
	}{
		{"edit", func(l []string) []string {
			l[5] = strings.Replace(l[5], `"/admin/page-`, `"/admin/other-`, 1)
			return l
		}, 6},
		{"delete", func(l []string) []string { return append(l[:5:5], l[6:]...) }, 6},
		{"insert", func(l []string) []string { return append(append(l[:5:5], l[3]), l[5:]...) }, 6},
		{"reorder", func(l []string) []string { l[4], l[5] = l[5], l[4]; return l }, 5},
		{"truncate mid-line", func(l []string) []string { l[n-1] = l[n-1][:len(l[n-1])/2]; return l }, n},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			changed := tt.mutate(append([]string(nil), lines...))
			path := filepath.Join(t.TempDir(), "jit-audit.log")
			if err := os.WriteFile(path, []byte(strings.Join(changed, "\n")+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			code, out := jitCLI(t, "audit", "verify", path)
			if code != 1 {
				t.Fatalf("exit %d, want 1\n%s", code, out)
			}
			if want := "jit-audit.log:" + strconv.Itoa(tt.wantLine) + ":"; !strings.Contains(out, want) {
				t.Errorf("the report does not name %s:\n%s", want, out)
			}
		})
	}
	if code, out := jitCLI(t, "audit", "verify", e.data.AuditLog); code != 0 {
		t.Fatalf("the untouched log: exit %d\n%s", code, out)
	}
}

// A4. A mutating request's access event holds its body's size and SHA-256; a role
// with record_bodies keeps the body in storage for review.
func TestAuditBodiesOfMutatingRequests(t *testing.T) {
	e := newEnv(t, envOptions{
		JitOptions: `
		role recorder {
			max_duration 1h
			justification optional
			record_bodies 16B
			eligible alice
		}`,
		Sites: []siteSpec{{Auth: true, Jit: "\tjit recorder"}},
	})
	site := e.site(0)
	alice := e.enroll("alice")
	b := e.browser("alice")
	b.mustActivate(site, "recorder", adminURI, alice, nil)
	body := `{"action":"delete-all-users","confirm":true}`
	r := b.do(http.MethodPost, site+"/admin/users", strings.NewReader(body), withHeader("Content-Type", "application/json"))
	wantStatus(t, r, http.StatusOK, "a POST under the session")
	if got := e.up.last(t).Body; got != body {
		t.Errorf("the upstream received %q, want the body unchanged", got)
	}
	b.get(site + "/admin/users")

	ev := e.waitEvent(match{"event": "access", "method": "POST"})
	sum := sha256.Sum256([]byte(body))
	if ev.str("body_sha256") != hex.EncodeToString(sum[:]) || ev.str("body_bytes") != strconv.Itoa(len(body)) {
		t.Errorf("access event body fields: %v; want body_bytes %d body_sha256 %x", ev, len(body), sum)
	}
	key := ev.str("body_key")
	if key == "" || ev.str("body_recorded") != "" {
		t.Fatalf("access event %v; want a body_key, and no body_recorded (it is false only for a dropped body)", ev)
	}
	// The body is written off the request path: it lands shortly after the event.
	var stored []byte
	var err error
	pollUntil(5*time.Second, func() bool {
		stored, err = os.ReadFile(filepath.Join(e.data.StorageDir, filepath.FromSlash(key)))
		return err == nil
	})
	if err != nil {
		t.Fatalf("reading the recorded body %s: %v", key, err)
	}
	if string(stored) != body[:16] {
		t.Errorf("recorded body %q, want the first 16 bytes %q", stored, body[:16])
	}
	get := e.waitEvent(match{"event": "access", "method": "GET", "uri": "/admin/users"})
	if _, ok := get["body_sha256"]; ok {
		t.Errorf("a GET's access event has body fields: %v", get)
	}
}

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
