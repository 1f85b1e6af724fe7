package session

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"
	"go.uber.org/zap"
)

// Self-service enrollment by link: an operator makes a link for a user; the user, signed
// in as themselves, opens it, scans the QR code of a pending secret and confirms it with
// a code. Only then does the pending secret become the user's enrollment, so an earlier
// one keeps working until that moment, and a link nobody confirms changes nothing.
//
// Storage keeps only the SHA-256 of the link's token, under jit/enroll-links/, with the
// pending secret; once confirmed, the record keeps when it was used and loses the secret.

// Audit events of enrollment links. `enrolled` (EventEnrolled) is written on
// confirmation, with by EnrolledByLink and via "link".
const (
	EventEnrollLinkCreated = "enroll_link_created"
	EventEnrollLinkFailed  = "enroll_link_failed"
	// EnrolledByLink is the `by` of the enrolled event of a confirmation by link.
	EnrolledByLink = "enrollment link"
)

const (
	enrollLinkFolder = keyPrefix + "enroll-links/"
	// enrollLinkTokenBytes random bytes make a token: 43 characters of base64url.
	enrollLinkTokenBytes  = 32
	enrollLinkTokenLength = 43
)

// Why a link was refused. The values are stable: they are the reason of
// enroll_link_failed events.
var (
	ErrEnrollLinkUnknown  = errors.New("enroll_link_unknown")
	ErrEnrollLinkNotYours = errors.New("enroll_link_not_yours")
	ErrEnrollLinkUsed     = errors.New("enroll_link_used")
	ErrEnrollLinkExpired  = errors.New("enroll_link_expired")
)

// EnrollLinkError is a link that was used (Err is ErrEnrollLinkUsed, At when) or that
// expired (ErrEnrollLinkExpired, At when). errors.Is matches it against Err.
type EnrollLinkError struct {
	Err error
	At  time.Time
}

func (e *EnrollLinkError) Error() string {
	return e.Err.Error() + " at " + e.At.UTC().Format(time.RFC3339)
}

func (e *EnrollLinkError) Unwrap() error { return e.Err }

// enrollLink is a link as stored, under the SHA-256 of its token.
type enrollLink struct {
	User string `json:"user"`
	// Secret is the pending TOTP secret (base32); emptied once used or expired.
	Secret  string    `json:"secret,omitempty"`
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires"`
	By      string    `json:"by"`
	Used    time.Time `json:"used,omitzero"`
}

// PendingEnrollment is what a link shows its user: the pending secret, as an otpauth
// URI for authenticator apps and as text for entering by hand. Never log it.
type PendingEnrollment struct {
	User    string
	URI     string
	Secret  string
	Expires time.Time
}

