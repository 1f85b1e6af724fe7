package policy

import (
	"strings"
	"testing"
	"time"
)

func TestActivationWorkflow(t *testing.T) {
	alice := Caller{User: "alice"}
	// t0 is Thursday 15 January 2026, 12:00 UTC.
	weekdayHours := func(from, to int) []HoursWindow {
		return []HoursWindow{{Days: weekdays(), From: from, To: to, Location: time.UTC}}
	}
	morning := weekdayHours(hm(8, 0), hm(10, 0))
	const morningText = "mon,tue,wed,thu,fri 08:00-10:00 UTC"
	base := func() *Role {
		return &Role{
			Name:                   "console-admin",
			MaxDuration:            time.Hour,
			DefaultDuration:        15 * time.Minute,
			JustificationMinLength: 10,
			Eligibility:            []Eligibility{{Subjects: []string{"alice"}, Until: feb1}},
		}
	}
	ok := Request{Caller: alice, Duration: 15 * time.Minute, Justification: "restart the stuck queue"}
	with := func(change func(*Request)) Request {
		r := ok
		change(&r)
		return r
	}
	breakGlassRole := func(r *Role) { r.BreakGlass = true }
	tests := []struct {
		name        string
		role        func(*Role)
		req         Request
		wantReason  Reason
		wantMessage string    // checked when not empty
		wantUntil   time.Time // checked when allowed; feb1 when zero
	}{
		// Start.
		{name: "no start", req: ok, wantReason: ReasonAllowed},
		{name: "start now", req: with(func(r *Request) { r.Start = t0 }), wantReason: ReasonAllowed},
		{name: "scheduled start in two hours", req: with(func(r *Request) { r.Start = t0.Add(2 * time.Hour) }), wantReason: ReasonAllowed},
		{name: "start 30s in the past is taken as now", req: with(func(r *Request) { r.Start = t0.Add(-30 * time.Second) }), wantReason: ReasonAllowed},
		{name: "start exactly one minute in the past", req: with(func(r *Request) { r.Start = t0.Add(-time.Minute) }), wantReason: ReasonAllowed},
		{
			name:        "start a nanosecond more than a minute in the past",
			req:         with(func(r *Request) { r.Start = t0.Add(-time.Minute - time.Nanosecond) }),
			wantReason:  ReasonStartInvalid,
			wantMessage: "the start time 2026-01-15T11:58:59Z has passed",
		},
		{
			name:        "start two hours in the past, message in UTC",
			req:         with(func(r *Request) { r.Start = t0.Add(-2 * time.Hour).In(time.FixedZone("X", 2*3600)) }),
			wantReason:  ReasonStartInvalid,
			wantMessage: "the start time 2026-01-15T10:00:00Z has passed",
		},
		{name: "start exactly MaxStartAhead ahead", req: with(func(r *Request) { r.Start = t0.Add(MaxStartAhead) }), wantReason: ReasonAllowed},
		{
			name:        "start more than MaxStartAhead ahead",
			req:         with(func(r *Request) { r.Start = t0.Add(MaxStartAhead + time.Nanosecond) }),
			wantReason:  ReasonStartInvalid,
			wantMessage: "a session can be scheduled at most 7 days ahead",
		},
		{
			name:        "start checked before eligibility",
			req:         with(func(r *Request) { r.Caller = Caller{User: "mallory"}; r.Start = t0.Add(-time.Hour) }),
			wantReason:  ReasonStartInvalid,
			wantMessage: "the start time 2026-01-15T11:00:00Z has passed",
		},

		// Break-glass.
		{
			name:        "break-glass with a start",
			role:        breakGlassRole,
			req:         with(func(r *Request) { r.BreakGlass = true; r.Start = t0.Add(time.Hour) }),
			wantReason:  ReasonBreakGlassScheduled,
			wantMessage: "break-glass access starts now; it cannot be scheduled",
		},
		{name: "break-glass with a start, even now", role: breakGlassRole, req: with(func(r *Request) { r.BreakGlass = true; r.Start = t0 }), wantReason: ReasonBreakGlassScheduled},
		{
			name:        "break-glass on a role without it",
			req:         with(func(r *Request) { r.BreakGlass = true }),
			wantReason:  ReasonBreakGlassNotAllowed,
			wantMessage: "the role console-admin has no break-glass access",
		},
		{
			name:       "eligibility comes before break-glass not allowed",
			req:        with(func(r *Request) { r.BreakGlass = true; r.Caller = Caller{User: "mallory"} }),
			wantReason: ReasonNotEligible,
		},
		{
			name:       "break-glass does not make an ineligible caller eligible",
			role:       func(r *Role) { r.BreakGlass = true; r.AllowedHours = morning },
			req:        with(func(r *Request) { r.BreakGlass = true; r.Caller = Caller{User: "mallory"} }),
			wantReason: ReasonNotEligible, wantMessage: "mallory is not eligible for the role console-admin",
		},
		{name: "break-glass on a role with it, no hours", role: breakGlassRole, req: with(func(r *Request) { r.BreakGlass = true }), wantReason: ReasonAllowed},

		// Allowed hours.
		{name: "inside allowed hours", role: func(r *Role) { r.AllowedHours = weekdayHours(hm(8, 0), hm(18, 0)) }, req: ok, wantReason: ReasonAllowed},
		{
			name:        "outside allowed hours, no break-glass on the role",
			role:        func(r *Role) { r.AllowedHours = morning },
			req:         ok,
			wantReason:  ReasonOutsideHours,
			wantMessage: "the role console-admin can be activated only during its allowed hours (" + morningText + ")",
		},
		{
			name:        "outside allowed hours, the role has break-glass",
			role:        func(r *Role) { r.AllowedHours = morning; r.BreakGlass = true },
			req:         ok,
			wantReason:  ReasonOutsideHours,
			wantMessage: "the role console-admin can be activated only during its allowed hours (" + morningText + "); in an emergency, use break-glass",
		},
		{
			name: "outside two windows, both listed",
			role: func(r *Role) {
				r.AllowedHours = append(append([]HoursWindow{}, morning...), HoursWindow{Days: days(time.Saturday), From: hm(10, 0), To: hm(14, 0), Location: time.UTC})
			},
			req:         ok,
			wantReason:  ReasonOutsideHours,
			wantMessage: "the role console-admin can be activated only during its allowed hours (" + morningText + "; sat 10:00-14:00 UTC)",
		},
		{name: "break-glass outside allowed hours", role: func(r *Role) { r.AllowedHours = morning; r.BreakGlass = true }, req: with(func(r *Request) { r.BreakGlass = true }), wantReason: ReasonAllowed},
		{
			name:       "break-glass on a role without it, outside hours",
			role:       func(r *Role) { r.AllowedHours = morning },
			req:        with(func(r *Request) { r.BreakGlass = true }),
			wantReason: ReasonBreakGlassNotAllowed,
		},
		{
			name:       "hours judged at the scheduled start: now outside, start inside",
			role:       func(r *Role) { r.AllowedHours = morning },
			req:        with(func(r *Request) { r.Start = week(time.Friday, 8, 30, time.UTC) }),
			wantReason: ReasonAllowed,
		},
		{
			name:       "hours judged at the scheduled start: now inside, start outside",
			role:       func(r *Role) { r.AllowedHours = weekdayHours(hm(11, 0), hm(13, 0)) },
			req:        with(func(r *Request) { r.Start = t0.Add(3 * time.Hour) }),
			wantReason: ReasonOutsideHours,
		},
		{
			name:       "a start within the minute of grace is judged now",
			role:       func(r *Role) { r.AllowedHours = weekdayHours(hm(12, 0), hm(13, 0)) },
			req:        with(func(r *Request) { r.Start = t0.Add(-30 * time.Second) }),
			wantReason: ReasonAllowed,
		},

		// Break-glass justification.
		{
			name:        "break-glass without a justification on a role where it is optional",
			role:        func(r *Role) { r.BreakGlass = true; r.JustificationMinLength = 0 },
			req:         with(func(r *Request) { r.BreakGlass = true; r.Justification = "" }),
			wantReason:  ReasonJustificationMissing,
			wantMessage: "a justification is required",
		},
		{
			name:        "break-glass with 9 characters on a role where it is optional",
			role:        func(r *Role) { r.BreakGlass = true; r.JustificationMinLength = 0 },
			req:         with(func(r *Request) { r.BreakGlass = true; r.Justification = "123456789" }),
			wantReason:  ReasonJustificationTooShort,
			wantMessage: "the justification is too short: at least 10 characters are required",
		},
		{
			name:       "break-glass with 10 characters on a role where it is optional",
			role:       func(r *Role) { r.BreakGlass = true; r.JustificationMinLength = 0 },
			req:        with(func(r *Request) { r.BreakGlass = true; r.Justification = "1234567890" }),
			wantReason: ReasonAllowed,
		},
		{
			name:       "without break-glass the same role takes a short justification",
			role:       func(r *Role) { r.BreakGlass = true; r.JustificationMinLength = 0 },
			req:        with(func(r *Request) { r.Justification = "x" }),
			wantReason: ReasonAllowed,
		},
		{
			name:        "break-glass keeps the role's longer minimum",
			role:        func(r *Role) { r.BreakGlass = true; r.JustificationMinLength = 20 },
			req:         with(func(r *Request) { r.BreakGlass = true; r.Justification = "fifteen chars!!" }),
			wantReason:  ReasonJustificationTooShort,
			wantMessage: "the justification is too short: at least 20 characters are required",
		},

		// Eligibility at the scheduled start.
		{
			name:       "eligibility that begins after now but before the start",
			role:       func(r *Role) { r.Eligibility[0].From = t0.Add(time.Hour) },
			req:        with(func(r *Request) { r.Start = t0.Add(2 * time.Hour) }),
			wantReason: ReasonAllowed,
		},
		{
			name:        "eligibility that begins after now, no start",
			role:        func(r *Role) { r.Eligibility[0].From = t0.Add(time.Hour) },
			req:         ok,
			wantReason:  ReasonNotEligible,
			wantMessage: "alice is eligible for the role console-admin only from 2026-01-15T13:00:00Z",
		},
		{
			name:        "eligibility that begins after the start",
			role:        func(r *Role) { r.Eligibility[0].From = t0.Add(3 * time.Hour) },
			req:         with(func(r *Request) { r.Start = t0.Add(2 * time.Hour) }),
			wantReason:  ReasonNotEligible,
			wantMessage: "alice is eligible for the role console-admin only from 2026-01-15T15:00:00Z",
		},
		{
			name:        "eligibility that ends before the start",
			role:        func(r *Role) { r.Eligibility[0].Until = t0.Add(time.Hour) },
			req:         with(func(r *Request) { r.Start = t0.Add(2 * time.Hour) }),
			wantReason:  ReasonNotEligible,
			wantMessage: "alice's eligibility for the role console-admin ended at 2026-01-15T13:00:00Z",
		},
		{
			name:       "eligibility that ends after the start",
			role:       func(r *Role) { r.Eligibility[0].Until = t0.Add(3 * time.Hour) },
			req:        with(func(r *Request) { r.Start = t0.Add(2 * time.Hour) }),
			wantReason: ReasonAllowed,
			wantUntil:  t0.Add(3 * time.Hour),
		},
		{
			name: "the grant in force at the start gives EligibleUntil",
			role: func(r *Role) {
				r.Eligibility = []Eligibility{
					{Subjects: []string{"alice"}, Until: t0.Add(time.Hour)},
					{Subjects: []string{"alice"}, From: t0.Add(90 * time.Minute), Until: mar1},
				}
			},
			req:        with(func(r *Request) { r.Start = t0.Add(2 * time.Hour) }),
			wantReason: ReasonAllowed,
			wantUntil:  mar1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := base()
			if tt.role != nil {
				tt.role(r)
			}
			d := r.Activation(tt.req, t0)
			if d.Reason != tt.wantReason {
				t.Fatalf("Reason = %q, want %q (decision %+v)", d.Reason, tt.wantReason, d)
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
				want := tt.wantUntil
				if want.IsZero() {
					want = feb1
				}
				if !d.EligibleUntil.Equal(want) {
					t.Errorf("EligibleUntil = %v, want %v", d.EligibleUntil, want)
				}
			} else {
				if d.Message == "" {
					t.Errorf("refusal %q without a message", d.Reason)
				}
				if d.Reason == ReasonOutsideHours && strings.Contains(d.Message, "break-glass") != r.BreakGlass {
					t.Errorf("message %q mentions break-glass = %v, role allows it = %v", d.Message, !r.BreakGlass, r.BreakGlass)
				}
			}
		})
	}
}

