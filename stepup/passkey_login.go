package stepup

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/go-webauthn/webauthn/protocol"
	"github.com/go-webauthn/webauthn/webauthn"
	"go.uber.org/zap"

	"github.com/caddy-jit/caddy-jit/audit"
	"github.com/caddy-jit/caddy-jit/state"
)

// BeginLogin starts a step-up with one of the user's passkeys for site's RP ID. It
// returns the JSON to give navigator.credentials.get, which allows only those
// passkeys, and the id of the ceremony, which FinishLogin needs within
// passkeyCeremonyTTL. A locked-out user gets no challenge.
func (p *Passkeys) BeginLogin(ctx context.Context, user string, site Site) (options []byte, ceremony string, err error) {
	return p.begin(ctx, user, CeremonyLogin, site, func(r *passkeyRecord, site Site) (any, *webauthn.SessionData, error) {
		u := r.webauthnUser(site.RPID)
		if len(u.credentials) == 0 {
			return nil, nil, refuse(ErrPasskeyNotRegistered, "the user has no passkey for "+site.RPID)
		}
		lib, err := p.library(site)
		if err != nil {
			return nil, nil, err
		}
		assertion, session, err := lib.BeginLogin(u, webauthn.WithLoginRelyingPartyID(site.RPID),
			webauthn.WithLoginOrigin(site.Origin), webauthn.WithUserVerification(protocol.VerificationRequired))
		if err != nil {
			return nil, nil, fmt.Errorf("beginning the passkey step-up of %s: %w", user, err)
		}
		return assertion, session, nil
	})
}

// FinishLogin verifies the browser's assertion (the JSON of the PublicKeyCredential
// that navigator.credentials.get returned) for the ceremony: its challenge, origin, RP
// ID, user verification, signature, and that the passkey is still the user's and its
// signature counter moved forward. It returns the passkey used, whose counter and last
// use it records. The ceremony is spent, whatever the outcome; a refusal counts towards
// the user's lockout, like a wrong TOTP code, and changes none of the user's passkeys.
func (p *Passkeys) FinishLogin(ctx context.Context, user string, site Site, ceremony string, response []byte) (Passkey, error) {
	site, err := p.site(site)
	if err != nil {
		return Passkey{}, err
	}
	var used storedPasskey
	var credID string
	err = p.a.locks.With(ctx, p.a.storage, totpLockName(user), func() error {
		now := p.a.now()
		if err := p.a.notLockedOut(ctx, user, now, nil); err != nil {
			return err
		}
		used, err = p.assert(ctx, user, site, ceremony, response, now, &credID)
		var refusal *PasskeyError
		switch {
		case errors.As(err, &refusal):
			return p.a.fail(ctx, user, now, err)
		case err != nil:
			return err
		}
		return p.a.succeeded(ctx, user)
	})
	if err != nil {
		p.refused(user, CeremonyLogin, credID, err)
		return Passkey{}, err
	}
	pk := used.public()
	p.a.audit.Event(audit.EventPasskeyVerified, zap.String("user", user), zap.String("credential_id", pk.ID), zap.String("rp_id", pk.RPID))
	return pk, nil
}

// assert is FinishLogin's verification and record update, under the user's lock;
// credID is set once the response names a credential.
func (p *Passkeys) assert(ctx context.Context, user string, site Site, id string, response []byte, now time.Time, credID *string) (storedPasskey, error) {
	c, err := p.takeCeremony(ctx, user, CeremonyLogin, id, site, now)
	if err != nil {
		return storedPasskey{}, err
	}
	if len(response) > MaxPasskeyResponse {
		return storedPasskey{}, refuse(ErrPasskeyMalformed, fmt.Sprintf("the response is larger than %d bytes", MaxPasskeyResponse))
	}
	parsed, err := protocol.ParseCredentialRequestResponseBytes(response)
	if err != nil {
		return storedPasskey{}, refuse(ErrPasskeyMalformed, "the browser's response is not a WebAuthn assertion: "+libDetail(err))
	}
	*credID = auditedID(parsed.RawID)
	auth := parsed.Response.AuthenticatorData
	if err := checkResponse(parsed.Response.CollectedClientData, protocol.AssertCeremony, c, auth.RPIDHash, auth.Flags); err != nil {
		return storedPasskey{}, err
	}
	r, err := p.loadPasskeys(ctx, user)
	if err != nil {
		return storedPasskey{}, err
	}
	i := r.find(parsed.RawID, c.RPID)
	offered := slices.ContainsFunc(c.Session.AllowedCredentialIDs, func(a []byte) bool { return bytes.Equal(a, parsed.RawID) })
	if i < 0 || !offered {
		return storedPasskey{}, refuse(ErrPasskeyUnknownCredential, "the credential is not one of the user's passkeys offered in the ceremony")
	}
	stored := r.Passkeys[i]
	// Only the credential used is checked against the allow list: another one removed
	// since the ceremony began must not fail this one.
	session := c.Session
	session.AllowedCredentialIDs = [][]byte{stored.Credential.ID}
	u := passkeyUser{name: user, handle: r.Handle, credentials: []webauthn.Credential{stored.Credential}}
	lib, err := p.library(Site{Origin: c.Origin, RPID: c.RPID})
	if err != nil {
		return storedPasskey{}, err
	}
	cred, err := lib.ValidateLogin(u, session, parsed)
	if err != nil {
		return storedPasskey{}, refuse(ErrPasskeyInvalid, libDetail(err))
	}
	// WebAuthn §7.2 step 21: once an authenticator has counted, a count that does not
	// grow means two copies of the key exist. The library only flags it; we refuse.
	had, got := stored.Credential.Authenticator.SignCount, auth.Counter
	if had != 0 && got <= had {
		p.a.audit.Event(audit.EventPasskeyCounterRegressed, zap.String("user", user), zap.String("credential_id", *credID),
			zap.Uint32("stored_count", had), zap.Uint32("received_count", got))
		return storedPasskey{}, refuse(ErrPasskeyCounterRegressed, fmt.Sprintf("the signature counter went from %d to %d", had, got))
	}
	stored.Credential.Authenticator.SignCount = got
	stored.Credential.Flags = cred.Flags
	stored.LastUsed = now.UTC()
	r.Passkeys[i] = stored
	return stored, state.StoreJSON(ctx, p.a.storage, passkeyKey(user), r)
}
