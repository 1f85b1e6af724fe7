package caddymodule

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-jit/caddy-jit/workflow"
	"github.com/emersion/go-smtp"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// fastRetries makes the dispatcher retry at once, for the test's duration.
func fastRetries(t *testing.T) {
	old := notifyBackoff
	notifyBackoff = func(int) time.Duration { return 5 * time.Millisecond }
	t.Cleanup(func() { notifyBackoff = old })
}

type hookCall struct {
	header http.Header
	body   []byte
}

// hookReceiver answers with the statuses given in turn (the last one forever) and
// records every delivery.
type hookReceiver struct {
	mu       sync.Mutex
	calls    []hookCall
	statuses []int
	got      chan struct{}
}

func newHookReceiver(t *testing.T, statuses ...int) (*hookReceiver, string) {
	h := &hookReceiver{statuses: statuses, got: make(chan struct{}, 100)}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return h, srv.URL + "/hook"
}

func (h *hookReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	h.mu.Lock()
	n := len(h.calls)
	h.calls = append(h.calls, hookCall{header: r.Header.Clone(), body: body})
	status := h.statuses[min(n, len(h.statuses)-1)]
	h.mu.Unlock()
	w.WriteHeader(status)
	h.got <- struct{}{}
}

func (h *hookReceiver) wait(t *testing.T, n int) []hookCall {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		h.mu.Lock()
		if len(h.calls) >= n {
			calls := append([]hookCall(nil), h.calls...)
			h.mu.Unlock()
			return calls
		}
		h.mu.Unlock()
		select {
		case <-h.got:
		case <-deadline:
			t.Fatalf("the receiver got %d deliveries, want %d", len(h.calls), n)
		}
	}
}

func sampleNotification() workflow.Notification {
	return workflow.Notification{
		Event: workflow.NotifyRequested, Time: time.Date(2026, 11, 26, 9, 0, 0, 0, time.UTC), RequestID: "req-1",
		User: "alice", Role: "db-admin", Justification: "restore the <!channel> & the backup", Alert: []string{"carol", "dave"},
	}
}

// verifySignature checks X-Jit-Signature as a receiver would.
func verifySignature(t *testing.T, secret string, c hookCall) {
	t.Helper()
	sig := c.header.Get(HeaderWebhookSignature)
	ts, mac, ok := strings.Cut(sig, ",v1=")
	ts, ok2 := strings.CutPrefix(ts, "t=")
	if !ok || !ok2 {
		t.Fatalf("signature %q is not t=UNIX,v1=HEX", sig)
	}
	unix, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || time.Since(time.Unix(unix, 0)).Abs() > time.Minute {
		t.Errorf("signature timestamp %q is not now", ts)
	}
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(ts + "."))
	m.Write(c.body)
	if !hmac.Equal([]byte(hex.EncodeToString(m.Sum(nil))), []byte(mac)) {
		t.Errorf("signature %q does not verify for the body", sig)
	}
}

func TestWebhookIsSignedAndRetriedUntilDelivered(t *testing.T) {
	fastRetries(t)
	hook, url := newHookReceiver(t, http.StatusInternalServerError, http.StatusBadGateway, http.StatusNoContent)
	logs, observed := observer.New(zap.DebugLevel)
	d := newDispatcher(zap.New(logs))
	defer d.stop()
	n := &appNotifier{d: d, global: []notifyTarget{&webhookTarget{url: url, secret: []byte("s3cret"), client: http.DefaultClient}}}

	n.Notify(sampleNotification())
	calls := hook.wait(t, 3)
	time.Sleep(50 * time.Millisecond)
	if got := len(hook.calls); got != 3 {
		t.Fatalf("%d deliveries, want 3 (two failures, then success)", got)
	}
	for i, c := range calls {
		verifySignature(t, "s3cret", c)
		if c.header.Get(HeaderWebhookEvent) != "requested" || c.header.Get("Content-Type") != "application/json" {
			t.Errorf("delivery %d headers: %v", i, c.header)
		}
		if c.header.Get(HeaderWebhookDelivery) != calls[0].header.Get(HeaderWebhookDelivery) || c.header.Get(HeaderWebhookDelivery) == "" {
			t.Errorf("delivery %d has id %q, want the first one's %q", i, c.header.Get(HeaderWebhookDelivery), calls[0].header.Get(HeaderWebhookDelivery))
		}
		if !bytes.Equal(c.body, calls[0].body) {
			t.Errorf("delivery %d body differs", i)
		}
	}
	var got workflow.Notification
	if err := json.Unmarshal(calls[0].body, &got); err != nil {
		t.Fatal(err)
	}
	if got.Event != "requested" || got.User != "alice" || got.RequestID != "req-1" || strings.Join(got.Alert, ",") != "carol,dave" {
		t.Errorf("body = %s", calls[0].body)
	}
	if w := observed.FilterMessage("notification not delivered; retrying").Len(); w != 2 {
		t.Errorf("%d retry warnings, want 2", w)
	}
}

