package stepup

import (
	"context"
	"crypto/subtle"
	"errors"
	"time"

	"github.com/caddy-jit/caddy-jit/audit"
	"github.com/caddy-jit/caddy-jit/internal/random"
	"github.com/caddy-jit/caddy-jit/state"
	"go.uber.org/zap"
)

// Each opening of an enrollment link makes a new pending secret and binds it to the
// browser that opened it: the browser gets a random value (a cookie, set by the page),
// storage keeps its SHA-256 with the secret. The secret is shown on that page only; a
// confirmation must come from the browser holding the value, for the page of the
// latest opening. Whoever opened the link before the user (knowing their password)
// saw a secret that the user's own opening discarded.

// Why a confirmation was refused before its code was looked at. The values are stable:
// they are the reason of enroll_link_failed events.
var (
	// ErrEnrollLinkOtherBrowser: the browser does not hold the value the latest
	// opening's secret is bound to (another browser opened the link since, or this one
	// never did).
	ErrEnrollLinkOtherBrowser = errors.New("enroll_link_other_browser")
	// ErrEnrollLinkReopened: the page is of an earlier opening in this browser; the
	// link was opened again since, which discarded that page's secret.
	ErrEnrollLinkReopened = errors.New("enroll_link_reopened")
)

// EnrollBindingLength is the length of a browser's binding value: longer ones are
// refused unread.
const EnrollBindingLength = enrollLinkTokenLength

// openingIDBytes random bytes name an opening in its page's form: it tells an
// out-of-date page from the latest one, and is no secret.
const openingIDBytes = 9

// enrollOpening is a pending secret, as shown to one browser once.
type enrollOpening struct {
	ID string `json:"id"`
	// Secret is the pending TOTP secret (base32).
	Secret string `json:"secret"`
	// BrowserHash is the SHA-256 of the value the opening browser holds.
	BrowserHash string    `json:"browser_hash"`
	At          time.Time `json:"at"`
}

// holdsBrowser reports, in constant time, whether browser is the value this opening
// was bound to.
func (o *enrollOpening) holdsBrowser(browser string) bool {
	if o == nil || !wellFormedEnrollToken(browser) {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(enrollLinkHash(browser)), []byte(o.BrowserHash)) == 1
}

// EnrollLinkInfo is what a link's page may say without showing a secret.
type EnrollLinkInfo struct {
	User    string
	Expires time.Time
	// Enrolled says that the user has an authenticator now, which the link replaces.
	Enrolled bool
	// NeedsCurrentCode says that the confirmation needs a code of that authenticator
	// (the link was not made to replace it).
	NeedsCurrentCode bool
}

// PendingEnrollment is what one opening of a link shows its user: a new pending
// secret, as an otpauth URI for authenticator apps and as text for entering by hand.
// Browser is the value that binds it, for the browser's cookie; Opening names the page
// for its form. Never log any of them.
type PendingEnrollment struct {
	EnrollLinkInfo
	URI     string
	Secret  string
	Opening string
	Browser string
}

// OpenEnrollmentLink makes a new pending secret for the link of token, bound to a new
// browser value, and discards the one of any earlier opening; user must be the link's.
// A link that is not user's, used, cancelled or expired is refused as by
// InspectEnrollmentLink. Openings and refusals are audited, with clientIP.
func (a *Authenticator) OpenEnrollmentLink(ctx context.Context, token, user, clientIP string) (*PendingEnrollment, error) {
	var (
		p          *PendingEnrollment
		link       enrollLink
		refused    error
		superseded bool
	)
	err := a.withUsableLink(ctx, token, user, func(l *enrollLink, info EnrollLinkInfo, now time.Time) error {
		key, err := a.generate(user, nil)
		if err != nil {
			return err
		}
		browser := newEnrollToken()
		superseded = l.Opening != nil
		l.Opening = &enrollOpening{ID: random.Hex(openingIDBytes), Secret: key.Secret(), BrowserHash: enrollLinkHash(browser), At: now.UTC()}
		if err := state.StoreJSON(ctx, a.storage, enrollLinkKey(enrollLinkHash(token)), *l); err != nil {
			return err
		}
		p = &PendingEnrollment{EnrollLinkInfo: info, URI: key.URL(), Secret: key.Secret(), Opening: l.Opening.ID, Browser: browser}
		return nil
	}, &link, &refused)
	if err := a.auditRefusal(err, user, token, clientIP, link, refused); err != nil {
		return nil, err
	}
	a.audit.Event(audit.EventEnrollLinkOpened, zap.String("user", user), zap.String("link", LinkID(token)),
		zap.Bool("superseded", superseded), zap.String("client_ip", clientIP))
	return p, nil
}

// InspectEnrollmentLink says what the page of a usable link may say, and changes
// nothing: another user gets ErrEnrollLinkNotYours, a used, cancelled or expired link
// an *EnrollLinkError saying when, a token that is not a link ErrEnrollLinkUnknown.
// Refusals are audited.
func (a *Authenticator) InspectEnrollmentLink(ctx context.Context, token, user, clientIP string) (*EnrollLinkInfo, error) {
	var (
		out     *EnrollLinkInfo
		link    enrollLink
		refused error
	)
	err := a.withUsableLink(ctx, token, user, func(_ *enrollLink, info EnrollLinkInfo, _ time.Time) error {
		out = &info
		return nil
	}, &link, &refused)
	if err := a.auditRefusal(err, user, token, clientIP, link, refused); err != nil {
		return nil, err
	}
	return out, nil
}

// auditRefusal is what a use of withUsableLink returns: its error, else the refusal
// it reported (audited here), else nil.
func (a *Authenticator) auditRefusal(err error, user, token, clientIP string, link enrollLink, refused error) error {
	if err != nil {
		return err
	}
	if refused != nil {
		a.enrollLinkFailed(user, token, clientIP, link, refused)
	}
	return refused
}

// withUsableLink runs fn on the link of token under the user's links lock, when the
// link is usable by user; otherwise it sets *refused. A link older than the user's
// current enrollment (an operator enrolled them since) is cancelled on the way. The
// link as read is left in *link for the audit of a refusal.
func (a *Authenticator) withUsableLink(ctx context.Context, token, user string, fn func(*enrollLink, EnrollLinkInfo, time.Time) error,
	link *enrollLink, refused *error) error {
	if !wellFormedEnrollToken(token) {
		*refused = ErrEnrollLinkUnknown
		return nil
	}
	var cancelled bool
	err := a.locks.With(ctx, a.storage, enrollLinksLockName(user), func() error {
		now := a.now()
		var err error
		*link, err = a.loadUsableLink(ctx, token, user, now)
		if err != nil {
			if refusalReason(err) == "" {
				return err
			}
			*refused = err
			return nil
		}
		current, enrolled, err := a.current(ctx, user)
		if err != nil {
			return err
		}
		if enrolled && current.Created.After(link.Created) {
			cancelled = a.markCancelled(ctx, enrollLinkHash(token), user, current.Created.UTC(), CancelEnrolled)
			*refused = &EnrollLinkError{Err: ErrEnrollLinkCancelled, At: current.Created.UTC()}
			return nil
		}
		info := EnrollLinkInfo{User: user, Expires: link.Expires, Enrolled: enrolled, NeedsCurrentCode: enrolled && !link.Replace}
		return fn(link, info, now)
	})
	if cancelled {
		a.linkCancelled(user, enrollLinkHash(token), CancelEnrolled, "")
	}
	return err
}
