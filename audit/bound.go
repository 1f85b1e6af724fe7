package audit

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"unicode/utf8"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Bounds on what one audit event can carry. Every string an event holds, whoever
// supplied it (a justification, a ticket, a session id typed into a form, a URI), is
// cut here, where the chain writes events, so that no event of any kind can make a
// line grow with what a client sends.
const (
	// MaxFieldRunes is the longest string an audit field keeps, in characters.
	// It is above every length a valid value can have (a justification holds at most
	// policy.MaxJustificationLength characters), so only a value that was refused
	// anyway, or an unusually long URI, is ever cut.
	MaxFieldRunes = 1024
	// MaxItems is the most items a list field (such as approvers) keeps.
	MaxItems = 64
)

// Suffixes of the fields that describe a value that was cut: KEY_len is its length in
// bytes (for a list: its number of items) and KEY_sha256 the SHA-256 of its bytes (for
// a list: of its canonical encoding, see chain.go), so that an auditor can tell it
// from any other value with the same beginning.
const (
	CutLenSuffix    = "_len"
	CutSHA256Suffix = "_sha256"
)

// cutNeeded reports whether s is over the bound. The byte length is checked first:
// a string of at most MaxFieldRunes bytes cannot have more characters, so the
// common case costs one comparison and no decoding.
func cutNeeded(s string) bool {
	return len(s) > MaxFieldRunes && utf8.RuneCountInString(s) > MaxFieldRunes
}

// cutPrefix returns the first MaxFieldRunes characters of s, an invalid byte
// counting as one character (as validUTF8 writes it), as valid UTF-8.
func cutPrefix(s string) string {
	i, n := 0, 0
	for i < len(s) && n < MaxFieldRunes {
		_, size := utf8.DecodeRuneInString(s[i:])
		i += size
		n++
	}
	return validUTF8(s[:i])
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// appendBounded appends f to fields, cut to the bounds when it is over them, with the
// fields that describe the whole value.
func appendBounded(fields []zap.Field, f zap.Field) []zap.Field {
	switch f.Type {
	case zapcore.StringType:
		if !cutNeeded(f.String) {
			f.String = validUTF8(f.String)
			return append(fields, f)
		}
		return append(fields,
			zap.String(f.Key, cutPrefix(f.String)),
			zap.Int(f.Key+CutLenSuffix, len(f.String)),
			zap.String(f.Key+CutSHA256Suffix, sha256Hex([]byte(f.String))))
	case zapcore.ArrayMarshalerType:
		if cut, ok := boundedStrings(f); ok {
			return append(fields, cut...)
		}
	}
	return append(fields, f)
}

// boundedStrings cuts a list of strings that has too many items or an item over the
// bound: at most MaxItems items, each cut to MaxFieldRunes characters. It
// reports false for a list within the bounds, and for a field that is not a list of
// strings (which the canonical encoding reports on its own).
func boundedStrings(f zap.Field) ([]zap.Field, bool) {
	m, ok := f.Interface.(zapcore.ArrayMarshaler)
	if !ok {
		return nil, false
	}
	var sa stringArray
	if err := m.MarshalLogArray(&sa); err != nil || sa.other {
		return nil, false
	}
	over := len(sa.items) > MaxItems
	for _, s := range sa.items {
		over = over || cutNeeded(s)
	}
	if !over {
		return nil, false
	}
	// The hash covers the list as the canonical encoding writes an 'a' value: the
	// count, then each item length-prefixed.
	enc := strconv.AppendInt(nil, int64(len(sa.items)), 10)
	enc = append(enc, ':')
	for _, s := range sa.items {
		enc = appendLenPrefixed(enc, s)
	}
	kept := make([]string, 0, min(len(sa.items), MaxItems))
	for _, s := range sa.items[:cap(kept)] {
		if cutNeeded(s) {
			s = cutPrefix(s)
		}
		kept = append(kept, s)
	}
	return []zap.Field{
		zap.Strings(f.Key, kept),
		zap.Int(f.Key+CutLenSuffix, len(sa.items)),
		zap.String(f.Key+CutSHA256Suffix, sha256Hex(enc)),
	}, true
}
