package policy

import (
	"strings"
	"testing"
	"time"
)

// week returns the given wall-clock time in loc during the week of Sunday 11 January
// 2026 to Saturday 17 January 2026; t0 is Thursday of that week at noon UTC.
func week(day time.Weekday, hour, minute int, loc *time.Location) time.Time {
	return time.Date(2026, 1, 11+int(day), hour, minute, 0, 0, loc)
}

// days builds a HoursWindow's day set.
func days(on ...time.Weekday) [7]bool {
	var d [7]bool
	for _, w := range on {
		d[w] = true
	}
	return d
}

func weekdays() [7]bool {
	return days(time.Monday, time.Tuesday, time.Wednesday, time.Thursday, time.Friday)
}

func hm(hour, minute int) int { return hour*60 + minute }

func TestWeekHelper(t *testing.T) {
	for d := time.Sunday; d <= time.Saturday; d++ {
		if got := week(d, 12, 0, time.UTC).Weekday(); got != d {
			t.Fatalf("week(%v) falls on %v", d, got)
		}
	}
	if !week(time.Thursday, 12, 0, time.UTC).Equal(t0) {
		t.Fatalf("week(Thursday, 12:00) = %v, want t0 %v", week(time.Thursday, 12, 0, time.UTC), t0)
	}
}

func TestHoursWindowContains(t *testing.T) {
	utc := time.UTC
	plus2 := time.FixedZone("X", 2*3600)
	minus5 := time.FixedZone("Y", -5*3600)
	office := HoursWindow{Days: weekdays(), From: hm(8, 0), To: hm(18, 0), Location: utc}
	night := HoursWindow{Days: days(time.Friday), From: hm(22, 0), To: hm(6, 0), Location: utc}
	wednesday := HoursWindow{Days: days(time.Wednesday), From: 0, To: 0, Location: utc}
	wednesdayAt10 := HoursWindow{Days: days(time.Wednesday), From: hm(10, 0), To: hm(10, 0), Location: utc}
	officeX := HoursWindow{Days: weekdays(), From: hm(8, 0), To: hm(18, 0), Location: plus2}
	mondayEarlyX := HoursWindow{Days: days(time.Monday), From: 0, To: hm(1, 0), Location: plus2}

	tests := []struct {
		name   string
		window HoursWindow
		t      time.Time
		want   bool
	}{
		// Weekday window, mon-fri 08:00-18:00 UTC.
		{"weekday 07:59", office, week(time.Thursday, 7, 59, utc), false},
		{"weekday 07:59:59.999", office, week(time.Thursday, 8, 0, utc).Add(-time.Millisecond), false},
		{"weekday 08:00", office, week(time.Thursday, 8, 0, utc), true},
		{"weekday noon", office, t0, true},
		{"weekday 17:59", office, week(time.Thursday, 17, 59, utc), true},
		{"weekday 17:59:59.999", office, week(time.Thursday, 18, 0, utc).Add(-time.Millisecond), true},
		{"weekday 18:00", office, week(time.Thursday, 18, 0, utc), false},
		{"weekday 23:59", office, week(time.Thursday, 23, 59, utc), false},
		{"weekday 00:00", office, week(time.Thursday, 0, 0, utc), false},
		{"monday 08:00", office, week(time.Monday, 8, 0, utc), true},
		{"friday 17:59", office, week(time.Friday, 17, 59, utc), true},
		{"saturday noon", office, week(time.Saturday, 12, 0, utc), false},
		{"sunday noon", office, week(time.Sunday, 12, 0, utc), false},

		// Spanning midnight, fri 22:00-06:00 UTC: it belongs to Friday.
		{"midnight window fri 21:59", night, week(time.Friday, 21, 59, utc), false},
		{"midnight window fri 22:00", night, week(time.Friday, 22, 0, utc), true},
		{"midnight window fri 23:00", night, week(time.Friday, 23, 0, utc), true},
		{"midnight window sat 00:00", night, week(time.Saturday, 0, 0, utc), true},
		{"midnight window sat 05:59", night, week(time.Saturday, 5, 59, utc), true},
		{"midnight window sat 06:00", night, week(time.Saturday, 6, 0, utc), false},
		{"midnight window sat 23:00 (saturday off)", night, week(time.Saturday, 23, 0, utc), false},
		{"midnight window thu 23:00 (thursday off)", night, week(time.Thursday, 23, 0, utc), false},
		{"midnight window fri 05:00 (thursday off)", night, week(time.Friday, 5, 0, utc), false},
		{"midnight window fri noon", night, week(time.Friday, 12, 0, utc), false},

		// From == To: the whole day, whatever the minute.
		{"whole day wed 00:00", wednesday, week(time.Wednesday, 0, 0, utc), true},
		{"whole day wed 12:00", wednesday, week(time.Wednesday, 12, 0, utc), true},
		{"whole day wed 23:59", wednesday, week(time.Wednesday, 23, 59, utc), true},
		{"whole day tue 23:59", wednesday, week(time.Tuesday, 23, 59, utc), false},
		{"whole day thu 00:00", wednesday, week(time.Thursday, 0, 0, utc), false},
		{"whole day at 10:00 wed 00:00", wednesdayAt10, week(time.Wednesday, 0, 0, utc), true},
		{"whole day at 10:00 wed 09:59", wednesdayAt10, week(time.Wednesday, 9, 59, utc), true},
		{"whole day at 10:00 thu 09:59", wednesdayAt10, week(time.Thursday, 9, 59, utc), false},

		// A fixed zone two hours ahead of UTC: the time is converted first.
		{"UTC+2 window, 05:59 UTC is 07:59 there", officeX, week(time.Thursday, 5, 59, utc), false},
		{"UTC+2 window, 06:00 UTC is 08:00 there", officeX, week(time.Thursday, 6, 0, utc), true},
		{"UTC+2 window, 15:59 UTC is 17:59 there", officeX, week(time.Thursday, 15, 59, utc), true},
		{"UTC+2 window, 16:00 UTC is 18:00 there", officeX, week(time.Thursday, 16, 0, utc), false},
		{"UTC+2 window, 17:00 UTC is inside by UTC but 19:00 there", officeX, week(time.Thursday, 17, 0, utc), false},
		{"UTC+2 window, fri 23:00 UTC is saturday there", officeX, week(time.Friday, 23, 0, utc), false},
		{"UTC+2 window, sun 22:30 UTC is monday 00:30 there", mondayEarlyX, week(time.Sunday, 22, 30, utc), true},
		{"UTC+2 window, mon 00:30 UTC is 02:30 there", mondayEarlyX, week(time.Monday, 0, 30, utc), false},
		{"UTC+2 window, the time given in a third zone", officeX, week(time.Thursday, 1, 0, minus5), true}, // 06:00 UTC, 08:00 in X
		{"UTC window, the time given in another zone", office, week(time.Thursday, 7, 30, plus2), false},   // 05:30 UTC
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.window.Contains(tt.t); got != tt.want {
				t.Errorf("%v.Contains(%v) = %v, want %v", tt.window, tt.t, got, tt.want)
			}
		})
	}
}