func TestBusiest(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)
	at := func(m int) time.Time { return t0.Add(time.Duration(m) * time.Minute) }
	span := func(from, to int) Span { return Span{Start: at(from), End: at(to)} }
	tests := []struct {
		name       string
		held       []Span
		start, end int
		want       int
		wantAt     int
	}{
		{name: "none", start: 0, end: 60},
		{name: "one inside", held: []Span{span(10, 20)}, start: 0, end: 60, want: 1, wantAt: 10},
		{name: "one before", held: []Span{span(-30, 0)}, start: 0, end: 60},
		{name: "one after", held: []Span{span(60, 90)}, start: 0, end: 60},
		{name: "ends as another starts: never side by side", held: []Span{span(0, 30), span(30, 60)}, start: 0, end: 60, want: 1, wantAt: 0},
		{name: "two apart in the window: one at a time", held: []Span{span(0, 10), span(40, 50)}, start: 0, end: 60, want: 1, wantAt: 0},
		{name: "two overlapping", held: []Span{span(0, 40), span(30, 50)}, start: 0, end: 60, want: 2, wantAt: 30},
		{name: "overlap outside the window", held: []Span{span(0, 40), span(30, 50)}, start: 0, end: 30, want: 1, wantAt: 0},
		{name: "scheduled start after the window's start", held: []Span{span(45, 120)}, start: 30, end: 60, want: 1, wantAt: 45},
		{name: "empty window", held: []Span{span(0, 60)}, start: 30, end: 30},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, when := Busiest(tt.held, at(tt.start), at(tt.end))
			if got != tt.want || (got > 0 && !when.Equal(at(tt.wantAt))) {
				t.Fatalf("Busiest = %d at %s, want %d at %s", got, when, tt.want, at(tt.wantAt))
			}
		})
	}
}

