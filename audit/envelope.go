package audit

import (
	"fmt"
	"strings"
)

// The log envelope (level, ts, logger, msg) is not hashed: the encoder writes it around
// the event. A SIEM shows it all the same, so verification holds it to what the writer
// writes (encode.go, or zap's JSON encoder under Caddy's `format json`): an edited
// envelope is a break even though the chain still links.

// envelopeProblem says what is wrong with the line's envelope and keys, or "".
func envelopeProblem(l *Line) string {
	seen := make(map[string]bool, len(l.fields))
	for _, f := range l.fields {
		if seen[f.key] {
			// The writer never writes a key twice; a reader that takes the first (as
			// some JSON parsers do) would show another value than the one hashed.
			return fmt.Sprintf("its key %q appears twice: caddy-jit writes each key once, so the line was edited", f.key)
		}
		seen[f.key] = true
	}
	msg := l.field("msg")
	switch {
	case msg == nil:
		return fmt.Sprintf("it has no msg (the writer always writes the event %q as msg): the line was edited", l.Event())
	case msg.kind != 's':
		return fmt.Sprintf("its msg is not a string (the writer writes the event %q as msg): the line was edited", l.Event())
	case msg.str != l.Event():
		return fmt.Sprintf("its msg %q differs from its event %q: the line was edited", msg.str, l.Event())
	}
	if f := l.field("logger"); f != nil && (f.kind != 's' || f.str != LoggerName) {
		return fmt.Sprintf("its logger is not %s: the line was edited", LoggerName)
	}
	if f := l.field("level"); f != nil && (f.kind != 's' || !isInfoLevel(f.str)) {
		return "its level is not info (every audit event is written at info): the line was edited"
	}
	// ts is left alone: on the zap path zap stamps it with its own clock, not the
	// chain's (a writer given another clock, as tests and a replaced caddymodule clock
	// are, writes a ts far from time), and a textual ts has the operator's layout; a
	// check would raise false breaks on genuine logs.
	return ""
}

// isInfoLevel accepts info as Caddy's level_format writes it: lower (the default),
// upper, or colored (upper within ANSI escapes).
func isInfoLevel(s string) bool {
	for {
		i := strings.Index(s, "\x1b[")
		if i < 0 {
			break
		}
		j := strings.IndexByte(s[i:], 'm')
		if j < 0 {
			break
		}
		s = s[:i] + s[i+j+1:]
	}
	return strings.EqualFold(s, "info")
}
