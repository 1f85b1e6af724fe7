package state

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"time"
)

// Atomic holds the decisions that must be made in one step across every instance: a
// TOTP step spent, a failed code counted, a passkey challenge taken. A store that can
// make them natively (Redis: a script, INCR with an expiry, GETDEL) implements it; for
// any other Store, AtomicOf makes them under the store's lock on the key.
//
// Each operation alone is atomic, so two instances racing on one key can never both
// win, whether or not the caller also holds a lock.
type Atomic interface {
	// Advance sets the number at key to n if n is greater than the number there, or
	// there is none (it expired ttl after it was last set), and reports whether it did.
	Advance(ctx context.Context, key string, n int64, ttl time.Duration) (bool, error)
	// Count adds one to the counter at key and returns its new value. A counter lives
	// ttl from its first count (until then, not at it), then starts again from zero.
	Count(ctx context.Context, key string, ttl time.Duration) (int64, error)
	// StoreFor writes value at key for ttl. A store with expiry forgets it then;
	// another keeps it until pruned, so a reader decides by the record's own end.
	StoreFor(ctx context.Context, key string, value []byte, ttl time.Duration) error
	// Take reads the value at key and deletes it in one step: of callers racing, one
	// gets it and the others an error that wraps fs.ErrNotExist.
	Take(ctx context.Context, key string) ([]byte, error)
	// Swap writes value at key only if the key holds old (nil: only if it holds
	// nothing), and reports whether it did. It fences a read-modify-write: a writer
	// whose lock expired under it (a stalled instance) cannot overwrite a newer change.
	Swap(ctx context.Context, key string, old, value []byte) (bool, error)
}

// AtomicOf returns st's own atomic operations, or ones made under st's lock.
func AtomicOf(st Store) Atomic { return AtomicAt(st, time.Now) }

// AtomicAt is AtomicOf whose operations made under the lock tell the time with now (a
// test's clock); a store with its own expiry keeps its own time.
func AtomicAt(st Store, now func() time.Time) Atomic {
	if a, ok := st.(Atomic); ok {
		return a
	}
	return lockedAtomic{st, now}
}

// atomicLocks spares a process the store lock's polling when its own calls race.
var atomicLocks Locks

// lockedAtomic makes Atomic's operations under the store's lock on the key. Numbers are
// kept as JSON records with their end, which Prune deletes once past.
type lockedAtomic struct {
	st  Store
	now func() time.Time
}

// counted is a number with the end of its life, as lockedAtomic keeps it.
type counted struct {
	N       int64     `json:"n"`
	Expires time.Time `json:"expires"`
}

func (a lockedAtomic) with(ctx context.Context, key string, fn func() error) error {
	return atomicLocks.With(ctx, a.st, Prefix+"atomic-"+Name(key), fn)
}

// load reads the number at key; one past its end is none.
func (a lockedAtomic) load(ctx context.Context, key string, now time.Time) (counted, error) {
	var c counted
	found, err := LoadJSON(ctx, a.st, key, &c)
	if err != nil || !found || !now.Before(c.Expires) {
		return counted{}, err
	}
	return c, nil
}

func (a lockedAtomic) Advance(ctx context.Context, key string, n int64, ttl time.Duration) (advanced bool, err error) {
	err = a.with(ctx, key, func() error {
		now := a.now()
		c, err := a.load(ctx, key, now)
		if err != nil || (!c.Expires.IsZero() && n <= c.N) {
			return err
		}
		advanced = true
		return StoreJSON(ctx, a.st, key, counted{N: n, Expires: now.Add(ttl).UTC()})
	})
	return advanced && err == nil, err
}

func (a lockedAtomic) Count(ctx context.Context, key string, ttl time.Duration) (n int64, err error) {
	err = a.with(ctx, key, func() error {
		now := a.now()
		c, err := a.load(ctx, key, now)
		if err != nil {
			return err
		}
		if c.Expires.IsZero() {
			c.Expires = now.Add(ttl).UTC()
		}
		c.N++
		n = c.N
		return StoreJSON(ctx, a.st, key, c)
	})
	return n, err
}

func (a lockedAtomic) StoreFor(ctx context.Context, key string, value []byte, _ time.Duration) error {
	if err := a.st.Store(ctx, key, value); err != nil {
		return fmt.Errorf("writing %s to storage: %w", key, err)
	}
	return nil
}

func (a lockedAtomic) Take(ctx context.Context, key string) (value []byte, err error) {
	err = a.with(ctx, key, func() error {
		if value, err = a.st.Load(ctx, key); err != nil {
			return err
		}
		return a.st.Delete(ctx, key)
	})
	return value, err
}

func (a lockedAtomic) Swap(ctx context.Context, key string, old, value []byte) (swapped bool, err error) {
	err = a.with(ctx, key, func() error {
		current, err := a.st.Load(ctx, key)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			if old != nil {
				return nil
			}
		case err != nil:
			return err
		case old == nil || !bytes.Equal(current, old):
			return nil
		}
		swapped = true
		return a.st.Store(ctx, key, value)
	})
	return swapped && err == nil, err
}

// Forgets reports whether st deletes records stored for a time by itself (see
// Atomic.StoreFor): pruning them is then left to it.
func Forgets(st Store) bool {
	_, native := st.(Atomic)
	return native
}

// StoreJSONFor writes v as the record at key for ttl (see Atomic.StoreFor).
func StoreJSONFor(ctx context.Context, st Store, key string, v any, ttl time.Duration) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encoding %s: %w", key, err)
	}
	return AtomicOf(st).StoreFor(ctx, key, raw, ttl)
}

// TakeJSON reads the record at key into v and deletes it in one step (see Atomic.Take);
// a missing record is found == false.
func TakeJSON(ctx context.Context, st Store, key string, v any) (found bool, err error) {
	raw, err := AtomicOf(st).Take(ctx, key)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("taking %s from storage: %w", key, err)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return true, fmt.Errorf("decoding %s from storage: %w", key, err)
	}
	return true, nil
}

// PruneCounted deletes the numbers of the fallback Atomic under folder whose life is
// over; in a store with expiry there are none to find.
func PruneCounted(ctx context.Context, st Store, folder string, now time.Time) error {
	return Revisit(ctx, st, folder, "counters to prune",
		func(_ string, c *counted) bool { return !c.Expires.IsZero() && !now.Before(c.Expires) },
		func(key string, _ *counted) string { return Prefix + "atomic-" + Name(key) },
		func(key string, c *counted) error {
			if !now.Before(c.Expires) {
				_ = st.Delete(ctx, key)
			}
			return nil
		})
}

// CopyCounted copies raw, read at key of from, into to, if it is a number that from's
// fallback Atomic keeps under the lock and to keeps natively: as the number, for what
// is left of its life (none left: nothing to copy). handled says whether raw was such
// a number; the caller copies anything else as it is.
func CopyCounted(ctx context.Context, to Store, key string, raw []byte, now time.Time) (handled bool, err error) {
	native, ok := to.(Atomic)
	var c counted
	if !ok || json.Unmarshal(raw, &c) != nil || c.Expires.IsZero() {
		return false, nil
	}
	if left := c.Expires.Sub(now); left > 0 {
		return true, native.StoreFor(ctx, key, []byte(strconv.FormatInt(c.N, 10)), left)
	}
	return true, nil
}
