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
