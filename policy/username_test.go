package policy

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestUserNamesCanonical(t *testing.T) {
	tests := []struct {
		name      string
		in        string
		sensitive string // CaseSensitive
		folded    string // CaseInsensitive
	}{
		{"ASCII lower case stays", "alice", "alice", "alice"},
		{"ASCII upper case folds only when insensitive", "ALICE", "ALICE", "alice"},
		{"mixed case with an address", "Bob.Smith@Example.COM", "Bob.Smith@Example.COM", "bob.smith@example.com"},
		{"spaces and digits are kept", "Jane Doe 2", "Jane Doe 2", "jane doe 2"},
		{"NFD is composed to NFC", "Zoe\u0308", "Zo\u00eb", "zo\u00eb"},
		{"NFC stays NFC", "Zo\u00eb", "Zo\u00eb", "zo\u00eb"},
		{"a decomposed capital composes, then folds", "A\u030angstr\u00f6m", "\u00c5ngstr\u00f6m", "\u00e5ngstr\u00f6m"},
		{"the Angstrom sign is canonically A with a ring", "\u212bngstr\u00f6m", "\u00c5ngstr\u00f6m", "\u00e5ngstr\u00f6m"},
		{"sharp s folds to ss (full folding)", "stra\u00dfe", "stra\u00dfe", "strasse"},
		{"upper-cased sharp s meets it", "STRASSE", "STRASSE", "strasse"},
		{"capital sharp s meets it too", "STRA\u1e9eE", "STRA\u1e9eE", "strasse"},
		{"Turkish dotted capital I folds to i and a combining dot", "\u0130lker", "\u0130lker", "i\u0307lker"},
		{"Turkish dotless i has no case pair in default folding", "\u0131lker", "\u0131lker", "\u0131lker"},
		{"plain I folds to i, not to dotless i", "Ilker", "Ilker", "ilker"},
		{"final sigma meets sigma", "\u038c\u03a3\u039f\u03a3", "\u038c\u03a3\u039f\u03a3", "\u03cc\u03c3\u03bf\u03c3"},
		{"final sigma in lower case", "\u03cc\u03c3\u03bf\u03c2", "\u03cc\u03c3\u03bf\u03c2", "\u03cc\u03c3\u03bf\u03c3"},
		{"the Kelvin sign is canonically K", "\u212aurt", "Kurt", "kurt"},
		{"fullwidth letters fold within fullwidth, never to ASCII", "\uff21\uff2c\uff29\uff23\uff25", "\uff21\uff2c\uff29\uff23\uff25", "\uff41\uff4c\uff49\uff43\uff45"},
		{"fullwidth lower case is not alice", "\uff41\uff4c\uff49\uff43\uff45", "\uff41\uff4c\uff49\uff43\uff45", "\uff41\uff4c\uff49\uff43\uff45"},
		{"a ligature has a full case folding (status F) to its letters", "\ufb01ona", "\ufb01ona", "fiona"},
		{"a zero-width space is kept, so the name stays apart", "al\u200bice", "al\u200bice", "al\u200bice"},
		{"Cherokee small letters fold to their capitals", "\uab70\u13f8", "\uab70\u13f8", "\u13a0\u13f0"},
		{"Cherokee capitals stay", "\u13a0\u13f0", "\u13a0\u13f0", "\u13a0\u13f0"},
		{"the empty name stays empty", "", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, c := range []struct {
				u    UserNames
				want string
			}{{CaseSensitive, tt.sensitive}, {CaseInsensitive, tt.folded}} {
				got, err := c.u.Canonical(tt.in)
				if err != nil || got != c.want {
					t.Errorf("%s.Canonical(%+q) = %+q, %v; want %+q", c.u, tt.in, got, err, c.want)
				}
			}
		})
	}
}

func TestUserNamesCanonicalRefusesInvalidUTF8(t *testing.T) {
	for _, in := range []string{"al\xffice", "\xc3", "zo\xc3\xab\x80", "\xed\xa0\x80"} {
		for _, u := range []UserNames{CaseSensitive, CaseInsensitive} {
			if got, err := u.Canonical(in); !errors.Is(err, ErrNameNotUTF8) || got != "" {
				t.Errorf("%s.Canonical(%+q) = %+q, %v; want ErrNameNotUTF8", u, in, got, err)
			}
		}
	}
}

