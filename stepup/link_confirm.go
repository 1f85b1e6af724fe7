package stepup

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/caddy-jit/caddy-jit/audit"
	"github.com/caddy-jit/caddy-jit/state"
	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"
	"go.uber.org/zap"
)

// Confirming an enrollment link: the browser that opened it last proves it holds the
// opening's binding, and types a code of the secret that page showed. Replacing a
// confirmed enrollment needs a code of it as well, unless the operator made the link to
// replace it: a link and a password alone never replace a working authenticator.

// Why a replacing confirmation was refused. The values are stable: they are the reason
// of enroll_link_failed events.
var (
	// ErrCurrentCodeRequired: the user is enrolled and the link may not replace that
	// enrollment without a code of it. Not counted as a failure: it checks nothing.
	ErrCurrentCodeRequired = errors.New("current_totp_required")
	// ErrCurrentCodeInvalid and ErrCurrentCodeReplayed refuse the current
	// authenticator's code as ErrCodeInvalid and ErrCodeReplayed refuse a code.
	ErrCurrentCodeInvalid  = errors.New("current_totp_invalid")
	ErrCurrentCodeReplayed = errors.New("current_totp_replayed")
)

// errEnrolledSince stops a confirmation whose link is older than the user's current
// enrollment: the link is cancelled.
var errEnrolledSince = errors.New("enrolled after the link was made")

// EnrollConfirmation is a confirmation as the link's page posts it.
type EnrollConfirmation struct {
	Token string
	User  string
	// Browser is the binding value the browser holds (its cookie), Opening the id of
	// the page it confirms.
	Browser string
	Opening string
	// Code is a code of the page's pending secret; CurrentCode one of the user's
	// current authenticator, when the link needs it.
	Code        string
	CurrentCode string
	ClientIP    string
}

// ConfirmEnrollment checks the confirmation and, if it holds, makes the opening's
// secret the user's enrollment, with the code's time step as the last one accepted (so
// that the same code can never activate anything), and marks the link used. Refused, in
// this order: a link as by InspectEnrollmentLink; a browser or page that is not the
// latest opening's (ErrEnrollLinkOtherBrowser, ErrEnrollLinkReopened; the opening
// stays); a locked-out user (*LockedOutError); a missing current code
// (ErrCurrentCodeRequired); a wrong or replayed current code, then a wrong code, which
// count towards the user's lockout as at activation (ErrCurrentCodeInvalid,
// ErrCurrentCodeReplayed, ErrCodeInvalid, ErrCodeReplayed). Every outcome is audited.
func (a *Authenticator) ConfirmEnrollment(ctx context.Context, c EnrollConfirmation) error {
	var (
		link      enrollLink
		refused   error
		replaced  bool
		cancelled bool
	)
	hash := enrollLinkHash(c.Token)
	err := a.withUsableLink(ctx, c.Token, c.User, func(l *enrollLink, _ EnrollLinkInfo, now time.Time) error {
		switch {
		case !l.Opening.holdsBrowser(c.Browser):
			refused = ErrEnrollLinkOtherBrowser
			return nil
		case c.Opening != l.Opening.ID:
			refused = ErrEnrollLinkReopened
			return nil
		}
		var err error
		replaced, err = a.confirm(ctx, c.User, l.Opening.Secret, c.Code, replaceRule{
			linkCreated: l.Created, needCurrent: !l.Replace, currentCode: c.CurrentCode,
		})
		switch {
		case errors.Is(err, errEnrolledSince):
			// An operator enrolled the user while this confirmation waited for the lock.
			refused = &EnrollLinkError{Err: ErrEnrollLinkCancelled, At: now.UTC()}
			cancelled = a.markCancelled(ctx, hash, c.User, now.UTC(), CancelEnrolled)
			return nil
		case isCodeRefusal(err):
			refused = err
			return nil
		case err != nil:
			return err
		}
		return a.spendLink(ctx, l, hash, c.User, now)
	}, &link, &refused)
	if err := a.auditRefusal(err, c.User, c.Token, c.ClientIP, link, refused); err != nil {
		if refused != nil && cancelled {
			a.linkCancelled(c.User, hash, CancelEnrolled, "")
		}
		return err
	}
	authorized := "first_enrollment"
	switch {
	case replaced && link.Replace:
		authorized = "replace_link"
	case replaced:
		authorized = "current_code"
	}
	a.audit.Event(audit.EventEnrolled, zap.String("user", c.User), zap.String("by", EnrolledByLink), zap.Bool("replaced", replaced),
		zap.String("via", "link"), zap.String("link", linkID(hash)), zap.String("authorized_by", authorized),
		zap.String("client_ip", c.ClientIP))
	return nil
}

