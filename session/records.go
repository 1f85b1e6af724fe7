package session

import (
	"context"
	"errors"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/caddy-jit/caddy-jit/audit"
	"github.com/caddy-jit/caddy-jit/internal/random"
	"github.com/caddy-jit/caddy-jit/state"
	"go.uber.org/zap"
)

// Record is a session as kept in storage: everything an auditor asks about it.
type Record struct {
	ID            string   `json:"session_id"`
	User          string   `json:"user"`
	Role          string   `json:"role"`
	Audience      string   `json:"audience"`
	Justification string   `json:"justification"`
	Ticket        string   `json:"ticket,omitempty"`
	ClientIP      string   `json:"client_ip,omitempty"`
	UserAgent     string   `json:"user_agent,omitempty"`
	Methods       []string `json:"amr"`
	// SteppedUp is when the user last proved presence for the session (auth_time).
	SteppedUp time.Time `json:"stepped_up,omitzero"`
	Start     time.Time `json:"start"`
	Expires   time.Time `json:"expires"`
	// Ended is set when the session was ended before it expired.
	Ended     time.Time `json:"ended,omitzero"`
	EndedBy   string    `json:"ended_by,omitempty"`
	EndReason string    `json:"end_reason,omitempty"`
	// EndHow is how it ended early: Deactivated, Revoked or Replaced.
	EndHow string `json:"end_how,omitempty"`
	// RequestID and Approvers are set for a session that approvers let start.
	RequestID string   `json:"request_id,omitempty"`
	Approvers []string `json:"approvers,omitempty"`
	// BreakGlass marks an emergency session that skipped approval and hours.
	BreakGlass bool       `json:"break_glass,omitempty"`
	Extensions []Extended `json:"extensions,omitempty"`
	// ExtensionRequest is the id of the session's latest extension request, if any
	// (see extension_request.go).
	ExtensionRequest string `json:"extension_request,omitempty"`
	// ExpiringNoticed is set once the notify targets were told the session ends soon.
	ExpiringNoticed bool `json:"expiring_noticed,omitempty"`
}

// Extended is one extension of a session, as kept in its record. RequestID and
// Approvers are set for an extension that approvers let through.
type Extended struct {
	At            time.Time `json:"at"`
	Justification string    `json:"justification"`
	From          time.Time `json:"from"`
	To            time.Time `json:"to"`
	RequestID     string    `json:"request_id,omitempty"`
	Approvers     []string  `json:"approvers,omitempty"`
}

// SteppedUpAt is when the user last proved presence for the session: records from
// before it was kept say their start.
func (r *Record) SteppedUpAt() time.Time {
	if r.SteppedUp.IsZero() {
		return r.Start
	}
	return r.SteppedUp
}

// Started reports whether a scheduled session has begun.
func (r *Record) Started(now time.Time) bool { return !now.Before(r.Start) }

// Active reports whether the session still admits at the given time.
func (r *Record) Active(now time.Time) bool {
	return r.Ended.IsZero() && now.Before(r.Expires)
}

// ErrSessionNotFound is returned for a session id that names no session of the user.
var ErrSessionNotFound = errors.New("no such session")

// Records keeps session records and revocations in storage.
type Records struct {
	storage state.Store
}

// RecordsOn reads and writes the records of st, for tools that open the store
// themselves (such as caddy jit audit session reading recorded bodies).
func RecordsOn(st state.Store) *Records { return &Records{storage: st} }

func sessionKey(user, id string) string {
	return sessionFolder + state.Name(user) + "/" + id + ".json"
}

// validSessionID accepts only the ids this package makes, so an id from a form or an
// API call can never name another storage key.
func validSessionID(id string) bool {
	return random.IsToken(id, sessionIDBytes)
}

// Save writes a session record.
func (s *Records) Save(ctx context.Context, r *Record) error {
	return state.StoreJSON(ctx, s.storage, sessionKey(r.User, r.ID), r)
}

func ownerKey(id string) string { return ownerFolder + id + ".json" }

