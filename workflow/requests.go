package workflow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"time"

	"github.com/caddy-jit/caddy-jit/internal/random"
	"github.com/caddy-jit/caddy-jit/state"
)

// The states of an activation request.
const (
	// RequestPending waits for approvals.
	RequestPending = "pending"
	// RequestApproved has every approval it needs; its session is started, or waits
	// for a free place under the role's max_active.
	RequestApproved = "approved"
	// RequestDenied was denied by an approver.
	RequestDenied = "denied"
	// RequestExpired was not decided before its deadline.
	RequestExpired = "expired"
)

// Request is an activation that waits for approvers. It lives in storage, so that any
// instance of a cluster can show and decide it.
type Request struct {
	ID            string        `json:"request_id"`
	User          string        `json:"user"`
	Groups        []string      `json:"groups,omitempty"`
	Role          string        `json:"role"`
	Audience      string        `json:"audience"`
	Justification string        `json:"justification"`
	Ticket        string        `json:"ticket,omitempty"`
	ClientIP      string        `json:"client_ip,omitempty"`
	UserAgent     string        `json:"user_agent,omitempty"`
	Duration      time.Duration `json:"duration"`
	// Start is the scheduled start; zero starts the session as soon as it is approved.
	Start time.Time `json:"start,omitzero"`
	// Return is the path the requester goes back to once the session starts.
	Return  string    `json:"return,omitempty"`
	Created time.Time `json:"created"`
	// Deadline is when the request expires unless decided.
	Deadline  time.Time  `json:"deadline"`
	Needed    int        `json:"approvals_needed"`
	Decisions []Decision `json:"decisions,omitempty"`
	State     string     `json:"state"`
	// SessionID is the session started from the request, once approved.
	SessionID string `json:"session_id,omitempty"`
	// WaitingForPlace is set while an approved request waits for a place under the
	// role's max_active.
	WaitingForPlace bool      `json:"waiting_for_place,omitempty"`
	Decided         time.Time `json:"decided,omitzero"`
	// Kind is RequestExtension for more time on the running session ExtendsSession,
	// to end at NewEnd (see extension.go); empty for an activation. Refused says why
	// an approved extension could not be applied.
	Kind           string    `json:"kind,omitempty"`
	ExtendsSession string    `json:"extends_session,omitempty"`
	NewEnd         time.Time `json:"new_end,omitzero"`
	Refused        string    `json:"refused,omitempty"`
	// PickupHash is the SHA-256 of the secret held by the browser that asked: only
	// that browser receives the session, once (see pickup.go). PickedUp is when it did.
	PickupHash string    `json:"pickup_sha256,omitempty"`
	PickedUp   time.Time `json:"picked_up,omitzero"`
	// Methods and SteppedUp are how and when the requester proved presence: the
	// session an approval starts carries them (amr, auth_time).
	Methods   []string  `json:"amr,omitempty"`
	SteppedUp time.Time `json:"stepped_up,omitzero"`

	// stored is the record as this copy was read or last saved: a save is made only
	// if the store still holds it (see saveRequest).
	stored []byte
}

// Decision is one approver's answer to a request.
type Decision struct {
	By      string    `json:"by"`
	Approve bool      `json:"approve"`
	Comment string    `json:"comment,omitempty"`
	At      time.Time `json:"at"`
	// Methods is how the approver proved presence (amr).
	Methods []string `json:"amr,omitempty"`
}

// Approvers lists who approved the request, in order.
func (r *Request) Approvers() []string {
	var by []string
	for _, d := range r.Decisions {
		if d.Approve {
			by = append(by, d.By)
		}
	}
	return by
}

// Approvals counts the approvals given so far.
func (r *Request) Approvals() int { return len(r.Approvers()) }

// DecidedBy reports whether user has already answered the request.
func (r *Request) DecidedBy(user string) bool {
	return slices.ContainsFunc(r.Decisions, func(d Decision) bool { return d.By == user })
}

// Denial returns the decision that denied the request, if any.
func (r *Request) Denial() (Decision, bool) {
	for _, d := range r.Decisions {
		if !d.Approve {
			return d, true
		}
	}
	return Decision{}, false
}

