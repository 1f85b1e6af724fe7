package policy

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// The checks behind Explain, one per rule of a role: eligibility, allowed hours,
// approval and the limits.

func (x *Explanation) explainEligibility(r *Role, c Caller, at time.Time) {
	d := r.Eligible(c, at)
	x.Eligibility = EligibilityFacts{Eligible: d.Allowed, Until: d.EligibleUntil, Grants: []GrantFacts{}}
	applied := false
	for _, e := range r.Eligibility {
		g := GrantFacts{Subjects: slices.Clone(e.Subjects), From: e.From, Until: e.Until, State: GrantOpen}
		switch {
		case !e.From.IsZero() && at.Before(e.From):
			g.State = GrantNotYet
		case !e.Until.IsZero() && !at.Before(e.Until):
			g.State = GrantEnded
		}
		g.Covers = e.covers(c)
		if g.Covers {
			g.By = coveredBy(e.Subjects, c)
		}
		if d.Allowed && !applied && g.Covers && g.State == GrantOpen && e.Until.Equal(d.EligibleUntil) {
			g.Applies, applied = true, true
		}
		x.Eligibility.Grants = append(x.Eligibility.Grants, g)
	}
}

func approvalImpossibleMessage(a *ApprovalFacts, user string) string {
	others := "none"
	if len(a.Others) > 0 {
		others = strings.Join(a.Others, ", ")
	}
	return fmt.Sprintf("no request of %s's can be approved: the role needs %d approvals, and the approvers other than %s are %d (%s); no one approves their own request",
		user, a.Count, user, len(a.Others), others)
}

// coveredBy names the subject through which a grant covers the caller: their name
// first, else the first of their groups.
func coveredBy(subjects []string, c Caller) string {
	if slices.Contains(subjects, c.User) {
		return c.User
	}
	for _, s := range subjects {
		if g, ok := strings.CutPrefix(s, GroupPrefix); ok && slices.Contains(c.Groups, g) {
			return s
		}
	}
	return ""
}

func (x *Explanation) explainHours(r *Role, at time.Time) {
	if len(r.AllowedHours) == 0 {
		return
	}
	h := &HoursFacts{Within: r.WithinHours(at)}
	for _, w := range r.AllowedHours {
		loc := windowLocation(w)
		h.Windows = append(h.Windows, WindowFacts{
			Window:   w.String(),
			Zone:     loc.String(),
			Local:    at.In(loc).Format("Mon 15:04"),
			Contains: w.Contains(at),
		})
	}
	if h.Within {
		h.Until = r.nextHoursChange(at, false)
	} else if open := r.nextHoursChange(at, true); !open.IsZero() {
		for _, w := range r.AllowedHours {
			if w.Contains(open) {
				h.NextOpen, h.NextWindow = open.In(windowLocation(w)), w.String()
				break
			}
		}
	}
	x.Hours = h
}

func windowLocation(w HoursWindow) *time.Location {
	if w.Location == nil {
		return time.UTC
	}
	return w.Location
}

// nextHoursChange returns the first time after at, within ExplainLookAhead, at which
// WithinHours is the given value; zero if there is none. Windows are minutes of a
// local day, so stepping minute by minute finds every change, across time zones and
// daylight saving time alike.
func (r *Role) nextHoursChange(at time.Time, within bool) time.Time {
	start := at.Truncate(time.Minute)
	for t := start.Add(time.Minute); !t.After(at.Add(ExplainLookAhead)); t = t.Add(time.Minute) {
		if r.WithinHours(t) == within {
			return t
		}
	}
	return time.Time{}
}

// hoursOpenings lists the times after at, within limit, at which the allowed hours
// begin.
func (r *Role) hoursOpenings(at time.Time, limit time.Duration) []time.Time {
	if len(r.AllowedHours) == 0 {
		return nil
	}
	var opens []time.Time
	prev := r.WithinHours(at)
	start := at.Truncate(time.Minute)
	for t := start.Add(time.Minute); !t.After(at.Add(limit)); t = t.Add(time.Minute) {
		cur := r.WithinHours(t)
		if cur && !prev {
			opens = append(opens, t)
		}
		prev = cur
	}
	return opens
}

func (x *Explanation) explainApproval(r *Role, c Caller) {
	if !r.NeedsApproval() {
		return
	}
	a := &ApprovalFacts{
		Count:     r.Approval.Count,
		Approvers: slices.Clone(r.Approval.Approvers),
		Expires:   Length(r.Approval.Expires),
		Others:    []string{},
	}
	groups := false
	for _, s := range r.Approval.Approvers {
		switch g, isGroup := strings.CutPrefix(s, GroupPrefix); {
		case isGroup:
			groups = true
			if slices.Contains(c.Groups, g) {
				a.SelfApprover = true
			}
		case s == c.User:
			a.SelfApprover = true
		case !slices.Contains(a.Others, s):
			a.Others = append(a.Others, s)
		}
	}
	// Members of a group are not known here: a group may hold enough approvers.
	a.Possible = groups || len(a.Others) >= a.Count
	x.Approval = a
}

func (x *Explanation) explainLimits(r *Role, at time.Time) {
	x.BreakGlass = BreakGlassFacts{
		Offered:          r.BreakGlass,
		MinJustification: max(r.JustificationMinLength, BreakGlassMinJustification),
	}
	x.Duration = DurationFacts{
		Max:        Length(r.MaxDuration),
		Default:    Length(r.DefaultDuration),
		Longest:    Length(r.MaxDuration),
		MaxTotal:   Length(r.MaxTotal),
		Extendable: r.MaxTotal > r.MaxDuration,
	}
	if until := x.Eligibility.Until; x.Eligibility.Eligible && !until.IsZero() && until.Sub(at) < r.MaxDuration {
		x.Duration.Longest, x.Duration.Capped = Length(until.Sub(at)), true
	}
	x.Justification = JustificationFacts{
		Required:  r.JustificationMinLength > 0,
		MinLength: r.JustificationMinLength,
		MaxLength: MaxJustificationLength,
	}
	if r.TicketRequired() {
		x.Ticket = &TicketFacts{Required: true, Format: r.TicketHint()}
	}
	x.MaxActive = r.MaxActive
}

// earliestStart finds the earliest time, after at and within MaxStartAhead, at which
// a session could be scheduled to start the ordinary way. Eligibility begins only at
// a grant's From and the allowed hours only at an opening, so those are the only
// times to try; Activation, asked about a scheduled start, decides each.
func (r *Role) earliestStart(c Caller, at time.Time, x *Explanation) time.Time {
	if x.Reason == ReasonApprovalImpossible {
		return time.Time{}
	}
	limit := at.Add(MaxStartAhead)
	var candidates []time.Time
	for _, e := range r.Eligibility {
		if e.covers(c) && e.From.After(at) && !e.From.After(limit) {
			candidates = append(candidates, e.From)
		}
	}
	candidates = append(candidates, r.hoursOpenings(at, MaxStartAhead)...)
	slices.SortFunc(candidates, func(a, b time.Time) int { return a.Compare(b) })
	for _, t := range candidates {
		if r.probe(c, at, t, false).Allowed {
			return t
		}
	}
	return time.Time{}
}
