package session

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/caddy-jit/caddy-jit/audit"
	"github.com/caddy-jit/caddy-jit/policy"
)

func TestCheckSessionID(t *testing.T) {
	for _, tt := range []struct {
		name, id string
		want     string // part of the error; "" for none
	}{
		{"one of ours", testSID, ""},
		{"with - and _", "-_-_-_-_-_-_-_-_-_-_-_", ""},
		{"empty", "", "no session id"},
		{"too short", "abc", "has 3 characters"},
		{"too long", testSID + "A", "has 23 characters"},
		{"a dot", testSID[:21] + ".", "outside base64url"},
		{"a slash", testSID[:21] + "/", "outside base64url"},
		{"standard base64", testSID[:21] + "+", "outside base64url"},
		{"a NUL", testSID[:21] + "\x00", "outside base64url"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckSessionID(tt.id)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("CheckSessionID(%q) = %v, want nil", tt.id, err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "22 characters of base64url")):
				t.Fatalf("CheckSessionID(%q) = %v, want an error with %q that names the shape", tt.id, err, tt.want)
			}
		})
	}
}

func TestUnrecordedRevocationKeep(t *testing.T) {
	for _, tt := range []struct {
		name  string
		roles map[string]*policy.Role
		want  time.Duration
	}{
		{"no roles", nil, policy.MaxStartAhead},
		{"max_duration", map[string]*policy.Role{"a": {MaxDuration: time.Hour}}, time.Hour + policy.MaxStartAhead},
		{"max_total of an extendable role", map[string]*policy.Role{"a": {MaxDuration: time.Hour, MaxTotal: 8 * time.Hour}}, 8*time.Hour + policy.MaxStartAhead},
		{"the longest of several", map[string]*policy.Role{
			"a": {MaxDuration: time.Hour, MaxTotal: 3 * time.Hour},
			"b": {MaxDuration: 12 * time.Hour},
			"c": {MaxDuration: 30 * time.Minute},
		}, 12*time.Hour + policy.MaxStartAhead},
	} {
		if got := UnrecordedRevocationKeep(tt.roles); got != tt.want {
			t.Errorf("%s: UnrecordedRevocationKeep = %s, want %s", tt.name, got, tt.want)
		}
	}
}

// TestRevokeByIDWithoutARecord: an id that names no stored session is revoked all the
// same: refused at once here (cached or not), stored for the other instances and for
// restarts, kept for keep, and audited.
func TestRevokeByIDWithoutARecord(t *testing.T) {
	f := newSessionsFixture(t)
	ctx := context.Background()
	now := f.clock.Now()
	// A token whose session has no record, as one made with a stolen key has.
	token, err := f.a.Keyring.Sign(Claims{Grant: Grant{Issuer: "x", Subject: "alice", Audience: audience, Role: "console-admin", SessionID: testSID, IssuedAt: now.Unix(), NotBefore: now.Unix(), Expiry: now.Add(30 * time.Minute).Unix()}, Methods: []string{"otp"}})
	if err != nil {
		t.Fatal(err)
	}
	want := Want{Subject: "alice", Audience: audience, Roles: []string{"console-admin"}, Rules: map[string]*policy.Role{"console-admin": f.role}}
	if _, err := f.a.Verifier.Verify(token, want, now); err != nil {
		t.Fatalf("before the revocation: %v", err)
	}

	const keep = 2 * time.Hour
	rec, err := f.a.RevokeByID(ctx, testSID, "ops", "forged token seen", keep)
	if err != nil {
		t.Fatalf("RevokeByID of an id without a record = %v", err)
	}
	until := now.Add(keep).Truncate(time.Second)
	if rec.ID != testSID || rec.User != "" || rec.Role != "" || rec.Ended.IsZero() || !rec.Expires.Equal(until) || rec.EndedBy != "ops" {
		t.Errorf("record = %+v, want the id alone, ended by ops, until %s", rec, until)
	}
	if _, err := f.a.Verifier.Verify(token, want, now); !errors.Is(err, ErrTokenRevoked) {
		t.Errorf("the cached token after the revocation: %v, want %v", err, ErrTokenRevoked)
	}
	if !revocationStored(t, f.st, testSID) {
		t.Fatal("the revocation was not stored")
	}
	// Another instance (or a restart) learns of it from storage, until keep is over.
	for _, tt := range []struct {
		name string
		at   time.Time
		want bool
	}{
		{"just after", now.Add(time.Second), true},
		{"a second before keep is over", until.Add(-time.Second), true},
		{"when keep is over", until, false},
	} {
		other := NewRevocations()
		if err := f.a.Records.LoadRevocations(ctx, other, tt.at, time.Time{}); err != nil {
			t.Fatal(err)
		}
		if got := other.Revoked(testSID); got != tt.want {
			t.Errorf("%s: another instance holds the revocation: %v, want %v", tt.name, got, tt.want)
		}
	}
	ev := events(f.logs, audit.EventRevoked)
	if len(ev) != 1 {
		t.Fatalf("%d revoked events, want 1", len(ev))
	}
	if m := fieldsOf(ev[0]); m["session_id"] != testSID || m["by"] != "ops" || m["no_record"] != true || m["reason"] != "forged token seen" {
		t.Errorf("revoked event = %v", m)
	}
}

