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
	"github.com/caddy-jit/caddy-jit/state"
)

// A session id is 16 random bytes in base64url: 22 characters.
const (
	sessionIDBytes  = 16
	sessionIDLength = 22
)

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
	// Chain links this instance's audit events; nil gives each audit writer a chain of
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
	s.followExtensions(ctx, now)
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

// followExtensions reads the record of each session about to be swept as expired: one
// extended on another instance (its requests here registered the token before) goes
// on. A record that cannot be read leaves the session to expire: fail closed.
func (s *State) followExtensions(ctx context.Context, now time.Time) {
	for _, due := range s.Live.Due(now) {
		if rec, err := s.Records.Load(ctx, due[1], due[0]); err == nil && rec.Active(now) {
			s.Live.Extend(due[0], rec.Expires.Unix())
		}
	}
}

// LastSync returns when revocations were last read from storage successfully.
func (s *State) LastSync() time.Time { return time.Unix(0, s.lastSync.Load()) }

// Prune deletes what storage no longer needs of sessions: records of sessions that
// ended more than keep ago, revocations of expired sessions, and counts saved at a stop
// more than keep ago (an instance that never came back); it also reloads every
// revocation, in case one was stored by an instance whose clock was off by more than
// the overlap of the incremental syncs. The caller holds the prune lock.
func (s *State) Prune(ctx context.Context, now time.Time, keep time.Duration) error {
	if _, err := s.Records.Prune(ctx, now, keep); err != nil {
		return err
	}
	if err := s.Records.pruneRevocations(ctx, now); err != nil {
		return err
	}
	if err := pruneSavedLive(ctx, s.Records.storage, now, keep); err != nil {
		return err
	}
	return s.Records.LoadRevocations(ctx, s.Revocations, now, time.Time{})
}

// Sessions starts, extends and ends sessions over the state: it records them, signs
// their tokens, stores revocations so that every instance refuses an ended session, and
// audits every end. Whether a session may start is not its question (see package
// workflow).
type Sessions struct {
	*State
	Audit *audit.Writer
	// Issuer goes into the iss claim.
	Issuer string
	Now    Clock
	// SessionsChanged, when set, is called after a session starts, ends or is
	// extended here, so that views of the active sessions refresh early.
	SessionsChanged func()
	// Ended, when set, hears of every session ended here, once it is stored and
	// audited: how is Deactivated or Revoked. The workflow tells people.
	Ended func(rec *Record, how, by, reason string, now time.Time)
	locks state.Locks
}

// New makes the sessions over a loaded state, auditing to log.
func New(st *State, log *audit.Writer, issuer string, now Clock) *Sessions {
	return &Sessions{State: st, Audit: log, Issuer: issuer, Now: now}
}

// How a session ended early; each is its own audit event.
const (
	// Deactivated: the user ended their own session.
	Deactivated = audit.EventDeactivated
	// Revoked: an operator ended it.
	Revoked = audit.EventRevoked
	// Replaced: the browser that held it took another session of its user.
	Replaced = audit.EventReplaced
)

// End ends one of a user's sessions at once: the revocation is stored for the other
// instances, and this instance refuses the session before End returns. how is
// Deactivated, Revoked or Replaced; by names who ended it.
func (a *Sessions) End(ctx context.Context, user, sessionID, how, by, reason string) (*Record, error) {
	rec, err := a.Records.Load(ctx, user, sessionID)
	if err != nil {
		return nil, err
	}
	return rec, a.end(ctx, rec, how, by, reason)
}