// Every name, its upper case and its lower case meet under CaseInsensitive.
func TestUserNamesCaseInsensitiveMeetsUpperAndLower(t *testing.T) {
	for _, name := range []string{"alice", "Stra\u00dfe", "\u00d6zlem", "Zo\u00eb", "\u038c\u03c3\u03bf\u03c2", "\u0160ar\u016Bnas", "Ren\u00e9e O'Hara"} {
		want, _ := CaseInsensitive.Canonical(name)
		for _, variant := range []string{strings.ToUpper(name), strings.ToLower(name)} {
			if got, _ := CaseInsensitive.Canonical(variant); got != want {
				t.Errorf("Canonical(%+q) = %+q, but Canonical(%+q) = %+q: one person, two forms", variant, got, name, want)
			}
		}
	}
}

// Canonical is idempotent for every code point of the planes that have case or
// combining marks (0 and 1), alone, after a capital and before combining marks, so a
// name stored in canonical form compares equal to itself when it comes back in
// through the identity or the admin API. It caught x/text's Cherokee swap.
func TestUserNamesCanonicalIsIdempotent(t *testing.T) {
	for r := rune(0); r <= 0x1ffff; r++ {
		if !utf8.ValidRune(r) {
			continue
		}
		for _, s := range []string{string(r), "A" + string(r) + "\u0301", string(r) + "\u0345\u0301"} {
			for _, u := range []UserNames{CaseSensitive, CaseInsensitive} {
				once, err := u.Canonical(s)
				if err != nil {
					t.Fatalf("%s.Canonical(%+q): %v", u, s, err)
				}
				if twice, _ := u.Canonical(once); twice != once {
					t.Fatalf("%s.Canonical is not idempotent for %+q: %+q, then %+q", u, s, once, twice)
				}
			}
		}
	}
}

func TestUserNamesSubject(t *testing.T) {
	tests := []struct {
		u        UserNames
		in, want string
	}{
		{CaseSensitive, "group:Ops", "group:Ops"},
		{CaseInsensitive, "group:Ops", "group:ops"},
		{CaseInsensitive, "group:D\u00e9v", "group:d\u00e9v"},
		{CaseInsensitive, "group:De\u0301v", "group:d\u00e9v"},
		// The prefix is syntax, and case-sensitive: "Group:Ops" is a user name.
		{CaseSensitive, "Group:Ops", "Group:Ops"},
		{CaseInsensitive, "ALICE", "alice"},
	}
	for _, tt := range tests {
		if got, err := tt.u.Subject(tt.in); err != nil || got != tt.want {
			t.Errorf("%s.Subject(%+q) = %+q, %v; want %+q", tt.u, tt.in, got, err, tt.want)
		}
	}
	if _, err := CaseInsensitive.Subject("group:\xff"); !errors.Is(err, ErrNameNotUTF8) {
		t.Errorf("Subject of a group name that is not UTF-8: %v, want ErrNameNotUTF8", err)
	}
	// Folded, the user name "Group:Ops" would read as the group ops: refused, since it
	// would make every member of ops eligible where the operator named one user.
	for _, in := range []string{"Group:Ops", "GROUP:ops", "\uff27roup:x"} {
		got, err := CaseInsensitive.Subject(in)
		folded, _ := CaseInsensitive.Canonical(in)
		if strings.HasPrefix(folded, GroupPrefix) && !errors.Is(err, ErrUserReadsAsGroup) {
			t.Errorf("CaseInsensitive.Subject(%+q) = %+q, %v; want ErrUserReadsAsGroup", in, got, err)
		}
	}
}

func TestUserNamesCanonicalASCIIAllocatesNothing(t *testing.T) {
	for _, u := range []UserNames{CaseSensitive, CaseInsensitive} {
		if n := testing.AllocsPerRun(100, func() { _, _ = u.Canonical("alice@example.com") }); n != 0 {
			t.Errorf("%s.Canonical of a canonical ASCII name allocates %.0f times, want 0", u, n)
		}
	}
}
