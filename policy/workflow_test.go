package policy

import (
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
