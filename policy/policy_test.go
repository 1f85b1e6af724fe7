package policy

import (
	"regexp"
	"testing"
	"time"
)

var (
	t0   = time.Date(2026, 1, 15, 12, 0, 0, 0, time.UTC)
	jan1 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	feb1 = time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)
	mar1 = time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
)

// ticketPattern compiles a ticket pattern the way caddymodule does: anchored in full.
func ticketPattern(pattern string) *regexp.Regexp {
	return regexp.MustCompile(`^(?:` + pattern + `)$`)
}

func TestEligible(t *testing.T) {
	alice := Caller{User: "alice"}
	tests := []struct {
		name        string
		grants      []Eligibility
		caller      Caller
		at          time.Time
		wantAllowed bool
		wantUntil   time.Time
		wantMessage string
	}{
		{
			name:        "user listed, no window",
			grants:      []Eligibility{{Subjects: []string{"bob", "alice"}}},
			caller:      alice,
			at:          t0,
			wantAllowed: true,
		},
		{
			name:        "user not listed",
			grants:      []Eligibility{{Subjects: []string{"bob"}}},
			caller:      alice,
			at:          t0,
			wantMessage: "alice is not eligible for the role console-admin",
		},
		{
			name:        "no grants at all",
			caller:      alice,
			at:          t0,
			wantMessage: "alice is not eligible for the role console-admin",
		},
		{
			name:        "user names are case sensitive",
			grants:      []Eligibility{{Subjects: []string{"Alice"}}},
			caller:      alice,
			at:          t0,
			wantMessage: "alice is not eligible for the role console-admin",
		},
		{
			name:        "group member",
			grants:      []Eligibility{{Subjects: []string{"group:ops"}}},
			caller:      Caller{User: "dave", Groups: []string{"dev", "ops"}},
			at:          t0,
			wantAllowed: true,
		},
		{
			name:        "not a member of the group",
			grants:      []Eligibility{{Subjects: []string{"group:ops"}}},
			caller:      Caller{User: "dave", Groups: []string{"dev", "opsx", "OPS"}},
			at:          t0,
			wantMessage: "dave is not eligible for the role console-admin",
		},
		{
			name:        "a group name without the prefix names a user, not a group",
			grants:      []Eligibility{{Subjects: []string{"ops"}}},
			caller:      Caller{User: "dave", Groups: []string{"ops"}},
			at:          t0,
			wantMessage: "dave is not eligible for the role console-admin",
		},
		{
			name:        "a user called like a group subject is not that group",
			grants:      []Eligibility{{Subjects: []string{"group:ops"}}},
			caller:      Caller{User: "group:ops"},
			at:          t0,
			wantMessage: "group:ops is not eligible for the role console-admin",
		},
		{
			name:        "the group prefix alone matches no caller without groups",
			grants:      []Eligibility{{Subjects: []string{"group:"}}},
			caller:      alice,
			at:          t0,
			wantMessage: "alice is not eligible for the role console-admin",
		},
		{
			name:        "inside from/until",
			grants:      []Eligibility{{Subjects: []string{"alice"}, From: jan1, Until: feb1}},
			caller:      alice,
			at:          t0,
			wantAllowed: true,
			wantUntil:   feb1,
		},
		{
			name:        "exactly at from: eligible",
			grants:      []Eligibility{{Subjects: []string{"alice"}, From: jan1, Until: feb1}},
			caller:      alice,
			at:          jan1,
			wantAllowed: true,
			wantUntil:   feb1,
		},
		{
			name:        "one nanosecond before from",
			grants:      []Eligibility{{Subjects: []string{"alice"}, From: jan1, Until: feb1}},
			caller:      alice,
			at:          jan1.Add(-time.Nanosecond),
			wantMessage: "alice is eligible for the role console-admin only from 2026-01-01T00:00:00Z",
		},
		{
			name:        "one nanosecond before until: eligible",
			grants:      []Eligibility{{Subjects: []string{"alice"}, From: jan1, Until: feb1}},
			caller:      alice,
			at:          feb1.Add(-time.Nanosecond),
			wantAllowed: true,
			wantUntil:   feb1,
		},
		{
			name:        "exactly at until: ended",
			grants:      []Eligibility{{Subjects: []string{"alice"}, From: jan1, Until: feb1}},
			caller:      alice,
			at:          feb1,
			wantMessage: "alice's eligibility for the role console-admin ended at 2026-02-01T00:00:00Z",
		},
		{
			name:        "only until, before it",
			grants:      []Eligibility{{Subjects: []string{"alice"}, Until: feb1}},
			caller:      alice,
			at:          t0,
			wantAllowed: true,
			wantUntil:   feb1,
		},
		{
			name:        "only from, after it: open ended",
			grants:      []Eligibility{{Subjects: []string{"alice"}, From: jan1}},
			caller:      alice,
			at:          t0,
			wantAllowed: true,
		},
		{
			name:        "message time is UTC whatever the zone of the grant",
			grants:      []Eligibility{{Subjects: []string{"alice"}, From: feb1.In(time.FixedZone("X", 3*3600))}},
			caller:      alice,
			at:          t0,
			wantMessage: "alice is eligible for the role console-admin only from 2026-02-01T00:00:00Z",
		},
		{
			name: "several grants: the later until wins",
			grants: []Eligibility{
				{Subjects: []string{"alice"}, Until: feb1},
				{Subjects: []string{"group:ops"}, Until: mar1},
				{Subjects: []string{"alice"}, Until: feb1.Add(time.Hour)},
			},
			caller:      Caller{User: "alice", Groups: []string{"ops"}},
			at:          t0,
			wantAllowed: true,
			wantUntil:   mar1,
		},
		{
			name: "several grants: the later until wins whatever the order",
			grants: []Eligibility{
				{Subjects: []string{"alice"}, Until: mar1},
				{Subjects: []string{"alice"}, Until: feb1},
			},
			caller:      alice,
			at:          t0,
			wantAllowed: true,
			wantUntil:   mar1,
		},
		{
			name: "several grants: an open-ended one wins over a bounded one listed first",
			grants: []Eligibility{
				{Subjects: []string{"alice"}, Until: feb1},
				{Subjects: []string{"group:ops"}},
			},
			caller:      Caller{User: "alice", Groups: []string{"ops"}},
			at:          t0,
			wantAllowed: true,
		},
		{
			name: "several grants: an open-ended one wins over a bounded one listed after",
			grants: []Eligibility{
				{Subjects: []string{"alice"}, From: jan1},
				{Subjects: []string{"alice"}, Until: mar1},
			},
			caller:      alice,
			at:          t0,
			wantAllowed: true,
		},
		{
			name: "grants that do not cover the caller or are outside their window do not extend",
			grants: []Eligibility{
				{Subjects: []string{"bob"}},
				{Subjects: []string{"alice"}, From: feb1},
				{Subjects: []string{"alice"}, Until: jan1},
				{Subjects: []string{"alice"}, Until: feb1},
			},
			caller:      alice,
			at:          t0,
			wantAllowed: true,
			wantUntil:   feb1,
		},
		{
			name: "several future grants: the message names the soonest start",
			grants: []Eligibility{
				{Subjects: []string{"alice"}, From: mar1},
				{Subjects: []string{"alice"}, From: feb1},
			},
			caller:      alice,
			at:          t0,
			wantMessage: "alice is eligible for the role console-admin only from 2026-02-01T00:00:00Z",
		},
		{
			name: "several ended grants: the message names the latest end",
			grants: []Eligibility{
				{Subjects: []string{"alice"}, Until: jan1.Add(24 * time.Hour)},
				{Subjects: []string{"alice"}, Until: jan1.Add(48 * time.Hour)},
				{Subjects: []string{"alice"}, Until: jan1},
			},
			caller:      alice,
			at:          t0,
			wantMessage: "alice's eligibility for the role console-admin ended at 2026-01-03T00:00:00Z",
		},
		{
			name: "an ended and a future grant: the message names the start",
			grants: []Eligibility{
				{Subjects: []string{"alice"}, Until: jan1},
				{Subjects: []string{"alice"}, From: feb1},
			},
			caller:      alice,
			at:          t0,
			wantMessage: "alice is eligible for the role console-admin only from 2026-02-01T00:00:00Z",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &Role{Name: "console-admin", MaxDuration: time.Hour, Eligibility: tt.grants}
			d := r.Eligible(tt.caller, tt.at)
			if d.Allowed != tt.wantAllowed {
				t.Fatalf("Allowed = %v, want %v (decision %+v)", d.Allowed, tt.wantAllowed, d)
			}
			if tt.wantAllowed {
				if d.Reason != ReasonAllowed || d.Message != "" {
					t.Errorf("allowed decision = %+v, want reason %q and no message", d, ReasonAllowed)
				}
				if !d.EligibleUntil.Equal(tt.wantUntil) {
					t.Errorf("EligibleUntil = %v, want %v", d.EligibleUntil, tt.wantUntil)
				}
				return
			}
			if d.Reason != ReasonNotEligible {
				t.Errorf("Reason = %q, want %q", d.Reason, ReasonNotEligible)
			}
			if d.Message != tt.wantMessage {
				t.Errorf("Message = %q, want %q", d.Message, tt.wantMessage)
			}
			if !d.EligibleUntil.IsZero() {
				t.Errorf("EligibleUntil = %v on a refusal, want zero", d.EligibleUntil)
			}
		})
	}
}
