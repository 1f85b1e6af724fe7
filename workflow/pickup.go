package workflow

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"time"

	"github.com/caddy-jit/caddy-jit/audit"
	"github.com/caddy-jit/caddy-jit/internal/random"
	"github.com/caddy-jit/caddy-jit/session"
	"github.com/caddy-jit/caddy-jit/state"
	"go.uber.org/zap"
)

// A request that waits (for approvers, or for its start) ends in a session that must
// reach the browser that passed the step-up, and no other. The request id travels in
// pages and notifications, so it proves nothing; the browser that asked holds a
// random pickup secret instead, of which storage keeps only the hash. The session's
// token is handed over once, to a browser presenting that secret.

// pickupSecretBytes is the entropy of a pickup secret: 256 bits.
const pickupSecretBytes = 32

// PickupSecretLength is the length of a pickup secret as a browser holds it.
var PickupSecretLength = base64.RawURLEncoding.EncodedLen(pickupSecretBytes)

// ErrPickupRefused is returned to a browser that presents a secret its request does
// not hold, or a request already handed over.
var ErrPickupRefused = errors.New("this browser did not ask for the request, or its session was already handed over")

func newPickupSecret() (secret, hash string) {
	secret = random.Token(pickupSecretBytes)
	return secret, pickupHash(secret)
}

