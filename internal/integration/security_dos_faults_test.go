package integration

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// ---------------------------------------------------------------------------
// Class 10: bounded work per request.

func TestSecurityClass10DenialOfService(t *testing.T) {
	e := newEnv(t, envOptions{JitOptions: ticketRole})
	site := e.site(0)
	alice, bob := e.enroll("alice"), e.enroll("bob")
	key := e.signingKey(t)
	atk := e.browser("")

	timed := func(t *testing.T, what string, limit time.Duration, f func() *response) *response {
		t.Helper()
		start := time.Now()
		r := f()
		if d := time.Since(start); d > limit {
			t.Errorf("%s took %s, want under %s", what, d.Round(time.Millisecond), limit)
		}
		return r
	}

	t.Run("cookie of 5 KiB", func(t *testing.T) {
		for _, c := range []struct{ name, value string }{
			{"base64url", strings.Repeat("A", 5<<10)},
			{"three parts", strings.Repeat("A", 2<<10) + "." + strings.Repeat("B", 2<<10) + "." + strings.Repeat("C", 1<<10)},
			{"arbitrary bytes", strings.Repeat("%ff{}\"\\", 5<<10/7)},
		} {
			for _, sh := range allShapes {
				before := e.up.count()
				r := timed(t, c.name, 2*time.Second, func() *response {
					return sendToken(atk, sh, site, "alice", "", withCookieHeader(cookieName+"="+c.value))
				})
				wantToActivation(t, e, r, before, shapePath(sh), string(sh)+" with a 5 KiB cookie ("+c.name+")")
			}
		}
		atk.accept = "application/json"
		r := sendToken(atk, shapeGET, site, "alice", "", withCookieHeader(cookieName+"="+strings.Repeat("A", 5<<10)))
		atk.accept = "text/html"
		wantStatus(t, r, http.StatusUnauthorized, "an API client with a 5 KiB cookie")
	})

	t.Run("floods of malformed and forged tokens", func(t *testing.T) {
		_, claims := tokenParts(t, e.browser("carol").mustActivate(site, roleViewer, "/", e.enroll("carol"), nil))
		malformed := func(i int) string {
			switch i % 5 {
			case 0:
				return fmt.Sprintf("garbage-%d", i)
			case 1:
				return strings.Repeat("x.", i%7+3) + "y"
			case 2:
				return fmt.Sprintf("%x.%x.%x", i, i*i, i*i*i)
			case 3:
				return "eyJ" + strings.Repeat("A", i) + ".." + "sig"
			}
			return fmt.Sprintf("{\"n\":%d}", i)
		}
		forged := func(i int) string {
			c := cloneWith(claims, func(c map[string]any) {
				c["sub"], c["role"], c["sid"] = "alice", roleAdmin, fmt.Sprintf("forged-%03d", i)
			})
			sig := make([]byte, ed25519.SignatureSize)
			_, _ = rand.Read(sig)
			return b64json(t, key.header()) + "." + b64json(t, c) + "." + base64.RawURLEncoding.EncodeToString(sig)
		}
		for _, flood := range []struct {
			name  string
			token func(int) string
		}{{"100 malformed cookies", malformed}, {"100 well-formed forged tokens", forged}} {
			t.Run(flood.name, func(t *testing.T) {
				before := e.up.count()
				start := time.Now()
				for i := range 100 {
					r := atk.raw(http.MethodGet, site+adminURI, withBasicAuth("alice"), withToken(flood.token(i)))
					if r.StatusCode != http.StatusFound {
						t.Fatalf("token %d of the flood: want 302, got %s", i, r)
					}
				}
				took := time.Since(start)
				t.Logf("%s refused in %s (%s each)", flood.name, took.Round(time.Millisecond), (took / 100).Round(time.Microsecond))
				if took > 15*time.Second {
					t.Errorf("%s took %s", flood.name, took)
				}
				wantNoUpstream(t, e.up, before, flood.name)
			})
		}
		// A real session still works afterwards.
		b := e.browser("alice")
		token := b.mustActivate(site, roleAdmin, adminURI, alice, nil)
		wantAdmitted(t, e, b, "alice", token, sessionID(t, token), "a real session after the floods")
	})

	t.Run("forms", func(t *testing.T) {
		b := e.browser("alice")
		big := strings.Repeat("x", 17<<10)
		f := b.activationForm(site, roleAdmin, "/")
		f.Set("justification", big)
		f.Set("code", "000000")
		r := b.postForm(site+"/.jit/activate", f)
		wantStatus(t, r, http.StatusBadRequest, "an activation form over 16 KiB")
		many := url.Values{}
		for i := range 3000 {
			many.Set(fmt.Sprintf("f%d", i), "v")
		}
		wantStatus(t, b.postForm(site+"/.jit/activate", many), http.StatusBadRequest, "an activation form of 3000 fields")
		wantStatus(t, b.postForm(site+"/.jit/deactivate", url.Values{"session": {"x"}, "csrf": {"x"}, "pad": {big}}), http.StatusBadRequest, "a deactivation form over 16 KiB")

		for _, tc := range []struct {
			name, role string
			fields     url.Values
			status     int
			reason     string
		}{
			{"justification of 1001 characters", roleAdmin, url.Values{"justification": {strings.Repeat("é", 1001)}}, http.StatusBadRequest, "justification_too_long"},
			{"justification of 1000 characters", roleAdmin, url.Values{"justification": {strings.Repeat("é", 1000)}}, http.StatusSeeOther, ""},
			{"ticket of 129 characters", "ticketed", url.Values{"ticket": {strings.Repeat("T", 129)}}, http.StatusBadRequest, "ticket_invalid"},
			{"ticket of 128 characters", "ticketed", url.Values{"ticket": {strings.Repeat("T", 128)}}, http.StatusSeeOther, ""},
		} {
			t.Run(tc.name, func(t *testing.T) {
				u, who := alice, "alice"
				if tc.role == "ticketed" {
					u, who = bob, "bob"
				}
				code := "000000"
				if tc.status == http.StatusSeeOther {
					code = u.next(t)
				}
				r := e.browser(who).activate(site, tc.role, "/", code, tc.fields)
				wantStatus(t, r, tc.status, tc.name)
				if tc.reason != "" {
					e.waitEvent(match{"event": "activation_failed", "user": who, "reason": tc.reason})
				}
			})
		}
	})

	t.Run("user names over 256 bytes", func(t *testing.T) {
		h := newHeaderIdentityEnv(t)
		hs := h.site(0)
		for _, tc := range []struct {
			name, user string
			status     int
		}{
			{"256 bytes", strings.Repeat("u", 256), http.StatusForbidden},
			{"257 bytes", strings.Repeat("u", 257), http.StatusUnauthorized},
			{"129 two-byte characters (258 bytes)", strings.Repeat("é", 129), http.StatusUnauthorized},
			{"4 KiB", strings.Repeat("u", 4<<10), http.StatusUnauthorized},
		} {
			t.Run(tc.name, func(t *testing.T) {
				b := h.headerUser(tc.user)
				for _, sh := range allShapes {
					before := h.up.count()
					wantStatus(t, b.send(sh, hs+shapePath(sh), withHeader("X-Test-User", tc.user)), tc.status, string(sh))
					wantNoUpstream(t, h.up, before, string(sh))
				}
				for _, p := range []string{"/.jit/", activationPath(roleAdmin, "/")} {
					want := tc.status
					if want == http.StatusForbidden && p == "/.jit/" {
						want = http.StatusOK
					}
					wantStatus(t, b.get(hs+p), want, p)
				}
			})
		}
	})
}

