package policy

import (
	"errors"
	"strings"
	"unicode/utf8"

	"golang.org/x/text/cases"
	"golang.org/x/text/unicode/norm"
)

// UserNames is how the identity source in front of caddy-jit compares user and group
// names, and so how caddy-jit must compare them: every name that the source treats as
// one person has one canonical form here, and every decision (eligibility, approvers,
// self-approval, distinct approvers, lockout, the session token's subject) compares
// canonical forms only.
//
// Both kinds normalise to Unicode NFC: "é" typed as one code point or as "e" and a
// combining accent are the same text, only encoded differently, and an identity
// provider may pass either along. CaseInsensitive also applies full Unicode case
// folding (golang.org/x/text/cases.Fold, CaseFolding.txt status C and F, without the
// Turkic mappings), and NFC again, since folding can leave a string unnormalised.
//
// Full folding, not strings.ToLower: it is Unicode's definition of caseless matching
// (§3.13), and the only mapping under which a name, its upper case and its lower case
// all meet: "STRASSE", "straße" and "strasse" fold to "strasse" (an identity source
// that upper-cases names turns "straße" into "STRASSE", which ToLower would leave
// apart), "ΌΣΟΣ" and "όσος" meet despite the final sigma. It is locale-independent:
// "İ" (dotted capital I) folds to "i̇" (i, combining dot), apart from "i" and "I",
// as a Turkish-unaware source keeps them.
//
// Not NFKC_Casefold: compatibility mapping would merge names that identity sources
// keep apart, such as the fullwidth "ａｌｉｃｅ" and "alice", or names with invisible
// format characters. Treating two people as one is as dangerous as the reverse (a
// look-alike account would hold the other's sessions), so caddy-jit merges only what
// canonical equivalence and case folding merge.
type UserNames uint8

// The kinds of identity source.
const (
	// CaseSensitive sources tell "alice" and "Alice" apart, as Caddy's basic_auth does.
	CaseSensitive UserNames = iota
	// CaseInsensitive sources log in "ALICE" as alice, as most identity providers
	// behind forward_auth do.
	CaseInsensitive
)

// ErrNameNotUTF8 refuses a name that is not valid UTF-8: its canonical form is not
// defined, and guessing one could merge two names.
var ErrNameNotUTF8 = errors.New("the name is not valid UTF-8")

// Canonical returns the one form of a user or group name that caddy-jit compares,
// stores and shows. It is idempotent: the canonical form of a canonical form is
// itself. A name that is ASCII already in canonical form is returned as it is,
// without allocating.
func (u UserNames) Canonical(name string) (string, error) {
	upper := false
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c >= utf8.RuneSelf {
			return u.canonicalUnicode(name)
		}
		upper = upper || ('A' <= c && c <= 'Z')
	}
	// ASCII is NFC already, and its full case folding is its lower case.
	if upper && u == CaseInsensitive {
		return strings.ToLower(name), nil
	}
	return name, nil
}

func (u UserNames) canonicalUnicode(name string) (string, error) {
	if !utf8.ValidString(name) {
		return "", ErrNameNotUTF8
	}
	s := norm.NFC.String(name)
	if u == CaseInsensitive {
		// A Caser keeps state between calls: one per call, never shared.
		s = norm.NFC.String(foldCherokee(cases.Fold().String(s)))
	}
	return s, nil
}

// foldCherokee finishes what cases.Fold (x/text v0.42) gets wrong: it swaps
// Cherokee's cases, lower to upper and upper to lower, so "Ꭰ" and "ꭰ" would fold
// to each other and never meet. CaseFolding.txt folds Cherokee to its capitals
// (U+AB70–U+ABBF to U+13A0–U+13EF, U+13F8–U+13FD to U+13F0–U+13F5), so every
// small letter is mapped to its capital here.
func foldCherokee(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case 0xab70 <= r && r <= 0xabbf:
			return r - 0xab70 + 0x13a0
		case 0x13f8 <= r && r <= 0x13fd:
			return r - 8
		}
		return r
	}, s)
}

// ErrUserReadsAsGroup refuses a user subject such as "Group:Ops" whose folded form
// starts with "group:": it would grant a whole group what names one user.
var ErrUserReadsAsGroup = errors.New(`the user name reads as "group:NAME" once case is folded: write a group as group:NAME, in lower case`)

// Subject returns the canonical form of an eligibility or approver subject: a user
// name, or "group:" and a group name. The prefix is syntax, matched as written.
func (u UserNames) Subject(s string) (string, error) {
	if group, ok := strings.CutPrefix(s, GroupPrefix); ok {
		g, err := u.Canonical(group)
		if err != nil {
			return "", err
		}
		return GroupPrefix + g, nil
	}
	c, err := u.Canonical(s)
	if err == nil && strings.HasPrefix(c, GroupPrefix) {
		return "", ErrUserReadsAsGroup
	}
	return c, err
}

// String is the name of the kind as the configuration spells it.
func (u UserNames) String() string {
	if u == CaseInsensitive {
		return "case_insensitive"
	}
	return "case_sensitive"
}
