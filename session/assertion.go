package session

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/go-jose/go-jose/v4"
	lru "github.com/hashicorp/golang-lru/v2"
)

// Signed identity for upstreams: an X-Jit-Assertion header holding a short-lived JWS
// that an upstream verifies with the keys at /.jit/jwks.json, as Pomerium's and
// Cloudflare Access's assertions are verified. Its typ differs from a session token's,
// so neither can pass for the other.
const (
	AssertionType = "jit-assertion+jwt"
	// AssertionLifetime is how long an assertion is valid; a new one is signed when
	// less than half of it remains.
	AssertionLifetime  = 2 * time.Minute
	assertionCacheSize = 10000
)

type assertionKey struct{ sessionID, audience, kid string }

type signedAssertion struct {
	token  string
	expiry int64
}

// Assertions signs assertions and reuses each for half its life, so that a request
// under a session costs an Ed25519 signature at most once a minute per session and
// upstream.
type Assertions struct {
	keyring *Keyring
	cache   *lru.Cache[assertionKey, signedAssertion]
}

// NewAssertions signs with the keyring's active key.
func NewAssertions(k *Keyring) *Assertions {
	cache, _ := lru.New[assertionKey, signedAssertion](assertionCacheSize)
	return &Assertions{keyring: k, cache: cache}
}

// For returns an assertion of the session for the audience, valid now and for at least
// half its lifetime, or until the session ends if that is sooner.
func (a *Assertions) For(c *Claims, issuer, audience string, now time.Time) (string, error) {
	kid := a.keyring.active().ID
	key := assertionKey{c.SessionID, audience, kid}
	unix := now.Unix()
	if got, ok := a.cache.Get(key); ok && (got.expiry-unix > int64(AssertionLifetime/time.Second)/2 || got.expiry == c.Expiry) && unix < got.expiry {
		return got.token, nil
	}
	// The session's grant for this audience, and how its holder proved who they are
	// (amr, RFC 8176), so that an upstream can ask for a stronger step-up.
	claims := Claims{Grant: Grant{
		Issuer: issuer, Subject: c.Subject, Audience: audience, Role: c.Role, SessionID: c.SessionID,
		IssuedAt: unix, NotBefore: unix, Expiry: min(unix+int64(AssertionLifetime/time.Second), c.Expiry),
		BreakGlass: c.BreakGlass,
	}, Methods: c.Methods}
	token, err := a.keyring.sign(AssertionType, claims)
	if err != nil {
		return "", err
	}
	a.cache.Add(key, signedAssertion{token: token, expiry: claims.Expiry})
	return token, nil
}

// sign signs any claims with the active key and the given typ.
func (k *Keyring) sign(typ string, claims any) (string, error) {
	key := k.active()
	signer, err := jose.NewSigner(
		jose.SigningKey{Algorithm: jose.EdDSA, Key: jose.JSONWebKey{Key: key.Private, KeyID: key.ID}},
		(&jose.SignerOptions{}).WithType(jose.ContentType(typ)),
	)
	if err != nil {
		return "", fmt.Errorf("making a signer: %w", err)
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		return "", fmt.Errorf("signing: %w", err)
	}
	return jws.CompactSerialize()
}
