package session

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/caddy-jit/caddy-jit/audit"
)

func TestLiveEndCancelsEveryRequestOfTheSessionOnly(t *testing.T) {
	l := NewLive()
	var cancelled []string
	register := func(sid string, exp int64, name string) func() {
		c := &Claims{Grant: Grant{SessionID: sid, Expiry: exp}}
		ctx, cancel := context.WithCancel(context.Background())
		l.Register(c, ctx, func() { cancel(); cancelled = append(cancelled, name) })
		return func() { l.Done(c, ctx, nil) }
	}
	register("s1", 100, "a")
	register("s1", 100, "b")
	doneC := register("s2", 100, "c")

	l.End("s1")
	slices.Sort(cancelled)
	if !slices.Equal(cancelled, []string{"a", "b"}) {
		t.Fatalf("cancelled %v, want a and b", cancelled)
	}
	doneC()
	if l.Len() != 0 {
		t.Errorf("registry holds %d requests after all ended or finished, want 0", l.Len())
	}
	l.End("s2")
	if len(cancelled) != 2 {
		t.Errorf("a finished request was cancelled: %v", cancelled)
	}
}

func TestLiveSweepCancelsExpiredSessions(t *testing.T) {
	l := NewLive()
	var cancelled []string
	for _, s := range []struct {
		sid string
		exp int64
	}{{"old", 100}, {"new", 200}} {
		ctx, cancel := context.WithCancel(context.Background())
		l.Register(&Claims{Grant: Grant{SessionID: s.sid, Expiry: s.exp}}, ctx, func() { cancel(); cancelled = append(cancelled, s.sid) })
	}
	l.Sweep(time.Unix(99, 0))
	if len(cancelled) != 0 {
		t.Fatalf("swept before expiry: %v", cancelled)
	}
	l.Sweep(time.Unix(100, 0))
	if !slices.Equal(cancelled, []string{"old"}) || l.Len() != 1 {
		t.Fatalf("after sweep at expiry: cancelled %v, %d live, want [old] and 1", cancelled, l.Len())
	}
}

