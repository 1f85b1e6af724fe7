package stepup

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/go-webauthn/webauthn/protocol"
	"github.com/go-webauthn/webauthn/webauthn"
	"go.uber.org/zap"

	"github.com/caddy-jit/caddy-jit/audit"
	"github.com/caddy-jit/caddy-jit/internal/random"
	"github.com/caddy-jit/caddy-jit/state"
)

// The kinds of ceremony, as the ceremony field of passkey_failed events names them.
const (
	CeremonyRegistration = "registration"
	CeremonyLogin        = "login"
)

// passkeyCeremony is a begun ceremony as stored, under its id. The session holds the
// challenge, which is never logged.
type passkeyCeremony struct {
	User   string `json:"user"`
	Kind   string `json:"kind"`
	Origin string `json:"origin"`
	RPID   string `json:"rp_id"`
	Form   string `json:"form,omitempty"`
	// BrowserHash is the SHA-256 of the Browser value of the site it was begun at.
	BrowserHash string               `json:"browser_sha256,omitempty"`
	Expires     time.Time            `json:"expires"`
	Session     webauthn.SessionData `json:"session"`
}

// ceremonyKey names the user in the key, so that only the user's own finish can take
// (and so spend) a ceremony.
func ceremonyKey(user, id string) string {
	return passkeyCeremonyFolder + state.Name(user) + "-" + id + ".json"
}

// browserHash is what a ceremony keeps of its browser's binding: "" for none.
func browserHash(browser string) string {
	if browser == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(browser))
	return hex.EncodeToString(sum[:])
}

// saveCeremony stores a begun ceremony under a new id and returns the browser's options.
// begin is what both ceremonies start with: the site checked, the user's lock held, a
// locked-out user refused, their passkeys read. start makes the options for the
// browser and the library's session, saved as a new ceremony of kind; a refusal is
// audited.
func (p *Passkeys) begin(ctx context.Context, user, kind string, site Site,
	start func(r *passkeyRecord, site Site) (any, *webauthn.SessionData, error)) (options []byte, ceremony string, err error) {
	if site, err = p.site(site); err != nil {
		return nil, "", err
	}
	err = p.a.locks.With(ctx, p.a.storage, totpLockName(user), func() error {
		now := p.a.now()
		if err := p.a.notLockedOut(ctx, user, now, nil); err != nil {
			return err
		}
		r, err := p.loadPasskeys(ctx, user)
		if err != nil {
			return err
		}
		opts, session, err := start(&r, site)
		if err != nil {
			return err
		}
		options, ceremony, err = p.saveCeremony(ctx, user, kind, site, now, opts, session)
		return err
	})
	if err != nil {
		p.refused(user, kind, "", err)
		return nil, "", err
	}
	return options, ceremony, nil
}

func (p *Passkeys) saveCeremony(ctx context.Context, user, kind string, site Site, now time.Time, options any, session *webauthn.SessionData) ([]byte, string, error) {
	raw, err := json.Marshal(options)
	if err != nil {
		return nil, "", fmt.Errorf("encoding the passkey options: %w", err)
	}
	id := newCeremonyID()
	c := passkeyCeremony{User: user, Kind: kind, Origin: site.Origin, RPID: site.RPID, Form: site.Form, BrowserHash: browserHash(site.Browser), Expires: now.Add(passkeyCeremonyTTL).UTC(), Session: *session}
	if err := state.StoreJSONFor(ctx, p.a.storage, ceremonyKey(user, id), c, passkeyCeremonyTTL); err != nil {
		return nil, "", err
	}
	return raw, id, nil
}