// spendLink marks the link used, under the user's links lock.
func (a *Authenticator) spendLink(ctx context.Context, l *enrollLink, hash, user string, now time.Time) error {
	l.Used, l.Opening = now.UTC(), nil
	if err := state.StoreJSON(ctx, a.storage, enrollLinkKey(hash), *l); err != nil {
		return err
	}
	// Spent: no owner record names it any longer, so nothing of it is honoured.
	return a.storage.Delete(ctx, enrollLinkOwnerKey(user))
}

// replaceRule is what a confirmation needs beyond the code of the pending secret.
type replaceRule struct {
	// linkCreated: an enrollment made after it cancels the link.
	linkCreated time.Time
	// needCurrent: a confirmed enrollment is replaced only with a code of it,
	// currentCode.
	needCurrent bool
	currentCode string
}

// current reads the user's enrollment, if any.
func (a *Authenticator) current(ctx context.Context, user string) (enrollment, bool, error) {
	var e enrollment
	found, err := state.LoadJSON(ctx, a.storage, enrollmentKey(user), &e)
	return e, found, err
}

// confirm makes secret the user's enrollment if code is right for it now and rule
// holds, under the user's TOTP lock, with the same lockout as Check: a locked user is
// refused whatever the codes, a wrong code counts as a failure. A current code is
// checked and spent as Check would. The new enrollment's last accepted step is the
// code's, so the code cannot be used again. replaced says whether
// it replaced an earlier secret.
func (a *Authenticator) confirm(ctx context.Context, user, secret, code string, rule replaceRule) (replaced bool, err error) {
	err = a.locks.With(ctx, a.storage, totpLockName(user), func() error {
		now := a.now()
		if err := a.notLockedOut(ctx, user, now, nil); err != nil {
			return err
		}
		current, found, err := a.current(ctx, user)
		if err != nil {
			return err
		}
		if found && current.Secret != secret && current.Created.After(rule.linkCreated) {
			return errEnrolledSince
		}
		checkCurrent := found && current.Secret != secret && rule.needCurrent
		var currentStep int64
		if checkCurrent {
			if rule.currentCode == "" {
				return ErrCurrentCodeRequired
			}
			var matched bool
			if currentStep, matched = matchingStep(current.Secret, rule.currentCode, now); !matched {
				return a.fail(ctx, user, now, ErrCurrentCodeInvalid)
			}
		}
		step, matched := matchingStep(secret, code, now)
		if !matched {
			return a.fail(ctx, user, now, ErrCodeInvalid)
		}
		// The current code is spent only once the new one is right: a typo in the new
		// code leaves the user's current code usable for the next try.
		if checkCurrent {
			if err := a.spend(ctx, current, currentStep, now, ErrCurrentCodeReplayed); err != nil {
				return err
			}
		}
		if found && current.Secret == secret {
			// This secret is already the enrollment (a confirmation whose link could
			// not be marked used): its accepted codes stay spent.
			if err := a.spend(ctx, current, step, now, ErrCodeReplayed); err != nil {
				return err
			}
		}
		replaced = found && current.Secret != secret
		if err := state.StoreJSON(ctx, a.storage, enrollmentKey(user), enrollment{User: user, Secret: secret, Created: now.UTC(), LastStep: step}); err != nil {
			return err
		}
		return a.succeeded(ctx, user)
	})
	return replaced, err
}

// generate makes the key of a TOTP secret for user with the parameters Enroll uses:
// a new random secret when secret is nil.
func (a *Authenticator) generate(user string, secret []byte) (*otp.Key, error) {
	key, err := totp.Generate(totp.GenerateOpts{
		Issuer:      a.issuer,
		AccountName: user,
		Period:      totpPeriod,
		SecretSize:  totpSecretSize,
		Secret:      secret,
		Digits:      totpDigits,
		Algorithm:   otp.AlgorithmSHA1,
	})
	if err != nil {
		return nil, fmt.Errorf("generating a TOTP secret: %w", err)
	}
	return key, nil
}
