package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/caddy-jit/caddy-jit/audit"
	"github.com/caddy-jit/caddy-jit/session"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// Headers set for the upstream on every request that passes the gate.
const (
	HeaderUser    = "X-Jit-User"
	HeaderRole    = "X-Jit-Role"
	HeaderSession = "X-Jit-Session"
	// HeaderAssertion carries the signed identity when the site asks for it.
	HeaderAssertion = "X-Jit-Assertion"
)

// Cookie names: the __Host- prefix over HTTPS pins the cookie to this host, so no
// sibling subdomain can plant one.
const (
	CookieName       = "jit_session"
	SecureCookieName = "__Host-jit_session"
)

// pagePrefix is where the handler serves its own pages on every protected site.
const pagePrefix = "/.jit/"

// maxUserLength bounds an identity; longer ones are refused rather than stored.
const maxUserLength = 256

// Handler is the `jit` directive: it admits a request only under an active session of
// one of its roles and serves the activation pages under /.jit/.
type Handler struct {
	// Roles lists the roles that admit; any one of them will do.
	Roles []string `json:"roles"`
	// Audience is the origin sessions are issued for and checked against, such as
	// https://console.example. Default: the request's scheme and host name with the
	// port of the listener that took the connection. Set it when instances behind a
	// load balancer listen on different ports or schemes than the public address.
	Audience string `json:"audience,omitempty"`
	// Assertion adds an X-Jit-Assertion header to each request passed upstream: a
	// short-lived JWS (user, role, session id, expiry) signed with the keys published at
	// /.jit/jwks.json, for upstreams that verify who is calling.
	Assertion bool `json:"assertion,omitempty"`
	// AssertionAudience is the aud claim of the assertions: the upstream's own origin.
	// Default: the site's audience.
	AssertionAudience string `json:"assertion_audience,omitempty"`
	// Fresh, when set, admits a request only if the session's last step-up (its
	// auth_time) is younger than this; an older one is sent to /.jit/reconfirm to
	// prove presence again (see fresh.go). Default: 0, any step-up of the session.
	Fresh caddy.Duration `json:"fresh,omitempty"`

	app       *App
	logger    *zap.Logger
	audiences *audienceCache
	// freshText is Fresh as the audit events and answers write it, made once.
	freshText string
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.jit",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision finds the jit app and checks that it declares every role.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	appIface, err := ctx.AppIfConfigured("jit")
	if errors.Is(err, caddy.ErrNotConfigured) {
		return errors.New("the jit handler needs roles: declare them in the global `jit { role NAME { … } }` option")
	}
	if err != nil {
		return err
	}
	h.app = appIface.(*App)
	h.audiences = &audienceCache{fixed: h.Audience}
	h.provisionFresh()
	return h.Validate()
}

// Validate checks that the handler names roles and that each is declared.
func (h *Handler) Validate() error {
	if len(h.Roles) == 0 {
		return errors.New("jit: name at least one role, e.g. `jit console-admin`")
	}
	if h.Fresh < 0 {
		return fmt.Errorf("jit: fresh %s: want a positive duration such as 5m, or none", time.Duration(h.Fresh))
	}
	if h.AssertionAudience != "" {
		if err := checkAssertionAudience(h.AssertionAudience); err != nil {
			return fmt.Errorf("jit: %w", err)
		}
	}
	if h.Audience != "" {
		if err := checkAudience(h.Audience); err != nil {
			return fmt.Errorf("jit: %v", err)
		}
	}
	for _, name := range h.Roles {
		if _, ok := h.app.role(name); !ok {
			return fmt.Errorf("jit: unknown role %q; declared roles: %s", name, strings.Join(h.app.roleNames(), ", "))
		}
	}
	return nil
}

// ServeHTTP is the gate. Any failure ends in 401, 403, 503 or an activation redirect:
// a request reaches next only with a verified, unrevoked session of one of the roles.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) (err error) {
	// A panic in our own part of the request is a refusal: a bug in caddy-jit must
	// never open the door. Panics in the handlers after us are Caddy's.
	ours := true
	defer func() {
		if ours {
			if p := recover(); p != nil {
				err = h.recovered(r, p)
			}
		}
	}()
	injectFault(r)
	if !h.app.start.open() {
		if err := h.awaitStart(w, r); err != nil || !h.app.start.open() {
			return err
		}
	}
	if strings.HasPrefix(r.URL.Path, pagePrefix) {
		return h.servePage(w, r)
	}
	if g := admittedBy(r.Context()); g != nil {
		// An earlier jit handler of this request verified the session and will write
		// its access event: this one adds only its own requirements. Until they hold
		// (and after an error or a panic here), the request counts as refused, and no
		// access event is written for it.
		g.refused = true
		if admitted, err := h.admitAgain(w, r, g); !admitted {
			return err
		}
		g.refused = false
		ours = false
		return next.ServeHTTP(w, r)
	}
	claims, repl, t, err := h.authorize(w, r)
	if claims == nil {
		return err
	}
	if !h.freshEnough(claims, t) {
		return h.reauth(w, r, claims, t)
	}
	ours = false
	return h.pass(w, r, next, repl, claims, t)
}

