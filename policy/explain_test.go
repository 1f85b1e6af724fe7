package policy

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"
)

// explainThu is Thursday 26 November 2026, 09:00 UTC: 10:00 in Paris, 04:00 in New York.
var explainThu = time.Date(2026, 11, 26, 9, 0, 0, 0, time.UTC)

func explainUTC(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

func explainZone(name string) *time.Location {
	loc, err := time.LoadLocation(name)
	if err != nil {
		panic(err)
	}
	return loc
}

// explainRoles are the roles of the Explain tests, each as caddymodule would build it.
func explainRoles() map[string]*Role {
	paris := explainZone("Europe/Paris")
	office := HoursWindow{Days: weekdays(), From: hm(8, 0), To: hm(18, 0), Location: paris}
	saturday := HoursWindow{Days: days(time.Saturday), From: hm(10, 0), To: hm(12, 0), Location: time.UTC}
	base := func(name string) *Role {
		return &Role{
			Name: name, MaxDuration: time.Hour, DefaultDuration: 15 * time.Minute, JustificationMinLength: 10,
			Eligibility: []Eligibility{
				{Subjects: []string{"alice", "group:sre"}},
				{Subjects: []string{"bob"}, Until: explainUTC("2026-11-01T00:00:00Z")},
				{Subjects: []string{"carol"}, From: explainUTC("2026-11-28T00:00:00Z"), Until: explainUTC("2026-11-29T00:00:00Z")},
				{Subjects: []string{"dave"}, Until: explainUTC("2026-11-26T09:20:00Z")},
				{Subjects: []string{"dave"}, From: explainUTC("2026-11-01T00:00:00Z"), Until: explainUTC("2026-11-27T00:00:00Z")},
				{Subjects: []string{"erin"}, From: explainUTC("2026-12-20T00:00:00Z")},
				{Subjects: []string{"frank"}, From: explainUTC("2026-11-28T06:00:00Z")},
			},
		}
	}
	plain := base("plain")
	plain.MaxTotal = 4 * time.Hour
	plain.MaxActive = 2
	plain.Ticket, plain.TicketFormat = ticketPattern(`(INC|CHG)-[0-9]+`), `(INC|CHG)-[0-9]+`

	hours := base("hours")
	hours.AllowedHours = []HoursWindow{office, saturday}

	glass := base("glass")
	glass.AllowedHours = []HoursWindow{office}
	glass.BreakGlass = true
	glass.JustificationMinLength = 0

	approval := base("approval")
	approval.Approval = &Approval{Approvers: []string{"carol", "dave", "group:security"}, Count: 2, Expires: 24 * time.Hour}
	approval.BreakGlass = true

	impossible := base("impossible")
	impossible.Approval = &Approval{Approvers: []string{"alice", "bob", "alice"}, Count: 2, Expires: time.Hour}

	impossibleGlass := base("impossible-glass")
	impossibleGlass.Approval = impossible.Approval
	impossibleGlass.BreakGlass = true

	newYork := base("new-york")
	newYork.AllowedHours = []HoursWindow{{Days: weekdays(), From: hm(8, 0), To: hm(18, 0), Location: explainZone("America/New_York")}}

	dst := base("dst")
	dst.AllowedHours = []HoursWindow{{Days: days(time.Sunday), From: hm(2, 30), To: hm(5, 0), Location: paris}}

	always := base("always")
	always.AllowedHours = []HoursWindow{{Days: days(0, 1, 2, 3, 4, 5, 6), Location: time.UTC}}

	night := base("night")
	night.AllowedHours = []HoursWindow{{Days: days(time.Friday), From: hm(22, 0), To: hm(6, 0), Location: time.UTC}}

	roles := map[string]*Role{}
	for _, r := range []*Role{plain, hours, glass, approval, impossible, impossibleGlass, newYork, dst, always, night} {
		roles[r.Name] = r
	}
	return roles
}

func TestExplain(t *testing.T) {
	roles := explainRoles()
	sat := time.Date(2026, 11, 28, 20, 0, 0, 0, time.UTC)
	tests := []struct {
		name   string
		role   string
		caller Caller
		at     time.Time

		verdict  Verdict
		reason   Reason
		by       string // the By of the grant that applies; "" none applies
		states   map[int]GrantState
		until    time.Time // the eligibility's end
		within   *bool
		hoursEnd time.Time // HoursFacts.Until
		nextOpen time.Time
		nextWin  string
		schedule time.Time
		longest  time.Duration
		self     bool
		glass    bool // BreakGlass.Usable
	}{
		{name: "by name, at any time", role: "plain", caller: Caller{User: "alice"}, at: explainThu,
			verdict: VerdictMayActivate, reason: ReasonAllowed, by: "alice", longest: time.Hour},
		{name: "by group", role: "plain", caller: Caller{User: "sam", Groups: []string{"dev", "sre"}}, at: explainThu,
			verdict: VerdictMayActivate, reason: ReasonAllowed, by: "group:sre", longest: time.Hour},
		{name: "name wins over group", role: "plain", caller: Caller{User: "alice", Groups: []string{"sre"}}, at: explainThu,
			verdict: VerdictMayActivate, reason: ReasonAllowed, by: "alice", longest: time.Hour},
		{name: "not eligible", role: "plain", caller: Caller{User: "mallory", Groups: []string{"dev"}}, at: explainThu,
			verdict: VerdictMayNot, reason: ReasonNotEligible},
		{name: "window not yet open, schedulable", role: "plain", caller: Caller{User: "carol"}, at: explainThu,
			verdict: VerdictMayNot, reason: ReasonNotEligible, states: map[int]GrantState{2: GrantNotYet},
			schedule: explainUTC("2026-11-28T00:00:00Z")},
		{name: "window open", role: "plain", caller: Caller{User: "carol"}, at: explainUTC("2026-11-28T12:00:00Z"),
			verdict: VerdictMayActivate, reason: ReasonAllowed, by: "carol", until: explainUTC("2026-11-29T00:00:00Z"), longest: time.Hour},
		{name: "window ended", role: "plain", caller: Caller{User: "bob"}, at: explainThu,
			verdict: VerdictMayNot, reason: ReasonNotEligible, states: map[int]GrantState{1: GrantEnded}},
		{name: "window opens beyond 7 days: nothing to schedule", role: "plain", caller: Caller{User: "erin"}, at: explainThu,
			verdict: VerdictMayNot, reason: ReasonNotEligible, states: map[int]GrantState{5: GrantNotYet}},
		{name: "the longest grant applies", role: "plain", caller: Caller{User: "dave"}, at: explainThu,
			verdict: VerdictMayActivate, reason: ReasonAllowed, by: "dave", until: explainUTC("2026-11-27T00:00:00Z"), longest: time.Hour},
		{name: "eligibility ends within max_duration", role: "plain", caller: Caller{User: "dave"}, at: explainUTC("2026-11-26T23:40:00Z"),
			verdict: VerdictMayActivate, reason: ReasonAllowed, by: "dave", until: explainUTC("2026-11-27T00:00:00Z"), longest: 20 * time.Minute,
			states: map[int]GrantState{3: GrantEnded, 4: GrantOpen}},

		{name: "inside hours", role: "hours", caller: Caller{User: "alice"}, at: explainThu,
			verdict: VerdictMayActivate, reason: ReasonAllowed, by: "alice", within: new(true),
			hoursEnd: explainUTC("2026-11-26T17:00:00Z"), longest: time.Hour},
		{name: "outside hours, Saturday evening: Monday in Paris", role: "hours", caller: Caller{User: "alice"}, at: sat,
			verdict: VerdictMayNot, reason: ReasonOutsideHours, by: "alice", within: new(false),
			nextOpen: explainUTC("2026-11-30T07:00:00Z"), nextWin: "mon,tue,wed,thu,fri 08:00-18:00 Europe/Paris",
			schedule: explainUTC("2026-11-30T07:00:00Z"), longest: time.Hour},
		{name: "outside hours, Saturday morning: the UTC window", role: "hours", caller: Caller{User: "alice"}, at: explainUTC("2026-11-28T09:30:00Z"),
			verdict: VerdictMayNot, reason: ReasonOutsideHours, by: "alice", within: new(false),
			nextOpen: explainUTC("2026-11-28T10:00:00Z"), nextWin: "sat 10:00-12:00 UTC",
			schedule: explainUTC("2026-11-28T10:00:00Z"), longest: time.Hour},
		{name: "outside hours with break-glass", role: "glass", caller: Caller{User: "alice"}, at: sat,
			verdict: VerdictBreakGlassOnly, reason: ReasonOutsideHours, by: "alice", within: new(false), glass: true,
			nextOpen: explainUTC("2026-11-30T07:00:00Z"), nextWin: "mon,tue,wed,thu,fri 08:00-18:00 Europe/Paris",
			schedule: explainUTC("2026-11-30T07:00:00Z"), longest: time.Hour},
		{name: "inside hours, break-glass offered too", role: "glass", caller: Caller{User: "alice"}, at: explainThu,
			verdict: VerdictMayActivate, reason: ReasonAllowed, by: "alice", within: new(true), glass: true,
			hoursEnd: explainUTC("2026-11-26T17:00:00Z"), longest: time.Hour},
		{name: "not eligible: break-glass does not help", role: "glass", caller: Caller{User: "mallory"}, at: sat,
			verdict: VerdictMayNot, reason: ReasonNotEligible, within: new(false),
			nextOpen: explainUTC("2026-11-30T07:00:00Z"), nextWin: "mon,tue,wed,thu,fri 08:00-18:00 Europe/Paris"},
		{name: "eligible from Saturday, outside hours then: Monday", role: "glass", caller: Caller{User: "frank"}, at: explainThu,
			verdict: VerdictMayNot, reason: ReasonNotEligible, within: new(true), hoursEnd: explainUTC("2026-11-26T17:00:00Z"),
			states: map[int]GrantState{6: GrantNotYet}, schedule: explainUTC("2026-11-30T07:00:00Z")},
		{name: "eligible from Saturday, no hours: Saturday", role: "plain", caller: Caller{User: "frank"}, at: explainThu,
			verdict: VerdictMayNot, reason: ReasonNotEligible, states: map[int]GrantState{6: GrantNotYet},
			schedule: explainUTC("2026-11-28T06:00:00Z")},
		{name: "New York time zone", role: "new-york", caller: Caller{User: "alice"}, at: explainUTC("2026-11-27T23:30:00Z"),
			verdict: VerdictMayNot, reason: ReasonOutsideHours, by: "alice", within: new(false),
			nextOpen: explainUTC("2026-11-30T13:00:00Z"), nextWin: "mon,tue,wed,thu,fri 08:00-18:00 America/New_York",
			schedule: explainUTC("2026-11-30T13:00:00Z"), longest: time.Hour},
		{name: "New York, early Thursday", role: "new-york", caller: Caller{User: "alice"}, at: explainThu,
			verdict: VerdictMayNot, reason: ReasonOutsideHours, by: "alice", within: new(false),
			nextOpen: explainUTC("2026-11-26T13:00:00Z"), nextWin: "mon,tue,wed,thu,fri 08:00-18:00 America/New_York",
			schedule: explainUTC("2026-11-26T13:00:00Z"), longest: time.Hour},
		{name: "daylight saving time: 02:30 does not exist that Sunday", role: "dst", caller: Caller{User: "alice"}, at: explainUTC("2026-03-29T00:30:00Z"),
			verdict: VerdictMayNot, reason: ReasonOutsideHours, by: "alice", within: new(false),
			nextOpen: explainUTC("2026-03-29T01:00:00Z"), nextWin: "sun 02:30-05:00 Europe/Paris",
			schedule: explainUTC("2026-03-29T01:00:00Z"), longest: time.Hour},
		{name: "always within", role: "always", caller: Caller{User: "alice"}, at: explainThu,
			verdict: VerdictMayActivate, reason: ReasonAllowed, by: "alice", within: new(true), longest: time.Hour},
		{name: "window over midnight, Saturday early", role: "night", caller: Caller{User: "alice"}, at: explainUTC("2026-11-28T05:00:00Z"),
			verdict: VerdictMayActivate, reason: ReasonAllowed, by: "alice", within: new(true),
			hoursEnd: explainUTC("2026-11-28T06:00:00Z"), longest: time.Hour},
		{name: "window over midnight, seconds past the minute", role: "night", caller: Caller{User: "alice"}, at: explainUTC("2026-11-27T21:59:30Z"),
			verdict: VerdictMayNot, reason: ReasonOutsideHours, by: "alice", within: new(false),
			nextOpen: explainUTC("2026-11-27T22:00:00Z"), nextWin: "fri 22:00-06:00 UTC",
			schedule: explainUTC("2026-11-27T22:00:00Z"), longest: time.Hour},

		{name: "approval", role: "approval", caller: Caller{User: "alice"}, at: explainThu,
			verdict: VerdictMayActivateWithApproval, reason: ReasonAllowed, by: "alice", glass: true, longest: time.Hour},
		{name: "approval, an approver by group", role: "approval", caller: Caller{User: "sam", Groups: []string{"sre", "security"}}, at: explainThu,
			verdict: VerdictMayActivateWithApproval, reason: ReasonAllowed, by: "group:sre", glass: true, self: true, longest: time.Hour},
		{name: "approval, an approver by name", role: "approval", caller: Caller{User: "dave"}, at: explainThu,
			verdict: VerdictMayActivateWithApproval, reason: ReasonAllowed, by: "dave", until: explainUTC("2026-11-27T00:00:00Z"),
			glass: true, self: true, longest: time.Hour},
		{name: "approval impossible", role: "impossible", caller: Caller{User: "alice"}, at: explainThu,
			verdict: VerdictMayNot, reason: ReasonApprovalImpossible, by: "alice", self: true, longest: time.Hour},
		{name: "approval impossible, break-glass", role: "impossible-glass", caller: Caller{User: "alice"}, at: explainThu,
			verdict: VerdictBreakGlassOnly, reason: ReasonApprovalImpossible, by: "alice", self: true, glass: true, longest: time.Hour},
		{name: "approval possible for another", role: "impossible", caller: Caller{User: "sam", Groups: []string{"sre"}}, at: explainThu,
			verdict: VerdictMayActivateWithApproval, reason: ReasonAllowed, by: "group:sre", longest: time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := roles[tt.role]
			x := r.Explain(tt.caller, tt.at)
			if x.Verdict != tt.verdict || x.Reason != tt.reason {
				t.Fatalf("verdict %s (%s: %s), want %s (%s)", x.Verdict, x.Reason, x.Message, tt.verdict, tt.reason)
			}
			if (x.Message == "") != (tt.reason == ReasonAllowed) {
				t.Errorf("message %q with reason %s", x.Message, x.Reason)
			}
			by := ""
			for i, g := range x.Eligibility.Grants {
				if g.Applies {
					if by != "" {
						t.Errorf("two grants apply")
					}
					by = g.By
				}
				if want, ok := tt.states[i]; ok && g.State != want {
					t.Errorf("grant %d: %s, want %s", i, g.State, want)
				}
			}
			if by != tt.by {
				t.Errorf("applies by %q, want %q", by, tt.by)
			}
			if !x.Eligibility.Until.Equal(tt.until) {
				t.Errorf("eligible until %v, want %v", x.Eligibility.Until, tt.until)
			}
			if (x.Hours != nil) != (tt.within != nil) {
				t.Fatalf("hours %+v, want within %v", x.Hours, tt.within)
			}
			if h := x.Hours; h != nil {
				if h.Within != *tt.within || !h.Until.Equal(tt.hoursEnd) || !h.NextOpen.Equal(tt.nextOpen) || h.NextWindow != tt.nextWin {
					t.Errorf("hours within %v until %v, next %v %q; want %v until %v, next %v %q",
						h.Within, h.Until, h.NextOpen, h.NextWindow, *tt.within, tt.hoursEnd, tt.nextOpen, tt.nextWin)
				}
				if !h.NextOpen.IsZero() && h.NextOpen.Location().String() != h.Windows[slices.IndexFunc(h.Windows, func(w WindowFacts) bool { return w.Window == h.NextWindow })].Zone {
					t.Errorf("next open %v is not in its window's zone", h.NextOpen)
				}
			}
			if !x.ScheduleAt.Equal(tt.schedule) {
				t.Errorf("schedule at %v, want %v", x.ScheduleAt, tt.schedule)
			}
			if x.Eligibility.Eligible && time.Duration(x.Duration.Longest) != tt.longest {
				t.Errorf("longest %s, want %s", time.Duration(x.Duration.Longest), tt.longest)
			}
			if x.Duration.Capped != (tt.longest != 0 && tt.longest < r.MaxDuration) {
				t.Errorf("capped %v", x.Duration.Capped)
			}
			if x.Approval != nil && x.Approval.SelfApprover != tt.self {
				t.Errorf("self approver %v, want %v", x.Approval.SelfApprover, tt.self)
			}
			if x.BreakGlass.Usable != tt.glass {
				t.Errorf("break-glass usable %v, want %v", x.BreakGlass.Usable, tt.glass)
			}
			checkExplainAgrees(t, r, tt.caller, tt.at, x)
			checkScheduleIsEarliest(t, r, tt.caller, tt.at, x)
		})
	}
}

