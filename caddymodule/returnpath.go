package caddymodule

import (
	"net/url"
	"strings"
)

// maxReturnLength bounds the return path carried through the activation form.
const maxReturnLength = 2048

// safeReturn returns target if it is a path on this site, and "/" otherwise. It is
// the only gate against open redirects: a browser must resolve whatever it returns to
// this very origin. Browsers treat "\" like "/", skip tabs and newlines inside URLs,
// and percent-decoding can hide any of these, so each is refused outright.
func safeReturn(target string) string {
	if !isLocalPath(target) {
		return "/"
	}
	return target
}

func isLocalPath(target string) bool {
	if len(target) == 0 || len(target) > maxReturnLength || target[0] != '/' {
		return false
	}
	for i := 0; i < len(target); i++ {
		if c := target[i]; c <= ' ' || c == 0x7f || c == '\\' || c >= 0x80 {
			return false
		}
	}
	if len(target) > 1 && target[1] == '/' {
		return false
	}
	u, err := url.Parse(target)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil || u.Opaque != "" {
		return false
	}
	// Encoded slashes and backslashes at the start would become "//" or "/\" in any
	// upstream or browser that decodes before it resolves, and an application that
	// decodes twice turns %252F into one too: decode until nothing changes, and check
	// each round.
	decoded := u.EscapedPath()
	for round := range maxDecodeRounds {
		next, err := url.PathUnescape(decoded)
		if err != nil {
			// Malformed as sent is refused; a literal "%" that an earlier round
			// produced just decodes no further.
			return round > 0
		}
		if strings.HasPrefix(next, "//") || strings.HasPrefix(next, `/\`) || strings.ContainsAny(next, "\x00\r\n\t\\") {
			return false
		}
		if next == decoded {
			return true
		}
		decoded = next
	}
	return false
}

// maxDecodeRounds bounds the decoding of a return path; one still changing after
// that many rounds is refused.
const maxDecodeRounds = 3
