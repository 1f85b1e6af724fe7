package stepup

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/caddy-jit/caddy-jit/audit"
	"github.com/caddy-jit/caddy-jit/state"
	"github.com/pquerna/otp"
	"github.com/pquerna/otp/hotp"
	"github.com/pquerna/otp/totp"
	"go.uber.org/zap"
)

// TOTP parameters: RFC 6238 defaults, which every authenticator app understands.
const (
	totpPeriod     = 30
	totpDigits     = otp.DigitsSix
	totpSecretSize = 20 // bytes: 160 bits, as RFC 4226 recommends
	// totpSkew accepts the previous and the next time step as well, for clock drift.
	totpSkew = 1
)

// Why a code was refused. The values are stable: they appear in audit events.
var (
	ErrNotEnrolled  = errors.New("totp_not_enrolled")
	ErrCodeInvalid  = errors.New("totp_invalid")
	ErrCodeReplayed = errors.New("totp_replayed")
)

// LockedOutError refuses any code, right or wrong, until the lockout ends.
type LockedOutError struct {
	Until time.Time
	// Began is set when this very failure started the lockout.
	Began bool
}

func (e *LockedOutError) Error() string { return "locked_out" }

// Authenticator is the TOTP step-up: enrollment, code checks that never accept a code
// twice, and a per-user lockout after repeated failures. All of its state is in
// storage, so a new browser, a restart or another instance resets nothing.
type Authenticator struct {
	storage state.Store
	issuer  string
	now     func() time.Time
	audit   *audit.Writer
	// Metrics counts refused codes and lockouts; nil counts nothing.
	Metrics Metrics
	// MaxFailures wrong codes in a row lock the user for LockoutDuration.
	maxFailures     int
	lockoutDuration time.Duration
	locks           state.Locks
	// passkeys is set by NewPasskeys.
	passkeys *Passkeys
}

// Config is what New needs beyond the store.
type Config struct {
	// Issuer is the name authenticator apps show.
	Issuer string
	// MaxFailures wrong codes in a row lock the user for LockoutDuration.
	MaxFailures     int
	LockoutDuration time.Duration
	Now             func() time.Time
}

// New makes the step-up over the store, auditing enrollments, links and lockouts to
// log.
func New(st state.Store, log *audit.Writer, cfg Config) *Authenticator {
	return &Authenticator{storage: st, issuer: cfg.Issuer, now: cfg.Now, audit: log, maxFailures: cfg.MaxFailures, lockoutDuration: cfg.LockoutDuration}
}

// Metrics counts refused codes and lockouts, for monitoring. Implementations must be
// cheap and must not block.
type Metrics interface {
	// CodeFailure counts a refused TOTP code: totp_invalid, totp_replayed, locked_out.
	CodeFailure(reason string)
	// Lockout counts a lockout that began.
	Lockout()
}

type noMetrics struct{}

func (noMetrics) CodeFailure(string) {}
func (noMetrics) Lockout()           {}

func (a *Authenticator) metrics() Metrics {
	if a.Metrics == nil {
		return noMetrics{}
	}
	return a.Metrics
}

// enrollment is a user's TOTP secret as stored.
type enrollment struct {
	User    string    `json:"user"`
	Secret  string    `json:"secret"`
	Created time.Time `json:"created"`
	// LastStep is the step of the code that confirmed the secret; only later steps are
	// accepted. The steps accepted since are spent in stepKey (see spendStep).
	LastStep int64 `json:"last_step"`
}

// lockout is a user's lockout as stored, for as long as it lasts. (Records of earlier
// versions also counted failures here; those are now counted in failuresKey.)
type lockout struct {
	LockedUntil time.Time `json:"locked_until,omitzero"`
}

func enrollmentKey(user string) string { return enrollmentFolder + state.Name(user) + ".json" }
func lockoutKey(user string) string    { return lockoutFolder + state.Name(user) + ".json" }
func failuresKey(user string) string   { return failuresFolder + state.Name(user) + ".json" }
func totpLockName(user string) string  { return state.Prefix + "totp-" + state.Name(user) }

// stepKey holds the latest step accepted for one enrollment (one secret): a new
// secret starts from its own confirmation.
func stepKey(e enrollment) string {
	return stepFolder + state.Name(e.User) + "-" + strconv.FormatInt(e.Created.UnixNano(), 36) + ".json"
}

// stepLife is how long a spent step must be remembered: a code is accepted from one
// step before its own to one after, so a step recorded now (at most the next one) is
// matchable for three steps at most.
const stepLife = (2*totpSkew + 2) * totpPeriod * time.Second

// atomic is the store's atomic operations, on the step-up's clock where the store has
// no clock of its own.
func (a *Authenticator) atomic() state.Atomic { return state.AtomicAt(a.storage, a.now) }

