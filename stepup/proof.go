package stepup

import (
	"context"
	"errors"

	"github.com/caddy-jit/caddy-jit/policy"
)

// The methods of a proof, as RFC 8176 names them in a token's amr claim.
const (
	// MethodOTP is a TOTP code.
	MethodOTP = "otp"
	// MethodHWK is a passkey bound to its authenticator (a security key, a platform
	// authenticator that does not sync it): a hardware-secured key.
	MethodHWK = "hwk"
	// MethodSWK is a synced passkey (the authenticator says it may be backed up): its
	// private key leaves the device, so it is a software-secured key.
	MethodSWK = "swk"
)

// Proof is what a user offers to prove presence: a TOTP code or, when Passkey is set,
// a passkey assertion (and Code is ignored).
type Proof struct {
	Code    string
	Passkey *PasskeyProof
}

// PasskeyProof is a finished navigator.credentials.get: the ceremony BeginLogin
// started at Site, and the browser's JSON.
type PasskeyProof struct {
	Site     Site
	Ceremony string
	Response []byte
}

// Proved says how a user proved presence.
type Proved struct {
	// Methods is the amr of the sessions the proof starts: ["otp"], ["hwk"] or ["swk"].
	Methods []string
	// Passkey is the passkey used, if one was.
	Passkey *Passkey
}

// StepUpRefused is a proof of a method the step-up does not accept. It is decided
// before the proof is checked: no code or ceremony is spent on it.
type StepUpRefused struct{ Decision policy.Decision }

func (e *StepUpRefused) Error() string { return string(e.Decision.Reason) }

// ErrPasskeysOff refuses a passkey proof where passkeys are not set up.
var ErrPasskeysOff = errors.New("passkeys are not set up on this server")

// Prove checks the user's proof, of a method step accepts. A TOTP code is checked as
// Check does; a passkey as FinishLogin does. Either way a refusal counts towards the
// same lockout.
func (a *Authenticator) Prove(ctx context.Context, user string, proof Proof, step policy.StepUp) (Proved, error) {
	if d := step.Accepts(proof.Passkey != nil); !d.Allowed {
		return Proved{}, &StepUpRefused{Decision: d}
	}
	if proof.Passkey == nil {
		if err := a.Check(ctx, user, proof.Code); err != nil {
			return Proved{}, err
		}
		return Proved{Methods: []string{MethodOTP}}, nil
	}
	if a.passkeys == nil {
		return Proved{}, ErrPasskeysOff
	}
	pp := proof.Passkey
	pk, err := a.passkeys.FinishLogin(ctx, user, pp.Site, pp.Ceremony, pp.Response)
	if err != nil {
		return Proved{}, err
	}
	return Proved{Methods: []string{pk.Method()}, Passkey: &pk}, nil
}

// Passkeys returns the authenticator's passkey step-up, or nil when NewPasskeys was
// never called for it.
func (a *Authenticator) Passkeys() *Passkeys { return a.passkeys }
