package stepup

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/go-webauthn/webauthn/protocol"
	"github.com/go-webauthn/webauthn/webauthn"
	"go.uber.org/zap"

	"github.com/caddy-jit/caddy-jit/audit"
	"github.com/caddy-jit/caddy-jit/internal/random"
	"github.com/caddy-jit/caddy-jit/state"
)

// Passkeys (WebAuthn) are the step-up that a look-alike page cannot relay: the browser
// binds each assertion to the origin it was made at, and the authenticator to the RP ID.
// A ceremony is begun (options for navigator.credentials.create or .get, and a ceremony
// id) and finished (the browser's JSON) by the same user at the same site; its challenge
// is spent by the first attempt to finish it, right or wrong, and lapses after
// passkeyCeremonyTTL.
//
// Everything a user's passkeys touch (their credentials, their pending ceremonies, the
// lockout shared with TOTP) changes under the user's TOTP lock, so a wrong passkey and a
// wrong code count towards the same lockout, and an assertion and a removal cannot
// interleave. Storage keeps, under jit/passkeys/, one record per user with their
// credentials (public keys only), and under jit/passkey-challenges/ one record per
// pending ceremony.

const (
	passkeyFolder         = state.Prefix + "passkeys/"
	passkeyCeremonyFolder = state.Prefix + "passkey-challenges/"
	// passkeyCeremonyTTL bounds a ceremony; the browser is told the same timeout.
	passkeyCeremonyTTL = 2 * time.Minute
	// passkeyCeremonyIDBytes random bytes name a ceremony.
	passkeyCeremonyIDBytes = 32
	// passkeyHandleBytes random bytes are the user handle (user.id) authenticators
	// keep: not the user name, which the WebAuthn spec asks RPs not to put there.
	passkeyHandleBytes = 32
	// MaxPasskeysPerUser bounds a user's record.
	MaxPasskeysPerUser = 10
	// MaxPasskeyResponse bounds the browser's JSON; real responses are a few KiB.
	MaxPasskeyResponse = 64 << 10
	// MaxPasskeyName bounds the label a user gives a passkey, in bytes.
	MaxPasskeyName = 64
)

// Why a passkey ceremony was refused. The values are stable: they are the reason of
// passkey_failed events. A refusal changes no credential.
var (
	ErrPasskeyMalformed         = errors.New("passkey_malformed")
	ErrPasskeyCeremonyUnknown   = errors.New("passkey_ceremony_unknown")
	ErrPasskeyChallengeExpired  = errors.New("passkey_challenge_expired")
	ErrPasskeyChallengeMismatch = errors.New("passkey_challenge_mismatch")
	ErrPasskeyWrongOrigin       = errors.New("passkey_wrong_origin")
	ErrPasskeyWrongRPID         = errors.New("passkey_wrong_rp_id")
	ErrPasskeyWrongForm         = errors.New("passkey_wrong_form")
	ErrPasskeyOtherBrowser      = errors.New("passkey_other_browser")
	ErrPasskeyUserNotVerified   = errors.New("passkey_user_not_verified")
	ErrPasskeyUnknownCredential = errors.New("passkey_unknown_credential")
	ErrPasskeyCounterRegressed  = errors.New("passkey_counter_regressed")
	ErrPasskeyInvalid           = errors.New("passkey_invalid")
	ErrPasskeyNotRegistered     = errors.New("passkey_not_registered")
	ErrPasskeyDuplicate         = errors.New("passkey_already_registered")
	ErrPasskeyLimit             = errors.New("passkey_limit_reached")
)

// PasskeyError is a refused passkey ceremony: Err is one of the ErrPasskey* reasons,
// which errors.Is matches; Detail says more for the operator's error log (never a
// challenge, key or signature), and is not audited.
type PasskeyError struct {
	Err    error
	Detail string
}

func (e *PasskeyError) Error() string {
	if e.Detail == "" {
		return e.Err.Error()
	}
	return e.Err.Error() + ": " + e.Detail
}