func TestRevokeByIDRefusesBadInput(t *testing.T) {
	f := newSessionsFixture(t)
	ctx := context.Background()
	for _, tt := range []struct {
		name string
		id   string
		keep time.Duration
		want string
	}{
		{"malformed id", "../../keys/signing", time.Hour, "base64url"},
		{"empty id", "", time.Hour, "no session id"},
		{"no keep", testSID, 0, "positive duration"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := f.a.RevokeByID(ctx, tt.id, "ops", "", tt.keep); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("RevokeByID = %v, want an error with %q", err, tt.want)
			}
			if f.a.Revocations.Len() != 0 || revocationStored(t, f.st, testSID) || len(events(f.logs, audit.EventRevoked)) != 0 {
				t.Fatal("a refused revocation changed something")
			}
		})
	}
}

// TestRevokeByIDOfARecordedSession: an id with a record is ended as EndByID ends it,
// with the record's own expiry.
func TestRevokeByIDOfARecordedSession(t *testing.T) {
	f := newSessionsFixture(t)
	_, rec := f.activate(t, f.activation(t))
	got, err := f.a.RevokeByID(context.Background(), rec.ID, "ops", "done", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if got.User != "alice" || got.Ended.IsZero() || !got.Expires.Equal(rec.Expires) || !f.a.Revocations.Revoked(rec.ID) {
		t.Fatalf("record = %+v, want alice's session ended with its own expiry %s", got, rec.Expires)
	}
	if ev := events(f.logs, audit.EventRevoked); len(ev) != 1 || fieldsOf(ev[0])["user"] != "alice" || fieldsOf(ev[0])["no_record"] != nil {
		t.Fatalf("revoked events = %v, want one for alice's recorded session", ev)
	}
}

func TestRevokeByIDDuringAnOutageRefusesLocally(t *testing.T) {
	f := newSessionsFixture(t)
	f.a.Records.storage = brokenStorage(t)
	_, err := f.a.RevokeByID(context.Background(), testSID, "ops", "", time.Hour)
	if !errors.Is(err, ErrRevokedLocallyOnly) {
		t.Fatalf("RevokeByID during an outage = %v, want ErrRevokedLocallyOnly", err)
	}
	if !f.a.Revocations.Revoked(testSID) {
		t.Fatal("the id is not refused on this instance")
	}
}

// Session ids go on command lines: none starts with a dash, which reads as a flag.
func TestSessionIDsNeverStartWithADash(t *testing.T) {
	for range 5000 {
		if id := newSessionID(); id[0] == '-' || CheckSessionID(id) != nil {
			t.Fatalf("session id %q", id)
		}
	}
}