// explainRequest fills the form as the role wants.
func explainRequest(r *Role, c Caller, start time.Time, breakGlass bool) Request {
	req := Request{Caller: c, Duration: r.MaxDuration, Justification: "restart the primary after INC-1 " + strings.Repeat("x", r.JustificationMinLength),
		Start: start, BreakGlass: breakGlass}
	if r.TicketRequired() {
		req.Ticket = "INC-42"
	}
	return req
}

// checkExplainAgrees checks that an explanation says what Activation, Eligible and
// WithinHours say.
func checkExplainAgrees(t *testing.T, r *Role, c Caller, at time.Time, x *Explanation) {
	t.Helper()
	normal := r.Activation(explainRequest(r, c, time.Time{}, false), at)
	glass := r.Activation(explainRequest(r, c, time.Time{}, true), at)
	eligible := r.Eligible(c, at)
	switch {
	case normal.Allowed && x.Reason == ReasonApprovalImpossible:
		if x.Verdict.May() {
			t.Errorf("%s at %v: approval impossible, yet %s", c.User, at, x.Verdict)
		}
	case normal.Allowed != x.Verdict.May():
		t.Errorf("%s at %v: Activation says %v (%s), Explain %s (%s)", c.User, at, normal.Allowed, normal.Reason, x.Verdict, x.Reason)
	case !normal.Allowed && (normal.Reason != x.Reason || normal.Message != x.Message):
		t.Errorf("%s at %v: Activation refuses with %s %q, Explain with %s %q", c.User, at, normal.Reason, normal.Message, x.Reason, x.Message)
	}
	if normal.Allowed && x.Verdict.May() && (x.Verdict == VerdictMayActivateWithApproval) != r.NeedsApproval() {
		t.Errorf("%s at %v: %s, but NeedsApproval is %v", c.User, at, x.Verdict, r.NeedsApproval())
	}
	if r.BreakGlass && !glass.Allowed && glass.Message != x.BreakGlass.Refusal || (glass.Allowed || !r.BreakGlass) && x.BreakGlass.Refusal != "" {
		t.Errorf("%s at %v: break-glass refused with %q, Explain says %q", c.User, at, glass.Message, x.BreakGlass.Refusal)
	}
	if glass.Allowed != x.BreakGlass.Usable {
		t.Errorf("%s at %v: Activation with break-glass says %v (%s), Explain usable %v", c.User, at, glass.Allowed, glass.Reason, x.BreakGlass.Usable)
	}
	if x.Verdict == VerdictBreakGlassOnly && (!glass.Allowed || x.Verdict.May()) {
		t.Errorf("%s at %v: break-glass only, but Activation with break-glass says %v", c.User, at, glass.Allowed)
	}
	if !glass.Allowed && !normal.Allowed && x.Verdict != VerdictMayNot {
		t.Errorf("%s at %v: nothing passes, yet %s", c.User, at, x.Verdict)
	}
	if eligible.Allowed != x.Eligibility.Eligible || !eligible.EligibleUntil.Equal(x.Eligibility.Until) {
		t.Errorf("%s at %v: Eligible says %v until %v, Explain %v until %v", c.User, at, eligible.Allowed, eligible.EligibleUntil,
			x.Eligibility.Eligible, x.Eligibility.Until)
	}
	covers := 0
	for i, g := range x.Eligibility.Grants {
		if g.Covers != r.Eligibility[i].covers(c) {
			t.Errorf("grant %d covers %v", i, g.Covers)
		}
		if g.Covers && g.State == GrantOpen {
			covers++
		}
		if g.Applies && (!g.Covers || g.State != GrantOpen || !g.Until.Equal(eligible.EligibleUntil)) {
			t.Errorf("%s at %v: grant %d applies, but Eligible's window ends at %v", c.User, at, i, eligible.EligibleUntil)
		}
	}
	if (covers > 0) != eligible.Allowed {
		t.Errorf("%s at %v: %d open grants cover, Eligible says %v", c.User, at, covers, eligible.Allowed)
	}
	within := r.WithinHours(at)
	if x.Hours == nil {
		if len(r.AllowedHours) > 0 {
			t.Errorf("no hours facts for a role with hours")
		}
	} else {
		if x.Hours.Within != within {
			t.Errorf("%s at %v: WithinHours says %v, Explain %v", c.User, at, within, x.Hours.Within)
		}
		for i, w := range x.Hours.Windows {
			if w.Contains != r.AllowedHours[i].Contains(at) {
				t.Errorf("window %d contains %v", i, w.Contains)
			}
		}
		if o := x.Hours.NextOpen; !o.IsZero() && (!r.WithinHours(o) || r.WithinHours(o.Add(-time.Minute)) && o.Add(-time.Minute).After(at)) {
			t.Errorf("%s at %v: the allowed hours do not open at %v", c.User, at, o)
		}
		if u := x.Hours.Until; !u.IsZero() && (r.WithinHours(u) || !r.WithinHours(u.Add(-time.Minute))) {
			t.Errorf("%s at %v: the allowed hours do not end at %v", c.User, at, u)
		}
		if within && x.Hours.Until.IsZero() && !r.WithinHours(at.Add(ExplainLookAhead/2)) {
			t.Errorf("%s at %v: the allowed hours end, Explain says not", c.User, at)
		}
		if !within && x.Hours.NextOpen.IsZero() {
			t.Errorf("%s at %v: no next opening within a week", c.User, at)
		}
	}
	if s := x.ScheduleAt; !s.IsZero() {
		if normal.Allowed {
			t.Errorf("%s at %v: a schedule although the role may be activated now", c.User, at)
		}
		if d := r.Activation(explainRequest(r, c, s, false), at); !d.Allowed {
			t.Errorf("%s at %v: scheduled at %v, Activation refuses: %s", c.User, at, s, d.Message)
		}
	}
}

