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
	// upstream or browser that decodes before it resolves.
	decoded, err := url.PathUnescape(u.EscapedPath())
	if err != nil {
		return false
	}
	return !strings.HasPrefix(decoded, "//") && !strings.HasPrefix(decoded, `/\`) && !strings.ContainsAny(decoded, "\x00\r\n\t")
}
