package caddymodule

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/caddy-jit/caddy-jit/audit"
	"github.com/caddy-jit/caddy-jit/policy"
	"github.com/caddy-jit/caddy-jit/session"
)

// freshGate is a gate with its audit events observed and a second role, other, that
// alice is eligible for.
func freshGate(t *testing.T) (*benchGate, *observer.ObservedLogs) {
	t.Helper()
	core, logs := observer.New(zapcore.InfoLevel)
	g := newGate(t, gateOptions{audit: zap.New(core)})
	g.h.app.roles["other"] = &policy.Role{Name: "other", MaxDuration: time.Hour,
		Eligibility: []policy.Eligibility{{Subjects: []string{"alice"}}}}
	logs.TakeAll()
	return g, logs
}

// handler is a jit handler of the gate's app for roles, with fresh (0: none).
func (g *benchGate) handler(fresh time.Duration, roles ...string) *Handler {
	h := &Handler{Roles: roles, Fresh: caddy.Duration(fresh), app: g.h.app, logger: zap.NewNop(), audiences: new(audienceCache)}
	h.provisionFresh()
	return h
}

// claims are the gate's session as the verifier admits it.
func (g *benchGate) claims(t *testing.T) *session.Claims {
	t.Helper()
	c, err := g.h.app.authority.Verifier.Verify(g.token, session.Want{Subject: "alice", Audience: "http://console.example", Roles: []string{"admin"}}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// tokenSteppedUp is the gate's session token signed again as if its last step-up were
// age ago; a negative age leaves auth_time out, as tokens signed before it existed.
func (g *benchGate) tokenSteppedUp(t *testing.T, age time.Duration) string {
	t.Helper()
	c := *g.claims(t)
	c.AuthTime = 0
	if age >= 0 {
		c.AuthTime = time.Now().Add(-age).Unix()
	}
	token, err := g.h.app.authority.Keyring.Sign(c)
	if err != nil {
		t.Fatal(err)
	}
	return token
}

// chain runs the handlers as Caddy runs a route's: each one's next is the one after
// it, and the last one's next is upstream.
func chain(upstream caddyhttp.Handler, hs ...*Handler) caddyhttp.Handler {
	next := upstream
	for i := len(hs) - 1; i >= 0; i-- {
		h, after := hs[i], next
		next = caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error { return h.ServeHTTP(w, r, after) })
	}
	return next
}

// recordingUpstream counts the requests that reach it and keeps the last one's headers.
type recordingUpstream struct {
	n    int
	last http.Header
}

func (u *recordingUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) error {
	u.n++
	u.last = r.Header.Clone()
	w.WriteHeader(http.StatusOK)
	return nil
}

func TestFreshDecidesOnTheAgeOfTheStepUp(t *testing.T) {
	g, logs := freshGate(t)
	sid := g.claims(t).SessionID
	reconfirm := "/.jit/reconfirm?session=" + sid + "&return=%2Fadmin%2Fpage%3Fx%3D1"
	type hs struct {
		fresh time.Duration
		roles []string
	}
	plain, fresh5 := hs{0, []string{"admin"}}, hs{5 * time.Minute, []string{"admin"}}
	const browser, api = "text/html", "application/json"
	tests := []struct {
		name   string
		chain  []hs
		age    time.Duration // of the step-up; negative: the token has no auth_time
		method string
		accept string
		status int
		// fresh is the access event's fresh field of an admitted request.
		fresh string
	}{
		{"plain route, old step-up", []hs{plain}, 30 * time.Minute, http.MethodGet, browser, http.StatusOK, ""},
		{"fresh route, recent step-up", []hs{fresh5}, time.Minute, http.MethodGet, browser, http.StatusOK, "5m"},
		{"fresh route, stale, page navigation", []hs{fresh5}, 6 * time.Minute, http.MethodGet, browser, http.StatusFound, ""},
		{"fresh route, stale, HEAD", []hs{fresh5}, 6 * time.Minute, http.MethodHead, browser, http.StatusFound, ""},
		{"fresh route, stale, API client", []hs{fresh5}, 6 * time.Minute, http.MethodGet, api, http.StatusUnauthorized, ""},
		{"fresh route, stale, browser DELETE", []hs{fresh5}, 6 * time.Minute, http.MethodDelete, browser, http.StatusUnauthorized, ""},
		{"fresh route, stale, browser POST", []hs{fresh5}, 6 * time.Minute, http.MethodPost, browser, http.StatusUnauthorized, ""},
		{"fresh route, token without auth_time", []hs{fresh5}, -1, http.MethodGet, browser, http.StatusFound, ""},
		{"plain then fresh, recent", []hs{plain, fresh5}, time.Minute, http.MethodDelete, api, http.StatusOK, "5m"},
		{"fresh then plain, recent", []hs{fresh5, plain}, time.Minute, http.MethodDelete, api, http.StatusOK, "5m"},
		{"plain then fresh, stale", []hs{plain, fresh5}, 6 * time.Minute, http.MethodGet, browser, http.StatusFound, ""},
		{"fresh then plain, stale", []hs{fresh5, plain}, 6 * time.Minute, http.MethodDelete, browser, http.StatusUnauthorized, ""},
		{"two fresh rules, the stricter is written", []hs{{10 * time.Minute, []string{"admin"}}, {2 * time.Minute, []string{"admin"}}}, time.Minute, http.MethodGet, browser, http.StatusOK, "2m"},
		{"two fresh rules, the later one refuses", []hs{{10 * time.Minute, []string{"admin"}}, {2 * time.Minute, []string{"admin"}}}, 3 * time.Minute, http.MethodGet, browser, http.StatusFound, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var handlers []*Handler
			for _, spec := range tt.chain {
				handlers = append(handlers, g.handler(spec.fresh, spec.roles...))
			}
			up := &recordingUpstream{}
			r := g.request(g.tokenSteppedUp(t, tt.age))
			r.Method = tt.method
			r.Header.Set("Accept", tt.accept)
			w := httptest.NewRecorder()
			logs.TakeAll()
			if err := chain(up, handlers...).ServeHTTP(w, r); err != nil {
				t.Fatal(err)
			}
			if w.Code != tt.status {
				t.Fatalf("status %d, want %d: %s", w.Code, tt.status, w.Body)
			}
			access, reauth := logs.FilterMessage(audit.EventAccess).All(), logs.FilterMessage(audit.EventReauthRequired).All()
			if tt.status == http.StatusOK {
				if up.n != 1 || up.last.Get(HeaderUser) != "alice" || strings.Contains(up.last.Get("Cookie"), CookieName) {
					t.Errorf("the upstream got %d requests, last with headers %v; want one as alice, without the session cookie", up.n, up.last)
				}
				if len(access) != 1 || len(reauth) != 0 {
					t.Fatalf("%d access and %d reauth_required events, want exactly one access event", len(access), len(reauth))
				}
				if got, _ := access[0].ContextMap()["fresh"].(string); got != tt.fresh {
					t.Errorf("the access event's fresh is %q, want %q", got, tt.fresh)
				}
				return
			}
			if up.n != 0 || len(access) != 0 || len(reauth) != 1 {
				t.Fatalf("upstream reached %d times, %d access and %d reauth_required events; want none, none and one", up.n, len(access), len(reauth))
			}
			ev := reauth[0].ContextMap()
			for k, want := range map[string]any{"session_id": sid, "user": "alice", "role": "admin", "method": tt.method, "uri": r.RequestURI} {
				if ev[k] != want {
					t.Errorf("reauth_required %s = %v, want %v", k, ev[k], want)
				}
			}
			if age, ok := ev["step_up_age_s"].(int64); tt.age >= 0 && (!ok || age < int64(tt.age/time.Second)-1 || age > int64(tt.age/time.Second)+1) {
				t.Errorf("reauth_required step_up_age_s = %v, want about %d", ev["step_up_age_s"], int64(tt.age/time.Second))
			}
			if tt.status == http.StatusFound {
				if loc := w.Header().Get("Location"); loc != reconfirm {
					t.Errorf("Location %q, want %q", loc, reconfirm)
				}
				return
			}
			var body map[string]string
			if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
				t.Fatalf("the 401 is not JSON: %v: %s", err, w.Body)
			}
			if body["error"] != "reauth_required" || body["reauth_url"] != reconfirm || w.Header().Get("Location") != "" {
				t.Errorf("401 %v (Location %q), want error reauth_required and reauth_url %s, no redirect", body, w.Header().Get("Location"), reconfirm)
			}
		})
	}
}

