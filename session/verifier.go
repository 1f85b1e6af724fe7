package session

import (
	"slices"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/caddy-jit/caddy-jit/policy"
)

// DefaultCacheSize is how many verified tokens a Verifier remembers: enough for
// 100 000 sessions in use at once, at about 400 bytes each when full.
const DefaultCacheSize = 100_000

// Verifier decides on every proxied request whether a session token admits the caller.
// It is the hot path: it never touches storage, and a token whose signature it has
// checked once costs a cache lookup afterwards.
type Verifier struct {
	keyring     *Keyring
	revocations *Revocations
	// cache holds only tokens whose signature verified, so forged tokens can neither
	// grow it nor evict real sessions from it. It is keyed by a keyed hash of the
	// token (tokenKeyer says why that one).
	cache *lru.Cache[tokenKey, *Claims]
	keyer *tokenKeyer
	// names shares the strings that many claims repeat: issuer, audiences, roles,
	// users.
	names interner
}

// NewVerifier makes a verifier over a keyring and a revocation set.
func NewVerifier(k *Keyring, r *Revocations, cacheSize int) (*Verifier, error) {
	if cacheSize <= 0 {
		cacheSize = DefaultCacheSize
	}
	cache, err := lru.New[tokenKey, *Claims](cacheSize)
	if err != nil {
		return nil, err
	}
	keyer, err := newTokenKeyer()
	if err != nil {
		return nil, err
	}
	v := &Verifier{keyring: k, revocations: r, cache: cache, keyer: keyer}
	// A dropped key takes its tokens out of the cache at once, here and, through
	// Refresh, on every instance that reads the rotation from storage; a request
	// never pays for asking whether its token's key is still held.
	k.onDrop(v.forgetKeys)
	return v, nil
}

// Want is what the current request requires of a token.
type Want struct {
	// Subject is the caller's base identity; a token of another user never admits.
	Subject string
	// Audience is the site the token must have been issued for.
	Audience string
	// Roles lists the roles that admit; any one will do.
	Roles []string
	// Rules are the roles as configured now, by name: a token whose role is missing
	// here, or whose lifetime exceeds what its role allows, is refused, cached or
	// not, so that a config reload that shortens a role bites on the next request.
	// The gate always sets it; nil leaves lifetimes unchecked (tools and tests that
	// verify tokens without a config).
	Rules map[string]*policy.Role
}

// Verify returns the token's claims if it admits the caller described by want at the
// given time, or the reason it does not. Expiry, subject, audience, role and revocation
// are checked on every call, cached or not.
func (v *Verifier) Verify(token string, want Want, now time.Time) (*Claims, error) {
	if len(token) < minTokenSize || len(token) > MaxTokenSize {
		return nil, ErrTokenMalformed
	}
	// The cache is asked first: a hit is the very bytes of a token verified before, so
	// its shape need not be checked again on every request.
	key := v.keyer.key(token)
	c, cached := v.cache.Get(key)
	if !cached {
		if !wellFormed(token) {
			return nil, ErrTokenMalformed
		}
		claims, err := v.keyring.verifySignature(token)
		if err != nil {
			return nil, err
		}
		c = &claims
	}
	if err := checkClaims(c, want, now); err != nil {
		if cached && err == ErrTokenExpired {
			v.cache.Remove(key)
		}
		return nil, err
	}
	if v.revocations.Revoked(c.SessionID) {
		return nil, ErrTokenRevoked
	}
	if !cached {
		v.names.share(c)
		c.placeholders = c.Placeholders
		// Only a token that admitted someone is cached: forged, expired or revoked
		// tokens can neither grow the cache nor evict real sessions from it.
		v.cache.Add(key, c)
		if !v.keyring.knows(c.kid) {
			// A rotation dropped the key between the signature check and Add, and
			// its purge may have run before Add: the token goes, as it would have.
			v.cache.Remove(key)
			return nil, ErrTokenSignature
		}
	}
	return c, nil
}

// VerifyHeld is Verify for a token a browser holds, started or not: a scheduled
// session's token, whose start is still ahead, is checked as at its start (signature,
// user, site, role, lifetime, revocation). The gate never uses it: it answers what a
// browser holds, not what it may do now.
func (v *Verifier) VerifyHeld(token string, want Want, now time.Time) (*Claims, error) {
	c, err := v.Verify(token, want, now)
	if err != ErrTokenNotYet {
		return c, err
	}
	claims, err := v.keyring.verifySignature(token)
	if err != nil {
		return nil, err
	}
	if err := checkClaims(&claims, want, time.Unix(claims.NotBefore, 0)); err != nil {
		return nil, err
	}
	if v.revocations.Revoked(claims.SessionID) {
		return nil, ErrTokenRevoked
	}
	return &claims, nil
}

// forgetKeys drops the cached tokens signed by any of the keys. Like ForgetSession it
// walks the cache, which a key rotation can afford.
func (v *Verifier) forgetKeys(kids []string) {
	for _, key := range v.cache.Keys() {
		if c, ok := v.cache.Peek(key); ok && slices.Contains(kids, c.kid) {
			v.cache.Remove(key)
		}
	}
}

