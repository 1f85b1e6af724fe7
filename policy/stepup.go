package policy

import (
	"fmt"
	"time"
)

// StepUp is the proof of presence a role accepts at activation, and asks of the
// approvers of its requests: a passkey, a TOTP code, or whichever the user has.
type StepUp string

const (
	// StepUpAny accepts a passkey or a TOTP code. It is the zero value.
	StepUpAny StepUp = ""
	// StepUpTOTP accepts only a TOTP code.
	StepUpTOTP StepUp = "totp"
	// StepUpWebAuthn accepts only a passkey or security key (WebAuthn), which a
	// look-alike page cannot relay.
	StepUpWebAuthn StepUp = "webauthn"
)

// Why a proof of presence was refused for the role's step-up. Stable, like every
// Reason.
const (
	ReasonPasskeyRequired Reason = "passkey_required"
	ReasonCodeRequired    Reason = "totp_required"
)

// ParseStepUp reads a step_up setting: webauthn, totp or any.
func ParseStepUp(s string) (StepUp, error) {
	switch s {
	case "any":
		return StepUpAny, nil
	case "totp":
		return StepUpTOTP, nil
	case "webauthn":
		return StepUpWebAuthn, nil
	}
	return StepUpAny, fmt.Errorf("step_up %q: want webauthn, totp or any", s)
}

// String names the setting as the Caddyfile writes it.
func (s StepUp) String() string {
	if s == StepUpAny {
		return "any"
	}
	return string(s)
}

// AcceptsCode reports whether a TOTP code satisfies the step-up.
func (s StepUp) AcceptsCode() bool { return s != StepUpWebAuthn }

// AcceptsPasskey reports whether a passkey satisfies the step-up.
func (s StepUp) AcceptsPasskey() bool { return s != StepUpTOTP }

// Accepts decides whether a proof made with a passkey (or else a TOTP code) satisfies
// the step-up; a refusal says what would.
func (s StepUp) Accepts(passkey bool) Decision {
	switch {
	case passkey && !s.AcceptsPasskey():
		return deny(ReasonCodeRequired, "this role accepts only a code from your authenticator app, not a passkey")
	case !passkey && !s.AcceptsCode():
		return deny(ReasonPasskeyRequired, "this role needs a passkey or security key, not an authenticator code: "+
			"register one on /.jit/enroll (it asks for your current code once), then use the passkey button")
	}
	return allow(time.Time{})
}