func enrollLinkHash(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

func enrollLinkKey(hash string) string      { return enrollLinkFolder + hash + ".json" }
func enrollLinkLockName(hash string) string { return keyPrefix + "enroll-link-" + hash }

// wellFormedEnrollToken reports whether token could be one of ours: 43 characters of
// base64url that decode to 32 bytes. Anything else is refused before storage is asked.
func wellFormedEnrollToken(token string) bool {
	if len(token) != enrollLinkTokenLength {
		return false
	}
	raw, err := base64.RawURLEncoding.Strict().DecodeString(token)
	return err == nil && len(raw) == enrollLinkTokenBytes
}

// CreateEnrollmentLink makes a single-use link for user that lasts ttl, with a new
// pending secret, and audits it. It returns the token (the link's only copy: storage
// keeps its SHA-256) and when the link expires. The user's current enrollment, if
// any, is untouched until the link is confirmed.
func (a *Authority) CreateEnrollmentLink(ctx context.Context, user string, ttl time.Duration, by string) (string, time.Time, error) {
	if ttl <= 0 {
		return "", time.Time{}, fmt.Errorf("an enrollment link must last a positive time, not %s", ttl)
	}
	if user == "" {
		return "", time.Time{}, errors.New("an enrollment link needs a user")
	}
	key, err := a.Authenticator.generate(user, nil)
	if err != nil {
		return "", time.Time{}, err
	}
	b := make([]byte, enrollLinkTokenBytes)
	if _, err := rand.Read(b); err != nil {
		return "", time.Time{}, fmt.Errorf("making an enrollment link token: %w", err)
	}
	token := base64.RawURLEncoding.EncodeToString(b)
	now := a.Now().UTC()
	link := enrollLink{User: user, Secret: key.Secret(), Created: now, Expires: now.Add(ttl), By: by}
	if err := storeJSON(ctx, a.Records.storage, enrollLinkKey(enrollLinkHash(token)), link); err != nil {
		return "", time.Time{}, err
	}
	a.Audit.Event(EventEnrollLinkCreated, zap.String("user", user), zap.String("by", by),
		zap.String("expires", link.Expires.Format(time.RFC3339)))
	return token, link.Expires, nil
}

// EnrollmentLink returns the pending enrollment of a link, for its user only: another
// user gets ErrEnrollLinkNotYours, a used or expired link an *EnrollLinkError saying
// when, a token that is not a link ErrEnrollLinkUnknown. Refusals are audited.
func (a *Authority) EnrollmentLink(ctx context.Context, token, user string) (*PendingEnrollment, error) {
	link, err := a.loadEnrollLink(ctx, token)
	if err == nil {
		err = link.check(user, a.Now())
	}
	if err != nil {
		a.enrollLinkFailed(user, link, err)
		return nil, err
	}
	key, err := a.Authenticator.keyOf(user, link.Secret)
	if err != nil {
		return nil, err
	}
	return &PendingEnrollment{User: user, URI: key.URL(), Secret: key.Secret(), Expires: link.Expires}, nil
}

// ConfirmEnrollment checks code against the link's pending secret and, if it is right,
// makes that secret the user's enrollment, with the code's time step as the last one
// accepted (so that the same code can never activate anything), and marks the link
// used. A wrong code counts towards the user's lockout as at activation and comes back
// as ErrCodeInvalid, ErrCodeReplayed or a *LockedOutError; a link refused as by
// EnrollmentLink changes nothing. Every outcome is audited.
func (a *Authority) ConfirmEnrollment(ctx context.Context, token, user, code string) error {
	if !wellFormedEnrollToken(token) {
		a.enrollLinkFailed(user, enrollLink{}, ErrEnrollLinkUnknown)
		return ErrEnrollLinkUnknown
	}
	hash := enrollLinkHash(token)
	var (
		link     enrollLink
		replaced bool
		refused  error
	)
	// The link's lock makes two confirmations of one link, on any instances, take
	// turns: the second finds it used.
	err := a.locks.with(ctx, a.Records.storage, enrollLinkLockName(hash), func() error {
		var err error
		if link, err = a.loadEnrollLink(ctx, token); err != nil {
			refused = err
			return nil
		}
		now := a.Now()
		if err := link.check(user, now); err != nil {
			refused = err
			return nil
		}
		replaced, err = a.Authenticator.confirm(ctx, user, link.Secret, code)
		if isCodeRefusal(err) {
			refused = err
			return nil
		}
		if err != nil {
			return err
		}
		link.Used, link.Secret = now.UTC(), ""
		return storeJSON(ctx, a.Records.storage, enrollLinkKey(hash), link)
	})
	if err != nil {
		return err
	}
	if refused != nil {
		a.enrollLinkFailed(user, link, refused)
		return refused
	}
	a.Audit.Event(EventEnrolled, zap.String("user", user), zap.String("by", EnrolledByLink), zap.Bool("replaced", replaced),
		zap.String("via", "link"))
	return nil
}

// loadEnrollLink reads the link of token; ErrEnrollLinkUnknown if there is none.
func (a *Authority) loadEnrollLink(ctx context.Context, token string) (enrollLink, error) {
	var link enrollLink
	if !wellFormedEnrollToken(token) {
		return link, ErrEnrollLinkUnknown
	}
	found, err := loadJSON(ctx, a.Records.storage, enrollLinkKey(enrollLinkHash(token)), &link)
	if err != nil {
		return link, err
	}
	if !found {
		return link, ErrEnrollLinkUnknown
	}
	return link, nil
}

// check refuses a link that is not user's, was used, or has expired, in that order:
// someone else learns nothing of another user's link but that it is not theirs.
func (l enrollLink) check(user string, now time.Time) error {
	switch {
	case l.User != user:
		return ErrEnrollLinkNotYours
	case !l.Used.IsZero():
		return &EnrollLinkError{Err: ErrEnrollLinkUsed, At: l.Used}
	case !now.Before(l.Expires):
		return &EnrollLinkError{Err: ErrEnrollLinkExpired, At: l.Expires}
	}
	return nil
}

// enrollLinkFailed audits a refusal, and counts and audits a lockout that began, as
// an activation does. Storage errors are not refusals and are left to the caller.
func (a *Authority) enrollLinkFailed(user string, link enrollLink, err error) {
	var (
		reason string
		locked *LockedOutError
	)
	switch {
	case errors.As(err, &locked):
		reason = locked.Error()
		if locked.Began {
			a.Audit.Event(EventLockedOut, zap.String("user", user), zap.String("until", locked.Until.UTC().Format(time.RFC3339)))
			a.metrics().Lockout()
		}
		a.metrics().CodeFailure(reason)
	case errors.Is(err, ErrCodeInvalid), errors.Is(err, ErrCodeReplayed):
		reason = err.Error()
		a.metrics().CodeFailure(reason)
	case errors.Is(err, ErrEnrollLinkUnknown), errors.Is(err, ErrEnrollLinkNotYours):
		reason = err.Error()
	case errors.Is(err, ErrEnrollLinkUsed):
		reason = ErrEnrollLinkUsed.Error()
	case errors.Is(err, ErrEnrollLinkExpired):
		reason = ErrEnrollLinkExpired.Error()
	default:
		return
	}
	fields := []zap.Field{zap.String("user", user), zap.String("reason", reason)}
	if errors.Is(err, ErrEnrollLinkNotYours) {
		fields = append(fields, zap.String("link_user", link.User))
	}
	a.Audit.Event(EventEnrollLinkFailed, fields...)
}

// isCodeRefusal reports whether err is a refused code rather than a failure.
func isCodeRefusal(err error) bool {
	var locked *LockedOutError
	return errors.Is(err, ErrCodeInvalid) || errors.Is(err, ErrCodeReplayed) || errors.As(err, &locked)
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

// keyOf rebuilds the key (and so the otpauth URI) of a stored base32 secret.
func (a *Authenticator) keyOf(user, secret string) (*otp.Key, error) {
	raw, err := base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(strings.ToUpper(secret))
	if err != nil || len(raw) == 0 {
		return nil, errors.New("the enrollment link's pending secret in storage is damaged")
	}
	return a.generate(user, raw)
}

// confirm makes secret the user's enrollment if code is right for it now, under the
// user's TOTP lock, with the same lockout as Check: a locked user is refused whatever
// the code, a wrong code counts as a failure. The enrollment's last accepted step is
// the code's, so the code cannot be used again. replaced says whether it replaced an
// earlier secret.
func (a *Authenticator) confirm(ctx context.Context, user, secret, code string) (replaced bool, err error) {
	err = a.locks.with(ctx, a.storage, totpLockName(user), func() error {
		now := a.now()
		var l lockout
		if _, err := loadJSON(ctx, a.storage, lockoutKey(user), &l); err != nil {
			return err
		}
		if now.Before(l.LockedUntil) {
			return &LockedOutError{Until: l.LockedUntil}
		}
		var current enrollment
		found, err := loadJSON(ctx, a.storage, enrollmentKey(user), &current)
		if err != nil {
			return err
		}
		step, matched := matchingStep(secret, code, now)
		switch {
		case !matched:
			return a.fail(ctx, user, l, now, ErrCodeInvalid)
		case found && current.Secret == secret && step <= current.LastStep:
			// This secret is already the enrollment (a confirmation whose link could
			// not be marked used): its accepted codes stay spent.
			return a.fail(ctx, user, l, now, ErrCodeReplayed)
		}
		replaced = found && current.Secret != secret
		if err := storeJSON(ctx, a.storage, enrollmentKey(user), enrollment{User: user, Secret: secret, Created: now.UTC(), LastStep: step}); err != nil {
			return err
		}
		if l.Failures > 0 || !l.LockedUntil.IsZero() {
			return a.storage.Delete(ctx, lockoutKey(user))
		}
		return nil
	})
	return replaced, err
}

// pruneEnrollLinks forgets the pending secret of links that expired unused, and
// deletes links that expired more than keep ago; until then a used or expired link
// still says so when opened.
func pruneEnrollLinks(ctx context.Context, st certmagic.Storage, now time.Time, keep time.Duration) error {
	keys, err := recordKeys(ctx, st, enrollLinkFolder, false, "enrollment links to prune")
	if err != nil {
		return err
	}
	for _, key := range keys {
		var l enrollLink
		found, err := loadJSON(ctx, st, key, &l)
		if err != nil || !found || now.Before(l.Expires) {
			continue
		}
		if now.Sub(l.Expires) > keep {
			_ = st.Delete(ctx, key)
			continue
		}
		if l.Secret == "" {
			continue
		}
		// Decided again under the link's lock, so that a confirmation made meanwhile
		// is not overwritten.
		hash := strings.TrimSuffix(key[strings.LastIndex(key, "/")+1:], ".json")
		lock := enrollLinkLockName(hash)
		if err := st.Lock(ctx, lock); err != nil {
			return err
		}
		if found, err := loadJSON(ctx, st, key, &l); err == nil && found && l.Secret != "" && !now.Before(l.Expires) {
			l.Secret = ""
			_ = storeJSON(ctx, st, key, l)
		}
		_ = st.Unlock(context.WithoutCancel(ctx), lock)
	}
	return nil
}
