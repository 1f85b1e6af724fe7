package commands

import (
	"strings"
	"testing"
	"time"

	"github.com/caddy-jit/caddy-jit/internal/adminapi"
	"github.com/caddy-jit/caddy-jit/session"
)

// TestWriteRevokedSaysWhatBecameOfTheID: the CLI tells a revoked session, an id with
// no stored session (revoked all the same, until when) and an expired one apart.
func TestWriteRevokedSaysWhatBecameOfTheID(t *testing.T) {
	start := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	const id = "AAAAAAAAAAAAAAAAAAAAAA"
	for _, tt := range []struct {
		name string
		info adminapi.Session
		want string
	}{
		{"a recorded session", adminapi.Session{Record: &session.Record{ID: id, User: "alice", Role: "console-admin", Start: start, Expires: start.Add(time.Hour), Ended: start.Add(time.Minute)}, Revoked: true},
			"Revoked session " + id + " of alice (role console-admin, started 2026-03-01 09:00 UTC, would have expired 2026-03-01 10:00 UTC).\n"},
		{"an id with no record", adminapi.Session{Record: &session.Record{ID: id, Expires: start.Add(7 * 24 * time.Hour), Ended: start}, Revoked: true},
			"Revoked " + id + ": no session with that id is stored (it may never have existed, or its record was pruned); a token carrying it is refused until 2026-03-08 09:00 UTC.\n"},
		{"an expired session", adminapi.Session{Record: &session.Record{ID: id, User: "alice", Role: "console-admin", Start: start, Expires: start.Add(time.Hour)}},
			"Session " + id + " of alice (role console-admin) had already expired at 2026-03-01 10:00 UTC: nothing to revoke.\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var out strings.Builder
			if err := writeRevoked(&out, tt.info); err != nil {
				t.Fatal(err)
			}
			if out.String() != tt.want {
				t.Errorf("got  %q\nwant %q", out.String(), tt.want)
			}
		})
	}
}
