package caddymodule

import (
	"net/http"
	"strings"
)

// Our cookies on the way in: reading the session's, and taking all of ours (session,
// pickup secrets, enrollment and passkey bindings) out of a request before it reaches the upstream.

// sessionCookie returns the value of our cookie, or "".
func sessionCookie(r *http.Request) string {
	name := CookieName
	if r.TLS != nil {
		name = SecureCookieName
	}
	for _, line := range r.Header["Cookie"] {
		for part := range strings.SplitSeq(line, ";") {
			part = strings.TrimSpace(part)
			if v, ok := strings.CutPrefix(part, name); ok && strings.HasPrefix(v, "=") {
				return strings.Trim(v[1:], `"`)
			}
		}
	}
	return ""
}

// ourCookieMark is in the name of every cookie of ours: the session's, the pickup
// secrets' and the enrollment's, with or without __Host-.
const ourCookieMark = "jit_"

// removeSessionCookie takes our cookies (the session's, both names, the pickup secrets
// and the enrollment binding) out of the request, keeping all others.
func removeSessionCookie(r *http.Request) {
	lines := r.Header["Cookie"]
	found := false
	for _, line := range lines {
		if strings.Contains(line, ourCookieMark) {
			found = true
			break
		}
	}
	if !found {
		return
	}
	// The common header, one other cookie beside ours, keeps a substring of the
	// original line: no allocation. Two or more kept pairs are joined in a builder.
	var kept strings.Builder
	var firstKept string
	keptPairs := 0
	keep := func(s string, sep string) {
		keptPairs++
		switch keptPairs {
		case 1:
			firstKept = s
			return
		case 2:
			kept.WriteString(firstKept)
		}
		kept.WriteString(sep)
		kept.WriteString(s)
	}
	for _, line := range lines {
		for part := range strings.SplitSeq(line, ";") {
			part = strings.TrimSpace(part)
			switch {
			case part == "":
			case strings.IndexByte(part, ',') < 0:
				// One pair, as nearly every browser sends: no second split of a
				// 400-byte session token.
				if !isOurPair(part) {
					keep(part, "; ")
				}
			case !isSessionCookie(part):
				keep(part, "; ")
			default:
				// Pairs joined by commas: drop ours, keep the others as they were.
				first := true
				for pair := range strings.SplitSeq(part, ",") {
					if !isOurPair(pair) && strings.TrimSpace(pair) != "" {
						if first {
							keep(strings.TrimSpace(pair), "; ")
							first = false
						} else {
							keep(pair, ",")
						}
					}
				}
			}
		}
	}
	switch keptPairs {
	case 0:
		delete(r.Header, "Cookie")
		return
	case 1:
		lines[0] = firstKept
	default:
		lines[0] = kept.String()
	}
	r.Header["Cookie"] = lines[:1]
}

// isSessionCookie reports whether a cookie-pair names one of our cookies, however a
// lenient upstream parser might read it: with blanks around the name (Go trims them),
// or as one of several pairs joined by commas (some frameworks split on them).
func isSessionCookie(part string) bool {
	for pair := range strings.SplitSeq(part, ",") {
		if isOurPair(pair) {
			return true
		}
	}
	return false
}

// isOurPair reports whether one name=value pair names one of our cookies.
func isOurPair(pair string) bool {
	name, _, _ := strings.Cut(pair, "=")
	name = trimBlanks(name)
	switch {
	case name == CookieName, name == SecureCookieName, name == EnrollCookieName, name == SecureEnrollCookieName,
		name == PasskeyCookieName, name == SecurePasskeyCookieName,
		strings.HasPrefix(name, PickupCookiePrefix), strings.HasPrefix(name, SecurePickupCookiePrefix):
		return true
	}
	return false
}

// trimBlanks trims spaces and tabs, as strings.Trim(s, " \t") does without building
// its character set on every call.
func trimBlanks(s string) string {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}
