package stepup

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/caddy-jit/caddy-jit/audit"
	"github.com/caddy-jit/caddy-jit/internal/random"
	"github.com/caddy-jit/caddy-jit/state"
	"go.uber.org/zap"
)

// Self-service enrollment by link: an operator makes a link for a user; the user, signed
// in as themselves, opens it, scans the QR code of a pending secret and confirms it with
// a code. Only then does the pending secret become the user's enrollment, so an earlier
// one keeps working until that moment, and a link nobody confirms changes nothing.
//
// A link plus the user's password must not be enough to take over the user's codes:
//   - every opening makes a new pending secret, bound to the browser that opened it (a
//     random value in a cookie, of which storage keeps the hash) and shown on that one
//     page only; a later opening discards it, so a secret someone else saw first is never
//     the one the user confirms (see enroll_open.go);
//   - a user has at most one outstanding link: issuing one cancels the earlier one, and
//     an enrollment (by link or by an operator) cancels it;
//   - replacing a confirmed enrollment through a link needs a code of the current one,
//     unless the operator made the link with Replace (see enroll_confirm.go).
//
// Storage keeps only the SHA-256 of the link's token, under jit/enroll-links/, and, under
// jit/enroll-link-users/, which link is the user's outstanding one: no other is honoured.

// EnrolledByLink is the `by` of the enrolled event (audit.EventEnrolled) of a
// confirmation by link, written with via "link". The field `link` of the enroll_link_*
// events is the link's id (LinkID), never its token.
const EnrolledByLink = "enrollment link"

// Why a link was cancelled: the reason of enroll_link_cancelled events.
const (
	// CancelNewerLink: a newer link was issued for the user.
	CancelNewerLink = "newer_link"
	// CancelEnrolled: the user was enrolled by other means (an operator's direct
	// enrollment) after the link was made.
	CancelEnrolled = "enrolled"
)

const (
	enrollLinkFolder      = state.Prefix + "enroll-links/"
	enrollLinkOwnerFolder = state.Prefix + "enroll-link-users/"
	// enrollLinkTokenBytes random bytes make a token: 43 characters of base64url.
	enrollLinkTokenBytes  = 32
	enrollLinkTokenLength = 43
	// linkIDLength hex characters of the token's hash name a link in audit events.
	linkIDLength = 16
)

// Why a link was refused. The values are stable: they are the reason of
// enroll_link_failed events.
var (
	ErrEnrollLinkUnknown   = errors.New("enroll_link_unknown")
	ErrEnrollLinkNotYours  = errors.New("enroll_link_not_yours")
	ErrEnrollLinkUsed      = errors.New("enroll_link_used")
	ErrEnrollLinkExpired   = errors.New("enroll_link_expired")
	ErrEnrollLinkCancelled = errors.New("enroll_link_cancelled")
)

// EnrollLinkError is a link that was used (Err is ErrEnrollLinkUsed, At when), that
// expired (ErrEnrollLinkExpired) or that was cancelled (ErrEnrollLinkCancelled, At
// zero when it is not known). errors.Is matches it against Err.
type EnrollLinkError struct {
	Err error
	At  time.Time
}

func (e *EnrollLinkError) Error() string {
	if e.At.IsZero() {
		return e.Err.Error()
	}
	return e.Err.Error() + " at " + e.At.UTC().Format(time.RFC3339)
}

func (e *EnrollLinkError) Unwrap() error { return e.Err }

// enrollLink is a link as stored, under the SHA-256 of its token.
type enrollLink struct {
	User    string    `json:"user"`
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires"`
	By      string    `json:"by"`
	// Replace lets the link replace a confirmed enrollment without a code of it: the
	// operator asked for that when making it.
	Replace bool `json:"replace,omitempty"`
	// Opening is the latest opening's pending secret; a new opening replaces it, a
	// confirmation, a cancellation or the expiry drops it.
	Opening      *enrollOpening `json:"opening,omitempty"`
	Used         time.Time      `json:"used,omitzero"`
	Cancelled    time.Time      `json:"cancelled,omitzero"`
	CancelReason string         `json:"cancel_reason,omitempty"`
	// LegacySecret is the fixed pending secret of a link made before each opening had
	// its own. Such a link is never honoured (no owner record names it); a prune
	// forgets the secret.
	LegacySecret string `json:"secret,omitempty"`
}

