// Package storetest holds the behaviour every state.Store must have, as one test that
// each backend runs: Caddy's file storage (what the state package was written
// against) and Redis. A backend that passes it can stand in for the other.
package storetest

import (
	"context"
	"errors"
	"io/fs"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-jit/caddy-jit/state"
)

// Conformance checks a Store's keys, folders and locks. open returns a new handle on
// one and the same store each time it is called (as two instances of a cluster
// have): locks must exclude each other across handles.
func Conformance(t *testing.T, open func() state.Store) {
	ctx := context.Background()
	st := open()

	t.Run("keys", func(t *testing.T) {
		if _, err := st.Load(ctx, "jit/x/missing.json"); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Load of a missing key = %v, want fs.ErrNotExist", err)
		}
		if st.Exists(ctx, "jit/x/missing.json") {
			t.Error("a missing key exists")
		}
		for _, k := range []string{"jit/x/a.json", "jit/x/b.json", "jit/x/sub/c.json", "jit/y/d.json"} {
			if err := st.Store(ctx, k, []byte(k)); err != nil {
				t.Fatalf("Store(%s) = %v", k, err)
			}
		}
		if err := st.Store(ctx, "jit/x/a.json", []byte("again")); err != nil {
			t.Fatal(err)
		}
		if v, err := st.Load(ctx, "jit/x/a.json"); err != nil || string(v) != "again" {
			t.Errorf("Load after a second Store = %q, %v", v, err)
		}
		for _, k := range []string{"jit/x/a.json", "jit/x", "jit/x/sub"} {
			if !st.Exists(ctx, k) {
				t.Errorf("%s does not exist", k)
			}
		}
	})

	t.Run("folders", func(t *testing.T) {
		wantList(t, st, "jit/x", false, "jit/x/a.json", "jit/x/b.json", "jit/x/sub")
		wantList(t, st, "jit/x/", false, "jit/x/a.json", "jit/x/b.json", "jit/x/sub")
		wantList(t, st, "jit/x", true, "jit/x/a.json", "jit/x/b.json", "jit/x/sub", "jit/x/sub/c.json")
		wantList(t, st, "jit", false, "jit/x", "jit/y")
		if _, err := st.List(ctx, "jit/nothing", false); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("List of a missing folder = %v, want fs.ErrNotExist", err)
		}
	})

	t.Run("deletes", func(t *testing.T) {
		if err := st.Delete(ctx, "jit/x/b.json"); err != nil {
			t.Fatal(err)
		}
		if _, err := st.Load(ctx, "jit/x/b.json"); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Load of a deleted key = %v", err)
		}
		wantList(t, st, "jit/x", false, "jit/x/a.json", "jit/x/sub")
		// A folder goes with everything under it.
		if err := st.Delete(ctx, "jit/x"); err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"jit/x/a.json", "jit/x/sub/c.json", "jit/x"} {
			if st.Exists(ctx, k) {
				t.Errorf("%s exists after its folder was deleted", k)
			}
		}
		wantList(t, st, "jit", false, "jit/y")
		if err := st.Delete(ctx, "jit/y/d.json"); err != nil {
			t.Fatal(err)
		}
		if got, err := st.List(ctx, "jit/y", false); len(got) != 0 {
			t.Errorf("an emptied folder lists %q, %v", got, err)
		}
	})

	t.Run("locks exclude each other across handles", func(t *testing.T) {
		var inside, most atomic.Int32
		var wg sync.WaitGroup
		for i := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				h := open()
				for range 5 {
					if err := h.Lock(ctx, "jit-test-lock"); err != nil {
						t.Errorf("handle %d: Lock = %v", i, err)
						return
					}
					n := inside.Add(1)
					if n > most.Load() {
						most.Store(n)
					}
					time.Sleep(2 * time.Millisecond)
					inside.Add(-1)
					if err := h.Unlock(ctx, "jit-test-lock"); err != nil {
						t.Errorf("handle %d: Unlock = %v", i, err)
						return
					}
				}
			}()
		}
		wg.Wait()
		if most.Load() != 1 {
			t.Errorf("%d holders at once, want 1", most.Load())
		}
	})

	t.Run("a waiting lock ends with its context", func(t *testing.T) {
		if err := st.Lock(ctx, "jit-test-held"); err != nil {
			t.Fatal(err)
		}
		defer st.Unlock(ctx, "jit-test-held")
		short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		defer cancel()
		if err := open().Lock(short, "jit-test-held"); err == nil {
			t.Error("a second handle took a held lock")
		}
	})

	t.Run("atomic operations", func(t *testing.T) { atomicOps(t, open) })
}

func wantList(t *testing.T, st state.Store, folder string, recursive bool, want ...string) {
	t.Helper()
	got, err := st.List(context.Background(), folder, recursive)
	slices.Sort(got)
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("List(%q, recursive %v) = %q, %v; want %q", folder, recursive, got, err, want)
	}
}