func (e *PasskeyError) Unwrap() error { return e.Err }

func refuse(reason error, detail string) *PasskeyError {
	return &PasskeyError{Err: reason, Detail: detail}
}

// PasskeyConfig is what NewPasskeys needs beyond the step-up.
type PasskeyConfig struct {
	// RPID is the relying party id used when a Site names none: a domain that every
	// origin's host is or ends in.
	RPID string
	// RPDisplayName is the name authenticators show when a passkey is registered.
	RPDisplayName string
	// Origins, when set, are the only origins ceremonies may run at, e.g.
	// https://admin.example.com. Without them, any origin the RP ID covers may: the
	// caller names the origin of the site that serves the page.
	Origins []string
}

// Site is where a ceremony runs: the origin of the page (scheme://host[:port]), the
// RP ID, which is the origin's host or a parent domain of it (empty: the configured
// one, else the origin's host), and the form the proof is for (e.g. the activation of
// one role), so that an assertion made for one form cannot be spent on another. A
// ceremony is finished at the site, and for the form, it was begun for.
type Site struct {
	Origin string
	RPID   string
	Form   string
	// Browser, when set, is a value the browser that begins the ceremony holds (a
	// cookie): the ceremony is then finished only with the same value.
	Browser string
}

// Passkeys is the passkey step-up of an Authenticator. It is a type of its own rather
// than more methods on Authenticator because it needs a configuration (RP and origins)
// that a TOTP-only deployment does not have; it shares the Authenticator's store,
// clock, audit writer, locks and lockout, so that both methods are one step-up.
type Passkeys struct {
	a   *Authenticator
	cfg PasskeyConfig
}

// NewPasskeys makes the passkey step-up of a. User verification (a PIN or biometric on
// the authenticator) is required in every ceremony; attestation is not asked for.
func NewPasskeys(a *Authenticator, cfg PasskeyConfig) (*Passkeys, error) {
	if cfg.RPDisplayName == "" {
		return nil, errors.New("passkeys: the RP display name is empty")
	}
	for _, o := range cfg.Origins {
		if _, err := originHost(o); err != nil {
			return nil, fmt.Errorf("passkeys: %w", err)
		}
	}
	p := &Passkeys{a: a, cfg: cfg}
	if len(cfg.Origins) > 0 {
		if _, err := p.library(Site{Origin: cfg.Origins[0], RPID: cfg.RPID}); err != nil {
			return nil, fmt.Errorf("passkeys: %w", err)
		}
	}
	a.passkeys = p
	return p, nil
}

// library is the WebAuthn library set up for one site (its RP ID and its one origin),
// which site has checked. It is made for each ceremony, which costs a few
// allocations: the library checks a response's origin against its configuration
// only, and a site's origin is known only from its request.
func (p *Passkeys) library(site Site) (*webauthn.WebAuthn, error) {
	timeout := webauthn.TimeoutConfig{Timeout: passkeyCeremonyTTL, TimeoutUVD: passkeyCeremonyTTL}
	return webauthn.New(&webauthn.Config{
		RPID:                  site.RPID,
		RPDisplayName:         p.cfg.RPDisplayName,
		RPOrigins:             []string{site.Origin},
		AttestationPreference: protocol.PreferNoAttestation,
		AuthenticatorSelection: protocol.AuthenticatorSelection{
			ResidentKey:      protocol.ResidentKeyRequirementPreferred,
			UserVerification: protocol.VerificationRequired,
		},
		// Expiry is enforced here, by the step-up's clock (the library reads time.Now).
		Timeouts: webauthn.TimeoutsConfig{Login: timeout, Registration: timeout},
	})
}

