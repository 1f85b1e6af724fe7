package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/mail"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// W10. A webhook answered with 500 is delivered again, with the same delivery id and a
// valid signature, and no more once it got a 2xx.
func TestWorkflowWebhookRetries(t *testing.T) {
	const secret = "retry-secret-41"
	hook := newHookReceiver(t, func(n int) int {
		if n == 0 {
			return http.StatusInternalServerError
		}
		return http.StatusOK
	})
	e := newEnv(t, envOptions{JitOptions: "\t\tnotify webhook " + hook.url() + " " + secret})
	site := e.site(0)
	r1 := e.enroll("r1")

	token := e.browser("r1").mustActivate(site, roleAdmin, "/", r1, nil)
	sid := sessionID(t, token)

	var first hookDelivery
	var retry *hookDelivery
	ds := hook.waitFor(t, 6*time.Second, "a second delivery of the first notification", func(ds []hookDelivery) bool {
		if len(ds) < 2 {
			return false
		}
		id := ds[0].Header.Get("X-Jit-Delivery")
		return slices.ContainsFunc(ds[1:], func(d hookDelivery) bool { return d.Header.Get("X-Jit-Delivery") == id })
	})
	if len(ds) == 0 {
		t.FailNow()
	}
	first = ds[0]
	for i := range ds[1:] {
		if ds[1+i].Header.Get("X-Jit-Delivery") == first.Header.Get("X-Jit-Delivery") {
			retry = &ds[1+i]
			break
		}
	}
	if first.Header.Get("X-Jit-Delivery") == "" {
		t.Errorf("the first delivery has no X-Jit-Delivery: %s", first)
	}
	if ev := first.event(t); ev["event"] != "activated" || ev["session_id"] != sid || first.Header.Get("X-Jit-Event") != "activated" {
		t.Errorf("the first delivery is not the activation of %s: %s", sid, first)
	}
	wantSignature(t, secret, first, "the first delivery (answered 500)")
	if retry == nil {
		t.FailNow()
	}
	wantSignature(t, secret, *retry, "the retried delivery")
	if gap := retry.At.Sub(first.At); gap < 800*time.Millisecond || gap > 5*time.Second {
		t.Errorf("the retry came %s after the failed delivery, want about 1 s", gap)
	}
	a, b := first.event(t), retry.event(t)
	for _, k := range []string{"event", "session_id", "user", "role", "time"} {
		if a[k] != b[k] {
			t.Errorf("the retry's body differs in %s: %v, first %v", k, b[k], a[k])
		}
	}
	if retry.Header.Get("X-Jit-Event") != first.Header.Get("X-Jit-Event") {
		t.Errorf("the retry's X-Jit-Event %q, first %q", retry.Header.Get("X-Jit-Event"), first.Header.Get("X-Jit-Event"))
	}

	// Delivered: no more attempts (the next retry would have come 2 s later).
	time.Sleep(2500 * time.Millisecond)
	n := 0
	for _, d := range hook.deliveries() {
		if d.Header.Get("X-Jit-Delivery") == first.Header.Get("X-Jit-Delivery") {
			n++
		}
	}
	if n != 2 {
		t.Errorf("the notification was delivered %d times, want 2 (one 500, one 200)", n)
	}
}