// ---------------------------------------------------------------------------
// Fail-closed under injected faults.

var (
	faultsOnce sync.Once
	faultsBin  string
	faultsErr  error
)

// faultsBinary builds ./cmd/caddy with the jitfaults tag once: its gate panics on a
// request with the header X-Jit-Fault: panic (caddymodule/faults_jitfaults.go).
func faultsBinary(t *testing.T) string {
	t.Helper()
	faultsOnce.Do(func() {
		faultsBin = filepath.Join(binDir, "caddy-jitfaults")
		start := time.Now()
		cmd := exec.Command("go", "build", "-tags", "jitfaults", "-o", faultsBin, "./cmd/caddy")
		cmd.Dir = moduleRoot
		cmd.Env = os.Environ()
		if out, err := cmd.CombinedOutput(); err != nil {
			faultsErr = fmt.Errorf("go build -tags jitfaults: %v\n%s", err, out)
			return
		}
		t.Logf("built %s in %s", faultsBin, time.Since(start).Round(time.Millisecond))
	})
	if faultsErr != nil {
		t.Fatal(faultsErr)
	}
	return faultsBin
}

func TestFailClosedUnderInjectedFaults(t *testing.T) {
	const maxStaleness = 3 * time.Second
	e := newEnv(t, envOptions{
		Binary:     faultsBinary(t),
		JitOptions: "\t\tsync_interval 1s\n\t\tmax_staleness 3s",
		Sites: []siteSpec{
			{Auth: true, Jit: "\tjit " + roleAdmin},
			{Auth: false, Jit: "\tjit " + roleAdmin},
		},
	})
	site, noAuth := e.site(0), e.site(1)
	alice := e.enroll("alice")
	b := e.browser("alice")
	token := b.mustActivate(site, roleAdmin, adminURI, alice, nil)
	sid := sessionID(t, token)
	fault := withHeader("X-Jit-Fault", "panic")

	t.Run("a panic in the gate", func(t *testing.T) {
		for _, tc := range []struct{ name, token string }{{"without a session", ""}, {"with a valid session", token}} {
			t.Run(tc.name, func(t *testing.T) {
				for _, sh := range allShapes {
					before := e.up.count()
					r := sendToken(b, sh, site, "alice", tc.token, fault)
					wantStatus(t, r, http.StatusServiceUnavailable, string(sh)+" with a panic")
					if c := setCookie(r, cookieName); c != nil {
						t.Errorf("%s: a panic set a cookie: %s", sh, r)
					}
					wantNoUpstream(t, e.up, before, string(sh)+" with a panic")
				}
			})
		}
		// The same requests without the fault pass: the panic alone refused them.
		for _, sh := range allShapes {
			before := e.up.count()
			wantPassedClean(t, e, sendToken(b, sh, site, "alice", token), sh, before, "alice", sid, token, string(sh)+" without the fault")
		}
		e.waitEvent(match{"event": "access_denied", "reason": "internal_error"})
	})

	t.Run("a panic on the pages", func(t *testing.T) {
		code := alice.next(t)
		f := b.activationForm(site, roleAdmin, "/")
		f.Set("justification", "integration test: a panic on the pages")
		f.Set("code", code)
		st := formFields(t, b.get(site+"/.jit/").Body, "/.jit/deactivate")
		before := e.up.count()
		for _, tc := range []struct {
			name string
			r    func() *response
		}{
			{"GET /.jit/activate", func() *response { return b.get(site+activationPath(roleAdmin, "/"), fault) }},
			{"POST /.jit/activate with a right code", func() *response { return b.postForm(site+"/.jit/activate", f, fault) }},
			{"GET /.jit/", func() *response { return b.get(site+"/.jit/", fault) }},
			{"GET /.jit/jwks.json", func() *response { return b.get(site+"/.jit/jwks.json", fault) }},
			{"POST /.jit/deactivate", func() *response {
				return b.postForm(site+"/.jit/deactivate", url.Values{"session": {sid}, "csrf": {st.Get("csrf")}}, fault)
			}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				r := tc.r()
				wantStatus(t, r, http.StatusServiceUnavailable, tc.name)
				if c := setCookie(r, cookieName); c != nil {
					t.Errorf("a panic set a cookie: %s", r)
				}
			})
		}
		wantNoUpstream(t, e.up, before, "the pages")
		if ss := e.sessions("?user=alice"); len(ss) != 1 || ss[0].ID != sid {
			t.Errorf("after the panics alice's sessions are %+v, want %s alone", ss, sid)
		}
		wantAdmitted(t, e, b, "alice", token, sid, "the session after a panicking deactivation")
		// The panic came before the code was looked at. (In another browser: in this
		// one, the new session would replace the one the next cases use.)
		activateWith(t, e.browser("alice"), site, roleAdmin, "/", code, nil)
	})

	t.Run("no identity", func(t *testing.T) {
		anon := e.browser("")
		for _, sh := range allShapes {
			before := e.up.count()
			wantStatus(t, anon.send(sh, noAuth+shapePath(sh), withBasicAuth("alice"), withToken(token)), http.StatusUnauthorized, string(sh))
			wantNoUpstream(t, e.up, before, string(sh))
		}
	})

	storage := e.data.StorageDir
	t.Run("storage unreachable during activation", func(t *testing.T) {
		// The long form of this, with max_staleness, is TestStorageOutage.
		bb := e.browser("bob")
		bob := e.enroll("bob")
		f := bb.activationForm(site, roleAdmin, "/")
		f.Set("justification", "integration test: storage is down")
		f.Set("code", bob.next(t))
		away := storage + ".away"
		if err := os.Rename(storage, away); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(storage, []byte("not a directory\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		r := bb.postForm(site+"/.jit/activate", f)
		if err := os.Remove(storage); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(away, storage); err != nil {
			t.Fatal(err)
		}
		wantStatus(t, r, http.StatusServiceUnavailable, "activation without storage")
		if c := setCookie(r, cookieName); c != nil {
			t.Errorf("an activation without storage set a cookie: %s", r)
		}
		e.waitEvent(match{"event": "activation_failed", "user": "bob", "reason": "storage_unavailable"})
		if !pollUntil(3*time.Second, func() bool { return useToken(b, site, "alice", token).StatusCode == http.StatusOK }) {
			t.Fatalf("the session is refused after the storage came back")
		}
	})

	keyFile := filepath.Join(storage, "jit", "keys", "signing.json")
	t.Run("signing keys corrupted while running", func(t *testing.T) {
		wantAdmitted(t, e, b, "alice", token, sid, "before the corruption")
		if err := os.WriteFile(keyFile, []byte("{garbage"), 0o600); err != nil {
			t.Fatal(err)
		}
		corrupted := time.Now()
		var refusedAt time.Time
		ok := pollUntil(maxStaleness+time.Second+2*slack, func() bool {
			r := useToken(b, site, "alice", token)
			switch r.StatusCode {
			case http.StatusOK:
				return false
			case http.StatusServiceUnavailable:
				refusedAt = time.Now()
				return true
			}
			t.Errorf("with a corrupted key file: want 200 (within max_staleness) or 503, got %s", r)
			return true
		})
		if !ok {
			t.Fatalf("the gate still admits sessions %s after the key file was corrupted (max_staleness %s)", time.Since(corrupted).Round(time.Millisecond), maxStaleness)
		}
		t.Logf("refused %s after the corruption", refusedAt.Sub(corrupted).Round(time.Millisecond))
		// From then on it never passes.
		before := e.up.count()
		for i := range 6 {
			for _, sh := range allShapes {
				wantStatus(t, sendToken(b, sh, site, "alice", token), http.StatusServiceUnavailable, fmt.Sprintf("%s #%d with a corrupted key file", sh, i))
			}
			time.Sleep(250 * time.Millisecond)
		}
		wantNoUpstream(t, e.up, before, "with a corrupted key file")
	})

	t.Run("restart with corrupted signing keys", func(t *testing.T) {
		b.client.CloseIdleConnections()
		e.stop()
		e.launch()
		p := e.proc
		deadline := time.After(20 * time.Second)
		passed := 0
	wait:
		for {
			select {
			case <-p.done:
				break wait
			case <-deadline:
				t.Errorf("product bug: caddy keeps running with a corrupted signing key file")
				break wait
			case <-time.After(200 * time.Millisecond):
				before := e.up.count()
				c := &http.Client{Timeout: time.Second}
				req, _ := http.NewRequest(http.MethodGet, site+adminURI, nil)
				req.SetBasicAuth("alice", password("alice"))
				req.Header.Set("Cookie", cookieName+"="+token)
				if resp, err := c.Do(req); err == nil {
					resp.Body.Close()
					if resp.StatusCode == http.StatusOK || e.up.count() != before {
						passed++
					}
				}
			}
		}
		if passed > 0 {
			t.Errorf("product bug: %d requests passed while caddy started with a corrupted key file", passed)
		}
		select {
		case <-p.done:
			e.proc = nil
			var exit *exec.ExitError
			if !errors.As(p.err, &exit) || exit.ExitCode() == 0 {
				t.Errorf("caddy exited with %v, want a non-zero exit", p.err)
			}
			named := ""
			for line := range strings.Lines(readableLog(e.logs.String())) {
				if strings.Contains(line, "jit/keys/signing.json") {
					named = strings.TrimSpace(line)
				}
			}
			if named == "" {
				t.Errorf("the start-up error does not name the key file jit/keys/signing.json:\n%s", e.logTail(20))
			} else {
				t.Logf("caddy refused to start: %s", named)
			}
		default:
		}
	})
}