// site checks that s is an allowed origin with an RP ID that covers it, and fills in
// the RP ID: the configured one, else the origin's host. Its errors are the caller's configuration, not refusals.
func (p *Passkeys) site(s Site) (Site, error) {
	if len(p.cfg.Origins) > 0 && !slices.Contains(p.cfg.Origins, s.Origin) {
		return s, fmt.Errorf("passkeys: the origin %q is not one of the allowed origins", s.Origin)
	}
	if s.RPID == "" {
		s.RPID = p.cfg.RPID
	}
	host, err := originHost(s.Origin)
	if err != nil {
		return s, err
	}
	if s.RPID == "" {
		s.RPID = host
	}
	if host != s.RPID && !strings.HasSuffix(host, "."+s.RPID) {
		return s, fmt.Errorf("passkeys: the RP ID %q does not cover the origin %q (it must be its host or a parent domain)", s.RPID, s.Origin)
	}
	return s, nil
}

// originHost is the host of an origin of the form scheme://host[:port].
func originHost(origin string) (string, error) {
	u, err := url.Parse(origin)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.Path != "" || u.RawQuery != "" || u.User != nil {
		return "", fmt.Errorf("the origin %q is not of the form https://host[:port]", origin)
	}
	return u.Hostname(), nil
}

// Passkey describes one of a user's passkeys, for listing and removal.
type Passkey struct {
	// Synced is set when the authenticator says the passkey may be backed up (the
	// BE flag): it can leave the device, as a synced passkey does.
	Synced bool
	// ID is the credential id in base64url, as navigator.credentials returns it.
	ID   string
	Name string
	// AAGUID names the authenticator's make and model; empty when it gives none.
	AAGUID   string
	RPID     string
	Created  time.Time
	LastUsed time.Time
}

// Method is how a proof with the passkey is named in amr: swk for a synced passkey,
// hwk for one bound to its authenticator.
func (pk Passkey) Method() string {
	if pk.Synced {
		return MethodSWK
	}
	return MethodHWK
}

// passkeyRecord is a user's passkeys as stored.
type passkeyRecord struct {
	User string `json:"user"`
	// Handle is the user handle every credential of the user was created with.
	Handle   []byte          `json:"handle"`
	Passkeys []storedPasskey `json:"passkeys"`
}

type storedPasskey struct {
	Name       string              `json:"name,omitempty"`
	RPID       string              `json:"rp_id"`
	Created    time.Time           `json:"created"`
	LastUsed   time.Time           `json:"last_used,omitzero"`
	Credential webauthn.Credential `json:"credential"`
}

func (s storedPasskey) public() Passkey {
	pk := Passkey{ID: credentialID(s.Credential.ID), Name: s.Name, RPID: s.RPID, Created: s.Created, LastUsed: s.LastUsed,
		Synced: s.Credential.Flags.BackupEligible}
	if g := s.Credential.Authenticator.AAGUID; len(g) == 16 && slices.ContainsFunc(g, func(b byte) bool { return b != 0 }) {
		h := hex.EncodeToString(g)
		pk.AAGUID = h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
	}
	return pk
}

// find returns the index of the credential with id for rpID, or -1.
func (r *passkeyRecord) find(id []byte, rpID string) int {
	return slices.IndexFunc(r.Passkeys, func(s storedPasskey) bool {
		return bytes.Equal(s.Credential.ID, id) && s.RPID == rpID
	})
}

// webauthnUser is the record as the library sees a user, with the credentials of one
// RP ID only.
func (r *passkeyRecord) webauthnUser(rpID string) passkeyUser {
	u := passkeyUser{name: r.User, handle: r.Handle}
	for _, s := range r.Passkeys {
		if s.RPID == rpID {
			u.credentials = append(u.credentials, s.Credential)
		}
	}
	return u
}

type passkeyUser struct {
	name        string
	handle      []byte
	credentials []webauthn.Credential
}

func (u passkeyUser) WebAuthnID() []byte                         { return u.handle }
func (u passkeyUser) WebAuthnName() string                       { return u.name }
func (u passkeyUser) WebAuthnDisplayName() string                { return u.name }
func (u passkeyUser) WebAuthnCredentials() []webauthn.Credential { return u.credentials }

