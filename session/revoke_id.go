package session

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-jit/caddy-jit/audit"
	"github.com/caddy-jit/caddy-jit/internal/random"
	"github.com/caddy-jit/caddy-jit/policy"
)

// CheckSessionID says what is wrong with an id an operator gave, in words that name
// the fix; nil means it has the shape of the ids we make.
func CheckSessionID(id string) error {
	const shape = "a session id is 22 characters of base64url (A-Z, a-z, 0-9, - and _), as `caddy jit sessions` lists it"
	switch {
	case id == "":
		return errors.New("no session id: " + shape)
	case len(id) != sessionIDLength:
		return fmt.Errorf("the session id has %d characters: %s", len(id), shape)
	case !random.IsToken(id, sessionIDBytes):
		return errors.New("the session id holds a character outside base64url: " + shape)
	}
	return nil
}

// UnrecordedRevocationKeep is how long a revocation of an id with no session record
// is kept, given the roles as configured: the longest a token of any role may last
// (max_duration, or max_total where sessions can be extended) plus how far ahead a
// session can be scheduled. A token we signed for that id, scheduled or not, has
// expired by then; any token that outlives the revocation would fail its role's
// lifetime bound, unless made with a stolen key, which no revocation by id stops.
func UnrecordedRevocationKeep(roles map[string]*policy.Role) time.Duration {
	var longest time.Duration
	for _, r := range roles {
		if r != nil {
			longest = max(longest, r.MaxDuration, r.MaxTotal)
		}
	}
	return longest + policy.MaxStartAhead
}

// RevokeByID ends a session named by id alone, as operators do, and also revokes an
// id that names no stored session: a token may carry an id whose record is gone or
// never existed (a forged token, a restored storage), and it must be refused all the
// same. keep is how long such a revocation lasts (see UnrecordedRevocationKeep). For
// an id without a record the returned record carries only the id, the revocation's
// end (Expires) and who ended it; user and role are unknown, so empty.
func (a *Sessions) RevokeByID(ctx context.Context, sessionID, by, reason string, keep time.Duration) (*Record, error) {
	if err := CheckSessionID(sessionID); err != nil {
		return nil, err
	}
	if keep <= 0 {
		return nil, fmt.Errorf("revoking %s: the revocation would last %s; want a positive duration", sessionID, keep)
	}
	rec, err := a.EndByID(ctx, sessionID, by, reason)
	if !errors.Is(err, ErrSessionNotFound) {
		return rec, err
	}
	now := a.Now().UTC()
	rev := revocation{SessionID: sessionID, Expires: now.Add(keep).Truncate(time.Second), At: now, By: by, Reason: reason}
	if err := a.Records.revoke(ctx, rev); err != nil {
		// As EndByID does when storage fails: refuse it here at least.
		a.Revocations.Add(sessionID, rev.Expires)
		a.Verifier.ForgetSession(sessionID)
		a.Audit.Event(audit.EventRevoked, zap.String("session_id", sessionID), zap.String("by", by), zap.String("reason", reason),
			zap.Bool("no_record", true), zap.Bool("local_only", true))
		return nil, fmt.Errorf("%w: %v", ErrRevokedLocallyOnly, err)
	}
	a.Revocations.Add(sessionID, rev.Expires)
	a.Verifier.ForgetSession(sessionID)
	a.Audit.Event(audit.EventRevoked, zap.String("session_id", sessionID), zap.String("by", by), zap.String("reason", reason),
		zap.Bool("no_record", true), zap.String("expires", rev.Expires.Format(time.RFC3339)))
	return &Record{ID: sessionID, Expires: rev.Expires, Ended: now, EndedBy: by, EndReason: reason}, nil
}
