package commands

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/caddy-jit/caddy-jit/internal/printable"
	"github.com/caddy-jit/caddy-jit/internal/words"
	"github.com/caddy-jit/caddy-jit/policy"
)

func init() {
	addJitSubcommand(explainCommand)
}

// Exit codes of `caddy jit explain`, for scripts.
const (
	// explainExitMay: the user may activate the role, at once or with approval.
	explainExitMay = 0
	// explainExitMayNot: the user may not, or only by break-glass.
	explainExitMayNot = 1
	// explainExitError: bad usage, or a config that cannot be read.
	explainExitError = 2
)

func explainCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "explain <user> <role> --config <path> [--adapter <name>] [--at <time>] [--groups <g1,g2>] [--json]",
		Short: "Says whether a user may activate a role, and why or why not",
		Long: `
Says whether <user> may activate <role> under the roles of the config, and
every rule that decides it: which eligible lines name the user (by name or
by group) and whether their window is open, not yet open or ended; whether
the time falls inside the allowed hours, and if not when the next allowed
window opens (in that window's time zone, up to 8 days ahead); the approvals
needed; break-glass; the limits on duration and extension; what the form
asks for (justification, ticket); and max_active.

It needs no running Caddy: it reads the config only, so what lives in
storage (whether the user is enrolled or locked out, how many sessions are
active) is not checked.

--at asks about another time: an RFC 3339 time (2026-11-26T09:00:00Z) or a
date (2026-11-26, the start of that day in UTC). Default: now.

--groups gives the user's groups, comma-separated, as the 'groups'
placeholder would at run time, for group:NAME subjects.

--json prints the explanation as JSON.

Exit status: 0 the user may activate the role (at once, or with approval),
1 the user may not (including: only by break-glass), 2 usage or config error.`,
		Example: `  $ caddy jit explain alice db-admin --config /etc/caddy/Caddyfile
  $ caddy jit explain alice db-admin --config Caddyfile --at 2026-11-28T20:00:00Z
  $ caddy jit explain sam db-admin --config Caddyfile --groups dba,oncall --json`,
		RunE: runWithStreams(cmdExplain),
	}
	cmd.Flags().StringP("config", "c", "", "Configuration file with the roles (required)")
	cmd.Flags().StringP("adapter", "a", "", "Name of config adapter to apply")
	cmd.Flags().StringP("at", "", "", "The time to ask about: RFC 3339 or a date (default: now)")
	cmd.Flags().StringP("groups", "", "", "The user's groups, comma-separated")
	cmd.Flags().BoolP("json", "", false, "Print the explanation as JSON")
	auditUsageExit(cmd)
	return cmd
}

// cmdExplain runs `caddy jit explain`.
func cmdExplain(stdout, _ io.Writer, fl caddycmd.Flags) (int, error) {
	args := fl.Args()
	if len(args) != 2 || args[0] == "" || args[1] == "" {
		return explainExitError, fmt.Errorf("want a user and a role, got %d arguments: caddy jit explain <user> <role> --config <path>", len(args))
	}
	user, roleName := args[0], args[1]
	if fl.String("config") == "" {
		return explainExitError, errors.New("--config is required: explain reads the roles from the config (no running Caddy is needed)")
	}
	at, err := explainTime(fl.String("at"))
	if err != nil {
		return explainExitError, err
	}
	var groups []string
	for g := range strings.SplitSeq(fl.String("groups"), ",") {
		if g = strings.TrimSpace(g); g != "" && !slices.Contains(groups, g) {
			groups = append(groups, g)
		}
	}

	cfg, configFile, err := flaggedConfig(fl)
	if err != nil {
		return explainExitError, err
	}
	app, err := loadApp(cfg, configFile, "it declares no roles")
	if err != nil {
		return explainExitError, err
	}
	roles := app.PolicyRoles()
	role, ok := roles[roleName]
	if !ok {
		return explainExitError, unknownRoleError(roleName, roles, configFile)
	}

	// The user and groups as the gate sees them: in the config's canonical form.
	caller, err := app.CanonicalCaller(user, groups)
	if err != nil {
		return explainExitError, fmt.Errorf("the user name %s: %v", strconv.Quote(user), err)
	}
	x := role.Explain(caller, at)
	if fl.Bool("json") {
		err = printJSON(stdout, x)
	} else {
		_, err = io.WriteString(stdout, strings.Join(explainLines(x, role, app.Groups, groups != nil), "\n")+"\n")
	}
	if err != nil {
		return explainExitError, err
	}
	switch {
	case x.Verdict.May():
		return explainExitMay, nil
	case x.Verdict == policy.VerdictBreakGlassOnly:
		return explainExitMayNot, fmt.Errorf("%s may activate %s only by break-glass", printable.String(user), roleName)
	default:
		return explainExitMayNot, fmt.Errorf("%s may not activate %s", printable.String(user), roleName)
	}
}

