// Package words owns the few phrases caddy-jit's pages, messages and reports share:
// counting things in English. It imports nothing of caddy-jit, so any package may use it.
package words

import "strconv"

// Plural says how many of a thing there are: "1 request", "3 requests".
func Plural[N ~int | ~int64](n N, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return strconv.FormatInt(int64(n), 10) + " " + word + "s"
}
