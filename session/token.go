package session

import (
	"encoding/json"
	"errors"
	"time"

	"github.com/caddy-jit/caddy-jit/audit"
	"github.com/go-jose/go-jose/v4"
)

// TokenType is the JOSE "typ" header of a session token. Checking it keeps any other
// JWS that happens to be signed with our keys (none today) from passing as a session.
const TokenType = "jit-session+jwt"

// MaxTokenSize bounds a session token. Real tokens are about 400 bytes; anything much
// larger is refused before it is decoded.
const MaxTokenSize = 2048

// Grant is who holds which role, in which session, for whom, issued by whom, and when
// it is valid: what a session token and an upstream's assertion share, each for its own
// audience and lifetime.
type Grant struct {
	Issuer    string `json:"iss"`
	Subject   string `json:"sub"`
	Audience  string `json:"aud"`
	Role      string `json:"role"`
	SessionID string `json:"sid"`
	IssuedAt  int64  `json:"iat"`
	NotBefore int64  `json:"nbf"`
	Expiry    int64  `json:"exp"`
	// BreakGlass marks an emergency session, so that every access event says so.
	BreakGlass bool `json:"bg,omitempty"`
}

// Claims are the contents of a session token and of an assertion: the grant, and how
// its holder proved who they are (amr, RFC 8176).
type Claims struct {
	Grant
	Methods []string `json:"amr"`
	// AuthTime is when the holder last proved presence (OpenID Connect's auth_time),
	// in Unix seconds: a route with `fresh` asks that it be recent.
	AuthTime int64 `json:"auth_time,omitempty"`

	// placeholders is Placeholders bound to these claims, made once when they are
	// cached, so that a request under them binds nothing.
	placeholders func(key string) (any, bool)
	// kid names the key that signed the token, so that dropping the key can drop the
	// token from the verified-token cache.
	kid string
}

// Holder names the session of the claims in its audit events.
func (c *Claims) Holder() audit.Holder {
	return audit.Holder{User: c.Subject, Role: c.Role, SessionID: c.SessionID, BreakGlass: c.BreakGlass}
}

// PlaceholderFunc returns Placeholders as a function value, for caddy.Replacer.Map.
func (c *Claims) PlaceholderFunc() func(key string) (any, bool) {
	if c.placeholders != nil {
		return c.placeholders
	}
	return c.Placeholders
}

// Expires returns the expiry as a time.
func (c *Claims) Expires() time.Time { return time.Unix(c.Expiry, 0) }

// ExpiresText returns the expiry in RFC 3339 (UTC).
func (c *Claims) ExpiresText() string { return c.Expires().UTC().Format(time.RFC3339) }

// Placeholders answers the http.jit.* placeholders of a request made under the
// session; it has the signature of a caddy.ReplacementFunc.
func (c *Claims) Placeholders(key string) (any, bool) {
	switch key {
	case "http.jit.user":
		return c.Subject, true
	case "http.jit.role":
		return c.Role, true
	case "http.jit.session_id":
		return c.SessionID, true
	case "http.jit.expires":
		return c.ExpiresText(), true
	}
	return nil, false
}

// Sign makes a compact JWS of the claims with the active key.
func (k *Keyring) Sign(c Claims) (string, error) {
	return k.sign(TokenType, c)
}

// Why a token was refused. The values are stable: they appear in audit events.
var (
	ErrTokenMalformed = errors.New("token_malformed")
	ErrTokenSignature = errors.New("token_signature")
	ErrTokenClaims    = errors.New("token_claims")
	ErrTokenExpired   = errors.New("token_expired")
	ErrTokenNotYet    = errors.New("token_not_yet_valid")
	ErrTokenAudience  = errors.New("token_audience")
	ErrTokenSubject   = errors.New("token_subject")
	ErrTokenRole      = errors.New("token_role")
	ErrTokenRevoked   = errors.New("token_revoked")
	// ErrTokenLifetime: the token lasts longer than its role allows (max_duration, or
	// max_total for a role whose sessions can be extended).
	ErrTokenLifetime = errors.New("token_lifetime")
)

// minTokenSize is below the size of any token we sign.
const minTokenSize = 16

// wellFormed is the cheap shape check done before any decoding or cryptography: a
// bounded size, exactly three non-empty parts and only the base64url alphabet.
func wellFormed(token string) bool {
	if len(token) < minTokenSize || len(token) > MaxTokenSize {
		return false
	}
	dots, last := 0, -1
	for i := 0; i < len(token); i++ {
		c := token[i]
		if base64URL[c] {
			continue
		}
		if c != '.' || i == last+1 {
			return false
		}
		dots++
		last = i
	}
	return dots == 2 && last != len(token)-1
}

// base64URL marks the bytes of the base64url alphabet.
var base64URL = func() (t [256]bool) {
	for _, c := range "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_" {
		t[c] = true
	}
	return t
}()

// verifySignature checks a token's form and signature and decodes its claims. It checks
// no claim: that depends on the request and the time.
func (k *Keyring) verifySignature(token string) (Claims, error) {
	var c Claims
	if !wellFormed(token) {
		return c, ErrTokenMalformed
	}
	jws, err := jose.ParseSignedCompact(token, []jose.SignatureAlgorithm{jose.EdDSA})
	if err != nil || len(jws.Signatures) != 1 {
		return c, ErrTokenMalformed
	}
	header := jws.Signatures[0].Protected
	if header.JSONWebKey != nil || header.ExtraHeaders[jose.HeaderType] != TokenType {
		return c, ErrTokenMalformed
	}
	pub, ok := k.set().byID[header.KeyID]
	if !ok {
		return c, ErrTokenSignature
	}
	payload, err := jws.Verify(pub)
	if err != nil {
		return c, ErrTokenSignature
	}
	if err := json.Unmarshal(payload, &c); err != nil {
		return c, ErrTokenClaims
	}
	// The session id must be one we make: only such an id can be revoked by id, so a
	// token whose sid no operator could name is refused here.
	if !validSessionID(c.SessionID) || c.Subject == "" || c.Audience == "" || c.Role == "" || c.Expiry == 0 || c.NotBefore == 0 {
		return c, ErrTokenClaims
	}
	c.kid = header.KeyID
	return c, nil
}