func (h *Handler) recovered(r *http.Request, p any) error {
	h.logger.Error("panic in the jit handler; the request is refused", zap.Any("panic", p), zap.Stack("stack"))
	countDenial("internal_error")
	h.app.authority.Audit.Event(audit.EventAccessDenied, zap.String("reason", "internal_error"),
		zap.String("client_ip", clientIP(r)), zap.String("method", r.Method), zap.String("uri", r.RequestURI))
	return caddyhttp.Error(http.StatusServiceUnavailable, fmt.Errorf("jit: internal error: %v", p))
}

// authorize returns the claims of a session that admits the request, or answers it
// itself (redirect, 401, 403, 503) and returns nil claims.
func (h *Handler) authorize(w http.ResponseWriter, r *http.Request) (*session.Claims, *caddy.Replacer, time.Time, error) {
	// Whatever happens next, no client-sent identity header may reach the upstream.
	deleteIdentityHeaders(r.Header)

	repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	user := h.app.identity(repl)
	if user == "" || len(user) > maxUserLength {
		countDenial("no_identity")
		h.app.authority.Audit.Event(audit.EventAccessDenied, zap.String("reason", "no_identity"),
			zap.String("client_ip", clientIP(r)), zap.String("method", r.Method), zap.String("uri", r.RequestURI))
		return nil, nil, time.Time{}, h.noIdentity(w, r)
	}

	t := now()
	if h.app.stale(t) {
		return nil, nil, t, h.storageStale(w, r, user)
	}
	reason := "no_session"
	if token := sessionCookie(r); token != "" {
		// Rules: the roles of this config, so that a token lasting longer than its role
		// allows now is refused, even one cached before a reload shortened the role.
		claims, err := h.app.authority.Verifier.Verify(token, session.Want{Subject: user, Audience: h.audiences.of(r), Roles: h.Roles, Rules: h.app.roles}, t)
		if err == nil {
			return claims, repl, t, nil
		}
		reason = err.Error()
	}
	if claims := h.pickUpAtGate(w, r, user, t); claims != nil {
		return claims, repl, t, nil
	}
	return nil, nil, t, h.refuse(w, r, repl, user, reason, t)
}

// pass forwards a request made under a session and audits it.
func (h *Handler) pass(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler, repl *caddy.Replacer, c *session.Claims, start time.Time) error {
	removeSessionCookie(r)
	if err := h.assert(r, c, start); err != nil {
		return err
	}
	g := &gatedRequest{headerValues: [...]string{c.Subject, c.Role, c.SessionID}, claims: c}
	g.requireFresh(h)
	// Each header gets its own full slice of the one array, so no later handler can
	// change one value through another.
	r.Header[HeaderUser] = g.headerValues[0:1:1]
	r.Header[HeaderRole] = g.headerValues[1:2:2]
	r.Header[HeaderSession] = g.headerValues[2:3:3]
	repl.Map(c.PlaceholderFunc())

	// The request lives only as long as the session: revocation or expiry cancels
	// it, which ends a WebSocket or a stream that is still open.
	ctx, cancel := context.WithCancel(r.Context())
	live := h.app.authority.Live
	live.Register(c, ctx, cancel)
	if reason := endedSinceCheck(h.app.authority.Revocations, c, start, now); reason != nil {
		// Ended between the check and the registration: the end has already ended
		// the session's live requests and told its session_ended, and would miss
		// this one.
		live.Done(c, ctx, nil)
		cancel()
		return h.refuse(w, r, repl, c.Subject, reason.Error(), start)
	}
	// The gated request is the request's context too: later jit handlers find the
	// verified claims in it (admittedBy) without another allocation.
	g.Context = ctx
	r = r.WithContext(g)

	rec := &g.rec
	rec.ResponseWriter = w
	if mutating(r.Method) {
		role, _ := h.app.role(c.Role)
		var limit int64
		if role != nil {
			limit = role.RecordBodies
		}
		g.body = newBodyDigest(r, limit)
	}
	var err error
	// Deferred, so that a request that ends in a panic is audited too: reverse_proxy
	// aborts a stream cut off mid-way (by the end of its session, or a client that
	// went away) with panic(http.ErrAbortHandler).
	defer func() {
		p := recover()
		status := rec.status
		if err != nil {
			var he caddyhttp.HandlerError
			if errors.As(err, &he) {
				status = he.StatusCode
			}
		}
		if status == 0 && (err != nil || p != nil) {
			status = http.StatusInternalServerError
		}
		// A later jit handler that refused the request has written its own event:
		// nothing went upstream under the session.
		if !g.refused {
			g.body.record(h.app.shared, c)
			holder := c.Holder()
			if g.freshBy != nil {
				holder.Fresh = g.freshBy.freshText
			}
			digest := g.body.digest()
			took := time.Since(start)
			h.app.authority.Audit.Access(holder, clientIP(r), r.Method, r.RequestURI, status, rec.bytes(), took, digest)
			countRequest(c.Role, status)
			// Counted as its access event says, for the session's session_ended.
			g.use = session.Use{Status: status, BytesIn: max(r.ContentLength, 0), BytesOut: rec.bytes(), Mutating: digest != nil, At: start.Add(took)}
			if digest != nil {
				g.use.BytesIn = digest.Size
			}
			live.Done(c, ctx, &g.use)
		} else {
			live.Done(c, ctx, nil)
		}
		cancel()
		if p != nil {
			panic(p)
		}
	}()
	err = next.ServeHTTP(rec, r)
	return err
}