func TestWebhookGivesUpAfterTheLastAttempt(t *testing.T) {
	fastRetries(t)
	hook, url := newHookReceiver(t, http.StatusInternalServerError)
	logs, observed := observer.New(zap.DebugLevel)
	d := newDispatcher(zap.New(logs))
	defer d.stop()
	(&appNotifier{d: d, global: []notifyTarget{&webhookTarget{url: url, client: http.DefaultClient}}}).Notify(sampleNotification())
	hook.wait(t, notifyAttempts)
	time.Sleep(100 * time.Millisecond)
	hook.mu.Lock()
	defer hook.mu.Unlock()
	if len(hook.calls) != notifyAttempts {
		t.Errorf("%d deliveries, want %d", len(hook.calls), notifyAttempts)
	}
	if hook.calls[0].header.Get(HeaderWebhookSignature) != "" {
		t.Error("a webhook without a secret must not send a signature")
	}
	if observed.FilterMessage("notification not delivered; giving up").Len() != 1 {
		t.Errorf("want one error when giving up; logs: %v", observed.All())
	}
}

func TestNotifyNeverBlocksWhenTheQueueIsFull(t *testing.T) {
	logs, observed := observer.New(zap.DebugLevel)
	d := &dispatcher{queue: make(chan delivery, 1), logger: zap.New(logs)} // no workers
	n := &appNotifier{d: d, global: []notifyTarget{&webhookTarget{url: "https://h.example.test/x?token=secret"}}}
	done := make(chan struct{})
	go func() {
		for range 3 {
			n.Notify(sampleNotification())
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("Notify blocked on a full queue")
	}
	dropped := observed.FilterMessage("notification dropped: the delivery queue is full").All()
	if len(dropped) != 2 {
		t.Fatalf("%d drops logged, want 2", len(dropped))
	}
	if target := dropped[0].ContextMap()["target"]; target != "webhook https://h.example.test/…" {
		t.Errorf("logged target %q leaks more than the host", target)
	}
}

func TestSlackBodyCannotMentionEveryone(t *testing.T) {
	text := slackText(sampleNotification())
	if strings.Contains(text, "<!channel>") || !strings.Contains(text, "&lt;!channel&gt; &amp; the backup") {
		t.Errorf("slack text not escaped: %s", text)
	}
	if !strings.HasPrefix(text, "caddy-jit: alice asks for the role db-admin") || !strings.Contains(text, "Approvers: carol, dave") {
		t.Errorf("slack text = %s", text)
	}
	bg := sampleNotification()
	bg.Event, bg.BreakGlass = workflow.NotifyBreakGlass, true
	if !strings.HasPrefix(slackText(bg), "caddy-jit BREAK-GLASS: alice used break-glass") {
		t.Errorf("break-glass text = %s", slackText(bg))
	}
}

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"https://hooks.slack.com/services/T0/B0/XYZ": "https://hooks.slack.com/…",
		"https://user:pw@h.example.test:8443/x?k=v":  "https://h.example.test:8443/…",
		"not a url": "(invalid URL)",
	} {
		if got := redactURL(in); got != want {
			t.Errorf("redactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

// smtpSink is a real SMTP server on loopback that keeps what it receives.
type smtpSink struct {
	mu   sync.Mutex
	msgs []smtpMessage
	got  chan struct{}
}

type smtpMessage struct {
	from string
	to   []string
	data []byte
}

func (s *smtpSink) NewSession(*smtp.Conn) (smtp.Session, error) { return &smtpSession{sink: s}, nil }

type smtpSession struct {
	sink *smtpSink
	msg  smtpMessage
}

func (s *smtpSession) Reset()        { s.msg = smtpMessage{} }
func (s *smtpSession) Logout() error { return nil }
func (s *smtpSession) Mail(from string, _ *smtp.MailOptions) error {
	s.msg.from = from
	return nil
}
func (s *smtpSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.msg.to = append(s.msg.to, to)
	return nil
}
func (s *smtpSession) Data(r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.msg.data = data
	s.sink.mu.Lock()
	s.sink.msgs = append(s.sink.msgs, s.msg)
	s.sink.mu.Unlock()
	s.sink.got <- struct{}{}
	return nil
}

func startSMTPSink(t *testing.T) (*smtpSink, string) {
	t.Helper()
	sink := &smtpSink{got: make(chan struct{}, 10)}
	srv := smtp.NewServer(sink)
	srv.Domain = "localhost"
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return sink, l.Addr().String()
}

func TestEmailIsDeliveredOverSMTP(t *testing.T) {
	sink, addr := startSMTPSink(t)
	target := &emailTarget{smtp: &SMTPConfig{Address: addr, From: "caddy-jit <jit@example.test>"}, to: []string{"sec@example.test", "Ops <ops@example.test>"}}
	n := sampleNotification()
	n.Event, n.BreakGlass = workflow.NotifyBreakGlass, true
	n.Justification = "line one\r\nBcc: evil@example.test\r\n.\r\nline after a lone dot"
	d := newDispatcher(zap.NewNop())
	defer d.stop()
	(&appNotifier{d: d, roles: map[string][]notifyTarget{"db-admin": {target}}}).Notify(n)
	select {
	case <-sink.got:
	case <-time.After(5 * time.Second):
		t.Fatal("no message reached the SMTP server")
	}
	sink.mu.Lock()
	msg := sink.msgs[0]
	sink.mu.Unlock()
	if msg.from != "jit@example.test" || strings.Join(msg.to, ",") != "sec@example.test,ops@example.test" {
		t.Errorf("envelope from %q to %q", msg.from, msg.to)
	}
	head, body, _ := strings.Cut(string(msg.data), "\r\n\r\n")
	if !strings.Contains(head, "Subject: [caddy-jit BREAK-GLASS] break_glass: alice, role db-admin\r\n") || !strings.Contains(head, "X-Jit-Event: break_glass\r\n") {
		t.Errorf("headers:\n%s", head)
	}
	if strings.Contains(head, "Bcc") {
		t.Errorf("the justification reached the headers:\n%s", head)
	}
	if !strings.Contains(body, `"justification": "line one\r\nBcc: evil@example.test\r\n.\r\nline after a lone dot"`) {
		t.Errorf("the body does not carry the notification as JSON:\n%s", body)
	}
}

func TestNotifierRoutesGlobalAndRoleTargets(t *testing.T) {
	hookAll, urlAll := newHookReceiver(t, http.StatusOK)
	hookDB, urlDB := newHookReceiver(t, http.StatusOK)
	app := &App{
		Notify: []NotifyConfig{{Webhook: urlAll}},
		Roles: map[string]*RoleConfig{
			"db-admin": {Notify: []NotifyConfig{{Webhook: urlDB, Format: "slack"}}},
			"viewer":   {},
		},
	}
	d := newDispatcher(zap.NewNop())
	defer d.stop()
	n := app.buildNotifier(d)
	viewer := sampleNotification()
	viewer.Role = "viewer"
	n.Notify(viewer)
	n.Notify(sampleNotification())
	hookAll.wait(t, 2)
	calls := hookDB.wait(t, 1)
	time.Sleep(50 * time.Millisecond)
	if len(hookDB.calls) != 1 {
		t.Errorf("the db-admin hook got %d deliveries, want only db-admin's", len(hookDB.calls))
	}
	var slack map[string]string
	if err := json.Unmarshal(calls[0].body, &slack); err != nil || !strings.Contains(slack["text"], "db-admin") || len(slack) != 1 {
		t.Errorf("slack body = %s", calls[0].body)
	}
}

func TestHeaderSafeKeepsEveryControlCharacterOutOfAHeader(t *testing.T) {
	for in, want := range map[string]string{
		"break-glass: alice":          "break-glass: alice",
		"a\r\nBcc: evil@example.test": "a  Bcc: evil@example.test",
		"tab\there":                   "tab here",
		"del\x7fnel\u0085end":         "del nel end",
		"line\u2028para\u2029end":     "line para end",
		"Jürgen Müller":               "Jürgen Müller",
	} {
		if got := headerSafe(in); got != want {
			t.Errorf("headerSafe(%+q) = %+q, want %+q", in, got, want)
		}
	}
}

// Each way a session ends early reads as its own sentence in a notification.
func TestSummarySaysHowASessionEnded(t *testing.T) {
	tests := []struct{ event, by, want string }{
		{workflow.NotifyDeactivated, "alice", "caddy-jit: alice ended their session of the role ops"},
		{workflow.NotifyRevoked, "op", "caddy-jit: alice's session of the role ops was revoked by op"},
		{workflow.NotifyReplaced, "alice", "caddy-jit: alice's session of the role ops was replaced by another session in the same browser"},
	}
	for _, tt := range tests {
		got := summary(workflow.Notification{Event: tt.event, User: "alice", Role: "ops", By: tt.by})
		if !strings.HasPrefix(got, tt.want) {
			t.Errorf("%s: %q, want it to begin %q", tt.event, got, tt.want)
		}
	}
}