// A later jit handler of another role refuses the request as the first one would
// have: activation for an eligible user, and no access event, since nothing went up.
func TestLaterHandlerAppliesItsRolesToTheAdmittedSession(t *testing.T) {
	g, logs := freshGate(t)
	up := &recordingUpstream{}
	r := g.request(g.token)
	w := httptest.NewRecorder()
	if err := chain(up, g.handler(0, "admin"), g.handler(0, "other")).ServeHTTP(w, r); err != nil {
		t.Fatal(err)
	}
	if w.Code != http.StatusFound || !strings.HasPrefix(w.Header().Get("Location"), "/.jit/activate?role=other&") {
		t.Fatalf("status %d to %q, want 302 to the activation of other", w.Code, w.Header().Get("Location"))
	}
	if up.n != 0 || logs.FilterMessage(audit.EventAccess).Len() != 0 {
		t.Errorf("upstream reached %d times, %d access events; want none", up.n, logs.FilterMessage(audit.EventAccess).Len())
	}
	denied := logs.FilterMessage(audit.EventAccessDenied).All()
	if len(denied) != 1 || denied[0].ContextMap()["reason"] != session.ErrTokenRole.Error() {
		t.Errorf("access_denied events %v, want one for token_role", denied)
	}
}

// The fresh check is on the hot path: a fresh route, alone or after another jit
// handler, costs no allocation more than a plain one.
func TestFreshRoutesCostNoAllocation(t *testing.T) {
	g := newGate(t, gateOptions{})
	plain, fresh := g.handler(0, "admin"), g.handler(5*time.Minute, "admin")
	c := g.claims(t)
	at := time.Now()
	if n := testing.AllocsPerRun(100, func() { _ = fresh.freshEnough(c, at) }); n != 0 {
		t.Errorf("freshEnough allocates %.1f times", n)
	}
	allocs := func(route caddyhttp.Handler) float64 {
		const runs = 200
		reqs, ws := make([]*http.Request, runs+1), make([]*benchWriter, runs+1)
		for i := range reqs {
			reqs[i], ws[i] = g.request(g.token), &benchWriter{header: http.Header{}}
		}
		i := 0
		return testing.AllocsPerRun(runs, func() {
			if err := route.ServeHTTP(ws[i], reqs[i]); err != nil || ws[i].code != http.StatusOK {
				t.Fatalf("status %d, %v", ws[i].code, err)
			}
			i++
		})
	}
	if raceDetector {
		t.Skip("the routes' allocation counts vary under -race: sync.Pool drops items at random")
	}
	base := allocs(chain(g.next, plain))
	for name, route := range map[string]caddyhttp.Handler{
		"fresh alone":     chain(g.next, fresh),
		"plain, fresh":    chain(g.next, plain, fresh),
		"fresh, plain":    chain(g.next, fresh, plain),
		"fresh, fresh 1m": chain(g.next, fresh, g.handler(time.Minute, "admin")),
	} {
		// Half an allocation of slack: a pool emptied by a GC now and then is not the
		// route's cost; one more allocation per request is.
		if got := allocs(route); got > base+0.5 {
			t.Errorf("%s: %.2f allocations per request, a plain route %.2f", name, got, base)
		}
	}
}

