package caddymodule

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/caddy-jit/caddy-jit/audit"
	"github.com/caddy-jit/caddy-jit/authority"
	"github.com/caddy-jit/caddy-jit/policy"
)

func testRefusalLimit(t *testing.T, burst int, refill time.Duration, users int) *refusalLimit {
	t.Helper()
	b, err := newRefusalBuckets(users)
	if err != nil {
		t.Fatal(err)
	}
	return &refusalLimit{burst: burst, refill: refill, buckets: b}
}

func TestRefusalLimitBurstThenRefill(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	type step struct {
		at     time.Duration // since t0
		refuse bool          // count a refusal, else ask whether a POST may go on
		// for a question: the wait wanted, whether the answer starts a run, and the
		// refusals it reports
		wait    time.Duration
		first   bool
		refused int
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"a user never refused goes on", []step{{at: 0}}},
		{"within the burst every POST goes on", []step{
			{at: 0, refuse: true}, {at: 0, refuse: true}, {at: 0}}},
		{"the burst spent: wait one refill, one run audited", []step{
			{at: 0, refuse: true}, {at: 0, refuse: true}, {at: 0, refuse: true},
			{at: 0, wait: 10 * time.Second, first: true, refused: 3},
			{at: 4 * time.Second, wait: 6 * time.Second, refused: 3},
			{at: 10 * time.Second}}},
		{"a steady trickle of refusals stays one run", []step{
			{at: 0, refuse: true}, {at: 0, refuse: true}, {at: 0, refuse: true},
			{at: time.Second, wait: 9 * time.Second, first: true, refused: 3},
			{at: 10 * time.Second}, {at: 10 * time.Second, refuse: true},
			{at: 11 * time.Second, wait: 9 * time.Second, refused: 4}}},
		{"a full bucket ends the run; the next one is audited again", []step{
			{at: 0, refuse: true}, {at: 0, refuse: true}, {at: 0, refuse: true},
			{at: 0, wait: 10 * time.Second, first: true, refused: 3},
			{at: 30 * time.Second},
			{at: 30 * time.Second, refuse: true}, {at: 30 * time.Second, refuse: true}, {at: 30 * time.Second, refuse: true},
			{at: 30 * time.Second, wait: 10 * time.Second, first: true, refused: 3}}},
		{"concurrent refusals never push the wait past one refill", []step{
			{at: 0, refuse: true}, {at: 0, refuse: true}, {at: 0, refuse: true}, {at: 0, refuse: true}, {at: 0, refuse: true},
			{at: 0, wait: 10 * time.Second, first: true, refused: 5}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lim := testRefusalLimit(t, 3, 10*time.Second, 10)
			for i, s := range tc.steps {
				at := t0.Add(s.at)
				if s.refuse {
					lim.refused("alice", at)
					continue
				}
				wait, first, refused := lim.wait("alice", at)
				if wait != s.wait || first != s.first || refused != s.refused {
					t.Errorf("step %d at +%s: wait %s, first %v, refused %d; want %s, %v, %d", i, s.at, wait, first, refused, s.wait, s.first, s.refused)
				}
			}
			if wait, _, _ := lim.wait("bob", t0); wait != 0 {
				t.Errorf("bob, never refused, must wait %s", wait)
			}
		})
	}
}

// POSTs answered at the same time each hold a place while they run, so a burst of
// them cannot all pass a bucket with room for fewer; the places of those that were
// not refused are given back.
func TestRefusalPlacesAreTakenOnAdmission(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	lim := testRefusalLimit(t, 3, 10*time.Second, 10)
	admitted := 0
	for range 10 { // ten POSTs in flight together
		if wait, _, _ := lim.wait("alice", t0); wait > 0 {
			continue
		}
		lim.reserve("alice", t0)
		admitted++
	}
	if admitted != 3 {
		t.Fatalf("%d of 10 simultaneous POSTs admitted, want the burst of 3", admitted)
	}
	for range admitted {
		lim.settle("alice", t0, false) // none of them was refused
	}
	if wait, _, _ := lim.wait("alice", t0); wait != 0 {
		t.Errorf("after the admitted POSTs succeeded alice must wait %s, want 0", wait)
	}
}

func TestRefusalBucketsAreBoundedInNumber(t *testing.T) {
	t0 := time.Now()
	lim := testRefusalLimit(t, 1, time.Minute, 50)
	for i := range 1000 {
		lim.refused(fmt.Sprintf("user%d", i), t0)
	}
	if n := lim.buckets.users.Len(); n != 50 {
		t.Errorf("%d buckets kept, want at most 50", n)
	}
	if wait, _, _ := lim.wait("user999", t0); wait == 0 {
		t.Error("the most recent user's bucket was not kept")
	}
}