func TestRevocationSyncEndsLiveRequestsOnAnotherInstance(t *testing.T) {
	f := newSessionsFixture(t)
	ctx := context.Background()
	_, rec := f.activate(t, f.activation(t))
	other, err := LoadState(ctx, f.st, 0, f.clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	cancelled := false
	other.Live.Register(&Claims{Grant: Grant{SessionID: rec.ID, Expiry: rec.Expires.Unix()}}, ctx, func() { cancelled = true })

	if _, err := f.a.EndByID(ctx, rec.ID, "ops", "incident over"); err != nil {
		t.Fatal(err)
	}
	if cancelled {
		t.Fatal("the other instance cancelled before it synced")
	}
	if err := other.Sync(ctx, f.clock.Now()); err != nil {
		t.Fatal(err)
	}
	if !cancelled {
		t.Error("the other instance's sync did not cancel the live request of the revoked session")
	}
}

func TestEndByIDAndEndUserAreAuditedAsRevoked(t *testing.T) {
	f := newSessionsFixture(t)
	ctx := context.Background()
	_, first := f.activate(t, f.activation(t))
	f.clock.Add(30 * time.Second)
	_, second := f.activate(t, f.activation(t))

	if _, err := f.a.EndByID(ctx, first.ID, "ops", "rotation"); err != nil {
		t.Fatal(err)
	}
	ended, err := f.a.EndUser(ctx, "alice", "ops", "leaver")
	if err != nil {
		t.Fatal(err)
	}
	if len(ended) != 1 || ended[0].ID != second.ID {
		t.Fatalf("EndUser ended %v, want only the session still active (%s)", ended, second.ID)
	}
	revoked := f.logs.FilterMessage(audit.EventRevoked).All()
	if len(revoked) != 2 {
		t.Fatalf("%d revoked events, want 2", len(revoked))
	}
	if got := revoked[1].ContextMap(); got["by"] != "ops" || got["reason"] != "leaver" || got["session_id"] != second.ID {
		t.Errorf("revoked event fields: %v", got)
	}
	if _, err := f.a.EndByID(ctx, "AAAAAAAAAAAAAAAAAAAAAA", "ops", ""); !errors.Is(err, ErrSessionNotFound) {
		t.Errorf("EndByID of an unknown id = %v, want ErrSessionNotFound", err)
	}
}

func TestRecordsActiveFiltersByUserAndRole(t *testing.T) {
	f := newSessionsFixture(t)
	ctx := context.Background()
	_, rec := f.activate(t, f.activation(t))
	tests := []struct {
		filter Filter
		want   int
	}{
		{Filter{}, 1},
		{Filter{User: "alice"}, 1},
		{Filter{User: "bob"}, 0},
		{Filter{Role: rec.Role}, 1},
		{Filter{Role: "other"}, 0},
		{Filter{User: "alice", Role: rec.Role}, 1},
	}
	for _, tt := range tests {
		got, err := f.a.Records.Active(ctx, tt.filter, f.clock.Now())
		if err != nil || len(got) != tt.want {
			t.Errorf("Active(%+v) = %d records, %v; want %d", tt.filter, len(got), err, tt.want)
		}
	}
	f.clock.Set(rec.Expires)
	if got, _ := f.a.Records.Active(ctx, Filter{}, f.clock.Now()); len(got) != 0 {
		t.Errorf("an expired session is listed as active")
	}
}

func TestPruneRemovesOnlyLongEndedSessions(t *testing.T) {
	f := newSessionsFixture(t)
	ctx := context.Background()
	_, rec := f.activate(t, f.activation(t))
	keep := 24 * time.Hour

	f.clock.Set(rec.Expires.Add(keep - time.Second))
	if err := f.a.Prune(ctx, f.clock.Now(), keep); err != nil {
		t.Fatal(err)
	}
	if _, err := f.a.Records.ByID(ctx, rec.ID); err != nil {
		t.Fatalf("pruned a session before keep had passed: %v", err)
	}
	f.clock.Set(rec.Expires.Add(keep))
	if err := f.a.Prune(ctx, f.clock.Now(), keep); err != nil {
		t.Fatal(err)
	}
	if _, err := f.a.Records.ByID(ctx, rec.ID); !errors.Is(err, ErrSessionNotFound) {
		t.Errorf("after keep: ByID = %v, want ErrSessionNotFound", err)
	}
	if f.st.Exists(ctx, sessionKey(rec.User, rec.ID)) || f.st.Exists(ctx, ownerKey(rec.ID)) {
		t.Error("the record or its index entry is still in storage")
	}
}

func TestRotationKeepsOldTokensAndReachesOtherInstances(t *testing.T) {
	f := newSessionsFixture(t)
	ctx := context.Background()
	oldToken, rec := f.activate(t, f.activation(t))
	other, err := LoadState(ctx, f.st, 0, f.clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	oldKID := f.a.Keyring.active().ID

	newKID, err := f.a.RotateKeys(ctx, "ops")
	if err != nil {
		t.Fatal(err)
	}
	if newKID == oldKID || !slices.Equal(f.a.Keyring.KeyIDs(), []string{oldKID, newKID}) {
		t.Fatalf("key ids after rotation: %v (new %s, old %s)", f.a.Keyring.KeyIDs(), newKID, oldKID)
	}
	want := Want{Subject: rec.User, Audience: rec.Audience, Roles: []string{rec.Role}}
	if _, err := f.a.Verifier.Verify(oldToken, want, f.clock.Now()); err != nil {
		t.Errorf("a token of the previous key is refused after rotation: %v", err)
	}
	f.clock.Add(30 * time.Second)
	newToken, _ := f.activate(t, f.activation(t))
	if _, err := other.Verifier.Verify(newToken, want, f.clock.Now()); !errors.Is(err, ErrTokenSignature) {
		t.Fatalf("the other instance verified a token of a key it has not synced: %v", err)
	}
	if err := other.Sync(ctx, f.clock.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Verifier.Verify(newToken, want, f.clock.Now()); err != nil {
		t.Errorf("after sync the other instance refuses the new key's token: %v", err)
	}

	for range maxKeys {
		if _, err := f.a.RotateKeys(ctx, "ops"); err != nil {
			t.Fatal(err)
		}
	}
	if ids := f.a.Keyring.KeyIDs(); len(ids) != maxKeys || slices.Contains(ids, oldKID) {
		t.Errorf("after %d more rotations the keyring holds %v; want %d keys without the first", maxKeys, ids, maxKeys)
	}
}

func TestLastSyncAdvancesOnlyOnSuccess(t *testing.T) {
	f := newSessionsFixture(t)
	ctx := context.Background()
	first := f.a.LastSync()
	f.clock.Add(time.Minute)
	if err := f.a.Sync(ctx, f.clock.Now()); err != nil {
		t.Fatal(err)
	}
	if !f.a.LastSync().Equal(f.clock.Now()) || !f.a.LastSync().After(first) {
		t.Fatalf("LastSync = %v after a sync at %v", f.a.LastSync(), f.clock.Now())
	}
	before := f.a.LastSync()
	f.clock.Add(time.Minute)
	// A storage that fails: the file system storage under a path that is a file.
	broken := &State{Keyring: f.a.Keyring, Revocations: NewRevocations(), Records: &Records{storage: brokenStorage(t)}, Live: NewLive()}
	broken.lastSync.Store(before.UnixNano())
	if err := broken.Sync(ctx, f.clock.Now()); err == nil {
		t.Fatal("Sync over a broken storage succeeded")
	}
	if !broken.LastSync().Equal(before) {
		t.Errorf("LastSync moved on a failed sync: %v, want %v", broken.LastSync(), before)
	}
}

func TestScheduledRotationRotatesOnceWhenDue(t *testing.T) {
	f := newSessionsFixture(t)
	ctx := context.Background()
	other := newTestSessions(t, f.st, f.log, f.clock.Now)
	if id, err := f.a.RotateKeysIfOlder(ctx, "key_rotation", time.Hour); err != nil || id != "" {
		t.Fatalf("rotated a key that is not due: %q, %v", id, err)
	}
	f.clock.Add(time.Hour)
	first, err := f.a.RotateKeysIfOlder(ctx, "key_rotation", time.Hour)
	if err != nil || first == "" {
		t.Fatalf("a due rotation did not happen: %q, %v", first, err)
	}
	if second, err := other.RotateKeysIfOlder(ctx, "key_rotation", time.Hour); err != nil || second != "" {
		t.Errorf("a second instance rotated again right after: %q, %v", second, err)
	}
}

func TestLiveEndAllCancelsEverything(t *testing.T) {
	l := NewLive()
	n := 0
	for _, sid := range []string{"a", "b", "b"} {
		ctx, cancel := context.WithCancel(context.Background())
		l.Register(&Claims{Grant: Grant{SessionID: sid, Expiry: 1 << 40}}, ctx, func() { cancel(); n++ })
	}
	l.EndAll()
	if n != 3 || l.Len() != 0 {
		t.Errorf("EndAll cancelled %d of 3, %d sessions left", n, l.Len())
	}
}

func TestRevokeByIDDuringAnOutageStillRefusesLocally(t *testing.T) {
	f := newSessionsFixture(t)
	ctx := context.Background()
	token, rec := f.activate(t, f.activation(t))
	want := Want{Subject: rec.User, Audience: rec.Audience, Roles: []string{rec.Role}}
	if _, err := f.a.Verifier.Verify(token, want, f.clock.Now()); err != nil {
		t.Fatal(err)
	}
	f.a.Records.storage = brokenStorage(t)
	_, err := f.a.EndByID(ctx, rec.ID, "ops", "incident")
	if !errors.Is(err, ErrRevokedLocallyOnly) {
		t.Fatalf("EndByID during an outage = %v, want ErrRevokedLocallyOnly", err)
	}
	if _, err := f.a.Verifier.Verify(token, want, f.clock.Now()); !errors.Is(err, ErrTokenRevoked) {
		t.Errorf("the session still admits on this instance: %v", err)
	}
}