// checkScheduleIsEarliest tries every minute of the week ahead for a scheduled start.
func checkScheduleIsEarliest(t *testing.T, r *Role, c Caller, at time.Time, x *Explanation) {
	t.Helper()
	if r.Activation(explainRequest(r, c, time.Time{}, false), at).Allowed {
		return
	}
	var first time.Time
	for s := at.Truncate(time.Minute).Add(time.Minute); !s.After(at.Add(MaxStartAhead)); s = s.Add(time.Minute) {
		if r.Activation(explainRequest(r, c, s, false), at).Allowed {
			first = s
			break
		}
	}
	if x.Reason == ReasonApprovalImpossible {
		first = time.Time{}
	}
	if !first.Equal(x.ScheduleAt) {
		t.Errorf("%s at %v: the earliest scheduled start is %v, Explain says %v", c.User, at, first, x.ScheduleAt)
	}
}

// TestExplainAgrees sweeps roles, callers and times and checks each explanation
// against Activation, Eligible and WithinHours.
func TestExplainAgrees(t *testing.T) {
	roles := explainRoles()
	callers := []Caller{
		{User: "alice"}, {User: "bob"}, {User: "carol"}, {User: "dave"}, {User: "frank"}, {User: "mallory"},
		{User: "sam", Groups: []string{"sre", "security"}},
	}
	start := time.Date(2026, 11, 23, 0, 7, 0, 0, time.UTC)
	for name, r := range roles {
		for _, c := range callers {
			for at := start; at.Before(start.Add(8 * 24 * time.Hour)); at = at.Add(11*time.Hour + 13*time.Minute) {
				checkExplainAgrees(t, r, c, at, r.Explain(c, at))
			}
		}
		_ = name
	}
}