func TestRefusalsSettingsFromJSONAreChecked(t *testing.T) {
	for _, tc := range []struct {
		name       string
		c          *RefusalsConfig
		burst      int
		refill     time.Duration
		wantErrMsg string
	}{
		{"defaults", nil, DefaultRefusalBurst, DefaultRefusalRefill, ""},
		{"empty block", &RefusalsConfig{}, DefaultRefusalBurst, DefaultRefusalRefill, ""},
		{"both set", &RefusalsConfig{Burst: 20, Refill: caddy.Duration(2 * time.Second)}, 20, 2 * time.Second, ""},
		{"negative burst", &RefusalsConfig{Burst: -1}, 0, 0, "burst must be from 1 to 1000"},
		{"burst too large", &RefusalsConfig{Burst: 1001}, 0, 0, "burst must be from 1 to 1000"},
		{"negative refill", &RefusalsConfig{Refill: -1}, 0, 0, "refill must be a positive duration"},
		{"refill too long", &RefusalsConfig{Refill: caddy.Duration(2 * time.Hour)}, 0, 0, "at most 1h"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lim, err := provisionRefusals(tc.c)
			if tc.wantErrMsg != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErrMsg) {
					t.Fatalf("got %v, want an error saying %q", err, tc.wantErrMsg)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer lim.release()
			if lim.burst != tc.burst || lim.refill != tc.refill {
				t.Errorf("burst %d refill %s, want %d and %s", lim.burst, lim.refill, tc.burst, tc.refill)
			}
		})
	}
}

