package stepup

import (
	"context"
	"fmt"

	"github.com/caddy-jit/caddy-jit/audit"
	"go.uber.org/zap"
)

// Enroll makes a new TOTP secret for the user, replacing any earlier one, and audits it.
// It first cancels the user's outstanding enrollment link, so that no link made before
// can replace what the operator sets up; if that fails, nothing is enrolled.
func (a *Authenticator) Enroll(ctx context.Context, user, by string) (string, error) {
	if err := a.CancelEnrollmentLinks(ctx, user, by, CancelEnrolled); err != nil {
		return "", fmt.Errorf("cancelling the enrollment link of %s (nothing was enrolled): %w", user, err)
	}
	replaced, err := a.Enrolled(ctx, user)
	if err != nil {
		return "", err
	}
	key, err := a.newSecret(ctx, user)
	if err != nil {
		return "", err
	}
	a.audit.Event(audit.EventEnrolled, zap.String("user", user), zap.String("by", by), zap.Bool("replaced", replaced))
	return key.URL(), nil
}

// Unlock ends a user's TOTP lockout and audits who did it and why.
func (a *Authenticator) Unlock(ctx context.Context, user, by, reason string) error {
	if err := a.ClearLockout(ctx, user); err != nil {
		return err
	}
	a.audit.Event(audit.EventUnlocked, zap.String("user", user), zap.String("by", by), zap.String("reason", reason))
	return nil
}
