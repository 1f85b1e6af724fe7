package caddymodule

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/certmagic"
	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/caddy-jit/caddy-jit/audit"
	"github.com/caddy-jit/caddy-jit/authority"
	"github.com/caddy-jit/caddy-jit/policy"
	"github.com/caddy-jit/caddy-jit/session"
	"github.com/caddy-jit/caddy-jit/workflow"
)

// benchGate is a provisioned handler over file storage, without a Caddy around it, so
// that a benchmark measures the gate and nothing else.
type benchGate struct {
	h     *Handler
	next  caddyhttp.Handler
	token string
	st    certmagic.Storage
	// templates are the parsed requests that request clones, by cookie.
	templates map[string]*http.Request
}

func newBenchGate(b *testing.B) *benchGate { return newGate(b, gateOptions{}) }

// gateOptions change the gate that newGate makes.
type gateOptions struct {
	// storage replaces a file storage in a temporary folder.
	storage certmagic.Storage
	// recordBodies is the role's record_bodies; with it, the gate gets the shared
	// state (and body writer) that Provision would give it.
	recordBodies int64
	// audit receives the audit events; default: encoded and dropped.
	audit *zap.Logger
	// batchedAudit writes the chain through the batched output (to io.Discard), as
	// `audit { output … }` does, instead of through audit.
	batchedAudit bool
}

func newGate(tb testing.TB, opt gateOptions) *benchGate {
	tb.Helper()
	ctx := context.Background()
	st := opt.storage
	if st == nil {
		st = &certmagic.FileStorage{Path: tb.TempDir()}
	}
	if opt.audit == nil {
		opt.audit = discardJSONLogger()
	}
	app := &App{Roles: map[string]*RoleConfig{"admin": {
		MaxDuration:  caddy.Duration(time.Hour),
		Eligible:     []EligibleConfig{{Subjects: []string{"alice"}}},
		RecordBodies: opt.recordBodies,
	}}}
	app.setDefaults()
	// No sync loop runs here, so the revocation set would turn stale after the
	// default max_staleness and every request would get a 503.
	app.MaxStaleness = caddy.Duration(24 * time.Hour)
	roles, err := buildRoles(app.Roles)
	if err != nil {
		tb.Fatal(err)
	}
	app.roles = roles
	app.identityKey = singlePlaceholder(app.Identity)
	var state *session.State
	if opt.recordBodies > 0 || opt.batchedAudit {
		app.shared = newTestSharedState(tb, st)
		state = app.shared.state
	}
	if opt.batchedAudit {
		state.Chain.Batch(audit.Output{Writer: io.Discard})
		tb.Cleanup(func() { state.Chain.Unbatch(time.Now()) })
	}
	app.authority, err = authority.New(ctx, st, authority.Config{
		Issuer: "bench", MaxFailures: 5, LockoutDuration: time.Minute, Audit: opt.audit, Now: time.Now, State: state,
	})
	if err != nil {
		tb.Fatal(err)
	}
	app.run = &appRun{settings: &syncSettings{interval: time.Hour, authority: app.authority}}
	if app.shared != nil {
		app.shared.settings.Store(app.run.settings)
	}
	g := &benchGate{
		h:  &Handler{Roles: []string{"admin"}, app: app, logger: zap.NewNop(), audiences: new(audienceCache)},
		st: st,
		next: caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
			if r.Body != http.NoBody {
				_, _ = io.Copy(io.Discard, r.Body)
			}
			w.WriteHeader(http.StatusOK)
			return nil
		}),
	}
	uri, err := app.authority.StepUp.Enroll(ctx, "alice", "bench")
	if err != nil {
		tb.Fatal(err)
	}
	g.token = g.activate(tb, uri, time.Now())
	return g
}

func (g *benchGate) activate(b testing.TB, uri string, at time.Time) string {
	b.Helper()
	key, err := otp.NewKeyFromURL(uri)
	if err != nil {
		b.Fatal(err)
	}
	code, err := totp.GenerateCodeCustom(key.Secret(), at, totp.ValidateOpts{Period: 30, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1})
	if err != nil {
		b.Fatal(err)
	}
	role, _ := g.h.app.role("admin")
	token, _, err := g.h.app.authority.Activate(context.Background(), workflow.Activation{
		Caller: callerOf("alice"), Role: role, Audience: "http://console.example", Duration: time.Hour,
		Justification: "benchmarking the gate", Code: code,
	})
	if err != nil {
		b.Fatal(err)
	}
	return token
}