// enrollLinkOwner names the user's one outstanding link.
type enrollLinkOwner struct {
	Link string `json:"link"`
}

func enrollLinkHash(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// LinkID is the name of the link with token in audit events: a prefix of the token's
// SHA-256, which tells links apart and gives nothing of the token away.
func LinkID(token string) string { return linkID(enrollLinkHash(token)) }

func linkID(hash string) string { return hash[:linkIDLength] }

func enrollLinkKey(hash string) string { return enrollLinkFolder + hash + ".json" }
func enrollLinkOwnerKey(user string) string {
	return enrollLinkOwnerFolder + state.Name(user) + ".json"
}

// enrollLinksLockName is the lock of all of a user's links: issuing, opening,
// confirming and cancelling take turns under it, on any instance.
func enrollLinksLockName(user string) string {
	return state.Prefix + "enroll-links-" + state.Name(user)
}

// wellFormedEnrollToken reports whether token could be one of ours (a link's token or
// a browser's binding): 43 characters of base64url that decode to 32 bytes. Anything
// else is refused before storage is asked.
func wellFormedEnrollToken(token string) bool {
	if len(token) != enrollLinkTokenLength {
		return false
	}
	raw, err := base64.RawURLEncoding.Strict().DecodeString(token)
	return err == nil && len(raw) == enrollLinkTokenBytes
}

// newEnrollToken makes 32 random bytes as base64url.
func newEnrollToken() string {
	return random.Token(enrollLinkTokenBytes)
}

// EnrollLinkRequest is what an operator asks for when making a link.
type EnrollLinkRequest struct {
	User string
	TTL  time.Duration
	// By says who asks, for the audit log.
	By string
	// Replace lets the link replace the user's confirmed enrollment without a code of
	// it, for a user who lost their authenticator.
	Replace bool
}

// CreateEnrollmentLink makes a link for user that lasts ttl, without Replace: see
// IssueEnrollmentLink.
func (a *Authenticator) CreateEnrollmentLink(ctx context.Context, user string, ttl time.Duration, by string) (string, time.Time, error) {
	return a.IssueEnrollmentLink(ctx, EnrollLinkRequest{User: user, TTL: ttl, By: by})
}

// IssueEnrollmentLink makes a single-use link, cancels the user's earlier one, and
// audits both. It returns the token (the link's only copy: storage keeps its SHA-256)
// and when the link expires. The user's current enrollment, if any, is untouched until
// the link is confirmed. The link holds no secret yet: each opening makes one.
func (a *Authenticator) IssueEnrollmentLink(ctx context.Context, req EnrollLinkRequest) (string, time.Time, error) {
	if req.TTL <= 0 {
		return "", time.Time{}, fmt.Errorf("an enrollment link must last a positive time, not %s", req.TTL)
	}
	if req.User == "" {
		return "", time.Time{}, errors.New("an enrollment link needs a user")
	}
	token := newEnrollToken()
	hash := enrollLinkHash(token)
	now := a.now().UTC()
	link := enrollLink{User: req.User, Created: now, Expires: now.Add(req.TTL), By: req.By, Replace: req.Replace}
	var earlier string
	err := a.locks.With(ctx, a.storage, enrollLinksLockName(req.User), func() error {
		var owner enrollLinkOwner
		if _, err := state.LoadJSON(ctx, a.storage, enrollLinkOwnerKey(req.User), &owner); err != nil {
			return err
		}
		if err := state.StoreJSON(ctx, a.storage, enrollLinkKey(hash), link); err != nil {
			return err
		}
		// The owner record is what makes a link valid: once it names the new link, the
		// earlier one is refused, whether or not marking it below succeeds.
		if err := state.StoreJSON(ctx, a.storage, enrollLinkOwnerKey(req.User), enrollLinkOwner{Link: hash}); err != nil {
			return err
		}
		if owner.Link != "" && a.markCancelled(ctx, owner.Link, req.User, now, CancelNewerLink) {
			earlier = owner.Link
		}
		return nil
	})
	if err != nil {
		return "", time.Time{}, err
	}
	a.audit.Event(audit.EventEnrollLinkCreated, zap.String("user", req.User), zap.String("by", req.By),
		zap.String("expires", link.Expires.Format(time.RFC3339)), zap.String("link", linkID(hash)), zap.Bool("replace", req.Replace))
	if earlier != "" {
		a.linkCancelled(req.User, earlier, CancelNewerLink, req.By)
	}
	return token, link.Expires, nil
}

// CancelEnrollmentLinks cancels the user's outstanding link, if any, and audits it
// with reason. An operator's direct enrollment calls it first, so that no link made
// before can replace what the operator set up.
func (a *Authenticator) CancelEnrollmentLinks(ctx context.Context, user, by, reason string) error {
	var cancelled string
	err := a.locks.With(ctx, a.storage, enrollLinksLockName(user), func() error {
		var owner enrollLinkOwner
		found, err := state.LoadJSON(ctx, a.storage, enrollLinkOwnerKey(user), &owner)
		if err != nil || !found {
			return err
		}
		if err := a.storage.Delete(ctx, enrollLinkOwnerKey(user)); err != nil {
			return fmt.Errorf("cancelling %s's enrollment link: %w", user, err)
		}
		if a.markCancelled(ctx, owner.Link, user, a.now().UTC(), reason) {
			cancelled = owner.Link
		}
		return nil
	})
	if cancelled != "" {
		a.linkCancelled(user, cancelled, reason, by)
	}
	return err
}

// markCancelled records on the link of hash that it was cancelled, and drops its
// pending secret, under the user's links lock. It reports whether the link was still
// usable. The owner record has already stopped honouring the link, so a failure here
// costs only the clearer message.
func (a *Authenticator) markCancelled(ctx context.Context, hash, user string, now time.Time, reason string) bool {
	var link enrollLink
	found, err := state.LoadJSON(ctx, a.storage, enrollLinkKey(hash), &link)
	if err != nil || !found || link.User != user || !link.Used.IsZero() || !link.Cancelled.IsZero() || !now.Before(link.Expires) {
		return false
	}
	link.Cancelled, link.CancelReason, link.Opening = now, reason, nil
	_ = state.StoreJSON(ctx, a.storage, enrollLinkKey(hash), link)
	return true
}

func (a *Authenticator) linkCancelled(user, hash, reason, by string) {
	a.audit.Event(audit.EventEnrollLinkCancelled, zap.String("user", user), zap.String("link", linkID(hash)),
		zap.String("reason", reason), zap.String("by", by))
}

// loadUsableLink reads the link of token for user, under the user's links lock, and
// refuses it as check does; it says whether it is the user's outstanding link.
func (a *Authenticator) loadUsableLink(ctx context.Context, token, user string, now time.Time) (enrollLink, error) {
	link, err := a.loadEnrollLink(ctx, token)
	if err != nil {
		return link, err
	}
	var owner enrollLinkOwner
	if link.User == user {
		if _, err := state.LoadJSON(ctx, a.storage, enrollLinkOwnerKey(user), &owner); err != nil {
			return link, err
		}
	}
	return link, link.check(user, now, owner.Link == enrollLinkHash(token))
}

// loadEnrollLink reads the link of token; ErrEnrollLinkUnknown if there is none.
func (a *Authenticator) loadEnrollLink(ctx context.Context, token string) (enrollLink, error) {
	var link enrollLink
	if !wellFormedEnrollToken(token) {
		return link, ErrEnrollLinkUnknown
	}
	found, err := state.LoadJSON(ctx, a.storage, enrollLinkKey(enrollLinkHash(token)), &link)
	if err != nil {
		return link, err
	}
	if !found {
		return link, ErrEnrollLinkUnknown
	}
	return link, nil
}

// check refuses a link that is not user's, was used, was cancelled (or is not the
// user's outstanding link: links made before this rule held a fixed secret), or has
// expired, in that order: someone else learns nothing of another user's link but that
// it is not theirs.
func (l enrollLink) check(user string, now time.Time, outstanding bool) error {
	switch {
	case l.User != user:
		return ErrEnrollLinkNotYours
	case !l.Used.IsZero():
		return &EnrollLinkError{Err: ErrEnrollLinkUsed, At: l.Used}
	case !l.Cancelled.IsZero() || !outstanding:
		return &EnrollLinkError{Err: ErrEnrollLinkCancelled, At: l.Cancelled}
	case !now.Before(l.Expires):
		return &EnrollLinkError{Err: ErrEnrollLinkExpired, At: l.Expires}
	}
	return nil
}

// enrollLinkFailed audits a refusal, and counts and audits a lockout that began, as
// an activation does. Storage errors are not refusals and are left to the caller.
func (a *Authenticator) enrollLinkFailed(user, token, clientIP string, link enrollLink, err error) {
	var (
		reason string
		locked *LockedOutError
	)
	switch {
	case errors.As(err, &locked):
		reason = locked.Error()
		a.lockoutBegan(user, locked)
		a.metrics().CodeFailure(reason)
	case errors.Is(err, ErrCodeInvalid), errors.Is(err, ErrCodeReplayed), errors.Is(err, ErrCurrentCodeInvalid), errors.Is(err, ErrCurrentCodeReplayed):
		reason = refusalReason(err)
		a.metrics().CodeFailure(reason)
	default:
		if reason = refusalReason(err); reason == "" {
			return
		}
	}
	fields := []zap.Field{zap.String("user", user), zap.String("reason", reason)}
	if wellFormedEnrollToken(token) {
		fields = append(fields, zap.String("link", LinkID(token)))
	}
	if errors.Is(err, ErrEnrollLinkNotYours) {
		fields = append(fields, zap.String("link_user", link.User))
	}
	if clientIP != "" {
		fields = append(fields, zap.String("client_ip", clientIP))
	}
	a.audit.Event(audit.EventEnrollLinkFailed, fields...)
}

// refusalReason is the stable name of a refusal, or "" for an error that is none.
func refusalReason(err error) string {
	for _, known := range []error{ErrEnrollLinkUnknown, ErrEnrollLinkNotYours, ErrEnrollLinkUsed, ErrEnrollLinkExpired,
		ErrEnrollLinkCancelled, ErrEnrollLinkOtherBrowser, ErrEnrollLinkReopened, ErrCurrentCodeRequired,
		ErrCurrentCodeInvalid, ErrCurrentCodeReplayed, ErrCodeInvalid, ErrCodeReplayed, ErrEnrollLinkHasEnrollment} {
		if errors.Is(err, known) {
			return known.Error()
		}
	}
	return ""
}

// isCodeRefusal reports whether err is a refused code rather than a failure.
func isCodeRefusal(err error) bool {
	var locked *LockedOutError
	return errors.As(err, &locked) || errors.Is(err, ErrCodeInvalid) || errors.Is(err, ErrCodeReplayed) ||
		errors.Is(err, ErrCurrentCodeRequired) || errors.Is(err, ErrCurrentCodeInvalid) || errors.Is(err, ErrCurrentCodeReplayed)
}

// pruneEnrollLinks forgets the pending secret of links that expired unused, and
// deletes links that expired more than keep ago, with the owner record that names
// them; until then a used or expired link still says so when opened.
func pruneEnrollLinks(ctx context.Context, st state.Store, now time.Time, keep time.Duration) error {
	stale := func(_ string, l *enrollLink) bool {
		expired := !now.Before(l.Expires)
		return l.LegacySecret != "" || expired && (now.Sub(l.Expires) > keep || l.Opening != nil)
	}
	// Decided again under the user's links lock, so that a confirmation made meanwhile
	// is not overwritten.
	linksLock := func(_ string, l *enrollLink) string { return enrollLinksLockName(l.User) }
	return state.Revisit(ctx, st, enrollLinkFolder, "enrollment links to prune", stale, linksLock, func(key string, cur *enrollLink) error {
		hash := strings.TrimSuffix(key[strings.LastIndex(key, "/")+1:], ".json")
		switch expired := !now.Before(cur.Expires); {
		case expired && now.Sub(cur.Expires) > keep:
			var owner enrollLinkOwner
			if ok, err := state.LoadJSON(ctx, st, enrollLinkOwnerKey(cur.User), &owner); err == nil && ok && owner.Link == hash {
				_ = st.Delete(ctx, enrollLinkOwnerKey(cur.User))
			}
			_ = st.Delete(ctx, key)
		case expired && cur.Opening != nil, cur.LegacySecret != "":
			if expired {
				cur.Opening = nil
			}
			cur.LegacySecret = ""
			_ = state.StoreJSON(ctx, st, key, *cur)
		}
		return nil
	})
}
