package integration

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"golang.org/x/net/html"
)

// Helpers of the PIM workflow tests (workflow_test.go): approval pages, the requester's
// page, a webhook receiver and an SMTP server.

// wfRequestIDPattern is a request id as the contract states it: 22 characters of base64url.
var wfRequestIDPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{22}$`)

// wfRequestID checks that r is the 303 to the requester's page and returns the id.
func wfRequestID(t *testing.T, r *response, what string) string {
	t.Helper()
	if r.StatusCode != http.StatusSeeOther {
		t.Fatalf("%s: want 303 to /.jit/requests/ID, got %s", what, r)
	}
	loc := r.Header.Get("Location")
	id, ok := strings.CutPrefix(loc, "/.jit/requests/")
	if !ok || !wfRequestIDPattern.MatchString(id) {
		t.Fatalf("%s: Location %q, want /.jit/requests/ followed by a 22-character base64url id", what, loc)
	}
	if c := setCookie(r, cookieName); c != nil && c.Value != "" {
		t.Errorf("%s: a request that waits for approval set a %s cookie: %s", what, cookieName, r)
	}
	return id
}

// wfNoSessionCookie fails if r sets a non-empty session cookie.
func wfNoSessionCookie(t *testing.T, r *response, what string) {
	t.Helper()
	if c := setCookie(r, cookieName); c != nil && c.Value != "" {
		t.Errorf("%s: a %s cookie was set: %s", what, cookieName, r)
	}
}

// wfSessionCookie returns the non-empty session cookie r sets, failing the test if none.
func wfSessionCookie(t *testing.T, r *response, what string) string {
	t.Helper()
	c := setCookie(r, cookieName)
	if c == nil || c.Value == "" {
		t.Fatalf("%s: no %s cookie set: %s", what, cookieName, r)
	}
	return c.Value
}

// pageText is the text of an HTML page as a reader sees it: entities decoded, the
// contents of head, script and style left out, white space collapsed.
func pageText(t *testing.T, page string) string {
	t.Helper()
	doc, err := html.Parse(strings.NewReader(page))
	if err != nil {
		t.Fatalf("parsing the page: %v", err)
	}
	var sb strings.Builder
	var walk func(n *html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode && (n.Data == "script" || n.Data == "style" || n.Data == "head") {
			return
		}
		if n.Type == html.TextNode {
			sb.WriteString(n.Data)
			sb.WriteByte(' ')
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(doc)
	return strings.Join(strings.Fields(sb.String()), " ")
}

// pageTitle is the text of the page's <title>.
func pageTitle(t *testing.T, page string) string {
	t.Helper()
	doc, err := html.Parse(strings.NewReader(page))
	if err != nil {
		t.Fatalf("parsing the page: %v", err)
	}
	var title string
	var walk func(n *html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode && n.Data == "title" && title == "" {
			title = strings.TrimSpace(textOf(n))
			return
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(doc)
	return title
}

// refreshSeconds returns the content of the page's <meta http-equiv="refresh">, or ""
// if it has none.
func refreshSeconds(t *testing.T, page string) string {
	t.Helper()
	doc, err := html.Parse(strings.NewReader(page))
	if err != nil {
		t.Fatalf("parsing the page: %v", err)
	}
	var out string
	var walk func(n *html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode && n.Data == "meta" && strings.EqualFold(attr(n, "http-equiv"), "refresh") {
			out = strings.TrimSpace(attr(n, "content"))
			return
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(doc)
	return out
}

// forms returns the fields of each form whose action is action, one url.Values per form
// (buttons are left out, as in formFields).
func forms(t *testing.T, page, action string) []url.Values {
	t.Helper()
	doc, err := html.Parse(strings.NewReader(page))
	if err != nil {
		t.Fatalf("parsing the page: %v", err)
	}
	var out []url.Values
	var cur url.Values
	var walk func(n *html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode {
			switch n.Data {
			case "form":
				if attr(n, "action") != action {
					break
				}
				saved := cur
				cur = url.Values{}
				for c := n.FirstChild; c != nil; c = c.NextSibling {
					walk(c)
				}
				out = append(out, cur)
				cur = saved
				return
			case "input":
				if cur != nil && attr(n, "name") != "" {
					cur.Add(attr(n, "name"), attr(n, "value"))
				}
			case "textarea":
				if cur != nil && attr(n, "name") != "" {
					cur.Add(attr(n, "name"), textOf(n))
				}
			}
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(doc)
	return out
}

// approvalsPage opens /.jit/approvals and returns the page; the test fails unless 200.
func (b *browser) approvalsPage(site string) *response {
	b.t.Helper()
	r := b.get(site + "/.jit/approvals")
	if r.StatusCode != http.StatusOK {
		b.t.Fatalf("GET /.jit/approvals as %s: want 200, got %s", b.user, r)
	}
	return r
}

// approvalForm returns the decision form for request id on the caller's approvals
// page, or nil if the page does not list that request.
func (b *browser) approvalForm(site, id string) url.Values {
	b.t.Helper()
	for _, f := range forms(b.t, b.approvalsPage(site).Body, "/.jit/approvals") {
		if f.Get("request") == id {
			return f
		}
	}
	return nil
}

// listedRequests are the request ids the caller's approvals page offers to decide.
func (b *browser) listedRequests(site string) []string {
	b.t.Helper()
	var ids []string
	for _, f := range forms(b.t, b.approvalsPage(site).Body, "/.jit/approvals") {
		ids = append(ids, f.Get("request"))
	}
	return ids
}

// decide posts a decision form with the decision, the comment and the code.
func (b *browser) decide(site string, form url.Values, decision, comment, code string) *response {
	b.t.Helper()
	f := url.Values{}
	for k, vs := range form {
		f[k] = slices.Clone(vs)
	}
	f.Set("decision", decision)
	f.Set("comment", comment)
	f.Set("code", code)
	return b.postForm(site+"/.jit/approvals", f)
}

// csrfFor returns a CSRF token of the browser's user for the site, taken from the
// activation form of a role the user is eligible for.
func (b *browser) csrfFor(site, role string) string {
	b.t.Helper()
	return b.activationForm(site, role, "/").Get("csrf")
}

// waitEventWithin waits up to timeout for an audit event that matches; waitEvent's
// 3 s are too short for the background sweeps.
func (e *env) waitEventWithin(m match, timeout time.Duration) event {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if evs := e.events(m); len(evs) > 0 {
			return evs[len(evs)-1]
		}
		if time.Now().After(deadline) {
			var sb strings.Builder
			for _, ev := range e.audit() {
				sb.WriteString(ev.String())
				sb.WriteByte('\n')
			}
			e.t.Errorf("no audit event matches %v within %s; the audit log holds:\n%s", map[string]string(m), timeout, sb.String())
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// tokenClaim returns a numeric claim of a token as a time.
func tokenTime(t *testing.T, token, claim string) time.Time {
	t.Helper()
	_, p := tokenParts(t, token)
	v, ok := p[claim].(float64)
	if !ok {
		t.Fatalf("the token has no numeric %s: %v", claim, p)
	}
	return time.Unix(int64(v), 0)
}

// ---------------------------------------------------------------------------
// Webhook receiver.

// hookDelivery is one POST the receiver got, with what it answered.
type hookDelivery struct {
	At     time.Time
	Header http.Header
	Body   []byte
	Status int
}

// event decodes the delivery's JSON body.
func (d hookDelivery) event(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(d.Body, &m); err != nil {
		t.Fatalf("a webhook body is not JSON: %v: %s", err, d.Body)
	}
	return m
}

func (d hookDelivery) String() string {
	return fmt.Sprintf("%s → %d %s=%q %s=%q body %s", d.At.Format("15:04:05.000"), d.Status,
		"X-Jit-Event", d.Header.Get("X-Jit-Event"), "X-Jit-Delivery", d.Header.Get("X-Jit-Delivery"), d.Body)
}

// hookReceiver is a real local HTTP server that records webhook deliveries.
type hookReceiver struct {
	srv *httptest.Server
	mu  sync.Mutex
	got []hookDelivery
	// answer decides the status of the n-th delivery (0-based); nil answers 200.
	answer func(n int) int
}

func newHookReceiver(t *testing.T, answer func(n int) int) *hookReceiver {
	t.Helper()
	h := &hookReceiver{answer: answer}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		h.mu.Lock()
		status := http.StatusOK
		if h.answer != nil {
			status = h.answer(len(h.got))
		}
		if r.Method != http.MethodPost || r.URL.Path != "/hook" {
			status = http.StatusNotFound
		}
		h.got = append(h.got, hookDelivery{At: time.Now(), Header: r.Header.Clone(), Body: body, Status: status})
		h.mu.Unlock()
		w.WriteHeader(status)
	}))
	t.Cleanup(h.srv.Close)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("webhook deliveries:\n%s", h.dump())
		}
	})
	return h
}

// url is the webhook URL for the Caddyfile.
func (h *hookReceiver) url() string { return h.srv.URL + "/hook" }

func (h *hookReceiver) deliveries() []hookDelivery {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.got)
}

func (h *hookReceiver) dump() string {
	var sb strings.Builder
	for _, d := range h.deliveries() {
		sb.WriteString(d.String())
		sb.WriteByte('\n')
	}
	return sb.String()
}

// waitFor waits up to timeout until the deliveries satisfy ok and returns them.
func (h *hookReceiver) waitFor(t *testing.T, timeout time.Duration, what string, ok func([]hookDelivery) bool) []hookDelivery {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := h.deliveries()
		if ok(got) {
			return got
		}
		if time.Now().After(deadline) {
			t.Errorf("webhook: %s did not happen within %s; deliveries:\n%s", what, timeout, h.dump())
			return got
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ofEvent returns the deliveries whose X-Jit-Event is event.
func ofEvent(ds []hookDelivery, event string) []hookDelivery {
	var out []hookDelivery
	for _, d := range ds {
		if d.Header.Get("X-Jit-Event") == event {
			out = append(out, d)
		}
	}
	return out
}

// wantSignature recomputes X-Jit-Signature as the contract says: t=UNIX,v1=HEX with
// HEX = hex(HMAC-SHA256(secret, UNIX + "." + body)), and checks the time is recent.
func wantSignature(t *testing.T, secret string, d hookDelivery, what string) {
	t.Helper()
	sig := d.Header.Get("X-Jit-Signature")
	if sig == "" {
		t.Errorf("%s: no X-Jit-Signature header although the webhook has a secret: %s", what, d)
		return
	}
	var ts, v1 string
	for part := range strings.SplitSeq(sig, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			v1 = v
		}
	}
	unix, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || v1 == "" {
		t.Errorf("%s: X-Jit-Signature %q is not t=UNIX,v1=HEX", what, sig)
		return
	}
	if at := time.Unix(unix, 0); at.Before(d.At.Add(-time.Minute)) || at.After(d.At.Add(time.Minute)) {
		t.Errorf("%s: X-Jit-Signature time %s is not near the delivery time %s", what, at, d.At)
	}
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(ts + "."))
	mac.Write(d.Body)
	want := mac.Sum(nil)
	got, err := hex.DecodeString(v1)
	if err != nil || !hmac.Equal(got, want) {
		t.Errorf("%s: X-Jit-Signature %q does not verify: want v1=%s for t=%s and the body %s", what, sig, hex.EncodeToString(want), ts, d.Body)
	}
}

// ---------------------------------------------------------------------------
// SMTP server.

// mailMessage is one message the SMTP server accepted.
type mailMessage struct {
	From string
	To   []string
	Data []byte
}

// mailServer is a real SMTP server on 127.0.0.1 (go-smtp), without TLS or auth.
type mailServer struct {
	srv  *smtp.Server
	addr string
	log  syncBuffer
	mu   sync.Mutex
	msgs []mailMessage
}

func newMailServer(t *testing.T) *mailServer {
	t.Helper()
	m := &mailServer{}
	m.srv = smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) {
		return &mailSession{server: m}, nil
	}))
	m.srv.Domain = "localhost"
	m.srv.ReadTimeout = 10 * time.Second
	m.srv.WriteTimeout = 10 * time.Second
	m.srv.MaxMessageBytes = 1 << 20
	// go-smtp may log from its connection goroutines after the test: into a buffer,
	// shown if the test failed.
	m.srv.ErrorLog = bufLogger{&m.log}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m.addr = l.Addr().String()
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := m.srv.Serve(l); err != nil && !errors.Is(err, smtp.ErrServerClosed) {
			t.Logf("smtp server: %v", err)
		}
	}()
	t.Cleanup(func() {
		m.srv.Close()
		<-done
		if t.Failed() {
			t.Logf("smtp server log:\n%s", m.log.String())
		}
	})
	return m
}

func (m *mailServer) messages() []mailMessage {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.msgs)
}

// bufLogger is go-smtp's error log, into a buffer.
type bufLogger struct{ b *syncBuffer }

func (l bufLogger) Printf(format string, v ...any) { fmt.Fprintf(l.b, format+"\n", v...) }
func (l bufLogger) Println(v ...any)               { fmt.Fprintln(l.b, v...) }

// mailSession implements smtp.Session for one connection.
type mailSession struct {
	server *mailServer
	from   string
	to     []string
}

func (s *mailSession) Reset()        { s.from, s.to = "", nil }
func (s *mailSession) Logout() error { return nil }

func (s *mailSession) Mail(from string, _ *smtp.MailOptions) error {
	s.from = from
	return nil
}

func (s *mailSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.to = append(s.to, to)
	return nil
}

func (s *mailSession) Data(r io.Reader) error {
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, r); err != nil {
		return err
	}
	s.server.mu.Lock()
	s.server.msgs = append(s.server.msgs, mailMessage{From: s.from, To: slices.Clone(s.to), Data: buf.Bytes()})
	s.server.mu.Unlock()
	return nil
}
