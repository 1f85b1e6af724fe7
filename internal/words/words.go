// Package words owns the few phrases caddy-jit's pages, messages, reports and
// commands share: counting things in English, and a time as people read it. It
// imports nothing of caddy-jit, so any package may use it.
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
