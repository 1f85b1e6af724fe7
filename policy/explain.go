package policy

import (
	"encoding/json"
	"slices"
	"strings"
	"time"
)

// Verdict is the answer of Explain: whether, and how, a user may activate a role.
type Verdict string

// The verdicts of Explain.
const (
	// VerdictMayActivate: the user may activate the role at once.
	VerdictMayActivate Verdict = "may_activate"
	// VerdictMayActivateWithApproval: the user may ask, and the session starts once
	// enough approvers agree.
	VerdictMayActivateWithApproval Verdict = "may_activate_with_approval"
	// VerdictBreakGlassOnly: the ordinary way is closed (outside the allowed hours,
	// say), but the user may activate the role by break-glass in an emergency.
	VerdictBreakGlassOnly Verdict = "break_glass_only"
	// VerdictMayNot: the user may not activate the role.
	VerdictMayNot Verdict = "may_not_activate"
)

// May reports whether the verdict lets the user activate the role the ordinary way:
// at once or with approval. Break-glass only is not.
func (v Verdict) May() bool {
	return v == VerdictMayActivate || v == VerdictMayActivateWithApproval
}

// ReasonApprovalImpossible: the role needs more approvals than there are approvers
// other than the requester, so a request of theirs could never be approved. Only
// Explain gives it: Activation does not look at approvers.
const ReasonApprovalImpossible Reason = "approval_impossible"

// ExplainLookAhead is how far ahead Explain looks for the next allowed hours.
const ExplainLookAhead = 8 * 24 * time.Hour

// Length is a duration that JSON shows as people write it ("1h30m"), not in
// nanoseconds.
type Length time.Duration

// MarshalJSON writes the length as FormatDuration prints it.
func (l Length) MarshalJSON() ([]byte, error) {
	return json.Marshal(FormatDuration(time.Duration(l)))
}

// UnmarshalJSON reads a length as MarshalJSON writes it.
func (l *Length) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*l = Length(d)
	return nil
}

// Explanation says whether a user may activate a role at some time, and every rule
// of the role that bears on it. Explain makes it; it changes nothing and reads no
// state, so what only storage knows (enrollment, lockouts, how many sessions are
// active) is not in it.
type Explanation struct {
	User   string    `json:"user"`
	Groups []string  `json:"groups"`
	Role   string    `json:"role"`
	At     time.Time `json:"at"`

	Verdict Verdict `json:"verdict"`
	// Reason is the policy's reason for the ordinary way: ReasonAllowed, the reason
	// Activation refuses with (not_eligible, outside_allowed_hours, …) or
	// ReasonApprovalImpossible.
	Reason Reason `json:"reason"`
	// Message says why the ordinary way is closed, in the words of the activation
	// page; empty when it is open.
	Message string `json:"message,omitempty"`

	Eligibility EligibilityFacts `json:"eligibility"`
	// Hours is nil when the role has no allowed hours: it may be activated at any time.
	Hours *HoursFacts `json:"allowed_hours,omitempty"`
	// Approval is nil when the role needs no approval.
	Approval      *ApprovalFacts     `json:"approval,omitempty"`
	BreakGlass    BreakGlassFacts    `json:"break_glass"`
	Duration      DurationFacts      `json:"duration"`
	Justification JustificationFacts `json:"justification"`
	// Ticket is nil when the role needs no ticket reference.
	Ticket *TicketFacts `json:"ticket,omitempty"`
	// MaxActive is the role's limit of sessions at once; 0 is no limit. How many are
	// active is not known here.
	MaxActive int `json:"max_active"`
	// StepUp is the proof of presence the role accepts: webauthn, totp or any.
	StepUp string `json:"step_up"`
	// ScheduleAt, when the ordinary way is closed now, is the earliest time within
	// MaxStartAhead that a session could be scheduled to start at (the form's Start
	// at) the ordinary way; zero when there is none.
	ScheduleAt time.Time `json:"schedule_at,omitzero"`
}

// EligibilityFacts say whether the user is eligible, and through which grants.
type EligibilityFacts struct {
	// Eligible and Until are Role.Eligible's answer: Until is when the eligibility
	// ends, zero when it does not.
	Eligible bool      `json:"eligible"`
	Until    time.Time `json:"until,omitzero"`
	// Grants are the role's eligible lines, in order.
	Grants []GrantFacts `json:"grants"`
}

// GrantState places a grant's window relative to the time asked about.
type GrantState string

// The states of a grant's window.
const (
	GrantOpen   GrantState = "open"
	GrantNotYet GrantState = "not_yet_open"
	GrantEnded  GrantState = "ended"
)

// GrantFacts are one eligible line and how it bears on the user.
type GrantFacts struct {
	Subjects []string   `json:"subjects"`
	From     time.Time  `json:"from,omitzero"`
	Until    time.Time  `json:"until,omitzero"`
	State    GrantState `json:"state"`
	// Covers reports whether the grant names the user, By how: the user's name, or
	// group:NAME for a group of theirs (the name wins when both do).
	Covers bool   `json:"covers"`
	By     string `json:"by,omitempty"`
	// Applies marks the grant the eligibility comes from: of the open grants that
	// cover the user, the one that lasts longest.
	Applies bool `json:"applies,omitempty"`
}