// spendStep accepts step for the enrollment once, in one atomic operation across every
// instance: it must be later than the confirmation's and than any accepted before.
func (a *Authenticator) spendStep(ctx context.Context, e enrollment, step int64) (bool, error) {
	if step <= e.LastStep {
		return false, nil
	}
	return a.atomic().Advance(ctx, stepKey(e), step, stepLife)
}

// newSecret makes a new secret for the user and stores it, replacing any earlier one.
// It returns the key, whose URL is the otpauth URI for authenticator apps. The caller
// shows it to the user once; it is never logged.
func (a *Authenticator) newSecret(ctx context.Context, user string) (*otp.Key, error) {
	key, err := totp.Generate(totp.GenerateOpts{
		Issuer:      a.issuer,
		AccountName: user,
		Period:      totpPeriod,
		SecretSize:  totpSecretSize,
		Digits:      totpDigits,
		Algorithm:   otp.AlgorithmSHA1,
	})
	if err != nil {
		return nil, fmt.Errorf("generating a TOTP secret: %w", err)
	}
	err = a.locks.With(ctx, a.storage, totpLockName(user), func() error {
		return state.StoreJSON(ctx, a.storage, enrollmentKey(user), enrollment{User: user, Secret: key.Secret(), Created: a.now().UTC()})
	})
	if err != nil {
		return nil, err
	}
	return key, nil
}

// Enrolled reports whether the user has a TOTP secret.
func (a *Authenticator) Enrolled(ctx context.Context, user string) (bool, error) {
	var e enrollment
	return state.LoadJSON(ctx, a.storage, enrollmentKey(user), &e)
}

// LockedUntil returns when the user's lockout ends, or zero if they are not locked.
func (a *Authenticator) LockedUntil(ctx context.Context, user string) (time.Time, error) {
	var l lockout
	if _, err := state.LoadJSON(ctx, a.storage, lockoutKey(user), &l); err != nil {
		return time.Time{}, err
	}
	if a.now().Before(l.LockedUntil) {
		return l.LockedUntil, nil
	}
	return time.Time{}, nil
}

// Check checks a user's code, as check does, and audits and counts what it refused:
// every refused code, and a lockout that began.
func (a *Authenticator) Check(ctx context.Context, user, code string) error {
	err := a.check(ctx, user, code)
	var locked *LockedOutError
	switch {
	case errors.As(err, &locked):
		a.lockoutBegan(user, locked)
		a.metrics().CodeFailure(locked.Error())
	case errors.Is(err, ErrCodeInvalid), errors.Is(err, ErrCodeReplayed):
		a.metrics().CodeFailure(err.Error())
	}
	return err
}

// lockoutBegan audits and counts a lockout that this very failure started.
func (a *Authenticator) lockoutBegan(user string, locked *LockedOutError) {
	if locked.Began {
		a.audit.Event(audit.EventLockedOut, zap.String("user", user), zap.String("until", locked.Until.UTC().Format(time.RFC3339)))
		a.metrics().Lockout()
	}
}

// notLockedOut refuses with *LockedOutError while a lockout of the user runs, and
// returns otherwise (nil when all is well).
func (a *Authenticator) notLockedOut(ctx context.Context, user string, now time.Time, otherwise error) error {
	var l lockout
	if _, err := state.LoadJSON(ctx, a.storage, lockoutKey(user), &l); err != nil {
		return err
	}
	if now.Before(l.LockedUntil) {
		return &LockedOutError{Until: l.LockedUntil}
	}
	return otherwise
}

// check accepts the code if it is right for the current, previous or next time step,
// later than any step accepted before, and the user is not locked out. A wrong or
// replayed code counts towards the lockout. Each decision is one atomic operation of
// the store (see spendStep and fail), so no lock is needed: of instances racing with
// one code, exactly one accepts it.
func (a *Authenticator) check(ctx context.Context, user, code string) error {
	now := a.now()
	if err := a.notLockedOut(ctx, user, now, nil); err != nil {
		return err
	}
	var e enrollment
	found, err := state.LoadJSON(ctx, a.storage, enrollmentKey(user), &e)
	if err != nil {
		return err
	}
	if !found {
		return ErrNotEnrolled
	}
	step, matched := matchingStep(e.Secret, code, now)
	if !matched {
		return a.fail(ctx, user, now, ErrCodeInvalid)
	}
	if err := a.spend(ctx, e, step, now, ErrCodeReplayed); err != nil {
		return err
	}
	return a.succeeded(ctx, user)
}

// spend spends step of the enrollment e, or counts a failure of cause when it was
// spent already.
func (a *Authenticator) spend(ctx context.Context, e enrollment, step int64, now time.Time, cause error) error {
	spent, err := a.spendStep(ctx, e, step)
	if err != nil {
		return err
	}
	if !spent {
		return a.fail(ctx, e.User, now, cause)
	}
	return nil
}

