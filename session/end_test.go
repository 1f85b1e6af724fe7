package session

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/caddy-jit/caddy-jit/audit"
	"github.com/caddy-jit/caddy-jit/state"
	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

func TestEnd(t *testing.T) {
	ctx := context.Background()
	f := newSessionsFixture(t)
	token, rec := f.activate(t, f.activation(t))
	want := Want{Subject: "alice", Audience: audience, Roles: []string{"console-admin"}}
	// Cached before the end.
	if _, err := f.a.Verifier.Verify(token, want, f.clock.Now()); err != nil {
		t.Fatal(err)
	}

	// Another instance over the same storage, loaded before the end.
	core, _ := observer.New(zap.InfoLevel)
	other := newTestSessions(t, &certmagic.FileStorage{Path: f.st.Path}, zap.New(core), f.clock.Now)
	if _, err := other.Verifier.Verify(token, want, f.clock.Now()); err != nil {
		t.Fatalf("the other instance refuses a live session: %v", err)
	}

	// Someone else cannot end it, nor can a malformed id.
	for _, tt := range []struct{ user, id string }{{"bob", rec.ID}, {"alice", "../x"}, {"alice", ""}, {"alice", strings.Repeat("A", 22)}} {
		if _, err := f.a.End(ctx, tt.user, tt.id, Deactivated, "x", "x"); !errors.Is(err, ErrSessionNotFound) {
			t.Fatalf("End(%q, %q) = %v, want %v", tt.user, tt.id, err, ErrSessionNotFound)
		}
	}
	if f.a.Revocations.Revoked(rec.ID) {
		t.Fatal("revoked by a refused End")
	}

	f.clock.Add(time.Minute)
	ended, err := f.a.End(ctx, "alice", rec.ID, Deactivated, "alice", "done")
	if err != nil {
		t.Fatal(err)
	}
	if !ended.Ended.Equal(f.clock.Now()) || ended.EndedBy != "alice" || ended.EndReason != "done" {
		t.Fatalf("ended record = %+v", ended)
	}
	if !f.a.Revocations.Revoked(rec.ID) {
		t.Fatal("not revoked in this instance")
	}
	if _, err := f.a.Verifier.Verify(token, want, f.clock.Now()); !errors.Is(err, ErrTokenRevoked) {
		t.Fatalf("Verify of the ended, cached session = %v, want %v", err, ErrTokenRevoked)
	}
	stored, err := f.a.Records.Load(ctx, "alice", rec.ID)
	if err != nil || stored.Ended.IsZero() || stored.Active(f.clock.Now()) {
		t.Fatalf("stored record = %+v, %v", stored, err)
	}
	if active, err := f.a.Records.OfUser(ctx, "alice", f.clock.Now()); err != nil || len(active) != 0 {
		t.Fatalf("OfUser after End = %v, %v", active, err)
	}
	deactivated := events(f.logs, audit.EventDeactivated)
	if len(deactivated) != 1 {
		t.Fatalf("deactivated events: %d", len(deactivated))
	}
	if m := deactivated[0].ContextMap(); m["session_id"] != rec.ID || m["user"] != "alice" || m["by"] != "alice" || m["reason"] != "done" {
		t.Fatalf("deactivated fields = %v", m)
	}

	// Ending it again changes nothing and audits nothing.
	if again, err := f.a.End(ctx, "alice", rec.ID, Deactivated, "admin", "again"); err != nil || again.EndedBy != "alice" {
		t.Fatalf("second End = %+v, %v", again, err)
	}
	if n := len(events(f.logs, audit.EventDeactivated)); n != 1 {
		t.Fatalf("deactivated events after a second End: %d", n)
	}

	// The other instance learns of it on its next sync, cache or not.
	if err := other.Sync(ctx, f.clock.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Verifier.Verify(token, want, f.clock.Now()); !errors.Is(err, ErrTokenRevoked) {
		t.Fatalf("other instance after Sync: %v, want %v", err, ErrTokenRevoked)
	}

	// A new instance (a restart) sees it at once.
	restarted := newTestSessions(t, &certmagic.FileStorage{Path: f.st.Path}, zap.NewNop(), f.clock.Now)
	if !restarted.Revocations.Revoked(rec.ID) {
		t.Fatal("a restarted instance forgot the revocation")
	}
	if _, err := restarted.Verifier.Verify(token, want, f.clock.Now()); !errors.Is(err, ErrTokenRevoked) {
		t.Fatalf("restarted instance: %v, want %v", err, ErrTokenRevoked)
	}
	set := NewRevocations()
	if err := f.a.Records.LoadRevocations(ctx, set, f.clock.Now(), time.Time{}); err != nil || !set.Revoked(rec.ID) || set.Len() != 1 {
		t.Fatalf("LoadRevocations: %v, revoked %v, Len %d", err, set.Revoked(rec.ID), set.Len())
	}

	// Once the session would have expired anyway, the revocation is dropped from
	// storage and memory; the token is refused as expired.
	after := rec.Expires
	set = NewRevocations()
	if err := f.a.Records.LoadRevocations(ctx, set, after, time.Time{}); err != nil || set.Len() != 0 {
		t.Fatalf("LoadRevocations after expiry: %v, Len %d", err, set.Len())
	}
	if err := f.a.Records.pruneRevocations(ctx, after); err != nil {
		t.Fatal(err)
	}
	if revocationStored(t, f.st, rec.ID) {
		t.Fatal("an expired revocation stayed in storage")
	}
	if _, err := restarted.Verifier.Verify(token, want, after); !errors.Is(err, ErrTokenExpired) {
		t.Fatalf("after expiry: %v, want %v", err, ErrTokenExpired)
	}
}

func TestEndOfAnExpiredSessionDoesNothing(t *testing.T) {
	ctx := context.Background()
	f := newSessionsFixture(t)
	_, rec := f.activate(t, f.activation(t))
	f.clock.Set(rec.Expires)
	got, err := f.a.End(ctx, "alice", rec.ID, Deactivated, "alice", "late")
	if err != nil || !got.Ended.IsZero() {
		t.Fatalf("End = %+v, %v", got, err)
	}
	if f.a.Revocations.Revoked(rec.ID) || revocationStored(t, f.st, rec.ID) || len(events(f.logs, audit.EventDeactivated)) != 0 {
		t.Fatal("an expired session was revoked")
	}
}

// hookStore calls stored after each key it stores: another instance's sync, or this
// instance's own announcement, arriving at that moment.
type hookStore struct {
	inner
	stored func(key string)
}

// inner is the store hookStore wraps, under a name that is not its Store method's.
type inner = state.Store

func (h *hookStore) Store(ctx context.Context, key string, v []byte) error {
	err := h.inner.Store(ctx, key, v)
	if err == nil && h.stored != nil {
		h.stored(key)
	}
	return err
}

// An instance that hears of its own revocation before revoke returns (its announcement
// or its sync) still tells the session's usage as the deactivation it is, after the
// deactivated event.
func TestEndHeardBeforeItReturnsIsStillToldAsItsOwn(t *testing.T) {
	ctx := context.Background()
	f := newSessionsFixture(t)
	_, rec := f.activate(t, f.activation(t))
	hook := &hookStore{inner: f.st}
	a := newTestSessions(t, hook, f.log, f.clock.Now)
	var told []Ended
	a.Live.OnEnd = func(e Ended) {
		told = append(told, e)
		if n := len(f.logs.FilterMessage(Deactivated).All()); n != 1 {
			t.Errorf("session usage told with %d deactivated events written, want it after the one", n)
		}
	}
	claims := &Claims{Grant: Grant{Subject: "alice", Role: rec.Role, SessionID: rec.ID, Expiry: rec.Expires.Unix()}}
	served, cancel := context.WithCancel(ctx)
	a.Live.Register(claims, served, cancel)
	a.Live.Done(claims, served, &Use{Status: 200, At: f.clock.Now()})
	hook.stored = func(key string) {
		if strings.HasPrefix(key, revocationFolder) {
			a.Revocations.Add(rec.ID, rec.Expires) // heard at once: Live.End
		}
	}
	if _, err := a.End(ctx, "alice", rec.ID, Deactivated, "alice", "done"); err != nil {
		t.Fatal(err)
	}
	if len(told) != 1 || told[0].How != Deactivated || told[0].By != "alice" || !told[0].Known {
		t.Fatalf("told %+v, want one deactivation by alice", told)
	}
}