// takeCeremony reads the user's ceremony of kind and spends it: whatever happens next,
// its challenge is never accepted again. Another user's ceremony, or one of another
// kind, is unknown to this user and stays as it is.
func (p *Passkeys) takeCeremony(ctx context.Context, user, kind, id string, site Site, now time.Time) (passkeyCeremony, error) {
	var c passkeyCeremony
	if !random.IsToken(id, passkeyCeremonyIDBytes) {
		return c, refuse(ErrPasskeyCeremonyUnknown, "the ceremony id is not of the right shape")
	}
	// Taken in one step: of finishes racing on several instances, one gets it.
	found, err := state.TakeJSON(ctx, p.a.storage, ceremonyKey(user, id), &c)
	if err != nil {
		return c, fmt.Errorf("spending the passkey ceremony: %w", err)
	}
	if left := c.Expires.Sub(now); found && c.Kind != kind && left > 0 {
		// A ceremony of the user's for another purpose stays for it.
		if err := state.StoreJSONFor(ctx, p.a.storage, ceremonyKey(user, id), c, left); err != nil {
			return c, err
		}
	}
	if !found || c.User != user || c.Kind != kind {
		return c, refuse(ErrPasskeyCeremonyUnknown, "no such "+kind+" ceremony of the user; it may have been finished already")
	}
	switch {
	case now.After(c.Expires):
		return c, refuse(ErrPasskeyChallengeExpired, "the ceremony expired at "+c.Expires.Format(time.RFC3339))
	case site.Origin != c.Origin:
		return c, refuse(ErrPasskeyWrongOrigin, "the ceremony began at another origin")
	case site.RPID != c.RPID:
		return c, refuse(ErrPasskeyWrongRPID, "the ceremony began for another RP ID")
	case site.Form != c.Form:
		return c, refuse(ErrPasskeyWrongForm, "the ceremony began for another form")
	case subtle.ConstantTimeCompare([]byte(browserHash(site.Browser)), []byte(c.BrowserHash)) != 1:
		return c, refuse(ErrPasskeyOtherBrowser, "the ceremony began in another browser")
	}
	return c, nil
}

// checkResponse gives the refusals that the library reports only as text their
// stable reasons: the ceremony type, the challenge, the origin and RP ID the browser and
// the authenticator vouch for, and user verification. The library checks them again,
// with the signature.
func checkResponse(cd protocol.CollectedClientData, want protocol.CeremonyType, c passkeyCeremony, rpIDHash []byte, flags protocol.AuthenticatorFlags) error {
	wantRP := sha256.Sum256([]byte(c.RPID))
	switch {
	case cd.Type != want:
		return refuse(ErrPasskeyInvalid, fmt.Sprintf("the client data is of type %q, not %q", cd.Type, want))
	case subtle.ConstantTimeCompare([]byte(cd.Challenge), []byte(c.Session.Challenge)) != 1:
		return refuse(ErrPasskeyChallengeMismatch, "the response signs another challenge")
	case cd.Origin != c.Origin:
		return refuse(ErrPasskeyWrongOrigin, fmt.Sprintf("the browser made the response at %q", cd.Origin))
	case !bytes.Equal(rpIDHash, wantRP[:]):
		return refuse(ErrPasskeyWrongRPID, "the authenticator's RP ID hash is not that of "+c.RPID)
	case !flags.UserVerified():
		return refuse(ErrPasskeyUserNotVerified, "the authenticator did not verify the user (PIN or biometric)")
	}
	return nil
}

// auditedID is the credential id a response names, for audit events: empty when it is
// longer than WebAuthn allows (1023 bytes), so a forged response cannot flood the log.
func auditedID(raw []byte) string {
	if len(raw) > 1023 {
		return ""
	}
	return credentialID(raw)
}

// libDetail is what the library says about a refusal, without its debug information,
// which holds the challenges.
func libDetail(err error) string {
	var pe *protocol.Error
	if !errors.As(err, &pe) {
		return err.Error()
	}
	if pe.Err != nil {
		return pe.Details + ": " + pe.Err.Error()
	}
	return pe.Details
}

// refused audits a refused ceremony: a *PasskeyError or a lockout, which may have
// begun with this very failure. Other errors (storage, the caller's site) are not
// refusals of the user.
func (p *Passkeys) refused(user, kind, credID string, err error) {
	var (
		refusal *PasskeyError
		locked  *LockedOutError
		reason  string
	)
	switch {
	case errors.As(err, &locked):
		reason = locked.Error()
	case errors.As(err, &refusal):
		reason = refusal.Err.Error()
	default:
		return
	}
	fields := []zap.Field{zap.String("user", user), zap.String("ceremony", kind), zap.String("reason", reason)}
	if credID != "" {
		fields = append(fields, zap.String("credential_id", credID))
	}
	p.a.audit.Event(audit.EventPasskeyFailed, fields...)
	if locked != nil {
		p.a.lockoutBegan(user, locked)
	}
}
