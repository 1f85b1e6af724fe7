// Package state owns how caddy-jit keeps durable data: the Store every package
// persists through, the "jit/" key space, JSON records, locks on one name held both in
// process and in the store, and the atomic decisions (Atomic) that instances racing on
// one key must never both win.
//
// A Store is Caddy's configured storage (any certmagic.Storage satisfies it) or Redis
// (package redisstate); several Caddy instances sharing one become one cluster. A store
// that can do more natively says so through the optional interfaces here: Atomic
// (single-step decisions and expiry), Announcer (pub/sub) and Durable (replicated
// writes); for any other, the helpers fall back to the store's locks and intervals.
package state

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"
	"time"
)

// Store is the durable key-value store with locks that caddy-jit persists through. Its
// methods mean what certmagic.Storage's mean: Load, Delete and List of a missing key
// return an error that wraps fs.ErrNotExist; List of a folder returns the keys under it;
// Lock blocks until the named lock is held, across every instance sharing the store.
type Store interface {
	Load(ctx context.Context, key string) ([]byte, error)
	Store(ctx context.Context, key string, value []byte) error
	Delete(ctx context.Context, key string) error
	Exists(ctx context.Context, key string) bool
	List(ctx context.Context, path string, recursive bool) ([]string, error)
	Lock(ctx context.Context, name string) error
	Unlock(ctx context.Context, name string) error
}

// Announcer is a Store that can tell every instance at once that something changed,
// such as Redis with its pub/sub; a Store without it is read on an interval only.
// Announcements are hints: an instance that misses one catches up at its next
// interval, so they never replace the store's records.
type Announcer interface {
	// Announce sends message to every Listen of topic, on every instance.
	Announce(ctx context.Context, topic, message string) error
	// Listen delivers the messages announced on topic, in order, until ctx ends. A
	// listener that falls ListenBacklog messages behind misses the newer ones.
	Listen(ctx context.Context, topic string) <-chan string
}

// ListenBacklog is how many announcements a listener may fall behind by.
const ListenBacklog = 1024

// The topics instances announce on.
const (
	// TopicRevocations carries the id of a session just revoked: instances then read
	// the revocations at once instead of at their next sync.
	TopicRevocations = "revocations"
	// TopicRevocationsApplied carries "INSTANCE SESSION-ID" from each instance that
	// has read a revocation announced, so that the one that revoked can tell the
	// operator once every instance refuses the session.
	TopicRevocationsApplied = "revocations-applied"
)

// Announce sends message to the other instances sharing st on topic, if st can; an
// error is not the caller's concern (the interval catches up), so it is returned only
// to log.
func Announce(ctx context.Context, st Store, topic, message string) error {
	if a, ok := st.(Announcer); ok {
		return a.Announce(ctx, topic, message)
	}
	return nil
}

// Durable is a Store that can confirm that a write reached a replica (Redis WAIT), so
// that losing the primary cannot lose it.
type Durable interface {
	// StoreDurable writes value at key (for ttl, as Atomic.StoreFor, when positive),
	// and returns only once a replica has it too (when the store has replicas);
	// otherwise an error, though the primary has it.
	StoreDurable(ctx context.Context, key string, value []byte, ttl time.Duration) error
}

// StoreDurableJSON writes v as the record at key for ttl (see StoreJSONFor), confirmed
// by a replica where st can confirm it (see Durable); elsewhere as StoreJSONFor.
func StoreDurableJSON(ctx context.Context, st Store, key string, v any, ttl time.Duration) error {
	d, ok := st.(Durable)
	if !ok {
		return StoreJSONFor(ctx, st, key, v, ttl)
	}
	raw, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encoding %s: %w", key, err)
	}
	if err := d.StoreDurable(ctx, key, raw, ttl); err != nil {
		return fmt.Errorf("writing %s to storage: %w", key, err)
	}
	return nil
}

// Prefix starts every key caddy-jit stores.
const Prefix = "jit/"

// Name turns a user-chosen string into one safe key segment, so that no name can climb
// out of its folder or collide with another one.
func Name(s string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(s))
}

// LoadJSON reads the record at key into v; a missing key is found == false, not an
// error.
func LoadJSON(ctx context.Context, st Store, key string, v any) (found bool, err error) {
	raw, err := st.Load(ctx, key)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("loading %s from storage: %w", key, err)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return true, fmt.Errorf("decoding %s from storage: %w", key, err)
	}
	return true, nil
}

// Load reads the record at key as a new T; a missing record is the error missing,
// which names what the caller looked for.
func Load[T any](ctx context.Context, st Store, key string, missing error) (*T, error) {
	var v T
	found, err := LoadJSON(ctx, st, key, &v)
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, missing
	}
	return &v, nil
}

// StoreJSON writes v as the record at key.
func StoreJSON(ctx context.Context, st Store, key string, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encoding %s: %w", key, err)
	}
	if err := st.Store(ctx, key, raw); err != nil {
		return fmt.Errorf("writing %s to storage: %w", key, err)
	}
	return nil
}

// IsRecordKey tells our records from the temporary files that a store may list while
// a Store is in progress (certmagic's file storage writes a numbered temp file, then
// renames it).
func IsRecordKey(key string) bool { return strings.HasSuffix(key, ".json") }

// RecordKeys lists the records (*.json) under folder, skipping the temporary files a
// store may show while a Store is in progress; a folder that does not exist holds
// none. what names the records in an error.
func RecordKeys(ctx context.Context, st Store, folder string, recursive bool, what string) ([]string, error) {
	keys, err := st.List(ctx, strings.TrimSuffix(folder, "/"), recursive)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", what, err)
	}
	return slices.DeleteFunc(keys, func(k string) bool { return !IsRecordKey(k) }), nil
}

// LoadAll reads every record of type T under folder that keep accepts (nil keeps
// all); a record that vanished after the listing is passed over, one that does not
// decode fails the read. what names the records in an error.
func LoadAll[T any](ctx context.Context, st Store, folder string, recursive bool, what string, keep func(*T) bool) ([]*T, error) {
	keys, err := RecordKeys(ctx, st, folder, recursive, what)
	if err != nil {
		return nil, err
	}
	var out []*T
	for _, key := range keys {
		v := new(T)
		found, err := LoadJSON(ctx, st, key, v)
		if err != nil {
			return nil, err
		}
		if found && (keep == nil || keep(v)) {
			out = append(out, v)
		}
	}
	return out, nil
}

// DeleteGone deletes key and reports an error only if the record is still there: a
// record another instance deleted first is deleted.
func DeleteGone(ctx context.Context, st Store, key string) error {
	if err := st.Delete(ctx, key); err != nil && !errors.Is(err, fs.ErrNotExist) && st.Exists(ctx, key) {
		return err
	}
	return nil
}
