package workflow

import (
	"context"
	"encoding/base64"
	"errors"
	"io/fs"
	"slices"
	"strings"
	"time"

	"github.com/caddy-jit/caddy-jit/policy"
	"github.com/caddy-jit/caddy-jit/state"
)

// The request index finds the open requests without reading every request ever
// stored: decided requests stay in storage for requestKeep (thousands of them on a busy
// site), yet the approvals page and the 2 s sweep of every instance need only the few
// that are still open. An open request has one small marker key, next to the requests
// in the same storage, under its state and its role:
//
//	jit/request-index/pending/<role>/<id>.json  waits for approvers
//	jit/request-index/waiting/<role>/<id>.json  approved, its session not started yet
//
// saveRequest keeps the markers right on every save. The folder is not named
// "requests-…": storages that list by string prefix would then show the markers
// among the requests.
const (
	requestIndexFolder = state.Prefix + "request-index/"
	// requestIndexBuilt marks a storage whose open requests all have markers, built
	// once from the requests an older version stored without any.
	requestIndexBuilt = requestIndexFolder + "built.json"
	requestIndexLock  = state.Prefix + "request-index-build"
	// orphanMarkerAge is how old a marker whose request is missing must be before
	// prune deletes it: a marker is written just before its new request, so a younger
	// one may belong to a request being saved at this moment.
	orphanMarkerAge = time.Hour
)

// The states of the index: the open states of a request.
const (
	indexPending = "pending"
	indexWaiting = "waiting"
)

var indexStates = []string{indexPending, indexWaiting}

// indexState is the index a request belongs in, or "" once it is closed (denied,
// expired, or approved with its session started), which it stays for good.
func indexState(r *Request) string {
	switch {
	case r.State == RequestPending:
		return indexPending
	case r.State == RequestApproved && r.SessionID == "":
		return indexWaiting
	}
	return ""
}

func indexFolder(reqState string) string { return requestIndexFolder + reqState + "/" }

func indexKey(reqState, role, id string) string {
	return indexFolder(reqState) + state.Name(role) + "/" + id + ".json"
}

// indexMarker is a marker's content; Created lets prune tell a marker left behind by
// a crash from one whose request is being written now.
type indexMarker struct {
	ID      string    `json:"request_id"`
	Created time.Time `json:"created"`
}

// indexEntry is one marker as listed: a request's id and role.
type indexEntry struct {
	key, role, id string
}

// parseIndexKey reads a marker key of the given state; ok is false for anything
// else that a storage may list there.
func parseIndexKey(reqState, key string) (indexEntry, bool) {
	rest, ok := strings.CutPrefix(key, indexFolder(reqState))
	if !ok {
		return indexEntry{}, false
	}
	enc, file, ok := strings.Cut(rest, "/")
	id, isJSON := strings.CutSuffix(file, ".json")
	if !ok || !isJSON || !validRequestID(id) {
		return indexEntry{}, false
	}
	role, err := base64.RawURLEncoding.DecodeString(enc)
	if err != nil || len(role) == 0 {
		return indexEntry{}, false
	}
	return indexEntry{key: key, role: string(role), id: id}, true
}

// indexed lists the markers of one state, every role.
func (s *Requests) indexed(ctx context.Context, reqState string) ([]indexEntry, error) {
	keys, err := state.RecordKeys(ctx, s.storage, indexFolder(reqState), true, "the "+reqState+" request index")
	if err != nil {
		return nil, err
	}
	var out []indexEntry
	for _, key := range keys {
		if e, ok := parseIndexKey(reqState, key); ok {
			out = append(out, e)
		}
	}
	return out, nil
}

// writeIndex makes the stored markers of r agree with its state. The marker of an open
// state is written before the request (see saveRequest); the others are deleted.
func (s *Requests) writeIndex(ctx context.Context, r *Request) error {
	if reqState := indexState(r); reqState != "" {
		return state.StoreJSON(ctx, s.storage, indexKey(reqState, r.Role, r.ID), indexMarker{ID: r.ID, Created: r.Created})
	}
	return nil
}

// dropStaleMarkers deletes the markers of r in every state but its own.
func (s *Requests) dropStaleMarkers(ctx context.Context, r *Request) error {
	keep := indexState(r)
	for _, reqState := range indexStates {
		if reqState == keep {
			continue
		}
		if err := s.deleteMarker(ctx, indexKey(reqState, r.Role, r.ID)); err != nil {
			return err
		}
	}
	return nil
}

