package caddymodule

import (
	"fmt"
	"strings"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-jit/caddy-jit/policy"
)

// One canonical form of a user name (see policy.UserNames): it is made where a name
// enters (the identity placeholder, the groups placeholder, the roles' subjects and
// approvers, the admin API's and the CLI's user arguments), so that every comparison
// and every stored record downstream sees that form only.

// The values of the jit app's user_names setting.
const (
	userNamesCaseSensitive   = "case_sensitive"
	userNamesCaseInsensitive = "case_insensitive"
)

// parseUserNames reads the user_names setting; empty is the default, case_sensitive.
func parseUserNames(s string) (policy.UserNames, error) {
	switch s {
	case "", userNamesCaseSensitive:
		return policy.CaseSensitive, nil
	case userNamesCaseInsensitive:
		return policy.CaseInsensitive, nil
	}
	return 0, fmt.Errorf("user_names %q: want %s (the default: the identity source tells alice and Alice apart, as basic_auth does) "+
		"or %s (it logs in ALICE as alice, as most identity providers behind forward_auth do)", s, userNamesCaseSensitive, userNamesCaseInsensitive)
}

// canonicalizeNames reads user_names and puts the roles' subjects and approvers in
// canonical form, before the roles are built from them.
func (a *App) canonicalizeNames() error {
	names, err := parseUserNames(a.UserNames)
	if err != nil {
		return fmt.Errorf("jit: %w", err)
	}
	roles, err := canonicalRoles(a.Roles, names)
	if err != nil {
		return fmt.Errorf("jit: %w", err)
	}
	a.names, a.Roles = names, roles
	return nil
}

// canonicalRoles returns copies of the role configs whose eligible subjects and
// approvers are canonical, each listed once. A name the same person could be written
// two ways in is fine; a list that counts on two spellings being two people is not.
func canonicalRoles(configs map[string]*RoleConfig, names policy.UserNames) (map[string]*RoleConfig, error) {
	out := make(map[string]*RoleConfig, len(configs))
	for name, rc := range configs {
		c := *rc
		c.Eligible = make([]EligibleConfig, len(rc.Eligible))
		for i, e := range rc.Eligible {
			subjects, _, err := canonicalSubjects(names, e.Subjects)
			if err != nil {
				return nil, fmt.Errorf("role %s: eligible %w", name, err)
			}
			e.Subjects = subjects
			c.Eligible[i] = e
		}
		if rc.Approval != nil {
			ac := *rc.Approval
			approvers, merged, err := canonicalSubjects(names, rc.Approval.Approvers)
			if err != nil {
				return nil, fmt.Errorf("role %s: approval: approvers %w", name, err)
			}
			ac.Approvers = approvers
			if err := checkDistinctApprovers(ac, merged, names); err != nil {
				return nil, fmt.Errorf("role %s: %w", name, err)
			}
			c.Approval = &ac
		}
		out[name] = &c
	}
	return out, nil
}

// canonicalSubjects returns the canonical subjects, each once, in the order first
// written, and the spellings that merged into an earlier one ("Bob" after "bob").
func canonicalSubjects(names policy.UserNames, subjects []string) (out, merged []string, err error) {
	first := make(map[string]string, len(subjects))
	for _, s := range subjects {
		if err := checkSubject(s); err != nil {
			return nil, nil, err
		}
		c, err := names.Subject(s)
		if err != nil {
			return nil, nil, fmt.Errorf("%q: %w", s, err)
		}
		if err := checkSubject(c); err != nil {
			return nil, nil, fmt.Errorf("%q, in canonical form %q: longer than %d bytes", s, c, maxUserLength)
		}
		if earlier, seen := first[c]; seen {
			if earlier != s {
				merged = append(merged, fmt.Sprintf("%q and %q", earlier, s))
			}
			continue
		}
		first[c] = s
		out = append(out, c)
	}
	return out, merged, nil
}