func TestRefusalsBucketsSurviveAReload(t *testing.T) {
	t0 := time.Now()
	old, err := provisionRefusals(&RefusalsConfig{Burst: 1})
	if err != nil {
		t.Fatal(err)
	}
	old.refused("reload-user", t0)
	// The new config is provisioned before the old one is cleaned up.
	renewed, err := provisionRefusals(&RefusalsConfig{Burst: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := old.release(); err != nil {
		t.Fatal(err)
	}
	defer renewed.release()
	if wait, _, _ := renewed.wait("reload-user", t0); wait == 0 {
		t.Error("a reload gave a limited user a fresh burst")
	}
}

func TestRefusalsCaddyfileOption(t *testing.T) {
	role := "\t\trole db-admin {\n\t\t\tmax_duration 1h\n\t\t\teligible alice\n\t\t}\n"
	site := "\nhttp://example.com {\n\tjit db-admin\n}\n"
	src := func(block string) string { return "{\n\tjit {\n" + block + role + "\t}\n}" + site }
	cfg, err := adapt(t, src("\t\trefusals {\n\t\t\tburst 20\n\t\t\trefill 2s\n\t\t}\n"))
	if err != nil {
		t.Fatal(err)
	}
	jit := cfg["apps"].(map[string]any)["jit"].(map[string]any)
	if got := fmt.Sprint(jit["refusals"]); got != "map[burst:20 refill:2e+09]" {
		t.Errorf("refusals adapted to %s", got)
	}
	for _, tc := range []struct{ name, block, wantLine, wantText string }{
		{"burst zero", "\t\trefusals {\n\t\t\tburst 0\n\t\t}\n", "Caddyfile:4", "refusals burst \"0\": want a whole number from 1 to 1000"},
		{"burst not a number", "\t\trefusals {\n\t\t\tburst many\n\t\t}\n", "Caddyfile:4", "refusals burst \"many\""},
		{"refill not a duration", "\t\trefusals {\n\t\t\trefill soon\n\t\t}\n", "Caddyfile:4", "refill \"soon\": want a positive duration"},
		{"refill too long", "\t\trefusals {\n\t\t\trefill 2h\n\t\t}\n", "Caddyfile:4", "at most 1h"},
		{"unknown setting", "\t\trefusals {\n\t\t\trate 5\n\t\t}\n", "Caddyfile:4", "unrecognized refusals setting \"rate\""},
		{"an argument", "\t\trefusals 5\n", "Caddyfile:3", "wrong argument count"},
		{"twice", "\t\trefusals {\n\t\t}\n\t\trefusals {\n\t\t}\n", "Caddyfile:5", "refusals is given twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := adapt(t, src(tc.block))
			if err == nil || !strings.Contains(err.Error(), tc.wantLine) || !strings.Contains(err.Error(), tc.wantText) {
				t.Errorf("got %v, want an error at %s saying %q", err, tc.wantLine, tc.wantText)
			}
		})
	}
}

// refusalHandler is a provisioned-enough handler whose audit events are observed.
func refusalHandler(t *testing.T, burst int) (*Handler, *observer.ObservedLogs) {
	t.Helper()
	app := &App{Roles: map[string]*RoleConfig{"admin": {
		MaxDuration: caddy.Duration(time.Hour),
		Eligible:    []EligibleConfig{{Subjects: []string{"alice"}}},
	}}}
	app.setDefaults()
	roles, err := buildRoles(app.Roles)
	if err != nil {
		t.Fatal(err)
	}
	app.roles, app.identityKey = roles, singlePlaceholder(app.Identity)
	core, logs := observer.New(zapcore.InfoLevel)
	app.authority, err = authority.New(context.Background(), &certmagic.FileStorage{Path: t.TempDir()}, authority.Config{
		Issuer: "test", MaxFailures: 5, LockoutDuration: time.Minute, Audit: zap.New(core), Now: time.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	app.refusals = testRefusalLimit(t, burst, time.Minute, 10)
	return &Handler{Roles: []string{"admin"}, app: app, logger: zap.NewNop(), audiences: new(audienceCache)}, logs
}

func pageRequest(method, path, user, body, accept string) *http.Request {
	r := httptest.NewRequest(method, "http://console.example"+path, strings.NewReader(body))
	r.Header.Set("Accept", accept)
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	r = r.WithContext(context.WithValue(r.Context(), caddyhttp.VarsCtxKey, map[string]any{caddyhttp.ClientIPVarKey: "192.0.2.1"}))
	repl := caddyhttp.NewTestReplacer(r)
	repl.Set("http.auth.user.id", user)
	return r
}

func TestRefusedPostsAreLimitedPerUser(t *testing.T) {
	h, logs := refusalHandler(t, 3)
	post := func(user, path, accept string) *httptest.ResponseRecorder {
		w := httptest.NewRecorder()
		if err := h.servePage(w, pageRequest(http.MethodPost, path, user, "role=nope", accept)); err != nil {
			t.Fatal(err)
		}
		return w
	}
	// Refusals on any page count: an unknown role, a bad extension, an unknown page.
	for _, path := range []string{"/.jit/activate", "/.jit/extend", "/.jit/nowhere"} {
		if w := post("alice", path, "text/html"); w.Code < 400 || w.Code >= 500 || w.Code == http.StatusTooManyRequests {
			t.Fatalf("POST %s: %d, want a refusal", path, w.Code)
		}
	}
	for i, accept := range []string{"text/html", "application/json", "text/html"} {
		w := post("alice", "/.jit/activate", accept)
		if w.Code != http.StatusTooManyRequests {
			t.Fatalf("limited POST %d: %d, want 429", i, w.Code)
		}
		if ra := w.Header().Get("Retry-After"); ra != "60" {
			t.Errorf("Retry-After %q, want 60", ra)
		}
		body := w.Body.String()
		if accept == "application/json" {
			if !strings.Contains(body, `"error":"too_many_refusals"`) || !strings.Contains(body, `"retry_after":60`) {
				t.Errorf("JSON answer: %s", body)
			}
		} else if !strings.Contains(body, "Try again at") || !strings.Contains(body, "in 60 seconds") {
			t.Errorf("page does not say when to retry: %s", body)
		}
	}
	limited := logs.FilterMessage(audit.EventRefusalsLimited).All()
	if len(limited) != 1 {
		t.Fatalf("%d refusals_limited events for one run, want 1", len(limited))
	}
	f := limited[0].ContextMap()
	if f["user"] != "alice" || f["count"] != int64(3) || f["until"] == "" {
		t.Errorf("refusals_limited event: %v", f)
	}
	// Only three refusals did any work: the limited POSTs wrote no event of their own.
	if n := logs.FilterMessage(audit.EventActivationFailed).Len(); n != 0 {
		t.Errorf("%d activation_failed events: the limited POSTs were handled", n)
	}
	// Another user, and alice's pages, are not limited.
	if w := post("bob", "/.jit/activate", "text/html"); w.Code == http.StatusTooManyRequests {
		t.Error("bob was limited by alice's refusals")
	}
	w := httptest.NewRecorder()
	if err := h.servePage(w, pageRequest(http.MethodGet, "/.jit/", "alice", "", "text/html")); err != nil || w.Code != http.StatusOK {
		t.Errorf("GET /.jit/ of a limited user: %d %v, want 200", w.Code, err)
	}
}

func TestRefusalKeyIsTheCanonicalUserName(t *testing.T) {
	for _, tc := range []struct {
		name, canonical, sent, want string
	}{
		{"spellings of one account share a bucket", "alice", "ALICE", "alice"},
		{"the name as sent when it has no canonical form", "", "b\xffb", "b\xffb"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := refusalKey(policy.Caller{User: tc.canonical}, tc.sent); got != tc.want {
				t.Errorf("refusalKey(%q, %q) = %q, want %q", tc.canonical, tc.sent, got, tc.want)
			}
		})
	}
}