// EndByID ends a session named by id alone, as operators do.
func (a *Sessions) EndByID(ctx context.Context, sessionID, by, reason string) (*Record, error) {
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
func (a *Sessions) EndUser(ctx context.Context, user, by, reason string) ([]*Record, error) {
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

func (a *Sessions) end(ctx context.Context, rec *Record, how, by, reason string) error {
	return a.WithSession(ctx, rec.ID, func() error {
		// Decided on the record as stored now: an extension may have moved its end.
		fresh, err := a.Records.Load(ctx, rec.User, rec.ID)
		if err != nil {
			return err
		}
		*rec = *fresh
		return a.endLocked(ctx, rec, how, by, reason)
	})
}

// WithSession runs fn under the session's lock: every change to a stored session
// record (ending, extending, noting the expiring notice) reads and writes it under
// this lock, so none of them overwrites another made meanwhile on any instance.
func (a *Sessions) WithSession(ctx context.Context, id string, fn func() error) error {
	if !validSessionID(id) {
		// Never a storage key made from an id that is not ours.
		return ErrSessionNotFound
	}
	return a.locks.With(ctx, a.Records.storage, keyPrefix+"session-locks/"+id, fn)
}

func (a *Sessions) endLocked(ctx context.Context, rec *Record, how, by, reason string) error {
	now := a.Now()
	if !rec.Active(now) {
		return nil
	}
	// What this instance served under the session is told (session_ended) after the
	// end's own event. Said before the revocation is stored: this instance may hear of
	// it (its announcement, a sync) before revoke returns.
	a.Live.Ending(rec.ID, how, by)
	defer a.Live.Release(rec.ID)
	if err := a.Records.revoke(ctx, revocation{SessionID: rec.ID, User: rec.User, Expires: rec.Expires, At: now.UTC(), By: by, Reason: reason}); err != nil {
		return err
	}
	a.Revocations.Add(rec.ID, rec.Expires)
	a.Verifier.ForgetSession(rec.ID)
	rec.Ended, rec.EndedBy, rec.EndReason, rec.EndHow = now.UTC(), by, reason, how
	if err := a.Records.Save(ctx, rec); err != nil {
		return err
	}
	a.Audit.Event(how, append(rec.AuditFields(), zap.String("by", by), zap.String("reason", reason))...)
	a.Changed()
	if a.Ended != nil {
		a.Ended(rec, how, by, reason, now)
	}
	return nil
}

// RotateKeys makes a new signing key and audits it.
func (a *Sessions) RotateKeys(ctx context.Context, by string) (string, error) {
	return a.rotateKeys(ctx, by, 0)
}

// RotateKeysIfOlder rotates when the newest key is at least age old, as a scheduled
// rotation does; it returns "" when none was due.
func (a *Sessions) RotateKeysIfOlder(ctx context.Context, by string, age time.Duration) (string, error) {
	// An unlocked look first: on most ticks none is due, and the store's lock costs
	// more than a read. Under the lock, rotateKeys decides again.
	created, err := newestKeyCreated(ctx, a.Records.storage)
	if err != nil || created.IsZero() || a.Now().Sub(created) < age {
		return "", err
	}
	return a.rotateKeys(ctx, by, age)
}

func (a *Sessions) rotateKeys(ctx context.Context, by string, ifOlder time.Duration) (string, error) {
	id, err := a.Keyring.rotate(ctx, a.Records.storage, a.Now, ifOlder)
	if err != nil || id == "" {
		return "", err
	}
	a.Audit.Event(audit.EventKeysRotated, zap.String("kid", id), zap.String("by", by))
	return id, nil
}

// newSessionID is a new session id. It never starts with '-' (one in 64 would): an
// operator pastes ids into `caddy jit revoke ID`, where a leading dash reads as a flag.
// Leaving out one id in 64 costs less than 0.03 of the id's 128 random bits.
func newSessionID() string {
	for {
		if id := random.Token(sessionIDBytes); id[0] != '-' {
			return id
		}
	}
}

// Changed tells the views of the active sessions to refresh early.
func (a *Sessions) Changed() {
	if a.SessionsChanged != nil {
		a.SessionsChanged()
	}
}

// Spec is a session about to start, as the workflow decided it.
type Spec struct {
	User, Role, Audience, Justification, Ticket, ClientIP, UserAgent string
	Start, Expires                                                   time.Time
	BreakGlass                                                       bool
	RequestID                                                        string
	Approvers                                                        []string
	// Methods and SteppedUp are how and when the user proved presence (amr,
	// auth_time); no method is ["otp"], no time the start.
	Methods   []string
	SteppedUp time.Time
}

// NewRecord is the record of a new session of spec, under a new id; nothing is stored.
func NewRecord(s Spec) *Record {
	if len(s.Methods) == 0 {
		s.Methods = []string{"otp"}
	}
	if s.SteppedUp.IsZero() {
		s.SteppedUp = s.Start
	}
	return &Record{
		ID:            newSessionID(),
		User:          s.User,
		Role:          s.Role,
		Audience:      s.Audience,
		Justification: s.Justification,
		Ticket:        s.Ticket,
		ClientIP:      s.ClientIP,
		UserAgent:     s.UserAgent,
		Methods:       s.Methods,
		SteppedUp:     s.SteppedUp.UTC().Truncate(time.Second),
		// Whole seconds, as in the token: limits computed from the start (max_total)
		// then land on whole seconds too.
		Start:      s.Start.UTC().Truncate(time.Second),
		Expires:    s.Expires.UTC().Truncate(time.Second),
		RequestID:  s.RequestID,
		Approvers:  s.Approvers,
		BreakGlass: s.BreakGlass,
	}
}

// SignRecord signs a token for a session in storage: a new session, an extended one,
// or one that an approval started while its user waited.
func (a *Sessions) SignRecord(rec *Record, now time.Time) (string, error) {
	return a.Keyring.Sign(Claims{
		Grant: Grant{
			Issuer:     a.Issuer,
			Subject:    rec.User,
			Audience:   rec.Audience,
			Role:       rec.Role,
			SessionID:  rec.ID,
			IssuedAt:   now.Unix(),
			NotBefore:  rec.Start.Unix(),
			Expiry:     rec.Expires.Unix(),
			BreakGlass: rec.BreakGlass,
		},
		Methods:  rec.Methods,
		AuthTime: rec.SteppedUpAt().Unix(),
	})
}

// ActiveByRole counts the sessions running now (started, not ended, not revoked), by
// role, for the metrics.
func (a *Sessions) ActiveByRole(ctx context.Context) (map[string]int, error) {
	now := a.Now()
	active, err := a.Records.Active(ctx, Filter{}, now)
	if err != nil {
		return nil, err
	}
	counts := map[string]int{}
	for _, r := range active {
		if r.Started(now) && !a.Revocations.Revoked(r.ID) {
			counts[r.Role]++
		}
	}
	return counts, nil
}