func TestCaddyfileFresh(t *testing.T) {
	cfg, err := adapt(t, validGlobal+"http://example.com {\n\t@deletes method DELETE\n\tjit db-admin\n\tjit @deletes db-admin {\n\t\tfresh 5m\n\t}\n}\n")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(cfg["apps"].(map[string]any)["http"])
	if want := `{"fresh":300000000000,"handler":"jit","roles":["db-admin"]}`; !strings.Contains(string(raw), want) {
		t.Errorf("want the handler %s in\n%s", want, raw)
	}
	if strings.Count(string(raw), `"fresh"`) != 1 {
		t.Errorf("fresh leaked into the other jit handler:\n%s", raw)
	}

	global := "{\n\tjit {\n\t\trole db-admin {\n\t\t\tmax_duration 1h\n\t\t\teligible alice\n\t\t}\n\t}\n}\nhttp://example.com {\n\tjit db-admin {\n"
	for _, tt := range []struct{ lines, wantLine, wantText string }{
		{"\t\tfresh 0\n", "Caddyfile:11", `fresh "0": want a positive duration`},
		{"\t\tfresh -5m\n", "Caddyfile:11", `fresh "-5m": want a positive duration`},
		{"\t\tfresh soon\n", "Caddyfile:11", `fresh "soon": want a positive duration`},
		{"\t\tfresh\n", "Caddyfile:11", "wrong argument count"},
		{"\t\tfresh 5m 10m\n", "Caddyfile:11", "wrong argument count"},
		{"\t\tfresh 5m\n\t\tfresh 10m\n", "Caddyfile:12", "fresh is given twice"},
	} {
		t.Run(strings.TrimSpace(tt.lines), func(t *testing.T) {
			_, err := adapt(t, global+tt.lines+"\t}\n}\n")
			if err == nil || !strings.Contains(err.Error(), tt.wantLine) || !strings.Contains(err.Error(), tt.wantText) {
				t.Errorf("error %v, want one naming %s and saying %q", err, tt.wantLine, tt.wantText)
			}
		})
	}
}

// A JSON config skips the Caddyfile parser; Validate refuses what it would have.
func TestValidateRefusesANegativeFresh(t *testing.T) {
	g := newGate(t, gateOptions{})
	h := g.handler(-time.Minute, "admin")
	if err := h.Validate(); err == nil || !strings.Contains(err.Error(), "fresh") {
		t.Errorf("Validate = %v, want a refusal of fresh", err)
	}
	if err := g.handler(time.Minute, "admin").Validate(); err != nil {
		t.Errorf("Validate of fresh 1m = %v", err)
	}
}