func passkeyKey(user string) string { return passkeyFolder + state.Name(user) + ".json" }

func credentialID(raw []byte) string { return base64.RawURLEncoding.EncodeToString(raw) }

// loadPasskeys reads the user's record; a user without one has none.
func (p *Passkeys) loadPasskeys(ctx context.Context, user string) (passkeyRecord, error) {
	r := passkeyRecord{User: user}
	_, err := state.LoadJSON(ctx, p.a.storage, passkeyKey(user), &r)
	return r, err
}

// List returns the user's passkeys, oldest first.
func (p *Passkeys) List(ctx context.Context, user string) ([]Passkey, error) {
	r, err := p.loadPasskeys(ctx, user)
	if err != nil {
		return nil, err
	}
	out := make([]Passkey, 0, len(r.Passkeys))
	for _, s := range r.Passkeys {
		out = append(out, s.public())
	}
	return out, nil
}

// Registered reports whether the user has a passkey for the site's RP ID. A site
// passkeys cannot run at (an origin the RP ID does not cover) has none.
func (p *Passkeys) Registered(ctx context.Context, user string, site Site) (bool, error) {
	site, err := p.site(site)
	if err != nil {
		return false, nil
	}
	r, err := p.loadPasskeys(ctx, user)
	return len(r.webauthnUser(site.RPID).credentials) > 0, err
}

// Usable reports whether passkeys can run at the site: an allowed origin that the
// RP ID covers.
func (p *Passkeys) Usable(site Site) bool {
	_, err := p.site(site)
	return err == nil
}

// Remove deletes the user's passkey with the credential id (base64url, as List gives
// it) and audits who did it, and why when reason is given; an id the user does not
// have is ErrPasskeyUnknownCredential.
func (p *Passkeys) Remove(ctx context.Context, user, id, by, reason string) error {
	raw, err := base64.RawURLEncoding.DecodeString(id)
	if err != nil || len(raw) == 0 {
		return refuse(ErrPasskeyUnknownCredential, "the credential id is not base64url")
	}
	var removed storedPasskey
	err = p.a.locks.With(ctx, p.a.storage, totpLockName(user), func() error {
		r, err := p.loadPasskeys(ctx, user)
		if err != nil {
			return err
		}
		i := slices.IndexFunc(r.Passkeys, func(s storedPasskey) bool { return bytes.Equal(s.Credential.ID, raw) })
		if i < 0 {
			return refuse(ErrPasskeyUnknownCredential, "")
		}
		removed = r.Passkeys[i]
		r.Passkeys = slices.Delete(r.Passkeys, i, i+1)
		return state.StoreJSON(ctx, p.a.storage, passkeyKey(user), r)
	})
	if err != nil {
		return err
	}
	fields := []zap.Field{zap.String("user", user), zap.String("credential_id", id), zap.String("rp_id", removed.RPID), zap.String("by", by)}
	if reason != "" {
		fields = append(fields, zap.String("reason", reason))
	}
	p.a.audit.Event(audit.EventPasskeyRemoved, fields...)
	return nil
}

// newCeremonyID names a ceremony.
func newCeremonyID() string { return random.Token(passkeyCeremonyIDBytes) }

// pruneCeremonies deletes ceremonies that expired unfinished.
func pruneCeremonies(ctx context.Context, st state.Store, now time.Time) error {
	expired := func(_ string, c *passkeyCeremony) bool { return now.After(c.Expires) }
	// Decided again under the user's TOTP lock, which a finish holds while it reads.
	userLock := func(_ string, c *passkeyCeremony) string { return totpLockName(c.User) }
	return state.Revisit(ctx, st, passkeyCeremonyFolder, "passkey ceremonies to prune", expired, userLock, func(key string, c *passkeyCeremony) error {
		if expired(key, c) {
			_ = st.Delete(ctx, key)
		}
		return nil
	})
}
