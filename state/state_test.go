package state

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/caddyserver/certmagic"
)

// Caddy's storage is today's Store.
var _ Store = (*certmagic.FileStorage)(nil)

func TestJSONRecordsOverCaddyStorage(t *testing.T) {
	ctx := context.Background()
	st := &certmagic.FileStorage{Path: t.TempDir()}
	type rec struct{ User string }

	var got rec
	if found, err := LoadJSON(ctx, st, Prefix+"x/missing.json", &got); found || err != nil {
		t.Fatalf("a missing record: found %v, err %v; want neither", found, err)
	}
	if err := StoreJSON(ctx, st, Prefix+"x/"+Name("../alice")+".json", rec{User: "../alice"}); err != nil {
		t.Fatal(err)
	}
	if err := st.Store(ctx, Prefix+"x/half-written.tmp", []byte("{")); err != nil {
		t.Fatal(err)
	}
	keys, err := RecordKeys(ctx, st, Prefix+"x/", false, "the test records")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{Prefix + "x/" + Name("../alice") + ".json"}; !slices.Equal(keys, want) {
		t.Fatalf("RecordKeys = %q, want %q (no temp file, the name kept in its folder)", keys, want)
	}
	if found, err := LoadJSON(ctx, st, keys[0], &got); !found || err != nil || got.User != "../alice" {
		t.Fatalf("LoadJSON = %v, %v, %+v", found, err, got)
	}
	if err := st.Store(ctx, Prefix+"x/bad.json", []byte("{not json")); err != nil {
		t.Fatal(err)
	}
	if found, err := LoadJSON(ctx, st, Prefix+"x/bad.json", &got); !found || err == nil {
		t.Fatalf("a corrupt record: found %v, err %v; want found and an error", found, err)
	}
	for _, key := range []string{keys[0], Prefix + "x/never-there.json"} {
		if err := DeleteGone(ctx, st, key); err != nil {
			t.Errorf("DeleteGone(%s) = %v", key, err)
		}
	}
	if none, err := RecordKeys(ctx, st, Prefix+"nothing/", true, "nothing"); err != nil || len(none) != 0 {
		t.Errorf("a folder that does not exist: %q, %v", none, err)
	}
}

func TestLocksSerialiseOneName(t *testing.T) {
	ctx := context.Background()
	st := &certmagic.FileStorage{Path: t.TempDir()}
	var l Locks
	counter, done := 0, make(chan bool)
	for range 8 {
		go func() {
			_ = l.With(ctx, st, "jit/test-lock", func() error {
				c := counter
				counter = c + 1
				return nil
			})
			done <- true
		}()
	}
	for range 8 {
		<-done
	}
	if counter != 8 {
		t.Fatalf("8 increments under the lock made %d", counter)
	}
	if len(l.locks) != 0 {
		t.Errorf("%d in-process locks left after everyone let go", len(l.locks))
	}
}

func TestLoadNamesWhatIsMissing(t *testing.T) {
	ctx := context.Background()
	st := &certmagic.FileStorage{Path: t.TempDir()}
	errGone := errors.New("no such thing")
	if v, err := Load[struct{ N int }](ctx, st, Prefix+"missing.json", errGone); v != nil || !errors.Is(err, errGone) {
		t.Fatalf("a missing record: %v, %v; want nil and the caller's error", v, err)
	}
	if err := StoreJSON(ctx, st, Prefix+"here.json", struct{ N int }{7}); err != nil {
		t.Fatal(err)
	}
	if v, err := Load[struct{ N int }](ctx, st, Prefix+"here.json", errGone); err != nil || v.N != 7 {
		t.Fatalf("a stored record: %+v, %v", v, err)
	}
	if err := st.Store(ctx, Prefix+"bad.json", []byte("{")); err != nil {
		t.Fatal(err)
	}
	if _, err := Load[struct{ N int }](ctx, st, Prefix+"bad.json", errGone); err == nil || errors.Is(err, errGone) {
		t.Fatalf("a corrupt record: %v; want a decoding error, not the missing one", err)
	}
}

// TestRevisitDecidesOnTheFreshCopy: a record that changed between the listing and the
// lock is settled as it is now, and only records the first look selects are locked.
func TestRevisitDecidesOnTheFreshCopy(t *testing.T) {
	ctx := context.Background()
	st := &certmagic.FileStorage{Path: t.TempDir()}
	type rec struct{ Old bool }
	for key, v := range map[string]rec{"a": {Old: true}, "b": {Old: false}, "c": {Old: true}} {
		if err := StoreJSON(ctx, st, Prefix+"r/"+key+".json", v); err != nil {
			t.Fatal(err)
		}
	}
	var locked, settled []string
	err := Revisit(ctx, st, Prefix+"r/", "test records",
		func(key string, v *rec) bool { return v.Old },
		func(key string, v *rec) string {
			locked = append(locked, key)
			if strings.HasSuffix(key, "/c.json") {
				// Another instance renews c after the first look.
				if err := StoreJSON(ctx, st, key, rec{Old: false}); err != nil {
					t.Fatal(err)
				}
			}
			return Prefix + "test-lock"
		},
		func(key string, fresh *rec) error {
			if fresh.Old {
				settled = append(settled, key)
				return st.Delete(ctx, key)
			}
			return nil
		})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{Prefix + "r/a.json", Prefix + "r/c.json"}; !slices.Equal(locked, want) {
		t.Errorf("locked for %q, want %q (only what the first look selects)", locked, want)
	}
	if want := []string{Prefix + "r/a.json"}; !slices.Equal(settled, want) {
		t.Errorf("settled %q, want %q: c changed before the lock and must be judged as it is now", settled, want)
	}
	if !st.Exists(ctx, Prefix+"r/c.json") || st.Exists(ctx, Prefix+"r/a.json") {
		t.Error("a must be gone and c kept")
	}
}

func TestCreateOnce(t *testing.T) {
	type rec struct{ N int }
	ctx := context.Background()
	made := errors.New("made no record")
	for _, tt := range []struct {
		name    string
		stored  *rec
		create  func() (rec, error)
		want    rec
		wantErr error
		// wantStored is the record at the key afterwards (nil: none).
		wantStored *rec
	}{
		{name: "none stored: the new one is stored and returned", create: func() (rec, error) { return rec{N: 2}, nil }, want: rec{N: 2}, wantStored: &rec{N: 2}},
		{name: "one stored first: it is returned, create is not called", stored: &rec{N: 1},
			create: func() (rec, error) { t.Error("create called over a stored record"); return rec{N: 9}, nil }, want: rec{N: 1}, wantStored: &rec{N: 1}},
		{name: "create fails: nothing is stored", create: func() (rec, error) { return rec{}, made }, wantErr: made},
	} {
		t.Run(tt.name, func(t *testing.T) {
			st := &certmagic.FileStorage{Path: t.TempDir()}
			if tt.stored != nil {
				if err := StoreJSON(ctx, st, "jit/thing.json", tt.stored); err != nil {
					t.Fatal(err)
				}
			}
			got, err := CreateOnce(ctx, st, "jit/thing.json", "jit/thing", tt.create)
			if !errors.Is(err, tt.wantErr) || (err == nil && got != tt.want) {
				t.Fatalf("CreateOnce = %+v, %v; want %+v, %v", got, err, tt.want, tt.wantErr)
			}
			var after rec
			found, err := LoadJSON(ctx, st, "jit/thing.json", &after)
			if err != nil || found != (tt.wantStored != nil) || (found && after != *tt.wantStored) {
				t.Errorf("afterwards storage holds %+v (found %v, %v), want %v", after, found, err, tt.wantStored)
			}
		})
	}
}