func TestExplainFacts(t *testing.T) {
	roles := explainRoles()
	x := roles["plain"].Explain(Caller{User: "alice"}, explainThu)
	if x.Ticket == nil || !x.Ticket.Required || x.Ticket.Format != "(INC|CHG)-[0-9]+" {
		t.Errorf("ticket %+v", x.Ticket)
	}
	if x.MaxActive != 2 || !x.Duration.Extendable || time.Duration(x.Duration.MaxTotal) != 4*time.Hour ||
		time.Duration(x.Duration.Default) != 15*time.Minute {
		t.Errorf("limits %+v, max_active %d", x.Duration, x.MaxActive)
	}
	if !x.Justification.Required || x.Justification.MinLength != 10 || x.Justification.MaxLength != MaxJustificationLength {
		t.Errorf("justification %+v", x.Justification)
	}
	if x.BreakGlass.Offered || x.BreakGlass.Usable || x.Approval != nil || x.Hours != nil {
		t.Errorf("break-glass %+v, approval %+v, hours %+v", x.BreakGlass, x.Approval, x.Hours)
	}

	g := roles["glass"].Explain(Caller{User: "alice"}, explainThu)
	if g.Justification.Required || g.BreakGlass.MinJustification != BreakGlassMinJustification || g.Ticket != nil || g.Duration.Extendable {
		t.Errorf("glass: justification %+v, break-glass %+v", g.Justification, g.BreakGlass)
	}
	if w := g.Hours.Windows[0]; w.Local != "Thu 10:00" || w.Zone != "Europe/Paris" || !w.Contains {
		t.Errorf("window %+v", w)
	}

	a := roles["approval"].Explain(Caller{User: "alice"}, explainThu)
	if a.Approval == nil || a.Approval.Count != 2 || !slices.Equal(a.Approval.Approvers, []string{"carol", "dave", "group:security"}) ||
		!a.Approval.Possible || time.Duration(a.Approval.Expires) != 24*time.Hour || !slices.Equal(a.Approval.Others, []string{"carol", "dave"}) {
		t.Errorf("approval %+v", a.Approval)
	}
	i := roles["impossible"].Explain(Caller{User: "alice"}, explainThu)
	if i.Approval.Possible || !slices.Equal(i.Approval.Others, []string{"bob"}) ||
		i.Message != "no request of alice's can be approved: the role needs 2 approvals, and the approvers other than alice are 1 (bob); no one approves their own request" {
		t.Errorf("impossible: %+v %q", i.Approval, i.Message)
	}

	b, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	if m["verdict"] != "may_activate_with_approval" || m["duration"].(map[string]any)["max"] != "1h" ||
		m["approval"].(map[string]any)["expires"] != "24h" || m["groups"] == nil {
		t.Errorf("JSON %s", b)
	}
	if _, ok := m["schedule_at"]; ok {
		t.Errorf("JSON has a zero schedule_at: %s", b)
	}
	var back Explanation
	if err := json.Unmarshal(b, &back); err != nil || back.Duration.Max != a.Duration.Max || back.Verdict != a.Verdict {
		t.Errorf("JSON round trip: %v %+v", err, back.Duration)
	}
}

func TestExplainVerdictMay(t *testing.T) {
	for v, want := range map[Verdict]bool{VerdictMayActivate: true, VerdictMayActivateWithApproval: true, VerdictBreakGlassOnly: false, VerdictMayNot: false} {
		if v.May() != want {
			t.Errorf("%s.May() = %v", v, !want)
		}
	}
}
