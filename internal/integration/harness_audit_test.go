package integration

import (
	"bufio"
	"bytes"
	"encoding/base32"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/caddy-jit/caddy-jit/internal/adminapi"
)

// ---------------------------------------------------------------------------
// Admin API.

// admin calls Caddy's admin API and returns the status and the body.
func (e *env) admin(method, path string) (int, string) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.adminURL(path), nil)
	if err != nil {
		e.t.Fatalf("admin API %s %s: %v", method, path, err)
	}
	resp, err := (&http.Client{Timeout: 15 * time.Second}).Do(req)
	if err != nil {
		e.t.Fatalf("admin API %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// adminOK calls the admin API, fails the test unless it answers 200, and decodes the
// JSON answer into out (if not nil).
func (e *env) adminOK(method, path string, out any) {
	e.t.Helper()
	status, body := e.admin(method, path)
	if status != http.StatusOK {
		e.t.Fatalf("admin API %s %s: want 200, got %d %s", method, path, status, body)
	}
	if out != nil {
		if err := json.Unmarshal([]byte(body), out); err != nil {
			e.t.Fatalf("admin API %s %s: the answer is not JSON: %v: %s", method, path, err, body)
		}
	}
}

// adminSession is a session as GET /jit/sessions lists it.
type adminSession struct {
	ID      string `json:"session_id"`
	User    string `json:"user"`
	Role    string `json:"role"`
	Revoked bool   `json:"revoked"`
}

// sessions lists the active sessions through the admin API (query: e.g. "?user=bob").
func (e *env) sessions(query string) []adminSession {
	e.t.Helper()
	var out struct {
		Sessions []adminSession `json:"sessions"`
	}
	e.adminOK(http.MethodGet, "/jit/sessions"+query, &out)
	return out.Sessions
}

// revoke ends a session through the admin API: DELETE /jit/sessions/{id}.
func (e *env) revoke(sid string) { e.revokeApplied(sid) }

// revokeApplied revokes the session through the admin API and returns what the answer
// says of the instances that apply it (nil where the store does not announce).
func (e *env) revokeApplied(sid string) *adminapi.Applied {
	e.t.Helper()
	var out struct {
		Sessions []adminSession    `json:"sessions"`
		Applied  *adminapi.Applied `json:"applied"`
	}
	e.adminOK(http.MethodDelete, "/jit/sessions/"+url.PathEscape(sid)+"?by=integration&reason=test", &out)
	if len(out.Sessions) != 1 || out.Sessions[0].ID != sid || !out.Sessions[0].Revoked {
		e.t.Errorf("DELETE /jit/sessions/%s answered %+v, want that one session, revoked", sid, out.Sessions)
	}
	return out.Applied
}

// ---------------------------------------------------------------------------
// Audit log.

type event map[string]any

func (ev event) str(k string) string {
	switch v := ev[k].(type) {
	case string:
		return v
	case float64:
		return fmt.Sprint(v)
	case nil:
		return ""
	default:
		b, _ := json.Marshal(v)
		return string(b)
	}
}

func (ev event) String() string {
	b, _ := json.Marshal(map[string]any(ev))
	return string(b)
}

// audit reads every event of the audit log.
func (e *env) audit() []event {
	e.t.Helper()
	f, err := os.Open(e.data.AuditLog)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		e.t.Fatalf("reading the audit log: %v", err)
	}
	defer f.Close()
	var out []event
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var ev event
		if err := json.Unmarshal(line, &ev); err != nil {
			e.t.Errorf("audit log line is not JSON: %v: %s", err, line)
			continue
		}
		if key := duplicateKey(line); key != "" {
			e.t.Errorf("audit log line has the key %q twice (a JSON reader keeps only one of them): %s", key, line)
		}
		out = append(out, ev)
	}
	return out
}

// duplicateKey returns a top-level key that a JSON object line repeats, or "".
func duplicateKey(line []byte) string {
	dec := json.NewDecoder(bytes.NewReader(line))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return ""
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return ""
		}
		key, _ := tok.(string)
		if seen[key] {
			return key
		}
		seen[key] = true
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return ""
		}
	}
	return ""
}

func (e *env) auditRaw() string {
	b, _ := os.ReadFile(e.data.AuditLog)
	return string(b)
}

// match is an event filter: every key must have the value (compared as text).
type match map[string]string

