package session

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/caddy-jit/caddy-jit/state"
)

// Revocations are stored one file each, in a folder per minute of revocation:
//
//	jit/revocations/<minute>/<session id>.<expiry, Unix seconds>.json
//
// The name alone says which session and until when, so an instance learns of new
// revocations by listing the last few minutes' folders, without reading a file or
// listing the ones before; at start it lists them all. The file holds who revoked
// and why, for people.
const revocationBucket = 60 // seconds

// syncOverlap is how many minutes before the last sync each sync looks back, so that
// a revocation stored by an instance whose clock runs behind is still found.
const syncOverlap = 2

// revocationSkew keeps a revocation past the end of its session by more than the
// clocks of the store and of any instance can differ: an instance whose clock runs
// behind still accepts the session's token until its own clock reaches the end.
const revocationSkew = 5 * time.Minute

// revocation is a session ended early, as stored.
type revocation struct {
	SessionID string    `json:"session_id"`
	User      string    `json:"user"`
	Expires   time.Time `json:"expires"`
	At        time.Time `json:"at"`
	By        string    `json:"by"`
	Reason    string    `json:"reason,omitempty"`
}

func bucketKey(minute int64) string {
	return revocationFolder + strconv.FormatInt(minute, 10)
}

func revocationKey(rev revocation) string {
	return bucketKey(rev.At.Unix()/revocationBucket) + "/" + rev.SessionID + "." + strconv.FormatInt(rev.Expires.Unix(), 10) + ".json"
}

// parseRevocationKey reads the session id and expiry from a revocation's key.
func parseRevocationKey(key string) (id string, expires int64, ok bool) {
	name, isJSON := strings.CutSuffix(path.Base(key), ".json")
	if !isJSON {
		return "", 0, false
	}
	id, exp, found := strings.Cut(name, ".")
	if !found || !validSessionID(id) {
		return "", 0, false
	}
	expires, err := strconv.ParseInt(exp, 10, 64)
	return id, expires, err == nil
}

// revoke stores the end of a session so that every instance refuses it.
func (s *Records) revoke(ctx context.Context, rev revocation) error {
	// Durable: on Redis with replicas, stored only once a replica has it, so that a
	// failover cannot bring the session back. It lasts as long as the session would
	// have, and revocationSkew more: a store with expiry then forgets it by itself.
	life := max(time.Until(rev.Expires), 0) + revocationSkew
	if err := state.StoreDurableJSON(ctx, s.storage, revocationKey(rev), rev, life); err != nil {
		return err
	}
	// Stored first: an instance told of it reads it at once; one that misses the
	// announcement reads it at its next sync.
	_ = state.Announce(ctx, s.storage, state.TopicRevocations, rev.SessionID)
	return nil
}

// LoadRevocations adds the stored revocations to set: all of them when since is zero,
// else those stored from a little before since on. It reads names only.
func (s *Records) LoadRevocations(ctx context.Context, set *Revocations, now, since time.Time) error {
	if since.IsZero() {
		buckets, err := s.buckets(ctx)
		if err != nil {
			return err
		}
		for _, b := range buckets {
			if err := s.loadBucket(ctx, set, b, now); err != nil {
				return err
			}
		}
	} else {
		for m := since.Unix()/revocationBucket - syncOverlap; m <= now.Unix()/revocationBucket+1; m++ {
			if err := s.loadBucket(ctx, set, bucketKey(m), now); err != nil {
				return err
			}
		}
	}
	set.Prune(now)
	return nil
}

// buckets lists the revocation folders.
func (s *Records) buckets(ctx context.Context) ([]string, error) {
	keys, err := s.storage.List(ctx, strings.TrimSuffix(revocationFolder, "/"), false)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing revocations: %w", err)
	}
	buckets := keys[:0]
	for _, key := range keys {
		// Anything else in the folder, such as the temporary file of a store in
		// progress, is not a bucket.
		if _, err := strconv.ParseInt(path.Base(key), 10, 64); err == nil {
			buckets = append(buckets, key)
		}
	}
	return buckets, nil
}

func (s *Records) loadBucket(ctx context.Context, set *Revocations, bucket string, now time.Time) error {
	keys, err := s.storage.List(ctx, bucket, false)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("listing revocations: %w", err)
	}
	unix := now.Unix()
	for _, key := range keys {
		id, expires, ok := parseRevocationKey(key)
		if ok && expires > unix && !set.Revoked(id) {
			set.Add(id, time.Unix(expires, 0))
		}
	}
	return nil
}

// pruneRevocations deletes revocations of sessions that have expired anyway, and
// the folders they leave empty; a store with expiry has done so by itself.
func (s *Records) pruneRevocations(ctx context.Context, now time.Time) error {
	if state.Forgets(s.storage) {
		return nil
	}
	buckets, err := s.buckets(ctx)
	if err != nil {
		return err
	}
	for _, bucket := range buckets {
		keys, err := s.storage.List(ctx, bucket, false)
		if err != nil {
			continue
		}
		live := 0
		for _, key := range keys {
			if _, expires, ok := parseRevocationKey(key); ok && expires <= now.Unix() {
				_ = s.storage.Delete(ctx, key)
			} else {
				live++
			}
		}
		if live == 0 {
			_ = s.storage.Delete(ctx, bucket)
		}
	}
	return nil
}
