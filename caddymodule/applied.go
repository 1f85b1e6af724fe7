package caddymodule

import (
	"context"
	"errors"
	"io/fs"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/caddy-jit/caddy-jit/internal/adminapi"
	"github.com/caddy-jit/caddy-jit/state"
)

// A revocation is in force everywhere only once every instance has read it. On a store
// that announces (Redis), each instance says which announced revocations it has read
// (state.TopicRevocationsApplied), and keeps a presence record that expires unless
// renewed, so that the instance that revoked can wait until every live instance
// refuses the session before it answers the operator: "applied on 3 of 3 instances".
// On a store that does not announce, instances read revocations on their interval and
// no one waits.

const (
	presenceFolder = state.Prefix + "instances/"
	// presenceMissed is how many sync intervals an instance may miss before it no
	// longer counts as live.
	presenceMissed = 3
	// presenceLeast bounds a presence's life from below, for short sync intervals.
	presenceLeast = 3 * time.Second
	// appliedWait bounds how long a revocation waits for the other instances.
	appliedWait = 2 * time.Second
	// appliedPoll is how often a waiting revocation looks at the live instances again.
	appliedPoll = 50 * time.Millisecond
	// ackMemory is how long an instance's word that it applied a revocation is kept.
	ackMemory = time.Minute
)

// presence is an instance's record that it is running and reading revocations.
type presence struct {
	Instance string    `json:"instance"`
	At       time.Time `json:"at"`
}

func presenceKey(instance string) string { return presenceFolder + state.Name(instance) + ".json" }

// acks are the instances' words that they applied announced revocations.
type acks struct {
	mu    sync.Mutex
	heard map[string]map[string]time.Time // session id → instance → when heard
	// changed is closed, and replaced, whenever a word arrives.
	changed chan struct{}
}

func (k *acks) add(instance, sessionID string, at time.Time) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.heard == nil {
		k.heard = make(map[string]map[string]time.Time)
	}
	for id, by := range k.heard {
		for inst, when := range by {
			if at.Sub(when) > ackMemory {
				delete(by, inst)
			}
		}
		if len(by) == 0 {
			delete(k.heard, id)
		}
	}
	if k.heard[sessionID] == nil {
		k.heard[sessionID] = make(map[string]time.Time)
	}
	k.heard[sessionID][instance] = at
	if k.changed != nil {
		close(k.changed)
	}
	k.changed = make(chan struct{})
}

// missing returns the instances that have not applied every one of ids, and a channel
// closed when another word arrives.
func (k *acks) missing(instances, ids []string) ([]string, <-chan struct{}) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.changed == nil {
		k.changed = make(chan struct{})
	}
	var out []string
	for _, inst := range instances {
		for _, id := range ids {
			if _, ok := k.heard[id][inst]; !ok {
				out = append(out, inst)
				break
			}
		}
	}
	return out, k.changed
}

// listenApplied collects the other instances' words until ctx ends.
func (s *sharedState) listenApplied(ctx context.Context, a state.Announcer) {
	heard := a.Listen(ctx, state.TopicRevocationsApplied)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case m := <-heard:
				if instance, id, ok := strings.Cut(m, " "); ok {
					s.acks.add(instance, id, time.Now())
				}
			}
		}
	}()
}

// sayApplied tells the other instances which of the announced revocations ids this
// instance now refuses.
func (s *sharedState) sayApplied(ctx context.Context, ids []string) {
	for _, id := range ids {
		if s.state.Revocations.Revoked(id) {
			_ = state.Announce(ctx, s.storage, state.TopicRevocationsApplied, s.instance+" "+id)
		}
	}
}

// renewPresence keeps this instance among the live ones for a few sync intervals.
func (s *sharedState) renewPresence(ctx context.Context, interval time.Duration, at time.Time) error {
	return state.StoreJSONFor(ctx, s.storage, presenceKey(s.instance), presence{Instance: s.instance, At: at.UTC()},
		max(presenceMissed*interval, presenceLeast))
}

// liveInstances lists the other instances whose presence is current.
func (s *sharedState) liveInstances(ctx context.Context, at time.Time, interval time.Duration) ([]string, error) {
	keys, err := state.RecordKeys(ctx, s.storage, presenceFolder, false, "instances")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, key := range keys {
		var p presence
		found, err := state.LoadJSON(ctx, s.storage, key, &p)
		if errors.Is(err, fs.ErrNotExist) || !found {
			continue
		}
		if err != nil {
			return nil, err
		}
		if p.Instance != s.instance && key == presenceKey(p.Instance) && at.Sub(p.At) <= max(presenceMissed*interval, presenceLeast) {
			out = append(out, p.Instance)
		}
	}
	slices.Sort(out)
	return out, nil
}

// awaitApplied waits, up to appliedWait, until every other live instance has applied
// the revocations of ids, and says how many did (this one included); nil where the
// store does not announce, or nothing was revoked.
func (s *sharedState) awaitApplied(ctx context.Context, ids []string) *adminapi.Applied {
	if _, ok := s.storage.(state.Announcer); !ok || len(ids) == 0 {
		return nil
	}
	interval := s.settings.Load().interval
	deadline := time.Now().Add(appliedWait)
	for {
		live, err := s.liveInstances(ctx, time.Now(), interval)
		if err != nil {
			return &adminapi.Applied{Instances: 1, Confirmed: 1, Error: "listing the instances: " + err.Error()}
		}
		missing, changed := s.acks.missing(live, ids)
		if len(missing) == 0 || !time.Now().Before(deadline) {
			return &adminapi.Applied{Instances: len(live) + 1, Confirmed: len(live) + 1 - len(missing), Missing: missing}
		}
		select {
		case <-ctx.Done():
			return &adminapi.Applied{Instances: len(live) + 1, Confirmed: len(live) + 1 - len(missing), Missing: missing, Error: ctx.Err().Error()}
		case <-changed:
		case <-time.After(min(appliedPoll, time.Until(deadline))):
		}
	}
}

// leave deletes this instance's presence, so that no revocation waits for it.
func (s *sharedState) leave(ctx context.Context) {
	if _, ok := s.storage.(state.Announcer); ok {
		_ = state.DeleteGone(ctx, s.storage, presenceKey(s.instance))
	}
}
