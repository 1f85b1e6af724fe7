package policy

import (
	"testing"
	"time"
)

func TestMayApprove(t *testing.T) {
	a := &Approval{Approvers: []string{"bob", "alice", "group:security"}, Count: 1, Expires: time.Hour}
	tests := []struct {
		name        string
		approval    *Approval
		approver    Caller
		requester   string
		wantReason  Reason
		wantMessage string
	}{
		{"listed user", a, Caller{User: "bob"}, "alice", ReasonAllowed, ""},
		{"group approver through the caller's groups", a, Caller{User: "carol", Groups: []string{"dev", "security"}}, "alice", ReasonAllowed, ""},
		{"self-approval by a listed user", a, Caller{User: "alice"}, "alice", ReasonSelfApproval, "no one can approve their own request"},
		{"self-approval by a group member", a, Caller{User: "carol", Groups: []string{"security"}}, "carol", ReasonSelfApproval, "no one can approve their own request"},
		{"self-approval by a non-approver", a, Caller{User: "mallory"}, "mallory", ReasonSelfApproval, "no one can approve their own request"},
		{"non-approver", a, Caller{User: "mallory", Groups: []string{"dev"}}, "alice", ReasonNotApprover, "mallory is not an approver of this role"},
		{"group name without the prefix is not a group", &Approval{Approvers: []string{"security"}}, Caller{User: "carol", Groups: []string{"security"}}, "alice", ReasonNotApprover, "carol is not an approver of this role"},
		{"a user called like a group subject", a, Caller{User: "group:security"}, "alice", ReasonNotApprover, "group:security is not an approver of this role"},
		{"group names are case sensitive", a, Caller{User: "carol", Groups: []string{"Security"}}, "alice", ReasonNotApprover, "carol is not an approver of this role"},
		{"no approvers at all", &Approval{Count: 1}, Caller{User: "bob"}, "alice", ReasonNotApprover, "bob is not an approver of this role"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := tt.approval.MayApprove(tt.approver, tt.requester)
			if d.Reason != tt.wantReason {
				t.Fatalf("Reason = %q, want %q (decision %+v)", d.Reason, tt.wantReason, d)
			}
			if d.Allowed != (tt.wantReason == ReasonAllowed) {
				t.Errorf("Allowed = %v with reason %q", d.Allowed, d.Reason)
			}
			if d.Message != tt.wantMessage {
				t.Errorf("Message = %q, want %q", d.Message, tt.wantMessage)
			}
			if !d.EligibleUntil.IsZero() {
				t.Errorf("EligibleUntil = %v, want zero", d.EligibleUntil)
			}
		})
	}
}

