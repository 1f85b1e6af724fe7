package stepup

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/go-webauthn/webauthn/protocol"
	"github.com/go-webauthn/webauthn/webauthn"
	"go.uber.org/zap"

	"github.com/caddy-jit/caddy-jit/audit"
	"github.com/caddy-jit/caddy-jit/internal/random"
	"github.com/caddy-jit/caddy-jit/state"
)

// BeginRegistration starts registering a new passkey of the user at site. It returns
// the JSON to give navigator.credentials.create ({"publicKey": ...}, binary fields in
// base64url) and the id of the ceremony, which FinishRegistration needs within
// passkeyCeremonyTTL. The user's existing passkeys are excluded, so an authenticator
// cannot register twice.
func (p *Passkeys) BeginRegistration(ctx context.Context, user string, site Site) (options []byte, ceremony string, err error) {
	return p.begin(ctx, user, CeremonyRegistration, site, func(r *passkeyRecord, site Site) (any, *webauthn.SessionData, error) {
		if len(r.Passkeys) >= MaxPasskeysPerUser {
			return nil, nil, refuse(ErrPasskeyLimit, fmt.Sprintf("the user has %d passkeys already; remove one first", len(r.Passkeys)))
		}
		if len(r.Handle) == 0 {
			r.Handle = random.Bytes(passkeyHandleBytes)
			if err := state.StoreJSON(ctx, p.a.storage, passkeyKey(user), r); err != nil {
				return nil, nil, err
			}
		}
		u := r.webauthnUser(site.RPID)
		exclude := make([]protocol.CredentialDescriptor, 0, len(u.credentials))
		for _, c := range u.credentials {
			exclude = append(exclude, c.Descriptor())
		}
		lib, err := p.library(site)
		if err != nil {
			return nil, nil, err
		}
		creation, session, err := lib.BeginRegistration(u, webauthn.WithRegistrationRelyingPartyID(site.RPID),
			webauthn.WithRegistrationOrigin(site.Origin), webauthn.WithExclusions(exclude))
		if err != nil {
			return nil, nil, fmt.Errorf("beginning the passkey registration of %s: %w", user, err)
		}
		return creation, session, nil
	})
}

// FinishRegistration verifies the browser's response (the JSON of the PublicKeyCredential
// that navigator.credentials.create returned) to the ceremony and stores the new
// passkey under name, a label for the user's list. The ceremony is spent, whatever the
// outcome. A refusal is a *PasskeyError or, while the user is locked out, a
// *LockedOutError; neither changes the user's passkeys.
func (p *Passkeys) FinishRegistration(ctx context.Context, user string, site Site, ceremony, name string, response []byte) (Passkey, error) {
	site, err := p.site(site)
	if err != nil {
		return Passkey{}, err
	}
	name = strings.TrimSpace(name)
	if len(name) > MaxPasskeyName || !utf8.ValidString(name) {
		return Passkey{}, fmt.Errorf("the passkey's name must be UTF-8 of at most %d bytes", MaxPasskeyName)
	}
	var added storedPasskey
	var credID string
	err = p.a.locks.With(ctx, p.a.storage, totpLockName(user), func() error {
		now := p.a.now()
		if err := p.a.notLockedOut(ctx, user, now, nil); err != nil {
			return err
		}
		c, err := p.takeCeremony(ctx, user, CeremonyRegistration, ceremony, site, now)
		if err != nil {
			return err
		}
		if len(response) > MaxPasskeyResponse {
			return refuse(ErrPasskeyMalformed, fmt.Sprintf("the response is larger than %d bytes", MaxPasskeyResponse))
		}
		parsed, err := protocol.ParseCredentialCreationResponseBytes(response)
		if err != nil {
			return refuse(ErrPasskeyMalformed, "the browser's response is not a WebAuthn registration: "+libDetail(err))
		}
		credID = auditedID(parsed.RawID)
		auth := parsed.Response.AttestationObject.AuthData
		if err := checkResponse(parsed.Response.CollectedClientData, protocol.CreateCeremony, c, auth.RPIDHash, auth.Flags); err != nil {
			return err
		}
		r, err := p.loadPasskeys(ctx, user)
		if err != nil {
			return err
		}
		switch {
		case !bytes.Equal(r.Handle, c.Session.UserID):
			return refuse(ErrPasskeyCeremonyUnknown, "the user's handle changed after the ceremony began")
		case len(r.Passkeys) >= MaxPasskeysPerUser:
			return refuse(ErrPasskeyLimit, "")
		case slices.ContainsFunc(r.Passkeys, func(s storedPasskey) bool { return bytes.Equal(s.Credential.ID, parsed.RawID) }):
			return refuse(ErrPasskeyDuplicate, "")
		}
		lib, err := p.library(Site{Origin: c.Origin, RPID: c.RPID})
		if err != nil {
			return err
		}
		cred, err := lib.CreateCredential(r.webauthnUser(c.RPID), c.Session, parsed)
		if err != nil {
			return refuse(ErrPasskeyInvalid, libDetail(err))
		}
		added = storedPasskey{Name: name, RPID: c.RPID, Created: now.UTC(), Credential: *cred}
		r.Passkeys = append(r.Passkeys, added)
		return state.StoreJSON(ctx, p.a.storage, passkeyKey(user), r)
	})
	if err != nil {
		p.refused(user, CeremonyRegistration, credID, err)
		return Passkey{}, err
	}
	pk := added.public()
	p.a.audit.Event(audit.EventPasskeyRegistered, zap.String("user", user), zap.String("credential_id", pk.ID),
		zap.String("rp_id", pk.RPID), zap.String("aaguid", pk.AAGUID), zap.String("name", pk.Name))
	return pk, nil
}