// sessionOwner is the index from a session id to its user, for operators who name
// a session by id alone.
type sessionOwner struct {
	User    string    `json:"user"`
	Expires time.Time `json:"expires"`
}

// SaveIndexed writes a session's index entry, then its record: for a new session (a
// session without a record is nothing, a record without an index entry could not be
// revoked by id) and for one whose expiry moved (pruning reads the entry's).
func (s *Records) SaveIndexed(ctx context.Context, r *Record) error {
	if err := state.StoreJSON(ctx, s.storage, ownerKey(r.ID), sessionOwner{User: r.User, Expires: r.Expires}); err != nil {
		return err
	}
	return s.Save(ctx, r)
}

// ByID reads a session record by id alone.
func (s *Records) ByID(ctx context.Context, id string) (*Record, error) {
	if !validSessionID(id) {
		return nil, ErrSessionNotFound
	}
	owner, err := state.Load[sessionOwner](ctx, s.storage, ownerKey(id), ErrSessionNotFound)
	if err != nil {
		return nil, err
	}
	return s.Load(ctx, owner.User, id)
}

// Filter selects sessions; empty fields select all.
type Filter struct {
	User string
	Role string
}

// Active lists the sessions active at the given time that pass the filter, soonest
// expiry first. Without a user it reads every session record: an operator's query,
// never on a request path.
func (s *Records) Active(ctx context.Context, f Filter, now time.Time) ([]*Record, error) {
	folder := strings.TrimSuffix(sessionFolder, "/")
	if f.User != "" {
		folder = sessionFolder + state.Name(f.User)
	}
	active, err := state.LoadAll(ctx, s.storage, folder, true, "sessions", func(r *Record) bool {
		return r.Active(now) && (f.Role == "" || r.Role == f.Role) && (f.User == "" || r.User == f.User)
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(active, func(a, b *Record) int { return a.Expires.Compare(b.Expires) })
	return active, nil
}

// Prune deletes session records and index entries of sessions that ended more than
// keep ago, so storage does not grow without bound. The audit log keeps their story.
func (s *Records) Prune(ctx context.Context, now time.Time, keep time.Duration) (int, error) {
	keys, err := state.RecordKeys(ctx, s.storage, ownerFolder, false, "sessions to prune")
	if err != nil {
		return 0, err
	}
	pruned := 0
	for _, key := range keys {
		var owner sessionOwner
		found, err := state.LoadJSON(ctx, s.storage, key, &owner)
		if err != nil || !found || now.Sub(owner.Expires) < keep {
			continue
		}
		id := strings.TrimSuffix(path.Base(key), ".json")
		if err := state.DeleteGone(ctx, s.storage, sessionKey(owner.User, id)); err != nil {
			return pruned, err
		}
		if err := s.storage.Delete(ctx, key); err != nil {
			return pruned, err
		}
		// Recorded bodies go with their session's record.
		if err := state.DeleteGone(ctx, s.storage, bodyFolder(id)); err != nil {
			return pruned, err
		}
		pruned++
	}
	return pruned, nil
}

// Load reads one of a user's session records.
func (s *Records) Load(ctx context.Context, user, id string) (*Record, error) {
	if !validSessionID(id) {
		return nil, ErrSessionNotFound
	}
	return state.Load[Record](ctx, s.storage, sessionKey(user, id), ErrSessionNotFound)
}

// OfUser lists a user's sessions that are active at the given time, soonest expiry first.
func (s *Records) OfUser(ctx context.Context, user string, now time.Time) ([]*Record, error) {
	return s.Active(ctx, Filter{User: user}, now)
}

// AuditFields are the fields that describe a session in every event about it.
func (r *Record) AuditFields() []zap.Field {
	return audit.Session{ID: r.ID, User: r.User, Role: r.Role, Justification: r.Justification, Ticket: r.Ticket,
		ClientIP: r.ClientIP, Expires: r.Expires, RequestID: r.RequestID, Approvers: r.Approvers, BreakGlass: r.BreakGlass}.Fields()
}