// checkDistinctApprovers refuses an approval whose count only two spellings of one
// person could meet, such as `approvers bob Bob` with `count 2` when names are case
// insensitive: bob alone would then be two approvers.
func checkDistinctApprovers(ac ApprovalConfig, merged []string, names policy.UserNames) error {
	if len(merged) == 0 {
		return nil
	}
	users := 0
	for _, s := range ac.Approvers {
		if !strings.HasPrefix(s, policy.GroupPrefix) {
			users++
		}
	}
	count := ac.Count
	if count == 0 {
		count = DefaultApprovalCount
	}
	if users == len(ac.Approvers) && users < count {
		return fmt.Errorf("approval count %d needs %d distinct approvers, but %s name one person (user_names %s: names compare after Unicode NFC normalisation%s): name %d different people",
			count, count, strings.Join(merged, ", "), names, foldNote(names), count)
	}
	return nil
}

func foldNote(names policy.UserNames) string {
	if names == policy.CaseInsensitive {
		return " and case folding"
	}
	return ""
}

// identity reads the base identity, in the canonical form of user_names: every
// comparison after it (the token's subject, eligibility, approvals, lockout) sees
// that form only. A name without one (not UTF-8), or longer than maxUserLength as
// sent or in canonical form, is "": no identity.
// The common case, a single placeholder holding a canonical ASCII name, is a lookup
// that allocates nothing.
func (a *App) identity(repl *caddy.Replacer) string {
	raw, found := "", false
	if a.identityKey != "" {
		if v, ok := repl.Get(a.identityKey); ok {
			raw, found = v.(string)
		}
	}
	if !found {
		raw = repl.ReplaceAll(a.Identity, "")
	}
	if len(raw) > maxUserLength {
		// Refused before folding, which may lengthen it: the cost stays bounded.
		return ""
	}
	user, err := a.names.Canonical(raw)
	if err != nil || len(user) > maxUserLength {
		return ""
	}
	return user
}

// caller builds the policy's view of the caller from the identity and groups, both
// in canonical form. user is canonicalised again (a no-op for identity's answer),
// since pages may read the placeholder themselves; a name without a canonical form
// gets the zero Caller, which is eligible for nothing and approves nothing.
func (a *App) caller(repl *caddy.Replacer, user string) policy.Caller {
	var groups []string
	if a.Groups != "" {
		for _, g := range strings.Split(repl.ReplaceAll(a.Groups, ""), ",") {
			if g = strings.TrimSpace(g); g != "" {
				groups = append(groups, g)
			}
		}
	}
	c, err := a.CanonicalCaller(user, groups)
	if err != nil {
		return policy.Caller{}
	}
	return c
}

// CanonicalCaller is the policy's view of a caller: the canonical user name, and
// the canonical names of the groups, as the gate makes it from the placeholders
// (`caddy jit explain` makes it from its arguments). A group name that has no
// canonical form (not UTF-8) is dropped: it grants nothing.
func (a *App) CanonicalCaller(user string, groups []string) (policy.Caller, error) {
	u, err := a.names.Canonical(user)
	if err != nil {
		return policy.Caller{}, err
	}
	if len(u) > maxUserLength {
		return policy.Caller{}, fmt.Errorf("the user name is longer than %d bytes in canonical form", maxUserLength)
	}
	c := policy.Caller{User: u}
	for _, g := range groups {
		if g, err := a.names.Canonical(g); err == nil && g != "" {
			c.Groups = append(c.Groups, g)
		}
	}
	return c, nil
}

// userArg checks a user name given to the admin API or the CLI and returns its
// canonical form: `caddy jit enroll Alice` enrolls the alice who logs in as ALICE
// when names are case-insensitive.
func userArg(names policy.UserNames, user string) (string, error) {
	if err := checkUserName(user); err != nil {
		return "", err
	}
	c, err := names.Canonical(user)
	if err != nil {
		return "", fmt.Errorf("the user name %q: %w", user, err)
	}
	if err := checkUserName(c); err != nil {
		return "", fmt.Errorf("the user name %q, in canonical form %q: %w", user, c, err)
	}
	return c, nil
}
