package words

import "testing"

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
