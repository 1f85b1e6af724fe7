package storetest

import (
	"context"
	"errors"
	"io/fs"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/caddy-jit/caddy-jit/state"
)

// atomicOps checks state.Atomic as AtomicOf gives it for the store: natively or under
// the store's lock. Races go through separate handles, as instances of a cluster do.
func atomicOps(t *testing.T, open func() state.Store) {
	ctx := context.Background()
	ops := state.AtomicOf(open())
	_, native := open().(state.Atomic)

	t.Run("advance", func(t *testing.T) {
		for _, step := range []struct {
			n    int64
			want bool
		}{{5, true}, {5, false}, {4, false}, {6, true}, {-1, false}} {
			got, err := ops.Advance(ctx, "jit/atomic/step", step.n, time.Minute)
			if err != nil || got != step.want {
				t.Errorf("Advance(%d) = %v, %v; want %v", step.n, got, err, step.want)
			}
		}
		if got := race(t, open, func(a state.Atomic) (bool, error) { return a.Advance(ctx, "jit/atomic/step", 7, time.Minute) }); got != 1 {
			t.Errorf("%d of the racing Advance(7) won, want 1", got)
		}
		// Once its life is over, a number is none: any n is more.
		if ok, err := ops.Advance(ctx, "jit/atomic/short", 9, 100*time.Millisecond); !ok || err != nil {
			t.Fatalf("Advance(9) = %v, %v", ok, err)
		}
		time.Sleep(300 * time.Millisecond)
		if ok, err := ops.Advance(ctx, "jit/atomic/short", 1, time.Minute); !ok || err != nil {
			t.Errorf("Advance(1) past the number's life = %v, %v; want true", ok, err)
		}
	})

	t.Run("count", func(t *testing.T) {
		var seen []int64
		var mu sync.Mutex
		race(t, open, func(a state.Atomic) (bool, error) {
			n, err := a.Count(ctx, "jit/atomic/count", time.Minute)
			mu.Lock()
			seen = append(seen, n)
			mu.Unlock()
			return true, err
		})
		slices.Sort(seen)
		for i, n := range seen {
			if n != int64(i+1) {
				t.Fatalf("racing counts returned %v, want 1…%d once each", seen, len(seen))
			}
		}
		if _, err := ops.Count(ctx, "jit/atomic/short-count", 100*time.Millisecond); err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond)
		if n, err := ops.Count(ctx, "jit/atomic/short-count", time.Minute); n != 1 || err != nil {
			t.Errorf("Count past the counter's life = %d, %v; want 1", n, err)
		}
	})

	t.Run("swap", func(t *testing.T) {
		const key = "jit/atomic/swapped/r.json"
		for _, step := range []struct {
			old, value string
			new, want  bool
		}{{"", "a", true, true}, {"", "b", true, false}, {"b", "c", false, false}, {"a", "b", false, true}} {
			var old []byte
			if !step.new {
				old = []byte(step.old)
			}
			if got, err := ops.Swap(ctx, key, old, []byte(step.value)); got != step.want || err != nil {
				t.Errorf("Swap(%q → %q) = %v, %v; want %v", step.old, step.value, got, err, step.want)
			}
		}
		if v, err := open().Load(ctx, key); string(v) != "b" || err != nil {
			t.Errorf("after the swaps the record holds %q, %v; want b", v, err)
		}
		wantList(t, open(), "jit/atomic/swapped", false, key)
		if got := race(t, open, func(a state.Atomic) (bool, error) { return a.Swap(ctx, key, []byte("b"), []byte("c")) }); got != 1 {
			t.Errorf("%d of the racing swaps from one value won, want 1", got)
		}
	})

	t.Run("store for a time, take once", func(t *testing.T) {
		if err := ops.StoreFor(ctx, "jit/atomic/rec.json", []byte("v"), time.Minute); err != nil {
			t.Fatal(err)
		}
		if err := ops.StoreFor(ctx, "jit/records/brief/r.json", []byte("v"), 100*time.Millisecond); err != nil {
			t.Fatal(err)
		}
		// Listed as any record while it lasts.
		wantList(t, open(), "jit/records/brief", false, "jit/records/brief/r.json")
		if v, err := open().Load(ctx, "jit/atomic/rec.json"); string(v) != "v" || err != nil {
			t.Errorf("Load of a record stored for a time = %q, %v", v, err)
		}
		var mu sync.Mutex
		var got []string
		if n := race(t, open, func(a state.Atomic) (bool, error) {
			v, err := a.Take(ctx, "jit/atomic/rec.json")
			if errors.Is(err, fs.ErrNotExist) {
				return false, nil
			}
			mu.Lock()
			got = append(got, string(v))
			mu.Unlock()
			return err == nil, err
		}); n != 1 || !slices.Equal(got, []string{"v"}) {
			t.Errorf("%d racing Takes got the record (%q), want one", n, got)
		}
		if _, err := open().Load(ctx, "jit/atomic/rec.json"); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Load after Take = %v, want fs.ErrNotExist", err)
		}
		if !native {
			return
		}
		// A store with expiry forgets it, and its folder's listing forgets it too, up
		// to the folders it leaves empty.
		time.Sleep(300 * time.Millisecond)
		if open().Exists(ctx, "jit/records/brief/r.json") {
			t.Error("a store with expiry kept a record past its time")
		}
		if got, err := open().List(ctx, "jit/records/brief", false); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("the folder of an expired record lists %q, %v; want fs.ErrNotExist", got, err)
		}
		if got, err := open().List(ctx, "jit/records", false); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("the folder above lists %q, %v; want fs.ErrNotExist", got, err)
		}
	})
}

// race runs op on ten handles at once and returns how many reported true.
func race(t *testing.T, open func() state.Store, op func(state.Atomic) (bool, error)) int {
	t.Helper()
	handles := make([]state.Atomic, 10)
	for i := range handles {
		handles[i] = state.AtomicOf(open())
	}
	start := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	won := 0
	for _, h := range handles {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			ok, err := op(h)
			if err != nil {
				t.Error(err)
			}
			mu.Lock()
			defer mu.Unlock()
			if ok {
				won++
			}
		}()
	}
	close(start)
	wg.Wait()
	return won
}