// HoursFacts say where the time falls in the role's allowed hours.
type HoursFacts struct {
	Within  bool          `json:"within"`
	Windows []WindowFacts `json:"windows"`
	// Until, when within, is when the allowed time ends (the first minute outside
	// every window), looking ExplainLookAhead ahead; zero when it does not end in
	// that time.
	Until time.Time `json:"until,omitzero"`
	// NextOpen, when outside, is when the allowed time begins again, in the time
	// zone of NextWindow, the window that opens then; zero when none opens within
	// ExplainLookAhead.
	NextOpen   time.Time `json:"next_open,omitzero"`
	NextWindow string    `json:"next_window,omitempty"`
}

// WindowFacts are one allowed_hours line at the time asked about.
type WindowFacts struct {
	// Window is the line as the Caddyfile takes it; Zone its time zone.
	Window string `json:"window"`
	Zone   string `json:"zone"`
	// Local is the time asked about in that zone: weekday and clock, e.g. "Thu 09:00".
	Local    string `json:"local"`
	Contains bool   `json:"contains"`
}

// ApprovalFacts are the role's approval rule as it applies to the user.
type ApprovalFacts struct {
	Count     int      `json:"count"`
	Approvers []string `json:"approvers"`
	// Expires is how long a request waits for its approvals.
	Expires Length `json:"expires"`
	// SelfApprover reports that the user is one of the approvers (by name, or in a
	// group given): they still cannot approve their own request.
	SelfApprover bool `json:"self_approver"`
	// Possible is false when the approvers are all named users and, without the
	// requester, fewer than Count: no request of theirs can be approved.
	Possible bool `json:"possible"`
	// Others are the named approvers other than the user.
	Others []string `json:"others"`
}

// BreakGlassFacts say whether the user could use break-glass.
type BreakGlassFacts struct {
	// Offered reports that the role has break_glass.
	Offered bool `json:"offered"`
	// Usable reports that a break-glass activation would pass the policy now
	// (Activation with BreakGlass): the role offers it and the user is eligible.
	Usable bool `json:"usable"`
	// MinJustification is the shortest justification a break-glass activation takes.
	MinJustification int `json:"min_justification"`
	// Refusal, when the role offers break-glass but it is not usable, is why.
	Refusal string `json:"refusal,omitempty"`
}

// DurationFacts are the role's limits on how long a session lasts.
type DurationFacts struct {
	Max     Length `json:"max"`
	Default Length `json:"default"`
	// Longest is the longest session that could start at the time asked about:
	// Max, or less when the eligibility ends sooner (Capped).
	Longest Length `json:"longest"`
	Capped  bool   `json:"capped"`
	// MaxTotal bounds a session with its extensions; Extendable is false when it is
	// not longer than Max.
	MaxTotal   Length `json:"max_total,omitempty"`
	Extendable bool   `json:"extendable"`
}

// JustificationFacts say what the user must write.
type JustificationFacts struct {
	// Required is false when a justification is optional (outside break-glass).
	Required  bool `json:"required"`
	MinLength int  `json:"min_length"`
	MaxLength int  `json:"max_length"`
}

// TicketFacts say what ticket reference the role takes.
type TicketFacts struct {
	Required bool   `json:"required"`
	Format   string `json:"format"`
}

// Explain says whether the caller may activate the role at the given time, and why.
// Its verdict agrees with Activation (for a request that fills the form correctly),
// Eligible and WithinHours: it is made by them. It reads no clock and no storage.
func (r *Role) Explain(c Caller, at time.Time) *Explanation {
	x := &Explanation{
		User:    c.User,
		Groups:  slices.Clone(c.Groups),
		Role:    r.Name,
		At:      at,
		Reason:  ReasonAllowed,
		Verdict: VerdictMayActivate,
		StepUp:  r.StepUp.String(),
	}
	if x.Groups == nil {
		x.Groups = []string{}
	}
	x.explainEligibility(r, c, at)
	x.explainHours(r, at)
	x.explainApproval(r, c)
	x.explainLimits(r, at)

	normal := r.probe(c, at, time.Time{}, false)
	glass := r.probe(c, at, time.Time{}, true)
	x.BreakGlass.Usable = glass.Allowed
	if r.BreakGlass && !glass.Allowed {
		x.BreakGlass.Refusal = glass.Message
	}
	switch {
	case !normal.Allowed:
		x.Reason, x.Message = normal.Reason, normal.Message
		x.Verdict = VerdictMayNot
	case x.Approval != nil && !x.Approval.Possible:
		x.Reason = ReasonApprovalImpossible
		x.Message = approvalImpossibleMessage(x.Approval, c.User)
		x.Verdict = VerdictMayNot
	case x.Approval != nil:
		x.Verdict = VerdictMayActivateWithApproval
	}
	if x.Verdict == VerdictMayNot && glass.Allowed {
		x.Verdict = VerdictBreakGlassOnly
	}
	if !normal.Allowed {
		x.ScheduleAt = r.earliestStart(c, at, x)
	}
	return x
}

// probe asks Activation about a request that fills the form as the role wants, so
// that only the rules about who, when and how are left to decide. The ticket rule is
// left out: whether a reference matches is the user's to get right.
func (r *Role) probe(c Caller, at, start time.Time, breakGlass bool) Decision {
	role := *r
	role.Ticket = nil
	n := max(r.JustificationMinLength, BreakGlassMinJustification, 1)
	return role.Activation(Request{
		Caller:        c,
		Duration:      r.MaxDuration,
		Justification: strings.Repeat("x", n),
		Start:         start,
		BreakGlass:    breakGlass,
	}, at)
}
