package workflow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"time"

	"github.com/caddy-jit/caddy-jit/policy"
	"github.com/caddy-jit/caddy-jit/session"
	"github.com/caddy-jit/caddy-jit/state"
)

// withPlace runs fn, which stores session id's claim on the role over [start, end),
// once the role's max_active allows it beside every other session of the role,
// running or scheduled (an extension's own session, id, is left out). Counting and
// storing happen under the role's lock, so that two claims at once, on any instance,
// cannot both take the last place. New sessions, scheduled starts, approved requests
// and extensions all claim their time through here. A refusal is an *ActivationError.
//
// The lock alone would let two instances both win if one stalled past the lock's
// lease; so each claim is also written, before fn, into the role's place record with
// one compare-and-set (state.Atomic.Swap) against the record as read. Of two writers
// that read the same record, one writes; and a writer that reads after another's
// claim counts it, though that session is not stored yet (see placeRecord).
func (a *Workflow) withPlace(ctx context.Context, role *policy.Role, user, id string, start, end time.Time, extends bool, now time.Time, fn func() error) error {
	if role.MaxActive <= 0 {
		return fn()
	}
	return a.locks.With(ctx, a.store, roleLock(role.Name), func() error {
		raw, places, err := a.loadPlaces(ctx, role.Name)
		if err != nil {
			return err
		}
		held, err := a.Records.Active(ctx, session.Filter{Role: role.Name}, now)
		if err != nil {
			return err
		}
		spans := make([]policy.Span, 0, len(held))
		for _, r := range held {
			if !extends || r.ID != id {
				spans = append(spans, policy.Span{Start: r.Start, End: r.Expires})
			}
		}
		places.Claims = slices.DeleteFunc(places.Claims, func(c placeClaim) bool {
			return c.ID == id || now.Sub(c.At) > claimPending || a.claimStored(ctx, c)
		})
		for _, c := range places.Claims {
			spans = append(spans, policy.Span{Start: c.Start, End: c.End})
		}
		if d := role.CheckPlace(spans, start, end); !d.Allowed {
			return &ActivationError{Reason: string(d.Reason), Message: d.Message}
		}
		places.Claims = append(places.Claims, placeClaim{User: user, ID: id, Start: start, End: end, At: now})
		next, err := json.Marshal(places)
		if err != nil {
			return err
		}
		claimed, err := state.AtomicOf(a.store).Swap(ctx, placesKey(role.Name), raw, next)
		if err != nil {
			return fmt.Errorf("claiming a place of role %s: %w", role.Name, err)
		}
		if !claimed {
			return &ActivationError{Reason: ReasonPlaceContended, Message: "another instance took a place of the role " + role.Name + " at the same moment: nothing was started; try again"}
		}
		if err := fn(); err != nil {
			// Nothing was stored: give the place back, if no one claimed since.
			places.Claims = places.Claims[:len(places.Claims)-1]
			if back, merr := json.Marshal(places); merr == nil {
				_, _ = state.AtomicOf(a.store).Swap(context.WithoutCancel(ctx), placesKey(role.Name), next, back)
			}
			return err
		}
		return nil
	})
}

// claimPending is how long a claim counts before its session is found stored: far
// longer than storing it takes.
const claimPending = time.Minute

// ReasonPlaceContended refuses a claim on a place of a role that another instance
// claimed at the same moment (see withPlace); trying again counts it.
const ReasonPlaceContended = "place_contended"

// placeRecord holds a role's latest claims on its max_active places.
type placeRecord struct {
	Claims []placeClaim `json:"claims,omitempty"`
}

type placeClaim struct {
	User  string    `json:"user"`
	ID    string    `json:"id"`
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
	At    time.Time `json:"at"`
}

// claimStored reports whether the session of a claim is stored as claimed, or has
// ended: from then on it counts as its record says (running, extended, revoked or
// ended), and the claim no longer does. A claim whose session cannot be read yet keeps
// counting, so that a place is never given twice.
func (a *Workflow) claimStored(ctx context.Context, c placeClaim) bool {
	rec, err := a.Records.Load(ctx, c.User, c.ID)
	return err == nil && (!rec.Ended.IsZero() || !rec.Expires.Before(c.End))
}

func placesKey(role string) string { return state.Prefix + "role-places/" + state.Name(role) + ".json" }

// loadPlaces reads the role's place record and its bytes as stored (nil: none yet).
func (a *Workflow) loadPlaces(ctx context.Context, role string) ([]byte, placeRecord, error) {
	var p placeRecord
	raw, err := a.store.Load(ctx, placesKey(role))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, p, nil
	}
	if err != nil {
		return nil, p, fmt.Errorf("loading the places of role %s: %w", role, err)
	}
	if err := json.Unmarshal(raw, &p); err != nil {
		return nil, p, fmt.Errorf("decoding the places of role %s: %w", role, err)
	}
	return raw, p, nil
}