func TestHoursWindowContainsEuropeParis(t *testing.T) {
	paris, err := time.LoadLocation("Europe/Paris")
	if err != nil {
		t.Skipf("Europe/Paris does not load: %v", err)
	}
	office := HoursWindow{Days: weekdays(), From: hm(8, 0), To: hm(18, 0), Location: paris}
	night := HoursWindow{Days: days(time.Friday), From: hm(22, 0), To: hm(6, 0), Location: paris}
	utc := func(month time.Month, day, hour, minute int) time.Time {
		return time.Date(2026, month, day, hour, minute, 0, 0, time.UTC)
	}
	tests := []struct {
		name   string
		window HoursWindow
		t      time.Time
		want   bool
	}{
		// Winter, UTC+1: Thursday 15 January 2026.
		{"winter 06:59 UTC is 07:59 in Paris", office, utc(time.January, 15, 6, 59), false},
		{"winter 07:00 UTC is 08:00 in Paris", office, utc(time.January, 15, 7, 0), true},
		{"winter 16:59 UTC is 17:59 in Paris", office, utc(time.January, 15, 16, 59), true},
		{"winter 17:00 UTC is 18:00 in Paris", office, utc(time.January, 15, 17, 0), false},
		{"winter 17:30 UTC is inside by UTC but 18:30 in Paris", office, utc(time.January, 15, 17, 30), false},
		// Summer, UTC+2: Wednesday 15 July 2026.
		{"summer 05:59 UTC is 07:59 in Paris", office, utc(time.July, 15, 5, 59), false},
		{"summer 06:00 UTC is 08:00 in Paris", office, utc(time.July, 15, 6, 0), true},
		{"summer 15:59 UTC is 17:59 in Paris", office, utc(time.July, 15, 15, 59), true},
		{"summer 16:00 UTC is 18:00 in Paris", office, utc(time.July, 15, 16, 0), false},
		// Across midnight: Friday 16 January 22:00 Paris is 21:00 UTC.
		{"fri 20:59 UTC is 21:59 in Paris", night, utc(time.January, 16, 20, 59), false},
		{"fri 21:00 UTC is 22:00 in Paris", night, utc(time.January, 16, 21, 0), true},
		{"fri 23:30 UTC is saturday 00:30 in Paris", night, utc(time.January, 16, 23, 30), true},
		{"sat 04:59 UTC is 05:59 in Paris", night, utc(time.January, 17, 4, 59), true},
		{"sat 05:00 UTC is 06:00 in Paris", night, utc(time.January, 17, 5, 0), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.window.Contains(tt.t); got != tt.want {
				t.Errorf("%v.Contains(%v) = %v, want %v", tt.window, tt.t, got, tt.want)
			}
		})
	}
}

