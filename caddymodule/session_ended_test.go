package caddymodule

import (
	"context"
	"testing"
	"time"

	"github.com/caddy-jit/caddy-jit/session"
)

// Another instance stores the revocation that ends a session here a moment before the
// record that says how it ended: the record is read again until it says, and only a
// record that never does in time makes the end a plain revocation.
func TestHowItEndedWaitsForTheRecord(t *testing.T) {
	ended := session.Ended{SessionID: "s1", How: session.EndedRevoked}
	tests := []struct {
		name          string
		saysAfter     int // reads before the record says how; -1: never
		wantHow, want string
	}{
		{"record already says", 0, session.EndedDeactivated, "alice"},
		{"record says a moment later", 3, session.EndedDeactivated, "alice"},
		{"record never says", -1, session.EndedRevoked, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			reads := 0
			load := func(context.Context) (*session.Record, error) {
				reads++
				if tt.saysAfter < 0 || reads <= tt.saysAfter {
					return &session.Record{}, nil
				}
				return &session.Record{EndHow: session.EndedDeactivated, EndedBy: "alice"}, nil
			}
			how, by := howItEnded(ctx, load, ended)
			if how != tt.wantHow || by != tt.want {
				t.Fatalf("howItEnded = %q by %q after %d reads, want %q by %q", how, by, reads, tt.wantHow, tt.want)
			}
		})
	}
}