// explainTime reads --at: empty is now, else an RFC 3339 time or a date (its start,
// UTC).
func explainTime(s string) (time.Time, error) {
	if s == "" {
		return now().UTC(), nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("--at %s: want an RFC 3339 time such as 2026-11-26T09:00:00Z or 2026-11-26T10:00:00+01:00, or a date such as 2026-11-26 (its start, in UTC)",
		strconv.Quote(s))
}

func unknownRoleError(name string, roles map[string]*policy.Role, configFile string) error {
	if len(roles) == 0 {
		return fmt.Errorf("unknown role %s: %s declares no roles", strconv.Quote(name), configFile)
	}
	names := make([]string, 0, len(roles))
	for n := range roles {
		names = append(names, n)
	}
	slices.Sort(names)
	return fmt.Errorf("unknown role %s: declared roles are %s, in %s", strconv.Quote(name), strings.Join(names, ", "), configFile)
}

// explainLines tells an explanation in plain text, one fact a line, the verdict
// first. groupsPlaceholder is the jit app's `groups` setting; groupsGiven whether
// --groups named any.
func explainLines(x *policy.Explanation, r *policy.Role, groupsPlaceholder string, groupsGiven bool) []string {
	var lines []string
	add := func(format string, args ...any) {
		lines = append(lines, printable.String(fmt.Sprintf(format, args...)))
	}
	user, at := x.User, words.Time(x.At)

	switch x.Verdict {
	case policy.VerdictMayActivate:
		add("%s MAY activate %s at %s", user, x.Role, at)
	case policy.VerdictMayActivateWithApproval:
		add("%s MAY activate %s at %s, with the approval of %d of: %s", user, x.Role, at, x.Approval.Count, strings.Join(x.Approval.Approvers, ", "))
	case policy.VerdictBreakGlassOnly:
		why := x.Message
		if x.Reason == policy.ReasonOutsideHours {
			why = "it is outside the role's allowed hours"
		}
		add("%s MAY NOT activate %s at %s, except by break-glass in an emergency: %s", user, x.Role, at, why)
	default:
		add("%s MAY NOT activate %s at %s: %s", user, x.Role, at, x.Message)
	}

	// Eligibility and its grants.
	el := x.Eligibility
	switch {
	case el.Eligible && el.Until.IsZero():
		add("eligibility: eligible, with no end")
	case el.Eligible:
		add("eligibility: eligible until %s", words.Time(el.Until))
	case !slices.ContainsFunc(el.Grants, func(g policy.GrantFacts) bool { return g.Covers }):
		add("eligibility: not eligible: no eligible line names %s or a group of %s's", user, user)
	default:
		add("eligibility: not eligible at this time: the lines that name %s are not open", user)
	}
	for i, g := range el.Grants {
		line := fmt.Sprintf("  eligible line %d (%s): ", i+1, explainGrant(g))
		if !g.Covers {
			add("%sdoes not name %s", line, user)
			continue
		}
		if g.By == user {
			line += "names " + user
		} else {
			line += "names " + user + " as a member of " + g.By
		}
		switch g.State {
		case policy.GrantNotYet:
			line += "; not yet: opens at " + words.Time(g.From)
		case policy.GrantEnded:
			line += "; ended at " + words.Time(g.Until)
		case policy.GrantOpen:
			if g.Until.IsZero() {
				line += "; active, with no end"
			} else {
				line += "; active until " + words.Time(g.Until)
			}
		}
		if g.Applies {
			line += " (this one applies)"
		}
		add("%s", line)
	}
	if group := explainRoleGroups(r); len(group) > 0 || groupsGiven {
		switch {
		case groupsGiven:
			add("groups: %s, as given with --groups", strings.Join(x.Groups, ", "))
		case !el.Eligible:
			add("groups: none given (--groups g1,g2), so %s did not match %s", strings.Join(group, ", "), user)
		}
		if groupsPlaceholder == "" && len(group) > 0 {
			add("groups: the config sets no `groups` placeholder, so at run time caddy-jit sees no groups and group:NAME subjects match no one")
		}
	}

	// When.
	if h := x.Hours; h == nil {
		add("allowed hours: none set: any time")
	} else {
		switch {
		case h.Within && h.Until.IsZero():
			add("allowed hours: inside, with no end in the next %d days", explainDays(policy.ExplainLookAhead))
		case h.Within:
			zone := time.UTC
			for i, w := range h.Windows {
				if w.Contains {
					zone = r.AllowedHours[i].Location
					break
				}
			}
			add("allowed hours: inside, until %s", explainZoneClock(h.Until.In(explainOrUTC(zone))))
		case h.NextOpen.IsZero():
			add("allowed hours: outside, and no window opens in the next %d days", explainDays(policy.ExplainLookAhead))
		default:
			add("allowed hours: outside; the next window opens %s: %s", explainZoneClock(h.NextOpen), h.NextWindow)
		}
		for _, w := range h.Windows {
			where := "outside"
			if w.Contains {
				where = "inside"
			}
			add("  %s: %s (%s there)", w.Window, where, w.Local)
		}
	}
	if !x.ScheduleAt.IsZero() {
		once := ""
		if x.Approval != nil {
			once = ", once approved"
		}
		add("schedule: a session can be scheduled to start at %s (Start at, at most %d days ahead)%s", words.Time(x.ScheduleAt), explainDays(policy.MaxStartAhead), once)
	}

	// Who else.
	if a := x.Approval; a == nil {
		add("approval: not needed")
	} else {
		add("approval: %s of: %s; one denial ends the request; undecided, it expires after %s",
			words.Plural(a.Count, "distinct approval"), strings.Join(a.Approvers, ", "), policy.FormatDuration(time.Duration(a.Expires)))
		if a.SelfApprover {
			add("approval: %s is one of the approvers, but no one approves their own request: the approvals must come from others", user)
		} else {
			add("approval: no one approves their own request")
		}
		switch {
		case !a.Possible:
			others := "none"
			if len(a.Others) > 0 {
				others = strings.Join(a.Others, ", ")
			}
			add("approval: cannot be given: %d needed, and the approvers other than %s are %d (%s)", a.Count, user, len(a.Others), others)
		case len(a.Others) < a.Count:
			add("approval: %d of the approvals must come from members of the approver groups, whom explain cannot see", a.Count-len(a.Others))
		}
	}
	switch bg := x.BreakGlass; {
	case !bg.Offered:
		add("break-glass: not offered by this role")
	case bg.Usable:
		add("break-glass: available in an emergency: no approval, no allowed hours, a justification of at least %d characters; it starts at once (no scheduling), alerts every notify target and marks the session break_glass",
			bg.MinJustification)
	default:
		add("break-glass: offered by the role, but not to %s now: %s", user, bg.Refusal)
	}

	// How long.
	d := x.Duration
	add("duration: at most %s per session (default %s)", policy.FormatDuration(time.Duration(d.Max)), policy.FormatDuration(time.Duration(d.Default)))
	if d.Capped {
		add("duration: a session started at %s ends by %s, when %s's eligibility ends: at most %s", at, words.Time(x.Eligibility.Until), user,
			policy.FormatDuration(time.Duration(d.Longest).Round(time.Second)))
	}
	if d.Extendable {
		add("extension: possible, up to %s in total from the session's start (max_total), never past the eligibility", policy.FormatDuration(time.Duration(d.MaxTotal)))
	} else {
		add("extension: not possible (no max_total longer than max_duration)")
	}

	// What the form asks.
	if j := x.Justification; j.Required {
		add("justification: required, at least %d characters (at most %d)", j.MinLength, j.MaxLength)
	} else {
		add("justification: optional (at most %d characters)", j.MaxLength)
	}
	if t := x.Ticket; t != nil {
		add("ticket: required, matching %s in full", t.Format)
	} else {
		add("ticket: not asked for")
	}
	if x.MaxActive > 0 {
		add("max_active: at most %s of the role at once; how many are active now is not known offline (caddy jit sessions --role %s)",
			words.Plural(x.MaxActive, "session"), x.Role)
	} else {
		add("max_active: no limit")
	}
	switch x.StepUp {
	case policy.StepUpWebAuthn.String():
		add("step-up: a passkey or security key of %s's (step_up webauthn); a TOTP code is refused; whether %s has one registered or is locked out is not checked offline", user, user)
	case policy.StepUpTOTP.String():
		add("step-up: a TOTP code from %s's authenticator app (step_up totp); a passkey is refused; whether %s is enrolled or locked out is not checked offline", user, user)
	default:
		add("step-up: a passkey of %s's or a TOTP code from their authenticator app (step_up any); whether %s is enrolled or locked out is not checked offline", user, user)
	}
	return lines
}

// grantText shows an eligible line as the Caddyfile writes it.
func explainGrant(g policy.GrantFacts) string {
	s := "eligible " + strings.Join(g.Subjects, " ")
	if !g.From.IsZero() {
		s += " from " + words.Time(g.From)
	}
	if !g.Until.IsZero() {
		s += " until " + words.Time(g.Until)
	}
	return s
}

// roleGroups lists the group:NAME subjects of a role's eligibility and approvers.
func explainRoleGroups(r *policy.Role) []string {
	var groups []string
	subjects := []string{}
	for _, e := range r.Eligibility {
		subjects = append(subjects, e.Subjects...)
	}
	if r.Approval != nil {
		subjects = append(subjects, r.Approval.Approvers...)
	}
	for _, s := range subjects {
		if strings.HasPrefix(s, policy.GroupPrefix) && !slices.Contains(groups, s) {
			groups = append(groups, s)
		}
	}
	return groups
}

// zoneClock shows a time in its own zone, with UTC beside it unless it is UTC.
func explainZoneClock(t time.Time) string {
	s := t.Format("Mon 2006-01-02 15:04 ") + t.Location().String()
	if t.Location() != time.UTC {
		s += " (" + words.Time(t) + ")"
	}
	return s
}

func explainOrUTC(loc *time.Location) *time.Location {
	if loc == nil {
		return time.UTC
	}
	return loc
}

func explainDays(d time.Duration) int { return int(d / (24 * time.Hour)) }