func TestNeedsApproval(t *testing.T) {
	tests := []struct {
		name     string
		approval *Approval
		want     bool
	}{
		{"no approval", nil, false},
		{"approval with count 0", &Approval{Approvers: []string{"bob"}}, false},
		{"approval with count 1", &Approval{Approvers: []string{"bob"}, Count: 1}, true},
		{"approval with count 2", &Approval{Approvers: []string{"bob", "carol"}, Count: 2}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &Role{Name: "console-admin", Approval: tt.approval}
			if got := r.NeedsApproval(); got != tt.want {
				t.Errorf("NeedsApproval() = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestCheckActiveCount(t *testing.T) {
	tests := []struct {
		name        string
		maxActive   int
		active      int
		wantReason  Reason
		wantMessage string
	}{
		{"unlimited, none active", 0, 0, ReasonAllowed, ""},
		{"unlimited, many active", 0, 1000, ReasonAllowed, ""},
		{"limit 1, none active", 1, 0, ReasonAllowed, ""},
		{"limit 1, one active", 1, 1, ReasonMaxActive, "the role console-admin is already held by 1 people, its limit (max_active 1); try again when a session ends"},
		{"limit 2, one active", 2, 1, ReasonAllowed, ""},
		{"limit 2, at the limit", 2, 2, ReasonMaxActive, "the role console-admin is already held by 2 people, its limit (max_active 2); try again when a session ends"},
		{"limit 2, over the limit", 2, 3, ReasonMaxActive, "the role console-admin is already held by 3 people, its limit (max_active 2); try again when a session ends"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &Role{Name: "console-admin", MaxActive: tt.maxActive}
			d := r.CheckActiveCount(tt.active)
			if d.Reason != tt.wantReason {
				t.Fatalf("Reason = %q, want %q (decision %+v)", d.Reason, tt.wantReason, d)
			}
			if d.Allowed != (tt.wantReason == ReasonAllowed) {
				t.Errorf("Allowed = %v with reason %q", d.Allowed, d.Reason)
			}
			if d.Message != tt.wantMessage {
				t.Errorf("Message = %q, want %q", d.Message, tt.wantMessage)
			}
		})
	}
}

func TestExtension(t *testing.T) {
	start := t0
	tests := []struct {
		name        string
		maxTotal    time.Duration // MaxDuration is 1h
		expires     time.Time
		at          time.Time
		duration    time.Duration
		want        time.Time
		wantReason  Reason
		wantMessage string // checked when not empty
	}{
		{
			name: "no max_total", maxTotal: 0,
			expires: start.Add(time.Hour), at: start.Add(50 * time.Minute), duration: 30 * time.Minute,
			wantReason:  ReasonExtensionNotPermitted,
			wantMessage: "sessions of the role console-admin cannot be extended (no max_total longer than max_duration)",
		},
		{
			name: "max_total equal to max_duration", maxTotal: time.Hour,
			expires: start.Add(time.Hour), at: start.Add(50 * time.Minute), duration: 30 * time.Minute,
			wantReason: ReasonExtensionNotPermitted,
		},
		{
			name: "max_total below max_duration", maxTotal: 30 * time.Minute,
			expires: start.Add(30 * time.Minute), at: start.Add(20 * time.Minute), duration: 10 * time.Minute,
			wantReason: ReasonExtensionNotPermitted,
		},
		{
			name: "not permitted comes before the duration", maxTotal: 0,
			expires: start.Add(time.Hour), at: start.Add(50 * time.Minute), duration: 0,
			wantReason: ReasonExtensionNotPermitted,
		},
		{
			name: "zero duration", maxTotal: 4 * time.Hour,
			expires: start.Add(time.Hour), at: start.Add(50 * time.Minute), duration: 0,
			wantReason: ReasonDurationInvalid, wantMessage: "the duration must be positive",
		},
		{
			name: "negative duration", maxTotal: 4 * time.Hour,
			expires: start.Add(time.Hour), at: start.Add(50 * time.Minute), duration: -time.Minute,
			wantReason: ReasonDurationInvalid, wantMessage: "the duration must be positive",
		},
		{
			name: "longer than max_duration", maxTotal: 4 * time.Hour,
			expires: start.Add(time.Hour), at: start.Add(50 * time.Minute), duration: time.Hour + time.Nanosecond,
			wantReason: ReasonDurationTooLong, wantMessage: "an extension lasts at most 1h",
		},
		{
			name: "normal extension ends at at+duration", maxTotal: 4 * time.Hour,
			expires: start.Add(time.Hour), at: start.Add(50 * time.Minute), duration: 30 * time.Minute,
			want: start.Add(80 * time.Minute), wantReason: ReasonAllowed,
		},
		{
			name: "extension of exactly max_duration", maxTotal: 4 * time.Hour,
			expires: start.Add(time.Hour), at: start.Add(50 * time.Minute), duration: time.Hour,
			want: start.Add(110 * time.Minute), wantReason: ReasonAllowed,
		},
		{
			name: "extension ending exactly at the cap", maxTotal: 4 * time.Hour,
			expires: start.Add(3*time.Hour + 30*time.Minute), at: start.Add(3 * time.Hour), duration: time.Hour,
			want: start.Add(4 * time.Hour), wantReason: ReasonAllowed,
		},
		{
			name: "capped at start+max_total", maxTotal: 4 * time.Hour,
			expires: start.Add(3*time.Hour + 45*time.Minute), at: start.Add(3*time.Hour + 30*time.Minute), duration: time.Hour,
			want: start.Add(4 * time.Hour), wantReason: ReasonAllowed,
		},
		{
			name: "cap equal to the current expiry", maxTotal: 4 * time.Hour,
			expires: start.Add(4 * time.Hour), at: start.Add(3*time.Hour + 30*time.Minute), duration: time.Hour,
			wantReason:  ReasonMaxTotal,
			wantMessage: "this session has reached the role's limit of 4h in total (max_total); activate the role again instead",
		},
		{
			name: "cap before the current expiry", maxTotal: 90 * time.Minute,
			expires: start.Add(2 * time.Hour), at: start.Add(90 * time.Minute), duration: time.Hour,
			wantReason:  ReasonMaxTotal,
			wantMessage: "this session has reached the role's limit of 1h30m in total (max_total); activate the role again instead",
		},
		{
			name: "ends before the current expiry", maxTotal: 4 * time.Hour,
			expires: start.Add(time.Hour), at: start.Add(10 * time.Minute), duration: 30 * time.Minute,
			wantReason:  ReasonDurationInvalid,
			wantMessage: "the session already runs until " + start.Add(time.Hour).UTC().Format("15:04 UTC") + ": ask for a longer duration",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &Role{Name: "console-admin", MaxDuration: time.Hour, MaxTotal: tt.maxTotal}
			end, d := r.Extension(start, tt.expires, tt.at, tt.duration)
			if d.Reason != tt.wantReason {
				t.Fatalf("Reason = %q, want %q (decision %+v, end %v)", d.Reason, tt.wantReason, d, end)
			}
			if d.Allowed != (tt.wantReason == ReasonAllowed) {
				t.Errorf("Allowed = %v with reason %q", d.Allowed, d.Reason)
			}
			if tt.wantMessage != "" && d.Message != tt.wantMessage {
				t.Errorf("Message = %q, want %q", d.Message, tt.wantMessage)
			}
			if d.Allowed {
				if d.Message != "" {
					t.Errorf("allowed with message %q", d.Message)
				}
				if !end.Equal(tt.want) {
					t.Errorf("end = %v, want %v", end, tt.want)
				}
			} else {
				if d.Message == "" {
					t.Errorf("refusal %q without a message", d.Reason)
				}
				if !end.IsZero() {
					t.Errorf("end = %v on a refusal, want zero", end)
				}
			}
		})
	}
}
