package policy

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/caddy-jit/caddy-jit/internal/words"
)

// The reasons of the workflow rules: approval, break-glass, time and count rules.
const (
	ReasonOutsideHours          Reason = "outside_allowed_hours"
	ReasonBreakGlassNotAllowed  Reason = "break_glass_not_allowed"
	ReasonBreakGlassScheduled   Reason = "break_glass_scheduled"
	ReasonStartInvalid          Reason = "start_invalid"
	ReasonNotApprover           Reason = "not_an_approver"
	ReasonSelfApproval          Reason = "self_approval"
	ReasonAlreadyDecided        Reason = "already_decided"
	ReasonMaxActive             Reason = "max_active_reached"
	ReasonMaxTotal              Reason = "max_total_reached"
	ReasonExtensionNotPermitted Reason = "extension_not_permitted"
)

// MaxStartAhead is how far ahead a session may be scheduled.
const MaxStartAhead = 7 * 24 * time.Hour

// BreakGlassMinJustification is the shortest justification a break-glass activation
// takes, whatever the role's own rule: an emergency must say what it is.
const BreakGlassMinJustification = 10

// Approval is a role's rule that other people must agree to an activation.
type Approval struct {
	// Approvers are user names, or group names prefixed with "group:".
	Approvers []string
	// Count is how many distinct approvers must approve.
	Count int
	// Expires is how long a request waits for its approvals.
	Expires time.Duration
}

// MayApprove decides whether approver may decide a request that requester made.
func (a *Approval) MayApprove(approver Caller, requester string) Decision {
	if approver.User == requester {
		return deny(ReasonSelfApproval, "no one can approve their own request")
	}
	if !(Eligibility{Subjects: a.Approvers}).covers(approver) {
		return deny(ReasonNotApprover, "%s is not an approver of this role", approver.User)
	}
	return allow(time.Time{})
}

// HoursWindow is a span of the day on some days of the week, in a time zone.
type HoursWindow struct {
	// Days are the weekdays the window applies to, indexed by time.Weekday.
	Days [7]bool
	// From and To are minutes since midnight; To ≤ From spans midnight, and
	// From == To is the whole day.
	From, To int
	Location *time.Location
}

// Contains reports whether t falls inside the window, in the window's time zone. A
// window that spans midnight belongs to the day it starts on.
func (w HoursWindow) Contains(t time.Time) bool {
	if w.Location != nil {
		t = t.In(w.Location)
	} else {
		t = t.UTC()
	}
	minute := t.Hour()*60 + t.Minute()
	day := t.Weekday()
	switch {
	case w.From == w.To:
		return w.Days[day]
	case w.From < w.To:
		return w.Days[day] && minute >= w.From && minute < w.To
	default: // spans midnight
		yesterday := (day + 6) % 7
		return (w.Days[day] && minute >= w.From) || (w.Days[yesterday] && minute < w.To)
	}
}

// String prints the window as the Caddyfile takes it.
func (w HoursWindow) String() string {
	var days []string
	for d, on := range w.Days {
		if on {
			days = append(days, strings.ToLower(time.Weekday(d).String()[:3]))
		}
	}
	dayText := strings.Join(days, ",")
	if len(days) == 7 {
		dayText = "daily"
	}
	return fmt.Sprintf("%s %02d:%02d-%02d:%02d %s", dayText, w.From/60, w.From%60, w.To/60, w.To%60, w.Location)
}

// WithinHours reports whether the role may be activated at t under its allowed hours;
// a role without allowed hours may be activated at any time.
func (r *Role) WithinHours(t time.Time) bool {
	if len(r.AllowedHours) == 0 {
		return true
	}
	return slices.ContainsFunc(r.AllowedHours, func(w HoursWindow) bool { return w.Contains(t) })
}

func (r *Role) breakGlassHint() string {
	if r.BreakGlass {
		return "; in an emergency, use break-glass"
	}
	return ""
}

func (r *Role) hoursText() string {
	parts := make([]string, len(r.AllowedHours))
	for i, w := range r.AllowedHours {
		parts[i] = w.String()
	}
	return strings.Join(parts, "; ")
}