// request is a request as Caddy hands it to a handler: with a replacer that knows the
// identity, and the vars map. Each is a clone of one parsed request per cookie, so that
// making it allocates little: the garbage collector's work, which the benchmark's
// timer also sees, is then mostly the gate's own.
func (g *benchGate) request(cookie string) *http.Request {
	tmpl := g.templates[cookie]
	if tmpl == nil {
		tmpl = httptest.NewRequest(http.MethodGet, "http://console.example/admin/page?x=1", nil)
		tmpl.Header.Set("Accept", "text/html")
		if cookie != "" {
			tmpl.Header.Set("Cookie", "theme=dark; "+CookieName+"="+cookie)
		}
		if g.templates == nil {
			g.templates = map[string]*http.Request{}
		}
		g.templates[cookie] = tmpl
	}
	// As Caddy's server does: the vars map first, then a replacer with the HTTP
	// placeholders (caddyhttp.NewTestReplacer adds them as the server does).
	r := tmpl.Clone(context.WithValue(tmpl.Context(), caddyhttp.VarsCtxKey, map[string]any{caddyhttp.ClientIPVarKey: "192.0.2.1"}))
	repl := caddyhttp.NewTestReplacer(r)
	repl.Set("http.auth.user.id", "alice")
	return r
}

// run serves b.N requests. They are made in batches outside the timer, so that the
// numbers are the gate's own and not the cost of stopping the timer per request.
func (g *benchGate) run(b *testing.B, cookie string, wantStatus int) {
	g.runWith(b, cookie, wantStatus, nil, nil)
}

// runWith is run with each request changed by prepare, and settle called after each
// batch, both outside the timer.
func (g *benchGate) runWith(b *testing.B, cookie string, wantStatus int, prepare func(*http.Request), settle func()) {
	const batch = 512
	reqs := make([]*http.Request, batch)
	recs := make([]*benchWriter, batch)
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; {
		n := min(batch, b.N-done)
		b.StopTimer()
		for i := range n {
			reqs[i], recs[i] = g.request(cookie), &benchWriter{header: http.Header{}}
			if prepare != nil {
				prepare(reqs[i])
			}
		}
		b.StartTimer()
		for i := range n {
			if err := g.h.ServeHTTP(recs[i], reqs[i], g.next); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		for i := range n {
			if recs[i].code != wantStatus {
				b.Fatalf("status %d, want %d", recs[i].code, wantStatus)
			}
		}
		if settle != nil {
			settle()
		}
		b.StartTimer()
		done += n
	}
}

// discardJSONLogger encodes audit events as Caddy's JSON log would and drops the
// bytes: the benchmarks count the encoding of the access event, not a file write.
func discardJSONLogger() *zap.Logger {
	enc := zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
	return zap.New(zapcore.NewCore(enc, zapcore.AddSync(io.Discard), zapcore.InfoLevel))
}

// benchWriter is the least a ResponseWriter can be, so that the allocations counted
// are the gate's and not a recorder's (httptest's copies the header map on WriteHeader).
type benchWriter struct {
	header http.Header
	code   int
}

func (w *benchWriter) Header() http.Header { return w.header }

func (w *benchWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
}

func (w *benchWriter) Write(p []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	return len(p), nil
}

func BenchmarkGate(b *testing.B) {
	g := newBenchGate(b)
	forged := forgeWellFormed(b, g.token)

	b.Run("valid session, cache hit", func(b *testing.B) {
		g.run(b, g.token, http.StatusOK)
	})
	b.Run("valid session, cache hit, batched audit", func(b *testing.B) {
		g4 := newGate(b, gateOptions{batchedAudit: true})
		g4.run(b, g4.token, http.StatusOK)
	})
	b.Run("valid session, cache miss", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			b.StopTimer()
			g.h.app.authority.Verifier.Forget(g.token)
			r := g.request(g.token)
			w := httptest.NewRecorder()
			b.StartTimer()
			_ = g.h.ServeHTTP(w, r, g.next)
			if w.Code != http.StatusOK {
				b.Fatalf("status %d", w.Code)
			}
		}
	})
	b.Run("no cookie", func(b *testing.B) {
		g.run(b, "", http.StatusFound)
	})
	b.Run("malformed cookie", func(b *testing.B) {
		g.run(b, "not a token!", http.StatusFound)
	})
	b.Run("forged well-formed token", func(b *testing.B) {
		g.run(b, forged, http.StatusFound)
	})
	b.Run("revoked session", func(b *testing.B) {
		g2 := newBenchGate(b)
		c, err := g2.h.app.authority.Verifier.Verify(g2.token, session.Want{Subject: "alice", Audience: "http://console.example", Roles: []string{"admin"}}, time.Now())
		if err != nil {
			b.Fatal(err)
		}
		if _, err := g2.h.app.authority.EndByID(context.Background(), c.SessionID, "bench", ""); err != nil {
			b.Fatal(err)
		}
		g2.run(b, g2.token, http.StatusFound)
	})
	b.Run("valid session, POST, body recorded", func(b *testing.B) {
		g3 := newGate(b, gateOptions{recordBodies: DefaultRecordBodies})
		body := strings.Repeat(`{"user":"bob","admin":true}`, 40)
		g3.runWith(b, g3.token, http.StatusOK, func(r *http.Request) {
			r.Method = http.MethodPost
			r.Body = bodyOf(body)
		}, func() {
			// The queue never fills: the numbers are the request's, storage is not.
			for g3.h.app.shared.bodies.Waiting() > 0 {
				time.Sleep(100 * time.Microsecond)
			}
		})
	})
}

