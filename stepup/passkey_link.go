package stepup

import (
	"context"
	"errors"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-jit/caddy-jit/audit"
)

// A passkey by enrollment link: a user with nothing enrolled yet (no authenticator app,
// no passkey) has no code to prove a registration with; the link an operator sent them
// stands in for it. The same rules hold as for a TOTP confirmation: the link must be
// usable and theirs, and the registration must come from the browser that opened the
// link last (its binding cookie). The ceremony is bound to the link, and finishing it
// uses the link up.

// ErrEnrollLinkHasEnrollment refuses a passkey by link for a user who has an
// authenticator or a passkey already: they register with a code (or the link's
// authenticator page replaces the app, as the link allows).
var ErrEnrollLinkHasEnrollment = errors.New("enroll_link_not_first")

// LinkRegistration is a passkey registration made with an enrollment link.
type LinkRegistration struct {
	Token, User string
	// Browser is the binding value the browser holds (its enrollment cookie).
	Browser  string
	Site     Site
	ClientIP string
}

// linkForm binds a ceremony to the link it was begun with.
func linkForm(token string) string { return "register-link:" + LinkID(token) }

// BeginLinkRegistration begins registering the user's first passkey with an
// enrollment link. Refusals are the link's (as InspectEnrollmentLink's, and
// ErrEnrollLinkOtherBrowser) or ErrEnrollLinkHasEnrollment; each is audited.
func (p *Passkeys) BeginLinkRegistration(ctx context.Context, lr LinkRegistration) (options []byte, ceremony string, err error) {
	site := lr.Site
	site.Form = linkForm(lr.Token)
	err = p.withFirstLink(ctx, lr, func(*enrollLink, time.Time) error {
		options, ceremony, err = p.BeginRegistration(ctx, lr.User, site)
		return err
	})
	return options, ceremony, err
}

// FinishLinkRegistration finishes the ceremony BeginLinkRegistration began, stores the
// passkey under name and marks the link used, as a TOTP confirmation would.
func (p *Passkeys) FinishLinkRegistration(ctx context.Context, lr LinkRegistration, ceremony, name string, response []byte) (Passkey, error) {
	site := lr.Site
	site.Form = linkForm(lr.Token)
	var pk Passkey
	err := p.withFirstLink(ctx, lr, func(l *enrollLink, now time.Time) error {
		var err error
		if pk, err = p.FinishRegistration(ctx, lr.User, site, ceremony, name, response); err != nil {
			return err
		}
		return p.a.spendLink(ctx, l, enrollLinkHash(lr.Token), lr.User, now)
	})
	if err != nil {
		return Passkey{}, err
	}
	p.a.audit.Event(audit.EventEnrolled, zap.String("user", lr.User), zap.String("by", EnrolledByLink), zap.Bool("replaced", false),
		zap.String("via", "link"), zap.String("link", LinkID(lr.Token)), zap.String("authorized_by", "first_enrollment"),
		zap.String("method", "passkey"), zap.String("credential_id", pk.ID), zap.String("client_ip", lr.ClientIP))
	return pk, nil
}

// withFirstLink runs fn under the user's links lock when the link is usable, was
// opened last by this browser, and the user has nothing enrolled; a refusal is
// audited as enroll_link_failed.
func (p *Passkeys) withFirstLink(ctx context.Context, lr LinkRegistration, fn func(*enrollLink, time.Time) error) error {
	var (
		link    enrollLink
		refused error
	)
	err := p.a.withUsableLink(ctx, lr.Token, lr.User, func(l *enrollLink, info EnrollLinkInfo, now time.Time) error {
		if !l.Opening.holdsBrowser(lr.Browser) {
			refused = ErrEnrollLinkOtherBrowser
			return nil
		}
		r, err := p.loadPasskeys(ctx, lr.User)
		if err != nil {
			return err
		}
		if info.Enrolled || len(r.Passkeys) > 0 {
			refused = ErrEnrollLinkHasEnrollment
			return nil
		}
		return fn(l, now)
	}, &link, &refused)
	return p.a.auditRefusal(err, lr.User, lr.Token, lr.ClientIP, link, refused)
}
