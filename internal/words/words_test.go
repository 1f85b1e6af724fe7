package words

import (
	"testing"
	"time"
)

func TestPlural(t *testing.T) {
	for _, tt := range []struct {
		n    int64
		word string
		want string
	}{
		{0, "approval", "0 approvals"},
		{1, "approval", "1 approval"},
		{2, "second", "2 seconds"},
		{-1, "day", "-1 days"},
		{1 << 40, "event", "1099511627776 events"},
	} {
		if got := Plural(tt.n, tt.word); got != tt.want {
			t.Errorf("Plural(%d, %q) = %q, want %q", tt.n, tt.word, got, tt.want)
		}
		if tt.n == int64(int(tt.n)) {
			if got := Plural(int(tt.n), tt.word); got != tt.want {
				t.Errorf("Plural(int %d, %q) = %q, want %q", tt.n, tt.word, got, tt.want)
			}
		}
	}
}

func TestTime(t *testing.T) {
	paris := time.FixedZone("CET", 3600)
	for _, tt := range []struct {
		at   time.Time
		want string
	}{
		{time.Date(2026, 3, 1, 9, 0, 59, 999, time.UTC), "2026-03-01 09:00 UTC"},
		{time.Date(2026, 3, 1, 0, 30, 0, 0, paris), "2026-02-28 23:30 UTC"},
	} {
		if got := Time(tt.at); got != tt.want {
			t.Errorf("Time(%v) = %q, want %q", tt.at, got, tt.want)
		}
	}
}

func TestTimeToSecondAndClock(t *testing.T) {
	paris := time.FixedZone("CET", 3600)
	for _, tt := range []struct {
		name       string
		at         time.Time
		wantSecond string
		wantClock  string
	}{
		{"UTC, nanoseconds dropped", time.Date(2026, 3, 1, 9, 0, 5, 999_999_999, time.UTC), "2026-03-01 09:00:05 UTC", "09:00 UTC"},
		{"another zone, across midnight", time.Date(2026, 3, 1, 0, 30, 7, 0, paris), "2026-02-28 23:30:07 UTC", "23:30 UTC"},
		{"zero time", time.Time{}, "0001-01-01 00:00:00 UTC", "00:00 UTC"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := TimeToSecond(tt.at); got != tt.wantSecond {
				t.Errorf("TimeToSecond(%v) = %q, want %q", tt.at, got, tt.wantSecond)
			}
			if got := Clock(tt.at); got != tt.wantClock {
				t.Errorf("Clock(%v) = %q, want %q", tt.at, got, tt.wantClock)
			}
		})
	}
}
