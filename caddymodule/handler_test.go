package caddymodule

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"testing"
	"time"

	"github.com/caddy-jit/caddy-jit/session"
)

func TestDeleteIdentityHeadersRemovesEverySpelling(t *testing.T) {
	h := http.Header{}
	for _, name := range []string{"X-Jit-User", "x-jit-role", "X_Jit_Session", "X-JIT-EXPIRES", "x_jit-user", "X-Jit-Anything"} {
		h[name] = []string{"forged"}
	}
	h.Set("X-Jitter", "keep")
	h.Set("Accept", "keep")
	deleteIdentityHeaders(h)
	want := http.Header{"X-Jitter": {"keep"}, "Accept": {"keep"}}
	if !reflect.DeepEqual(h, want) {
		t.Errorf("after deleting: %v, want %v", h, want)
	}
}

func TestSessionCookieIsReadByTheSchemesName(t *testing.T) {
	tests := []struct {
		name    string
		cookies []string
		tls     bool
		want    string
	}{
		{"plain", []string{"a=1; jit_session=tok; b=2"}, false, "tok"},
		{"quoted", []string{`jit_session="tok"`}, false, "tok"},
		{"prefix lookalike", []string{"jit_session2=x; xjit_session=y"}, false, ""},
		{"second header line", []string{"a=1", "jit_session=tok"}, false, "tok"},
		{"https wants __Host-", []string{"jit_session=plain"}, true, ""},
		{"https", []string{"__Host-jit_session=tok"}, true, "tok"},
		{"none", nil, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			r.Header["Cookie"] = tt.cookies
			if tt.tls {
				r.TLS = &tls.ConnectionState{}
			}
			if got := sessionCookie(r); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestRemoveSessionCookieKeepsAllOtherCookies(t *testing.T) {
	tests := []struct {
		in   []string
		want []string
	}{
		{[]string{"a=1; jit_session=tok; b=2"}, []string{"a=1; b=2"}},
		{[]string{"jit_session=tok"}, nil},
		{[]string{"__Host-jit_session=tok; a=1", "jit_session=x"}, []string{"a=1"}},
		{[]string{"jit_session2=keep; jit_session"}, []string{"jit_session2=keep"}},
		{[]string{"a=1; jit_session =tok; b=2"}, []string{"a=1; b=2"}},
		{[]string{"a=1; jit_session\t=tok"}, []string{"a=1"}},
		{[]string{"theme=dark, jit_session=tok; b=2"}, []string{"theme=dark; b=2"}},
		{[]string{`prefs="a,b", jit_session=tok`}, []string{`prefs="a,b"`}},
		{[]string{"a=1"}, []string{"a=1"}},
		{[]string{"jit_session=tok; a=1"}, []string{"a=1"}},
		{[]string{"a=1; b=2; c=3; jit_session=t"}, []string{"a=1; b=2; c=3"}},
		{[]string{"a=1, b=2, jit_session=t"}, []string{"a=1, b=2"}},
		{[]string{"jit_session=t", "a=1", "b=2"}, []string{"a=1; b=2"}},
		// The pickup secrets, the enrollment and passkey bindings never reach the
		// upstream either.
		{[]string{"a=1; jit_session_pickup_AAAAAAAAAAAAAAAAAAAAAA=s; jit_session=t"}, []string{"a=1"}},
		{[]string{"__Host-jit_session_pickup_AAAAAAAAAAAAAAAAAAAAAA=s; b=2"}, []string{"b=2"}},
		{[]string{"jit_enroll=e; __Host-jit_enroll=e; c=3"}, []string{"c=3"}},
		{[]string{"jit_passkey=p; d=4; __Host-jit_passkey=p"}, []string{"d=4"}},
		{[]string{"my_jit_thing=keep; jit_enrollment=keep"}, []string{"my_jit_thing=keep; jit_enrollment=keep"}},
	}
	for _, tt := range tests {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.Header["Cookie"] = tt.in
		removeSessionCookie(r)
		if got := r.Header["Cookie"]; !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%q: got %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestSiteAudienceIsTheOriginWithTheListenersPort(t *testing.T) {
	tests := []struct {
		host     string
		listener int
		tls      bool
		want     string
	}{
		{"Console.Example", 80, false, "http://console.example"},
		{"console.example:80", 80, false, "http://console.example"},
		{"console.example:443", 443, true, "https://console.example"},
		{"console.example:8443", 8443, true, "https://console.example:8443"},
		{"console.example", 8443, true, "https://console.example:8443"},
		// The Host header's port never counts: Caddy's host matcher ignores it, so a
		// client could name another site's port.
		{"console.example:9999", 8080, false, "http://console.example:8080"},
		{"localhost:8081", 8080, false, "http://localhost:8080"},
		{"[::1]:80", 80, false, "http://[::1]"},
		{"[::1]", 8080, false, "http://[::1]:8080"},
		{"console.example", 0, false, "http://console.example"},
	}
	for _, tt := range tests {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.Host = tt.host
		if tt.listener != 0 {
			r = r.WithContext(context.WithValue(r.Context(), http.LocalAddrContextKey, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: tt.listener}))
		}
		if tt.tls {
			r.TLS = &tls.ConnectionState{}
		}
		if got := siteAudience(r); got != tt.want {
			t.Errorf("Host %s on port %d (tls %v): got %q, want %q", tt.host, tt.listener, tt.tls, got, tt.want)
		}
		if got := new(audienceCache).of(r); got != tt.want {
			t.Errorf("cached: Host %s on port %d: got %q, want %q", tt.host, tt.listener, got, tt.want)
		}
	}
}

func TestSessionCookieLastsToTheSessionsLastSecond(t *testing.T) {
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	for _, tt := range []struct {
		left time.Duration
		want int
	}{{1500 * time.Millisecond, 2}, {200 * time.Millisecond, 1}, {90*time.Second + 400*time.Millisecond, 91}} {
		if got := sessionCookieFor(r, "t", time.Now().Add(tt.left)).MaxAge; got != tt.want {
			t.Errorf("%s left: Max-Age %d, want %d", tt.left, got, tt.want)
		}
	}
	if got := sessionCookieFor(r, "", time.Time{}).MaxAge; got != -1 {
		t.Errorf("clearing the cookie: Max-Age %d, want -1", got)
	}
}

// A request whose token passed just before its session ended registers after the end
// has cancelled the session's requests and told its session_ended: it is refused, so
// that it neither runs unended nor starts a second session_ended.
func TestEndedSinceCheck(t *testing.T) {
	const expiry = 10_000
	revoked := session.NewRevocations()
	revoked.Add("revoked", time.Unix(expiry, 0))
	clockAt := func(unix int64) func() time.Time { return func() time.Time { return time.Unix(unix, 0) } }
	tests := []struct {
		name    string
		id      string
		checked int64
		clock   func() time.Time
		want    error
	}{
		{"live", "live", expiry - 1, clockAt(expiry - 1), nil},
		{"revoked since the check", "revoked", expiry - 600, clockAt(expiry - 600), session.ErrTokenRevoked},
		{"expired since the check", "live", expiry - 1, clockAt(expiry), session.ErrTokenExpired},
		{"long before its end, the clock is not read again", "live", expiry - 3600,
			func() time.Time { t.Fatal("clock read for a session an hour from its end"); return time.Time{} }, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &session.Claims{Grant: session.Grant{SessionID: tt.id, Expiry: expiry}}
			if got := endedSinceCheck(revoked, c, time.Unix(tt.checked, 0), tt.clock); got != tt.want {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}
}
