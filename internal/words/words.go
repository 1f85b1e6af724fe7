// Package words owns the few phrases caddy-jit's pages, messages, reports and
// commands share: counting things in English, and a time as people read it (to
// the minute, to the second, or the time of day alone). It imports nothing of
// caddy-jit, so any package may use it.
package words

import (
	"strconv"
	"time"
)

// Plural says how many of a thing there are: "1 request", "3 requests".
func Plural[N ~int | ~int64](n N, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return strconv.FormatInt(int64(n), 10) + " " + word + "s"
}

// Time shows a time to the minute, in UTC, as the pages and the commands do:
// "2026-03-01 09:00 UTC".
func Time(t time.Time) string { return t.UTC().Format("2006-01-02 15:04 UTC") }

// TimeToSecond shows a time to the second, in UTC, where the order of events a
// second apart matters (the audit story, a benchmark's start):
// "2026-03-01 09:00:05 UTC".
func TimeToSecond(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05 UTC") }

// Clock shows the time of day alone, in UTC, for a moment later the same day
// or the next (the end of a lockout or of a session): "09:00 UTC".
func Clock(t time.Time) string { return t.UTC().Format("15:04 UTC") }