func pickupHash(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// ValidPickupSecret reports whether s has the shape of a pickup secret, so that a
// malformed cookie is refused before any storage read.
func ValidPickupSecret(s string) bool {
	return random.IsToken(s, pickupSecretBytes)
}

// holdsPickup reports whether secret is the one the request's browser was given.
func (r *Request) holdsPickup(secret string) bool {
	if r.PickupHash == "" || !ValidPickupSecret(secret) {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(pickupHash(secret)), []byte(r.PickupHash)) == 1
}

// PickedUp is the answer to a pickup: the request as it stands, and, when its session
// was handed over now, the session and its token.
type PickedUp struct {
	Request *Request
	Record  *session.Record
	Token   string
	// Done is set when the browser's secret has nothing left to pick up (handed over,
	// denied, expired, or the session is over): the browser may forget it.
	Done bool
}

// Pickup hands the session of an approved request to the browser that asked for it,
// once. audience is the site asking: a request is picked up only where it was made.
// A request that still waits comes back without a token.
func (a *Workflow) Pickup(ctx context.Context, user, id, secret, audience, clientIP string) (*PickedUp, error) {
	if !validRequestID(id) || !ValidPickupSecret(secret) {
		return nil, ErrRequestNotFound
	}
	req, err := a.RequestFor(ctx, user, id)
	if err != nil {
		return nil, err
	}
	if req.Audience != audience {
		return nil, ErrRequestNotFound
	}
	if !req.holdsPickup(secret) || req.IsExtension() {
		// Refused without the lock: a wrong secret costs one read, not a lock.
		return nil, a.refusePickup(req, "wrong_secret", clientIP)
	}
	var out *PickedUp
	err = a.locks.With(ctx, a.store, requestLock(id), func() error {
		var err error
		out, err = a.pickupLocked(ctx, user, id, secret, audience, clientIP)
		return err
	})
	return out, err
}

func (a *Workflow) pickupLocked(ctx context.Context, user, id, secret, audience, clientIP string) (*PickedUp, error) {
	req, err := a.Requests.LoadRequest(ctx, id)
	if err != nil {
		return nil, err
	}
	if req.User != user || req.Audience != audience {
		return nil, ErrRequestNotFound
	}
	if !req.holdsPickup(secret) || req.IsExtension() {
		return nil, a.refusePickup(req, "wrong_secret", clientIP)
	}
	if !req.PickedUp.IsZero() {
		return &PickedUp{Request: req, Done: true}, nil
	}
	out := &PickedUp{Request: req}
	switch {
	case req.State == RequestDenied || req.State == RequestExpired:
		out.Done = true
		return out, nil
	case req.State != RequestApproved || req.SessionID == "":
		return out, nil
	}
	now := a.Now()
	rec, err := a.Records.Load(ctx, req.User, req.SessionID)
	if errors.Is(err, session.ErrSessionNotFound) {
		out.Done = true
		return out, nil
	}
	if err != nil {
		return nil, err
	}
	if !rec.Active(now) || a.Revocations.Revoked(rec.ID) {
		out.Done = true
		return out, nil
	}
	token, err := a.SignRecord(rec, now)
	if err != nil {
		return nil, err
	}
	req.PickedUp = now.UTC()
	if err := a.Requests.saveRequest(ctx, req); err != nil {
		return nil, err
	}
	a.Audit.Event(audit.EventPickedUp, append(requestFields(req), zap.String("session_id", rec.ID), zap.String("client_ip", clientIP))...)
	out.Record, out.Token, out.Done = rec, token, true
	return out, nil
}

func (a *Workflow) refusePickup(req *Request, reason, clientIP string) error {
	a.Audit.Event(audit.EventPickupRefused, zap.String("request_id", req.ID), zap.String("user", req.User),
		zap.String("role", req.Role), zap.String("reason", reason), zap.String("client_ip", clientIP))
	return ErrPickupRefused
}

// PickupExpiry is how long the asking browser keeps a request's pickup secret: until
// the latest moment the request's session could still be running.
func (r *Request) PickupExpiry() time.Time {
	from := r.Deadline
	if r.Start.After(from) {
		from = r.Start
	}
	return from.Add(r.Duration)
}

// One open request per user and role: a second would only confuse approvers, and the
// activation page shows the open one instead of its form. The pointer below names the
// user's latest request for a role; whether it is still open is read from the request
// itself, so nothing has to clear it when a request is decided or picked up.

func openRequestKey(user, role string) string {
	return state.Prefix + "open-requests/" + state.Name(user) + "/" + state.Name(role) + ".json"
}

func openRequestLock(user, role string) string {
	return state.Prefix + "open-request-locks/" + state.Name(user) + "/" + state.Name(role)
}

type openRequestRef struct {
	ID string `json:"request_id"`
}

// ReasonRequestOpen refuses a second request for a role while one is open.
const ReasonRequestOpen = "request_open"

// OpenRequest returns the user's open request for a role, or nil: one that waits for
// approvers or for a free place, or whose session waits for the asking browser.
func (a *Workflow) OpenRequest(ctx context.Context, user, role string) (*Request, error) {
	var ref openRequestRef
	found, err := state.LoadJSON(ctx, a.store, openRequestKey(user, role), &ref)
	if err != nil || !found {
		return nil, err
	}
	req, err := a.RequestFor(ctx, user, ref.ID)
	if errors.Is(err, ErrRequestNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	open, err := a.stillOpen(ctx, req)
	if err != nil || !open {
		return nil, err
	}
	return req, nil
}

func (a *Workflow) stillOpen(ctx context.Context, req *Request) (bool, error) {
	now := a.Now()
	switch {
	case req.State == RequestPending:
		return !req.overdue(now), nil
	case req.State != RequestApproved:
		return false, nil
	case req.SessionID == "":
		return true, nil // approved, waiting for a place under max_active
	case !req.PickedUp.IsZero() || req.PickupHash == "":
		return false, nil
	}
	rec, err := a.Records.Load(ctx, req.User, req.SessionID)
	if errors.Is(err, session.ErrSessionNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return rec.Active(now) && !a.Revocations.Revoked(rec.ID), nil
}

// requestOpenError refuses a second request while req is open.
func requestOpenError(req *Request) *ActivationError {
	return &ActivationError{Reason: ReasonRequestOpen,
		Message: "you already have an open request for " + req.Role + " (" + req.State + "): follow it instead of starting another"}
}