func (s *Requests) deleteMarker(ctx context.Context, key string) error {
	if err := s.storage.Delete(ctx, key); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// openRequests reads the requests the index lists in the given states whose role
// passes want (nil: every role), oldest first. Only those requests are read. A marker
// whose request is closed (a crash between saving it and dropping the marker) is
// dropped here; one whose request is missing is left to prune, as its request may be
// being written right now.
func (s *Requests) openRequests(ctx context.Context, states []string, want func(role string) bool) ([]*Request, error) {
	seen := map[string]bool{}
	var out []*Request
	for _, reqState := range states {
		entries, err := s.indexed(ctx, reqState)
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			if seen[e.id] || (want != nil && !want(e.role)) {
				continue
			}
			r, err := s.LoadRequest(ctx, e.id)
			if errors.Is(err, ErrRequestNotFound) {
				continue
			}
			if err != nil {
				return nil, err
			}
			if r.Role != e.role {
				// A marker filed under another role names no request of this one.
				continue
			}
			seen[e.id] = true
			if indexState(r) == "" {
				// Closed for good: no save can reopen it, so the marker can go.
				if err := s.dropStaleMarkers(ctx, r); err != nil {
					return nil, err
				}
				continue
			}
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(a, b *Request) int { return a.Created.Compare(b.Created) })
	return out, nil
}

// ensureRequestIndex builds the index once per storage, for the requests that a
// version without it stored: without this, an upgrade would hide their open requests
// from approvers and the sweep. One instance of a cluster builds it, under a storage
// lock; the others wait for it, then find it built.
func (a *Workflow) ensureRequestIndex(ctx context.Context) error {
	s := a.Requests
	if s.storage.Exists(ctx, requestIndexBuilt) {
		return nil
	}
	return a.locks.With(ctx, s.storage, requestIndexLock, func() error {
		var built map[string]time.Time
		found, err := state.LoadJSON(ctx, s.storage, requestIndexBuilt, &built)
		if err != nil || found {
			return err
		}
		all, err := s.All(ctx)
		if err != nil {
			return err
		}
		for _, r := range all {
			// A request closed since it was listed may get a marker here; readers
			// drop it when they find the request closed.
			if err := s.writeIndex(ctx, r); err != nil {
				return err
			}
		}
		return state.StoreJSON(ctx, s.storage, requestIndexBuilt, map[string]time.Time{"built": a.Now().UTC()})
	})
}

// pruneIndex deletes the markers that name no open request: those of closed requests,
// and those whose request has been missing for longer than orphanMarkerAge. all is
// every stored request, as prune has just read them.
func (s *Requests) pruneIndex(ctx context.Context, all []*Request, now time.Time) error {
	byID := make(map[string]*Request, len(all))
	for _, r := range all {
		byID[r.ID] = r
	}
	for _, reqState := range indexStates {
		entries, err := s.indexed(ctx, reqState)
		if err != nil {
			return err
		}
		for _, e := range entries {
			if r := byID[e.id]; r != nil {
				// Closed is for good, and a role never changes. (An open request's
				// marker in another open state is left alone: the listing may be older
				// than a change of state whose new marker this is.)
				if indexState(r) == "" || r.Role != e.role {
					if err := s.deleteMarker(ctx, e.key); err != nil {
						return err
					}
				}
				continue
			}
			// Missing from the listing: it may have been stored since. Ask again.
			if _, err := s.LoadRequest(ctx, e.id); !errors.Is(err, ErrRequestNotFound) {
				if err != nil {
					return err
				}
				continue
			}
			var m indexMarker
			found, err := state.LoadJSON(ctx, s.storage, e.key, &m)
			if err != nil && !found {
				return err
			}
			// A marker that does not decode names nothing that could be being written.
			if found && (err != nil || now.Sub(m.Created) > orphanMarkerAge) {
				if err := s.deleteMarker(ctx, e.key); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// ApprovesRole reports whether approver is among the role's approvers, whose request
// ever it may be. A role without approval has none.
func ApprovesRole(role *policy.Role, approver policy.Caller) bool {
	// MayApprove also refuses self-approval; no requester has an empty name (the gate
	// refuses an empty identity), so with "" only the approver check remains.
	return role != nil && role.Approval != nil && approver.User != "" && role.Approval.MayApprove(approver, "").Allowed
}