// W11. `notify email` sends a message per event through the smtp server.
func TestWorkflowEmailNotification(t *testing.T) {
	ms := newMailServer(t)
	e := newEnv(t, envOptions{JitOptions: fmt.Sprintf(`
		smtp {
			address %s
			from jit@example.test
		}
		notify email sec@example.test`, ms.addr)})
	site := e.site(0)
	alice := e.enroll("alice")
	token := e.browser("alice").mustActivate(site, roleAdmin, "/", alice, nil)
	sid := sessionID(t, token)

	var msg *mailMessage
	var parsed *mail.Message
	ok := pollUntil(10*time.Second, func() bool {
		for _, m := range ms.messages() {
			pm, err := mail.ReadMessage(bytes.NewReader(m.Data))
			if err != nil {
				continue
			}
			if slices.Contains(m.To, "sec@example.test") && strings.HasPrefix(pm.Header.Get("Subject"), "[caddy-jit] activated: alice") {
				msg, parsed = &m, pm
				return true
			}
		}
		return false
	})
	if !ok {
		var sb strings.Builder
		for _, m := range ms.messages() {
			fmt.Fprintf(&sb, "MAIL FROM %s RCPT %v\n%s\n---\n", m.From, m.To, m.Data)
		}
		t.Fatalf("no message to sec@example.test with Subject \"[caddy-jit] activated: alice…\" within 10 s; the server got:\n%s", sb.String())
	}
	if msg.From != "jit@example.test" {
		t.Errorf("MAIL FROM %q, want jit@example.test", msg.From)
	}
	if from := parsed.Header.Get("From"); !strings.Contains(from, "jit@example.test") {
		t.Errorf("From: %q, want jit@example.test", from)
	}
	if to := parsed.Header.Get("To"); !strings.Contains(to, "sec@example.test") {
		t.Errorf("To: %q, want sec@example.test", to)
	}
	if subj, want := parsed.Header.Get("Subject"), "[caddy-jit] activated: alice, role "+roleAdmin; subj != want {
		t.Errorf("Subject %q, want %q", subj, want)
	}
	if ev := parsed.Header.Get("X-Jit-Event"); ev != "activated" {
		t.Errorf("X-Jit-Event %q, want activated", ev)
	}
	body, _ := io.ReadAll(parsed.Body)
	text := string(body)
	i := strings.Index(text, "{")
	if i < 0 {
		t.Fatalf("the message body holds no JSON: %s", text)
	}
	if summary := strings.TrimSpace(text[:i]); summary == "" || strings.Contains(summary, "\n") || !strings.Contains(summary, "alice") {
		t.Errorf("the body should start with a one-line summary naming alice, got %q", summary)
	}
	var n map[string]any
	if err := json.Unmarshal([]byte(text[i:]), &n); err != nil {
		t.Fatalf("the message body's JSON does not parse: %v: %s", err, text[i:])
	}
	if n["event"] != "activated" || n["user"] != "alice" || n["role"] != roleAdmin || n["session_id"] != sid {
		t.Errorf("the message's JSON %v, want event activated, user alice, role %s, session_id %s", n, roleAdmin, sid)
	}
}

// W12. Requests live in storage: a request made on one instance of a cluster is
// listed and approved on the other, and the requester's waiting page on the first
// hands over the session.
func TestWorkflowClusterApprovalAcrossInstances(t *testing.T) {
	const role = "deploy"
	storage := filepath.Join(t.TempDir(), "shared-storage")
	site := siteSpec{Host: clusterHost, Bind: "127.0.0.1", Auth: true,
		Jit: "\tjit " + role + " {\n\t\taudience http://" + clusterHost + "\n\t}"}
	opts := envOptions{StorageDir: storage, Stopped: true, JitOptions: `
		sync_interval 200ms
		role deploy {
			max_duration 1h
			eligible alice
			approval {
				approvers carol
			}
		}`}
	opts.Sites = []siteSpec{site}
	a := newEnv(t, opts)
	opts.Sites = []siteSpec{site}
	b := newEnv(t, opts)
	startTogether(a, b)
	alice, carol := a.enroll("alice"), a.enroll("carol")
	ba, bc := a.browser("alice"), b.browser("carol")
	siteA, siteB := a.site(0), b.site(0)

	id := wfRequestID(t, ba.activate(siteA, role, adminURI, alice.next(t), nil), "alice's request on A")
	if ids := bc.listedRequests(siteB); !slices.Contains(ids, id) {
		t.Fatalf("carol's approvals page on B lists %v, want alice's request %s made on A", ids, id)
	}
	form := bc.approvalForm(siteB, id)
	if r := bc.decide(siteB, form, "approve", "", carol.next(t)); !wantStatus(t, r, http.StatusOK, "carol's approval on B") {
		t.FailNow()
	}
	r := ba.get(siteA + "/.jit/requests/" + id)
	if !wantStatus(t, r, http.StatusSeeOther, "alice's waiting page on A after the approval on B") {
		t.FailNow()
	}
	if loc := r.Header.Get("Location"); loc != adminURI {
		t.Errorf("the waiting page sent alice to %q, want %q", loc, adminURI)
	}
	wfSessionCookie(t, r, "the waiting page on A after the approval on B")
	if r := ba.get(siteA + adminURI); wantStatus(t, r, http.StatusOK, "the protected URL on A") {
		if got := a.up.last(t).Header.Get("X-Jit-User"); got != "alice" {
			t.Errorf("A's upstream X-Jit-User=%q, want alice", got)
		}
	}
	// The decision and the session are B's, in B's audit log, tied to the request.
	b.waitEvent(match{"event": "request_approved", "request_id": id, "by": "carol"})
	b.waitEvent(match{"event": "activation_succeeded", "request_id": id, "user": "alice"})
}