// NeedsApproval reports whether an activation of the role waits for approvers.
func (r *Role) NeedsApproval() bool { return r.Approval != nil && r.Approval.Count > 0 }

// CheckActiveCount decides whether one more session of the role may start when active
// sessions already hold it.
func (r *Role) CheckActiveCount(active int) Decision {
	if r.MaxActive > 0 && active >= r.MaxActive {
		return deny(ReasonMaxActive, "the role %s is already held by %d people, its limit (max_active %d); try again when a session ends", r.Name, active, r.MaxActive)
	}
	return allow(time.Time{})
}

// Span is the time a session holds its role, running or scheduled: [Start, End).
type Span struct{ Start, End time.Time }

// Busiest returns the most spans that hold the role at one instant of [start, end),
// and the first instant they do. A new session, a scheduled start and an extension's
// added time are all checked with it, so that none of them can put more sessions
// side by side than max_active allows.
func Busiest(held []Span, start, end time.Time) (count int, at time.Time) {
	type edge struct {
		t    time.Time
		step int
	}
	var edges []edge
	for _, s := range held {
		from, to := later(s.Start, start), earlier(s.End, end)
		if from.Before(to) {
			edges = append(edges, edge{from, 1}, edge{to, -1})
		}
	}
	// Spans are half-open: one that ends at the instant another begins never meets
	// it, so ends sort before starts.
	slices.SortFunc(edges, func(a, b edge) int {
		if c := a.t.Compare(b.t); c != 0 {
			return c
		}
		return a.step - b.step
	})
	n := 0
	for _, e := range edges {
		n += e.step
		if n > count {
			count, at = n, e.t
		}
	}
	return count, at
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func earlier(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// CheckPlace decides whether a session may hold the role over [start, end) while the
// other sessions hold it over held: at no instant may there be more than max_active.
func (r *Role) CheckPlace(held []Span, start, end time.Time) Decision {
	if r.MaxActive <= 0 {
		return allow(time.Time{})
	}
	count, at := Busiest(held, start, end)
	if count < r.MaxActive {
		return allow(time.Time{})
	}
	if !at.After(start) {
		return r.CheckActiveCount(count)
	}
	others := "1 other session"
	if count != 1 {
		others = fmt.Sprintf("%d other sessions", count)
	}
	return deny(ReasonMaxActive, "from %s the role %s is held by %s (running or scheduled), its limit (max_active %d): ask for an end before then",
		words.Time(at), r.Name, others, r.MaxActive)
}

// ExtensionNeedsApproval reports whether extending a session of the role waits for
// approvers: it does wherever activating it does, break-glass sessions included (an
// emergency skips the approvers once, not for as long as max_total allows), unless
// the role says extend_without_approval.
func (r *Role) ExtensionNeedsApproval() bool { return r.NeedsApproval() && !r.ExtendWithoutApproval }

// Extension decides how far a session that started at start and now ends at expires
// may be extended, asked at the given time for duration more. It returns the new end,
// before any cap from eligibility.
func (r *Role) Extension(start, expires, at time.Time, duration time.Duration) (time.Time, Decision) {
	switch {
	case r.MaxTotal <= r.MaxDuration:
		return time.Time{}, deny(ReasonExtensionNotPermitted, "sessions of the role %s cannot be extended (no max_total longer than max_duration)", r.Name)
	case duration <= 0:
		return time.Time{}, deny(ReasonDurationInvalid, "the duration must be positive")
	case duration > r.MaxDuration:
		return time.Time{}, deny(ReasonDurationTooLong, "an extension lasts at most %s", FormatDuration(r.MaxDuration))
	}
	limit := start.Add(r.MaxTotal)
	end := at.Add(duration)
	if !end.After(expires) {
		return time.Time{}, deny(ReasonDurationInvalid, "the session already runs until %s: ask for a longer duration", words.Clock(expires))
	}
	if end.After(limit) {
		end = limit
	}
	if !end.After(expires) {
		return time.Time{}, deny(ReasonMaxTotal, "this session has reached the role's limit of %s in total (max_total); activate the role again instead", FormatDuration(r.MaxTotal))
	}
	return end, allow(time.Time{})
}
