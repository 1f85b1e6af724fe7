package state

import (
	"context"
	"fmt"
	"sync"
)

// Locks serialises read-modify-write cycles on one name (a user's records, a session,
// a request). The store's lock makes them safe across instances; the local mutex spares
// the instance the store lock's polling when its own requests race. The zero value is
// ready to use.
type Locks struct {
	mu    sync.Mutex
	locks map[string]*nameLock
}

type nameLock struct {
	sync.Mutex
	users int
}

// With runs fn while holding both the in-process and the store's lock for name.
func (l *Locks) With(ctx context.Context, st Store, name string, fn func() error) error {
	l.mu.Lock()
	if l.locks == nil {
		l.locks = make(map[string]*nameLock)
	}
	nl := l.locks[name]
	if nl == nil {
		nl = &nameLock{}
		l.locks[name] = nl
	}
	nl.users++
	l.mu.Unlock()

	defer func() {
		l.mu.Lock()
		nl.users--
		if nl.users == 0 {
			delete(l.locks, name)
		}
		l.mu.Unlock()
	}()

	nl.Lock()
	defer nl.Unlock()
	return Locked(ctx, st, name, fn)
}

// Locked runs fn while holding the store's lock for name, and only that: for jobs that
// one instance of a cluster does at a time.
func Locked(ctx context.Context, st Store, name string, fn func() error) error {
	if err := st.Lock(ctx, name); err != nil {
		return fmt.Errorf("locking %s in storage: %w", name, err)
	}
	defer func() { _ = st.Unlock(context.WithoutCancel(ctx), name) }()
	return fn()
}

// CreateOnce stores the record create makes at key, under the store's lock for lock,
// unless another instance stored one first: then it returns that one. Instances that
// start together thus agree on one record (a keyring, an audit key).
func CreateOnce[T any](ctx context.Context, st Store, key, lock string, create func() (T, error)) (T, error) {
	var rec T
	err := Locked(ctx, st, lock, func() error {
		found, err := LoadJSON(ctx, st, key, &rec)
		if err != nil || found {
			return err
		}
		if rec, err = create(); err != nil {
			return err
		}
		return StoreJSON(ctx, st, key, rec)
	})
	return rec, err
}

// Revisit goes through the records of type T under folder, for jobs such as pruning:
// each record that stale selects is read again under the store's lock lockOf names,
// and settle decides with that fresh copy (delete it, rewrite it, or leave it), so that
// a change another instance made meanwhile is never lost. Records that vanish or do not
// decode are passed over; a lock that cannot be taken, or an error of settle, stops the
// walk. what names the records in an error.
func Revisit[T any](ctx context.Context, st Store, folder, what string, stale func(key string, v *T) bool,
	lockOf func(key string, v *T) string, settle func(key string, fresh *T) error) error {
	keys, err := RecordKeys(ctx, st, folder, false, what)
	if err != nil {
		return err
	}
	for _, key := range keys {
		var v T
		if found, err := LoadJSON(ctx, st, key, &v); err != nil || !found || !stale(key, &v) {
			continue
		}
		err := Locked(ctx, st, lockOf(key, &v), func() error {
			// A fresh value: JSON leaves the fields it does not find untouched.
			var fresh T
			if found, err := LoadJSON(ctx, st, key, &fresh); err != nil || !found {
				return nil
			}
			return settle(key, &fresh)
		})
		if err != nil {
			return err
		}
	}
	return nil
}
