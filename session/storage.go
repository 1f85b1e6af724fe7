package session

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"
	"sync"

	"github.com/caddyserver/certmagic"
)

// Storage keys. User names and ids are encoded so that no name can climb out of its
// folder or collide with another one.
const (
	keyPrefix        = "jit/"
	keyringKey       = keyPrefix + "keys/signing.json"
	keyringLock      = keyPrefix + "keys"
	enrollmentFolder = keyPrefix + "enrollments/"
	lockoutFolder    = keyPrefix + "lockouts/"
	sessionFolder    = keyPrefix + "sessions/"
	ownerFolder      = keyPrefix + "session-owners/"
	pruneLock        = keyPrefix + "prune"
	revocationFolder = keyPrefix + "revocations/"
)

// storageName turns a user-chosen string into one safe path segment.
func storageName(s string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(s))
}

func loadJSON(ctx context.Context, st certmagic.Storage, key string, v any) (found bool, err error) {
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

func storeJSON(ctx context.Context, st certmagic.Storage, key string, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encoding %s: %w", key, err)
	}
	if err := st.Store(ctx, key, raw); err != nil {
		return fmt.Errorf("writing %s to storage: %w", key, err)
	}
	return nil
}

// userLocks serialises read-modify-write cycles on one user's records. The storage lock
// makes them safe across instances; the local mutex spares the instance the storage
// lock's polling when its own requests race.
type userLocks struct {
	mu    sync.Mutex
	locks map[string]*userLock
}

type userLock struct {
	sync.Mutex
	users int
}

// with runs fn while holding both the in-process and the storage lock for name.
func (l *userLocks) with(ctx context.Context, st certmagic.Storage, name string, fn func() error) error {
	l.mu.Lock()
	if l.locks == nil {
		l.locks = make(map[string]*userLock)
	}
	ul := l.locks[name]
	if ul == nil {
		ul = &userLock{}
		l.locks[name] = ul
	}
	ul.users++
	l.mu.Unlock()

	defer func() {
		l.mu.Lock()
		ul.users--
		if ul.users == 0 {
			delete(l.locks, name)
		}
		l.mu.Unlock()
	}()

	ul.Lock()
	defer ul.Unlock()
	if err := st.Lock(ctx, name); err != nil {
		return fmt.Errorf("locking %s in storage: %w", name, err)
	}
	defer func() { _ = st.Unlock(context.WithoutCancel(ctx), name) }()
	return fn()
}

// recordKeys lists the records (*.json) under folder, skipping the temporary files a
// storage may show while a Store is in progress; a folder that does not exist holds
// none. what names the records in an error.
func recordKeys(ctx context.Context, st certmagic.Storage, folder string, recursive bool, what string) ([]string, error) {
	keys, err := st.List(ctx, strings.TrimSuffix(folder, "/"), recursive)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", what, err)
	}
	return slices.DeleteFunc(keys, func(k string) bool { return !isRecordKey(k) }), nil
}