// forgeWellFormed keeps the header and payload of a real token and replaces the
// signature with another of the same length: it passes every shape check and fails
// only the signature.
func forgeWellFormed(b *testing.B, token string) string {
	b.Helper()
	i := strings.LastIndexByte(token, '.')
	sig := []byte(token[i+1:])
	for j := range sig {
		if sig[j] == 'A' {
			sig[j] = 'B'
		} else {
			sig[j] = 'A'
		}
	}
	return token[:i+1] + string(sig)
}

// BenchmarkActivation is a whole activation on file storage: form POST to cookie.
func BenchmarkActivation(b *testing.B) {
	g := newBenchGate(b)
	ctx := context.Background()
	var took []time.Duration
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		// Every activation needs a code of a later time step than the last one: enroll
		// a fresh user each round, as the code of a step is single-use.
		user := "user" + itoa(i)
		g.h.app.roles["admin"].Eligibility[0].Subjects = append(g.h.app.roles["admin"].Eligibility[0].Subjects, user)
		uri, err := g.h.app.authority.StepUp.Enroll(ctx, user, "bench")
		if err != nil {
			b.Fatal(err)
		}
		key, _ := otp.NewKeyFromURL(uri)
		code, _ := totp.GenerateCodeCustom(key.Secret(), time.Now(), totp.ValidateOpts{Period: 30, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1})
		form := url.Values{"role": {"admin"}, "duration": {"30m"}, "justification": {"benchmarking activation"},
			"code": {code}, "return": {"/admin"}}
		r := g.request("")
		r.Method = http.MethodPost
		r.URL.Path = "/.jit/activate"
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
		repl.Set("http.auth.user.id", user)
		form.Set("csrf", g.h.app.authority.Keyring.CSRFToken(user, "http://console.example", time.Now()))
		r.Body = bodyOf(form.Encode())
		w := httptest.NewRecorder()
		b.StartTimer()
		began := time.Now()
		if err := g.h.ServeHTTP(w, r, g.next); err != nil {
			b.Fatal(err)
		}
		took = append(took, time.Since(began))
		if w.Code != http.StatusSeeOther {
			b.Fatalf("activation answered %d: %s", w.Code, w.Body.String())
		}
	}
	slices.Sort(took)
	b.ReportMetric(float64(took[len(took)*99/100].Microseconds()), "p99-µs")
}

func callerOf(user string) policy.Caller { return policy.Caller{User: user} }

func bodyOf(s string) io.ReadCloser { return io.NopCloser(strings.NewReader(s)) }

func itoa(i int) string { return strconv.Itoa(i) }