func (m match) ok(ev event) bool {
	for k, v := range m {
		if ev.str(k) != v {
			return false
		}
	}
	return true
}

func (e *env) events(m match) []event {
	var out []event
	for _, ev := range e.audit() {
		if m.ok(ev) {
			out = append(out, ev)
		}
	}
	return out
}

// waitEvent waits up to 3 s for an audit event that matches; the event may be written
// just after the response went out.
func (e *env) waitEvent(m match) event {
	e.t.Helper()
	deadline := time.Now().Add(3 * time.Second)
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
			e.t.Errorf("no audit event matches %v; the audit log holds:\n%s", map[string]string(m), sb.String())
			return nil
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// ---------------------------------------------------------------------------
// Tokens.

// tokenParts decodes a compact JWS's header and payload (without verifying).
func tokenParts(t *testing.T, token string) (header, payload map[string]any) {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("the session token is not a compact JWS (%d parts): %q", len(parts), token)
	}
	for i, dst := range []*map[string]any{&header, &payload} {
		raw, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil {
			t.Fatalf("token part %d is not base64url: %v", i, err)
		}
		if err := json.Unmarshal(raw, dst); err != nil {
			t.Fatalf("token part %d is not JSON: %v: %s", i, err, raw)
		}
	}
	return header, payload
}

func b64json(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

func tokenExpiry(t *testing.T, token string) time.Time {
	t.Helper()
	_, p := tokenParts(t, token)
	exp, ok := p["exp"].(float64)
	if !ok {
		t.Fatalf("the token has no numeric exp: %v", p)
	}
	return time.Unix(int64(exp), 0)
}

func base64Std32(s string) ([]byte, error) {
	return base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(strings.ToUpper(strings.TrimRight(s, "=")))
}

// ---------------------------------------------------------------------------
// Assertions.

// wantNoUpstream fails if the upstream received more requests than before.
func wantNoUpstream(t *testing.T, u *upstream, before int, what string) {
	t.Helper()
	if n := u.count(); n != before {
		reqs := u.requests()[before:]
		t.Errorf("%s: the upstream was reached %d time(s), want never; it got: %+v", what, n-before, reqs)
	}
}

// wantActivationRedirect checks a 302 to the activation page for role, returning to ret.
func wantActivationRedirect(t *testing.T, r *response, role, ret string) {
	t.Helper()
	if r.StatusCode != http.StatusFound {
		t.Errorf("want 302 to the activation page, got %s", r)
		return
	}
	wantActivateURL(t, r.Header.Get("Location"), role, ret)
}

func wantActivateURL(t *testing.T, loc, role, ret string) {
	t.Helper()
	u, err := url.Parse(loc)
	if err != nil {
		t.Errorf("activation URL %q does not parse: %v", loc, err)
		return
	}
	if u.Scheme != "" || u.Host != "" || u.Path != "/.jit/activate" {
		t.Errorf("activation URL %q: want the relative path /.jit/activate", loc)
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		t.Errorf("activation URL %q: query does not parse: %v", loc, err)
		return
	}
	if got := q.Get("role"); got != role {
		t.Errorf("activation URL %q: role=%q, want %q", loc, got, role)
	}
	if got := q["return"]; len(got) != 1 || got[0] != ret {
		t.Errorf("activation URL %q: return=%q, want exactly [%q] (URL-escaped)", loc, got, ret)
	}
	for k := range q {
		if k != "role" && k != "return" {
			t.Errorf("activation URL %q: unexpected query parameter %q (was the return URI escaped?)", loc, k)
		}
	}
}

func wantStatus(t *testing.T, r *response, want int, what string) bool {
	t.Helper()
	if r.StatusCode != want {
		t.Errorf("%s: want %d, got %s", what, want, r)
		return false
	}
	return true
}

func wantNot2xx(t *testing.T, r *response, what string) {
	t.Helper()
	if r.StatusCode >= 200 && r.StatusCode < 300 {
		t.Errorf("%s: want a refusal, got %s", what, r)
	}
}

// sleepUntil sleeps until at (no-op if past), saying so in the test log.
func sleepUntil(t *testing.T, at time.Time, why string) {
	t.Helper()
	if d := time.Until(at); d > 0 {
		t.Logf("sleeping %s: %s", d.Round(time.Millisecond), why)
		time.Sleep(d)
	}
}