func TestHoursWindowString(t *testing.T) {
	all := days(time.Sunday, time.Monday, time.Tuesday, time.Wednesday, time.Thursday, time.Friday, time.Saturday)
	tests := []struct {
		name   string
		window HoursWindow
		want   string
	}{
		{"weekdays", HoursWindow{Days: weekdays(), From: hm(8, 0), To: hm(18, 0), Location: time.UTC}, "mon,tue,wed,thu,fri 08:00-18:00 UTC"},
		{"every day is daily", HoursWindow{Days: all, From: 0, To: 0, Location: time.UTC}, "daily 00:00-00:00 UTC"},
		{"one day, minutes", HoursWindow{Days: days(time.Friday), From: hm(22, 30), To: hm(6, 5), Location: time.UTC}, "fri 22:30-06:05 UTC"},
		{"days in weekday order, sunday first", HoursWindow{Days: days(time.Saturday, time.Sunday), From: hm(9, 0), To: hm(17, 0), Location: time.UTC}, "sun,sat 09:00-17:00 UTC"},
		{"six days are not daily", HoursWindow{Days: days(time.Monday, time.Tuesday, time.Wednesday, time.Thursday, time.Friday, time.Saturday), From: hm(0, 1), To: hm(23, 59), Location: time.UTC}, "mon,tue,wed,thu,fri,sat 00:01-23:59 UTC"},
		{"fixed zone name", HoursWindow{Days: days(time.Wednesday), From: hm(10, 0), To: hm(10, 0), Location: time.FixedZone("X", 2*3600)}, "wed 10:00-10:00 X"},
	}
	if paris, err := time.LoadLocation("Europe/Paris"); err == nil {
		tests = append(tests, struct {
			name   string
			window HoursWindow
			want   string
		}{"named zone", HoursWindow{Days: weekdays(), From: hm(7, 45), To: hm(19, 15), Location: paris}, "mon,tue,wed,thu,fri 07:45-19:15 Europe/Paris"})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.window.String(); got != tt.want {
				t.Errorf("String() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestWithinHours(t *testing.T) {
	utc := time.UTC
	twoWindows := []HoursWindow{
		{Days: weekdays(), From: hm(8, 0), To: hm(12, 0), Location: utc},
		{Days: days(time.Saturday), From: hm(10, 0), To: hm(14, 0), Location: utc},
	}
	tests := []struct {
		name    string
		windows []HoursWindow
		t       time.Time
		want    bool
	}{
		{"no windows, weekday noon", nil, t0, true},
		{"no windows, sunday 03:00", nil, week(time.Sunday, 3, 0, utc), true},
		{"empty windows, saturday 23:59", []HoursWindow{}, week(time.Saturday, 23, 59, utc), true},
		{"two windows, inside the first", twoWindows, week(time.Thursday, 9, 0, utc), true},
		{"two windows, inside the second", twoWindows, week(time.Saturday, 11, 0, utc), true},
		{"two windows, weekday outside the first", twoWindows, week(time.Thursday, 13, 0, utc), false},
		{"two windows, saturday outside the second", twoWindows, week(time.Saturday, 9, 0, utc), false},
		{"two windows, sunday in neither", twoWindows, week(time.Sunday, 11, 0, utc), false},
		{"one window, outside", twoWindows[:1], week(time.Saturday, 11, 0, utc), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &Role{Name: "console-admin", AllowedHours: tt.windows}
			if got := r.WithinHours(tt.t); got != tt.want {
				t.Errorf("WithinHours(%v) = %v, want %v", tt.t, got, tt.want)
			}
		})
	}
}

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