// Forget drops a token from the cache, for a session that has just ended.
func (v *Verifier) Forget(token string) { v.cache.Remove(v.keyer.key(token)) }

// ForgetSession drops every cached token of a session. It walks the cache, which is
// fine for a revocation and never done on a request.
func (v *Verifier) ForgetSession(sessionID string) {
	for _, key := range v.cache.Keys() {
		if c, ok := v.cache.Peek(key); ok && c.SessionID == sessionID {
			v.cache.Remove(key)
		}
	}
}

// clockLeeway tolerates small clock differences between the instances of a cluster
// for the start of a session, never for its end.
const clockLeeway = 5

func checkClaims(c *Claims, want Want, now time.Time) error {
	unix := now.Unix()
	leeway := int64(clockLeeway)
	if c.NotBefore > c.IssuedAt {
		// A scheduled session starts when it says, to the second.
		leeway = 0
	}
	switch {
	case unix >= c.Expiry:
		return ErrTokenExpired
	case unix+leeway < c.NotBefore:
		return ErrTokenNotYet
	case c.Audience != want.Audience:
		return ErrTokenAudience
	case c.Subject != want.Subject:
		return ErrTokenSubject
	case !slices.Contains(want.Roles, c.Role):
		return ErrTokenRole
	}
	if want.Rules == nil {
		return nil
	}
	role, ok := want.Rules[c.Role]
	if !ok || role == nil {
		// The route names a role the config no longer declares.
		return ErrTokenRole
	}
	if !withinLifetime(c, role) {
		return ErrTokenLifetime
	}
	return nil
}

// withinLifetime reports whether the token lasts no longer than its role allows:
// from nbf (the session's start, kept in an extended session's re-signed token and in
// a scheduled one's, whose iat is earlier or later) or, without one, from iat, to exp.
// A token made with a stolen signing key for years is refused here.
func withinLifetime(c *Claims, role *policy.Role) bool {
	from := c.NotBefore
	if from == 0 {
		from = c.IssuedAt
	}
	if from <= 0 {
		// Also keeps c.Expiry-from below from overflowing.
		return false
	}
	return c.Expiry-from <= maxLifetime(role)
}

// maxLifetime is the longest a token of the role may last, in whole seconds rounded
// up (tokens carry whole seconds): max_duration, or max_total when sessions of the
// role can be extended.
func maxLifetime(role *policy.Role) int64 {
	d := max(role.MaxDuration, role.MaxTotal)
	return int64((d + time.Second - 1) / time.Second)
}

// Revocations is the in-memory set of sessions ended before their expiry. It is filled
// from storage and consulted on every request.
type Revocations struct {
	mu sync.RWMutex
	// ids maps a session id to the Unix time its token expires; after that the entry
	// is no longer needed, since the token is refused anyway.
	ids map[string]int64
	// onRevoke, when set, learns of every id added, e.g. to close live connections.
	onRevoke func(sessionID string)
}

// NewRevocations makes an empty set.
func NewRevocations() *Revocations { return &Revocations{ids: make(map[string]int64)} }

// Revoked reports whether the session was ended.
func (r *Revocations) Revoked(sessionID string) bool {
	r.mu.RLock()
	_, ok := r.ids[sessionID]
	r.mu.RUnlock()
	return ok
}

// Add records a revocation.
func (r *Revocations) Add(sessionID string, expires time.Time) {
	r.mu.Lock()
	_, known := r.ids[sessionID]
	r.ids[sessionID] = expires.Unix()
	r.mu.Unlock()
	if !known && r.onRevoke != nil {
		r.onRevoke(sessionID)
	}
}

// Prune forgets revocations of sessions that have expired anyway.
func (r *Revocations) Prune(now time.Time) {
	unix := now.Unix()
	r.mu.Lock()
	for id, exp := range r.ids {
		if exp <= unix {
			delete(r.ids, id)
		}
	}
	r.mu.Unlock()
}

// Len returns the number of revocations held.
func (r *Revocations) Len() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.ids)
}

// maxInterned bounds the interner; past it, strings are simply not shared.
const maxInterned = 4096

// interner shares equal strings between cached claims. Only verified claims reach
// it, so its contents are the operator's own names, not an attacker's.
type interner struct {
	mu      sync.Mutex
	strings map[string]string
}

var otpMethods = []string{"otp"}

func (n *interner) share(c *Claims) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.strings == nil {
		n.strings = make(map[string]string)
	}
	for _, s := range []*string{&c.Issuer, &c.Audience, &c.Role, &c.Subject, &c.kid} {
		if shared, ok := n.strings[*s]; ok {
			*s = shared
		} else if len(n.strings) < maxInterned {
			n.strings[*s] = *s
		}
	}
	if len(c.Methods) == 1 && c.Methods[0] == "otp" {
		c.Methods = otpMethods
	}
}