func TestCheckPlace(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)
	bob := []Span{{Start: t0.Add(30 * time.Minute), End: t0.Add(90 * time.Minute)}}
	tests := []struct {
		name       string
		maxActive  int
		held       []Span
		start, end time.Time
		allowed    bool
		message    string
	}{
		{name: "no limit", held: bob, start: t0, end: t0.Add(time.Hour), allowed: true},
		{name: "up to the scheduled start", maxActive: 1, held: bob, start: t0, end: t0.Add(30 * time.Minute), allowed: true},
		{name: "past the scheduled start", maxActive: 1, held: bob, start: t0, end: t0.Add(31 * time.Minute), message: "from 2026-12-01 08:30 UTC the role desk is held by 1 other session"},
		{name: "held from the start", maxActive: 1, held: bob, start: t0.Add(40 * time.Minute), end: t0.Add(50 * time.Minute), message: "already held by 1 people"},
		{name: "room for two", maxActive: 2, held: bob, start: t0, end: t0.Add(time.Hour), allowed: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &Role{Name: "desk", MaxActive: tt.maxActive}
			d := r.CheckPlace(tt.held, tt.start, tt.end)
			if d.Allowed != tt.allowed {
				t.Fatalf("CheckPlace = %+v, want allowed %v", d, tt.allowed)
			}
			if !tt.allowed && (d.Reason != ReasonMaxActive || !strings.Contains(d.Message, tt.message) || !strings.Contains(d.Message, "max_active 1")) {
				t.Fatalf("CheckPlace = %+v, want %s saying %q", d, ReasonMaxActive, tt.message)
			}
		})
	}
}

func TestExtensionNeedsApproval(t *testing.T) {
	approval := &Approval{Approvers: []string{"bob"}, Count: 1, Expires: time.Hour}
	tests := []struct {
		name string
		role Role
		want bool
	}{
		{name: "no approval", role: Role{}, want: false},
		{name: "approval", role: Role{Approval: approval}, want: true},
		{name: "approval with break-glass", role: Role{Approval: approval, BreakGlass: true}, want: true},
		{name: "extend_without_approval", role: Role{Approval: approval, ExtendWithoutApproval: true}, want: false},
		{name: "approval of count 0", role: Role{Approval: &Approval{Approvers: []string{"bob"}}}, want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.role.ExtensionNeedsApproval(); got != tt.want {
				t.Fatalf("ExtensionNeedsApproval = %v, want %v", got, tt.want)
			}
		})
	}
}
