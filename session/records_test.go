package session

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddy-jit/caddy-jit/state"
	"github.com/caddyserver/certmagic"
)

func TestRecordsLoadRefusesIDsItDidNotMake(t *testing.T) {
	ctx := context.Background()
	st := newStorage(t)
	records := &Records{storage: st}
	good := &Record{ID: "c2Vzc2lvbi1pZC0xMjM0NQ", User: "alice", Role: "r", Start: epoch, Expires: epoch.Add(time.Hour)}
	if err := records.Save(ctx, good); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadKeyring(ctx, st, newFakeClock(epoch).Now); err != nil {
		t.Fatal(err)
	}
	// Without the check, this 22-character id would name the keyring:
	// jit/sessions/YWxpY2U/././../../keys/signing.json.
	traversal := "././../../keys/signing"
	if len(traversal) != sessionIDLength {
		t.Fatalf("the traversal id has %d characters", len(traversal))
	}
	if _, err := os.Stat(filepath.Join(st.Path, filepath.FromSlash(sessionKey("alice", traversal)))); err != nil {
		t.Fatalf("the traversal does not reach the keyring, the test is moot: %v", err)
	}

	for _, id := range []string{
		traversal,
		"../x",
		"..",
		"",
		"../../../../../../../x",
		good.ID[:21],
		good.ID + "A",
		good.ID[:21] + "/",
		good.ID[:21] + ".",
		good.ID[:21] + "+",
		good.ID[:21] + "=",
		good.ID[:21] + "%",
		good.ID[:21] + "\x00",
		good.ID[:20] + "é",
		"..%2F..%2Fkeys%2Fsigni",
		`..\..\keys\signing.jso`,
	} {
		r, err := records.Load(ctx, "alice", id)
		if !errors.Is(err, ErrSessionNotFound) || r != nil {
			t.Errorf("Load(%q) = %+v, %v; want %v", id, r, err, ErrSessionNotFound)
		}
	}

	// The ids it makes load; for their own user only.
	if r, err := records.Load(ctx, "alice", good.ID); err != nil || r.ID != good.ID {
		t.Fatalf("Load(good) = %+v, %v", r, err)
	}
	if _, err := records.Load(ctx, "bob", good.ID); !errors.Is(err, ErrSessionNotFound) {
		t.Fatalf("Load by another user = %v", err)
	}
	if _, err := records.Load(ctx, "alice", "AAAAAAAAAAAAAAAAAAAAAA"); !errors.Is(err, ErrSessionNotFound) {
		t.Fatalf("Load(unknown) = %v", err)
	}
	for range 100 {
		if id := newSessionID(); !validSessionID(id) {
			t.Fatalf("newSessionID = %q, not a valid session id", id)
		}
	}
}

func TestRecordsUserNamesStayInTheirFolder(t *testing.T) {
	ctx := context.Background()
	st := newStorage(t)
	records := &Records{storage: st}
	users := []string{"alice", "../alice", "alice/..", "ALICE", "alice\x00", "/", "a/b", "é"}
	for i, u := range users {
		if err := records.Save(ctx, &Record{ID: strings.Repeat(string(rune('A'+i)), 22), User: u, Start: epoch, Expires: epoch.Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
	}
	for i, u := range users {
		got, err := records.OfUser(ctx, u, epoch)
		if err != nil || len(got) != 1 || got[0].User != u || got[0].ID != strings.Repeat(string(rune('A'+i)), 22) {
			t.Errorf("OfUser(%q) = %+v, %v; want its one record", u, got, err)
		}
	}
	// Every record is inside the sessions folder.
	err := filepath.WalkDir(st.Path, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".json") || strings.Contains(p, "locks") {
			return err
		}
		rel, _ := filepath.Rel(st.Path, p)
		if !strings.HasPrefix(filepath.ToSlash(rel), sessionFolder) {
			t.Errorf("a record was written outside the sessions folder: %s", rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestOfUserListsActiveSessionsSoonestFirst(t *testing.T) {
	ctx := context.Background()
	records := &Records{storage: newStorage(t)}
	if got, err := records.OfUser(ctx, "alice", epoch); err != nil || len(got) != 0 {
		t.Fatalf("OfUser with no sessions = %v, %v", got, err)
	}
	for _, r := range []*Record{
		{ID: "AAAAAAAAAAAAAAAAAAAAAA", User: "alice", Expires: epoch.Add(30 * time.Minute)},
		{ID: "BBBBBBBBBBBBBBBBBBBBBB", User: "alice", Expires: epoch.Add(10 * time.Minute)},
		{ID: "CCCCCCCCCCCCCCCCCCCCCC", User: "alice", Expires: epoch},                                                // expired
		{ID: "DDDDDDDDDDDDDDDDDDDDDD", User: "alice", Expires: epoch.Add(time.Hour), Ended: epoch.Add(-time.Second)}, // ended
		{ID: "EEEEEEEEEEEEEEEEEEEEEE", User: "bob", Expires: epoch.Add(time.Hour)},
	} {
		if err := records.Save(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	got, err := records.OfUser(ctx, "alice", epoch)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, r := range got {
		ids = append(ids, r.ID[:1])
	}
	if strings.Join(ids, "") != "BA" {
		t.Fatalf("OfUser = %v, want B then A", ids)
	}
}

// TestStorageListingsSkipFilesBeingWritten: certmagic's FileStorage.Store writes a temp
// file with a numeric name (os.CreateTemp(dir, "")) in the key's own folder and renames
// it into place. A listing made meanwhile shows that file, empty or half written. A
// reader must skip it instead of failing: otherwise a revocation stored by one instance
// makes another instance's Sync (or start-up, LoadState) fail and leaves the
// revocations after it in the listing unloaded, and the status page's OfUser fails.
func TestStorageListingsSkipFilesBeingWritten(t *testing.T) {
	ctx := context.Background()
	f := newSessionsFixture(t)
	_, rec := f.activate(t, f.activation(t))
	if _, err := f.a.End(ctx, "alice", rec.ID, Deactivated, "alice", "done"); err != nil {
		t.Fatal(err)
	}
	f.clock.Add(time.Minute)
	_, live := f.activate(t, f.activation(t))

	// What a concurrent Store leaves for a moment: an empty temp file in each folder.
	bucket := bucketKey(f.clock.Now().Unix()/revocationBucket-1) + "/"
	for _, folder := range []string{revocationFolder, bucket, sessionFolder + state.Name("alice") + "/"} {
		tmp := filepath.Join(f.st.Path, filepath.FromSlash(folder), "0123456789")
		if err := os.WriteFile(tmp, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}

	set := NewRevocations()
	if err := f.a.Records.LoadRevocations(ctx, set, f.clock.Now(), time.Time{}); err != nil {
		t.Errorf("LoadRevocations with a file being written = %v, want nil", err)
	}
	if !set.Revoked(rec.ID) {
		t.Errorf("the revocation was not loaded")
	}
	if _, err := LoadState(ctx, &certmagic.FileStorage{Path: f.st.Path}, 0, f.clock.Now); err != nil {
		t.Errorf("an instance starting meanwhile fails: %v", err)
	}
	active, err := f.a.Records.OfUser(ctx, "alice", f.clock.Now())
	if err != nil {
		t.Errorf("OfUser with a file being written = %v, want nil", err)
	}
	if len(active) != 1 || active[0].ID != live.ID {
		t.Errorf("OfUser = %+v, want the live session", active)
	}
}