// endedSinceCheck reports why a session whose token passed at checked has ended since:
// revoked, or expired (Sweep ends an expired session at its next sync). The clock is
// read again only in a session's last minute, off the hot path of every other request.
func endedSinceCheck(revocations *session.Revocations, c *session.Claims, checked time.Time, clock func() time.Time) error {
	if revocations.Revoked(c.SessionID) {
		return session.ErrTokenRevoked
	}
	if c.Expiry-checked.Unix() < 60 && clock().Unix() >= c.Expiry {
		return session.ErrTokenExpired
	}
	return nil
}

// gatedRequest is what a request passed under a session needs beyond Caddy's own, in
// one allocation: the values of the identity headers and the response recorder. It is
// also the request's context from then on, so that a later jit handler of the same
// request finds the claims (see fresh.go).
type gatedRequest struct {
	// use is what the request was served, counted in its session's usage.
	use session.Use
	// Context is the request's context, cancelled when the session ends.
	context.Context
	headerValues [3]string
	rec          accessRecorder
	// body is set for a mutating request: its digest goes into the access event.
	body *bodyDigest
	// claims are those of the session that admitted the request.
	claims *session.Claims
	// freshBy is the jit handler with the shortest `fresh` that admitted the
	// request, for the access event; nil where none required one.
	freshBy *Handler
	// refused is set by a later jit handler that turned the request away.
	refused bool
}

// assert adds the signed identity for the upstream, where the handler asks for one.
func (h *Handler) assert(r *http.Request, c *session.Claims, t time.Time) error {
	if !h.Assertion {
		return nil
	}
	aud := h.AssertionAudience
	if aud == "" {
		aud = h.audiences.of(r)
	}
	assertion, err := h.app.authority.Assertions.For(c, h.app.Issuer, aud, t)
	if err != nil {
		// The upstream expects a signed identity: no request goes without one.
		h.logger.Error("signing the identity assertion; the request is refused", zap.Error(err))
		return caddyhttp.Error(http.StatusServiceUnavailable, fmt.Errorf("jit: signing the assertion: %w", err))
	}
	r.Header[HeaderAssertion] = []string{assertion}
	return nil
}

func clientIP(r *http.Request) string {
	if ip, ok := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string); ok {
		return ip
	}
	return r.RemoteAddr
}

// deleteIdentityHeaders removes every header that could pass for one of ours,
// including spellings with underscores that some upstreams treat as dashes.
func deleteIdentityHeaders(h http.Header) {
	for name := range h {
		if isIdentityHeader(name) {
			delete(h, name)
		}
	}
}

// isIdentityHeader reports whether a header name starts with x-jit- in any case,
// with '_' for '-'.
func isIdentityHeader(name string) bool {
	const prefix = "x-jit-"
	if len(name) < len(prefix) {
		return false
	}
	for i := 0; i < len(prefix); i++ {
		c := name[i]
		switch {
		case 'A' <= c && c <= 'Z':
			c += 'a' - 'A'
		case c == '_':
			c = '-'
		}
		if c != prefix[i] {
			return false
		}
	}
	return true
}

// Interface guards.
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