// overdue reports whether a pending request has passed its deadline.
func (r *Request) overdue(now time.Time) bool {
	return r.State == RequestPending && !now.Before(r.Deadline)
}

// ErrRequestNotFound is returned for an id that names no request.
var ErrRequestNotFound = errors.New("no such request")

// ErrRequestChanged refuses a change to a request that another instance changed since
// it was read: nothing was written; trying again reads the new state.
var ErrRequestChanged = errors.New("the request changed meanwhile on another instance; nothing was saved: try again")

const (
	requestFolder = state.Prefix + "requests/"
	// requestKeep is how long a decided request stays in storage.
	requestKeep = 7 * 24 * time.Hour
)

// Requests keeps approval and extension requests in the store, with their index.
type Requests struct {
	storage state.Store
}

// A request's id has the shape of a session's: 16 random bytes in base64url.
const requestIDBytes = 16

func newRequestID() string { return random.Token(requestIDBytes) }

// validRequestID accepts only the ids this package makes, so an id from a form or a
// URL can never name another storage key.
func validRequestID(id string) bool { return random.IsToken(id, requestIDBytes) }

func requestKey(id string) string { return requestFolder + id + ".json" }

func requestLock(id string) string { return state.Prefix + "request-locks/" + id }

// saveRequest writes a request and keeps the request index right (request_index.go):
// every save of a request goes through here. The marker of an open state is written
// before the request, so that a crash leaves at worst a marker without its request
// (prune drops it), never an open request that the index misses.
//
// The write is fenced by what was read: it is made only if the record is still the
// one this copy came from (nothing, for a new request). Every change to a request is
// made under its lock, so a refusal here means the lock was lost under the writer (an
// instance stalled past the lock's lease): the change is refused rather than
// overwriting a decision made meanwhile, so that two instances can never both decide.
func (s *Requests) saveRequest(ctx context.Context, r *Request) error {
	if err := s.writeIndex(ctx, r); err != nil {
		return err
	}
	raw, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encoding request %s: %w", r.ID, err)
	}
	saved, err := state.AtomicOf(s.storage).Swap(ctx, requestKey(r.ID), r.stored, raw)
	if err != nil {
		return fmt.Errorf("writing request %s to storage: %w", r.ID, err)
	}
	if !saved {
		return fmt.Errorf("%w: request %s", ErrRequestChanged, r.ID)
	}
	r.stored = raw
	// The request is saved: failing now would report a decision as lost that is
	// recorded. A marker left in a state the request has left costs a reader one load
	// and is dropped once the request closes (by the reader that finds it closed, or
	// by prune).
	_ = s.dropStaleMarkers(ctx, r)
	return nil
}

// LoadRequest reads one request.
func (s *Requests) LoadRequest(ctx context.Context, id string) (*Request, error) {
	if !validRequestID(id) {
		return nil, ErrRequestNotFound
	}
	raw, err := s.storage.Load(ctx, requestKey(id))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrRequestNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("loading request %s from storage: %w", id, err)
	}
	r := &Request{stored: raw}
	if err := json.Unmarshal(raw, r); err != nil {
		return nil, fmt.Errorf("decoding request %s from storage: %w", id, err)
	}
	return r, nil
}

// Requests lists every request in storage, oldest first.
func (s *Requests) All(ctx context.Context) ([]*Request, error) {
	out, err := state.LoadAll[Request](ctx, s.storage, requestFolder, false, "requests", nil)
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b *Request) int { return a.Created.Compare(b.Created) })
	return out, nil
}

// pruneRequests deletes requests decided (or expired) more than requestKeep ago, and
// the index markers that name no open request. It reads every request: it runs on one
// instance at a time, every few minutes, unlike the readers of the index.
func (s *Requests) prune(ctx context.Context, now time.Time) error {
	all, err := s.All(ctx)
	if err != nil {
		return err
	}
	for _, r := range all {
		end := r.Decided
		if end.IsZero() {
			end = r.Deadline
		}
		if r.State != RequestPending && now.Sub(end) > requestKeep {
			if err := s.storage.Delete(ctx, requestKey(r.ID)); err != nil {
				return err
			}
		}
	}
	return s.pruneIndex(ctx, all, now)
}
