package session

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-jit/caddy-jit/audit"
	"github.com/caddy-jit/caddy-jit/internal/random"
	"github.com/caddy-jit/caddy-jit/policy"
	"github.com/caddy-jit/caddy-jit/state"
	"github.com/caddy-jit/caddy-jit/stepup"
)

// sessionIDLength is the length of a session id: 16 random bytes in base64url.
const sessionIDLength = 22

// State is what an instance keeps in memory across config reloads: the keyring, the
// revocation set, the verified-token cache and the requests in flight, over the
// records in storage.
type State struct {
	Keyring     *Keyring
	Revocations *Revocations
	Verifier    *Verifier
	Records     *Records
	Live        *Live
	// Assertions signs the X-Jit-Assertion headers for upstreams.
	Assertions *Assertions
	// Chain links this instance's audit events; nil gives each Authority a chain of
	// its own that is not kept in storage.
	Chain *audit.Chain
	// lastSync is when revocations were last read from storage (Unix nanoseconds).
	lastSync atomic.Int64
}

// LoadState loads (or creates) the keyring and reads every revocation from storage.
func LoadState(ctx context.Context, st state.Store, cacheSize int, now Clock) (*State, error) {
	keyring, err := LoadKeyring(ctx, st, now)
	if err != nil {
		return nil, err
	}
	s := &State{Keyring: keyring, Revocations: NewRevocations(), Records: &Records{storage: st}, Live: NewLive(), Assertions: NewAssertions(keyring)}
	s.Revocations.onRevoke = s.Live.End
	if err := s.Sync(ctx, now()); err != nil {
		return nil, err
	}
	s.Verifier, err = NewVerifier(keyring, s.Revocations, cacheSize)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// Sync brings the revocation set and the keyring up to date with storage, and ends
// the requests in flight of sessions that have expired.
func (s *State) Sync(ctx context.Context, now time.Time) error {
	s.Live.Sweep(now)
	var since time.Time
	if last := s.lastSync.Load(); last != 0 {
		since = time.Unix(0, last)
	}
	if err := s.Records.LoadRevocations(ctx, s.Revocations, now, since); err != nil {
		return err
	}
	if err := s.Keyring.Refresh(ctx, s.Records.storage); err != nil {
		return err
	}
	s.lastSync.Store(now.UnixNano())
	return nil
}

// LastSync returns when revocations were last read from storage successfully.
func (s *State) LastSync() time.Time { return time.Unix(0, s.lastSync.Load()) }

// Prune deletes what storage no longer needs: records of sessions that ended more
// than keep ago, settled requests, revocations of expired sessions, and what the
// step-up no longer needs. One instance of a cluster prunes at a time.
func (a *Authority) Prune(ctx context.Context, now time.Time, keep time.Duration) error {
	return state.Locked(ctx, a.Records.storage, pruneLock, func() error {
		if err := a.State.prune(ctx, now, keep); err != nil {
			return err
		}
		return a.StepUp.Prune(ctx, now, keep)
	})
}

func (s *State) prune(ctx context.Context, now time.Time, keep time.Duration) error {
	if _, err := s.Records.Prune(ctx, now, keep); err != nil {
		return err
	}
	if err := s.Records.pruneRequests(ctx, now); err != nil {
		return err
	}
	if err := s.Records.pruneRevocations(ctx, now); err != nil {
		return err
	}
	// A full pass now and then, in case a revocation was stored by an instance whose
	// clock was off by more than the overlap of the incremental syncs.
	if err := s.Records.LoadRevocations(ctx, s.Revocations, now, time.Time{}); err != nil {
		return err
	}
	return nil
}

// Authority turns eligibility into sessions and ends them: it checks an activation
// against the policy and the TOTP step-up, records the session, signs its token, and
// audits every outcome.
type Authority struct {
	*State
	StepUp *stepup.Authenticator
	Audit  *audit.Writer
	// Issuer goes into the iss claim.
	Issuer string
	Now    Clock
	// Notifier is told about every step of the workflow; nil tells no one.
	Notifier Notifier
	// Metrics counts activations, code failures and lockouts; nil counts nothing.
	Metrics Metrics
	// SessionsChanged, when set, is called after a session starts, ends or is
	// extended here, so that views of the active sessions refresh early.
	SessionsChanged func()
	locks           state.Locks
}

// Config is what NewAuthority needs beyond the storage.
type Config struct {
	Issuer          string
	MaxFailures     int
	LockoutDuration time.Duration
	CacheSize       int
	Audit           *zap.Logger
	Now             Clock
	// State, when set, is reused instead of loaded: it is how a config reload keeps
	// the caches and the revocation set.
	State *State
}

// NewAuthority makes an authority over the storage, loading the state unless cfg
// carries one.
func NewAuthority(ctx context.Context, st state.Store, cfg Config) (*Authority, error) {
	state := cfg.State
	if state == nil {
		var err error
		if state, err = LoadState(ctx, st, cfg.CacheSize, cfg.Now); err != nil {
			return nil, err
		}
	}
	log := audit.NewWriter(cfg.Audit, state.Chain, cfg.Now)
	return &Authority{
		State:  state,
		StepUp: stepup.New(st, log, stepup.Config{Issuer: cfg.Issuer, MaxFailures: cfg.MaxFailures, LockoutDuration: cfg.LockoutDuration, Now: cfg.Now}),
		Audit:  log,
		Issuer: cfg.Issuer,
		Now:    cfg.Now,
	}, nil
}

// Activation is a user's request for a session, as submitted.
type Activation struct {
	Caller        policy.Caller
	Role          *policy.Role
	Audience      string
	Duration      time.Duration
	Justification string
	Ticket        string
	Code          string
	ClientIP      string
	UserAgent     string
	// Start schedules the session; zero starts it now (or on approval).
	Start time.Time
	// BreakGlass skips approval and allowed hours, loudly.
	BreakGlass bool
	// Return is where the requester goes once a waiting request starts its session.
	Return string
}

// ActivationError says why an activation was refused, in a stable reason for the audit
// log and in words for the user.
type ActivationError struct {
	Reason  string
	Message string
	// LockedUntil is set when the reason is a lockout.
	LockedUntil time.Time
}

func (e *ActivationError) Error() string { return e.Reason + ": " + e.Message }

// How a session ended early; each is its own audit event.
const (
	// Deactivated: the user ended their own session.
	Deactivated = audit.EventDeactivated
	// Revoked: an operator ended it.
	Revoked = audit.EventRevoked
)

// End ends one of a user's sessions at once: the revocation is stored for the other
// instances, and this instance refuses the session before End returns. how is
// Deactivated or Revoked; by names who ended it.
func (a *Authority) End(ctx context.Context, user, sessionID, how, by, reason string) (*Record, error) {
	rec, err := a.Records.Load(ctx, user, sessionID)
	if err != nil {
		return nil, err
	}
	return rec, a.end(ctx, rec, how, by, reason)
}

// EndByID ends a session named by id alone, as operators do.
func (a *Authority) EndByID(ctx context.Context, sessionID, by, reason string) (*Record, error) {
	rec, err := a.Records.ByID(ctx, sessionID)
	if err != nil && !errors.Is(err, ErrSessionNotFound) {
		// Storage is failing, which is when an operator may need this most: refuse
		// the session here at least, for as long as any session can last.
		a.Revocations.Add(sessionID, a.Now().Add(localRevocationTTL))
		a.Verifier.ForgetSession(sessionID)
		a.Audit.Event(audit.EventRevoked, zap.String("session_id", sessionID), zap.String("by", by), zap.String("reason", reason),
			zap.Bool("local_only", true))
		return nil, fmt.Errorf("%w: %v", ErrRevokedLocallyOnly, err)
	}
	if err != nil {
		return nil, err
	}
	return rec, a.end(ctx, rec, Revoked, by, reason)
}

// ErrRevokedLocallyOnly: storage failed, so only this instance refuses the session;
// the revocation must be repeated once storage is back.
var ErrRevokedLocallyOnly = errors.New("storage unreachable: the session is refused by this instance only; revoke it again once storage is back")

// localRevocationTTL is how long a revocation that could not be stored is kept in
// memory: longer than any session lasts.
const localRevocationTTL = 7 * 24 * time.Hour

// EndUser ends every active session of a user and returns them.
func (a *Authority) EndUser(ctx context.Context, user, by, reason string) ([]*Record, error) {
	active, err := a.Records.OfUser(ctx, user, a.Now())
	if err != nil {
		return nil, err
	}
	var ended []*Record
	for _, rec := range active {
		if a.Revocations.Revoked(rec.ID) {
			continue
		}
		if err := a.end(ctx, rec, Revoked, by, reason); err != nil {
			return ended, err
		}
		ended = append(ended, rec)
	}
	return ended, nil
}

func (a *Authority) end(ctx context.Context, rec *Record, how, by, reason string) error {
	return a.withSession(ctx, rec.ID, func() error {
		// Decided on the record as stored now: an extension may have moved its end.
		fresh, err := a.Records.Load(ctx, rec.User, rec.ID)
		if err != nil {
			return err
		}
		*rec = *fresh
		return a.endLocked(ctx, rec, how, by, reason)
	})
}

// withSession runs fn under the session's lock: every change to a stored session
// record (ending, extending, noting the expiring notice) reads and writes it under
// this lock, so none of them overwrites another made meanwhile on any instance.
func (a *Authority) withSession(ctx context.Context, id string, fn func() error) error {
	if !validSessionID(id) {
		// Never a storage key made from an id that is not ours.
		return ErrSessionNotFound
	}
	return a.locks.With(ctx, a.Records.storage, keyPrefix+"session-locks/"+id, fn)
}

func (a *Authority) endLocked(ctx context.Context, rec *Record, how, by, reason string) error {
	now := a.Now()
	if !rec.Active(now) {
		return nil
	}
	if err := a.Records.revoke(ctx, revocation{SessionID: rec.ID, User: rec.User, Expires: rec.Expires, At: now.UTC(), By: by, Reason: reason}); err != nil {
		return err
	}
	a.Revocations.Add(rec.ID, rec.Expires)
	a.Verifier.ForgetSession(rec.ID)
	rec.Ended, rec.EndedBy, rec.EndReason = now.UTC(), by, reason
	if err := a.Records.Save(ctx, rec); err != nil {
		return err
	}
	a.Audit.Event(how, append(recordFields(rec), zap.String("by", by), zap.String("reason", reason))...)
	a.sessionsChanged()
	n := recordNotification(how, rec, now)
	n.By, n.Reason = by, reason
	a.notify(n)
	return nil
}

// RotateKeys makes a new signing key and audits it.
func (a *Authority) RotateKeys(ctx context.Context, by string) (string, error) {
	return a.rotateKeys(ctx, by, 0)
}

// RotateKeysIfOlder rotates when the newest key is at least age old, as a scheduled
// rotation does; it returns "" when none was due.
func (a *Authority) RotateKeysIfOlder(ctx context.Context, by string, age time.Duration) (string, error) {
	return a.rotateKeys(ctx, by, age)
}

func (a *Authority) rotateKeys(ctx context.Context, by string, ifOlder time.Duration) (string, error) {
	id, err := a.Keyring.rotate(ctx, a.Records.storage, a.Now, ifOlder)
	if err != nil || id == "" {
		return "", err
	}
	a.Audit.Event(audit.EventKeysRotated, zap.String("kid", id), zap.String("by", by))
	return id, nil
}

func newSessionID() string {
	return random.Token(16)
}

func (a *Authority) sessionsChanged() {
	if a.SessionsChanged != nil {
		a.SessionsChanged()
	}
}