// fail counts a failed proof and locks the user once the failures reach the limit.
// Failures are forgotten once a lockout period has passed since the first of them, so
// rare typos never add up: the count lives that long from its first failure, and so
// ends before any lockout it began (which lasts that long from its last).
//
// Failures racing on several instances are counted exactly (state.Atomic.Count): the
// first max-1 are refused as wrong, the one that reaches the limit begins the lockout,
// and every one counted after it is refused as locked out, whether or not the lockout
// was stored yet.
func (a *Authenticator) fail(ctx context.Context, user string, now time.Time, cause error) error {
	n, err := a.atomic().Count(ctx, failuresKey(user), a.lockoutDuration)
	if err != nil {
		return err
	}
	until := now.Add(a.lockoutDuration)
	switch limit := int64(a.maxFailures); {
	case n < limit:
		return cause
	case n > limit:
		if err := a.notLockedOut(ctx, user, now, nil); err != nil {
			return err
		}
		return &LockedOutError{Until: until}
	}
	if err := state.StoreJSONFor(ctx, a.storage, lockoutKey(user), lockout{LockedUntil: until.UTC()}, a.lockoutDuration); err != nil {
		return err
	}
	return &LockedOutError{Until: until, Began: true}
}

// succeeded forgets the user's failures, and a lockout that ended, after a proof was
// accepted.
func (a *Authenticator) succeeded(ctx context.Context, user string) error {
	if err := a.forgetFailures(ctx, user); err != nil {
		return err
	}
	return state.DeleteGone(ctx, a.storage, lockoutKey(user))
}

// ClearLockout ends a user's lockout and forgets their failures.
func (a *Authenticator) ClearLockout(ctx context.Context, user string) error {
	if err := a.forgetFailures(ctx, user); err != nil {
		return err
	}
	return state.DeleteGone(ctx, a.storage, lockoutKey(user))
}

// forgetFailures deletes the user's failure count in one step with Count (Take): a
// plain delete between a racing failure's read and write would be undone by it, and
// the count would go on from before the success. With no count there is nothing to
// take, and no lock to wait for: a failure that makes one now is counted as the first.
func (a *Authenticator) forgetFailures(ctx context.Context, user string) error {
	key := failuresKey(user)
	if !a.storage.Exists(ctx, key) {
		return nil
	}
	if _, err := a.atomic().Take(ctx, key); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("forgetting %s's failed codes: %w", user, err)
	}
	return nil
}

// matchingStep finds the time step within the skew whose code equals code. pquerna's
// totp.Validate does not say which step matched, which replay prevention needs, so the
// steps are checked here one by one with HOTP, in constant time.
func matchingStep(secret, code string, now time.Time) (int64, bool) {
	if len(code) != totpDigits.Length() {
		return 0, false
	}
	current := now.Unix() / totpPeriod
	opts := hotp.ValidateOpts{Digits: totpDigits, Algorithm: otp.AlgorithmSHA1}
	var (
		found bool
		step  int64
	)
	for s := current - totpSkew; s <= current+totpSkew; s++ {
		want, err := hotp.GenerateCodeCustom(secret, uint64(s), opts)
		if err != nil {
			return 0, false
		}
		if subtle.ConstantTimeCompare([]byte(want), []byte(code)) == 1 && !found {
			found, step = true, s
		}
	}
	return step, found
}

// pruneLockouts deletes lockout records whose lockout is over (a store with expiry has
// already forgotten them).
func pruneLockouts(ctx context.Context, st state.Store, now time.Time) error {
	over := func(_ string, l *lockout) bool { return now.After(l.LockedUntil) }
	// Decided again under the user's TOTP lock, which an enrollment link takes.
	totpLock := func(key string, _ *lockout) string {
		return state.Prefix + "totp-" + strings.TrimSuffix(path.Base(key), ".json")
	}
	return state.Revisit(ctx, st, lockoutFolder, "lockouts to prune", over, totpLock, func(key string, l *lockout) error {
		if over(key, l) {
			_ = st.Delete(ctx, key)
		}
		return nil
	})
}

const (
	enrollmentFolder = state.Prefix + "enrollments/"
	lockoutFolder    = state.Prefix + "lockouts/"
	// failuresFolder and stepFolder hold numbers of state.Atomic, which a store with
	// expiry forgets by itself; elsewhere Prune deletes them.
	failuresFolder = state.Prefix + "failures/"
	stepFolder     = state.Prefix + "totp-steps/"
)

// Prune deletes what the step-up no longer needs: the pending secrets of links that
// expired unused, passkey ceremonies that expired unfinished, and lockouts that are
// over. The caller holds the prune lock.
func (a *Authenticator) Prune(ctx context.Context, now time.Time, keep time.Duration) error {
	if err := pruneEnrollLinks(ctx, a.storage, now, keep); err != nil {
		return err
	}
	if err := pruneCeremonies(ctx, a.storage, now); err != nil {
		return err
	}
	if err := pruneLockouts(ctx, a.storage, now); err != nil {
		return err
	}
	for _, folder := range []string{failuresFolder, stepFolder} {
		if err := state.PruneCounted(ctx, a.storage, folder, now); err != nil {
			return err
		}
	}
	return nil
}
