// Package policy decides who may activate which role, for how long and on what terms.
//
// It owns roles, eligibility windows and the activation rules, and answers with a
// Decision that carries a machine-readable Reason. It is pure: no I/O, no clock reads
// (the time is always an argument) and no Caddy import, so every rule is easy to read,
// test and fuzz.
package policy

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Reason says why a decision came out the way it did. The values are stable: they
// appear in audit events, metrics and JSON answers.
type Reason string

// The reasons a decision can carry.
const (
	ReasonAllowed               Reason = "allowed"
	ReasonUnknownRole           Reason = "unknown_role"
	ReasonNotEligible           Reason = "not_eligible"
	ReasonJustificationMissing  Reason = "justification_missing"
	ReasonJustificationTooShort Reason = "justification_too_short"
	ReasonJustificationTooLong  Reason = "justification_too_long"
	ReasonTicketInvalid         Reason = "ticket_invalid"
	ReasonDurationInvalid       Reason = "duration_invalid"
	ReasonDurationTooLong       Reason = "duration_too_long"
)

// Bounds on what a user may type. They keep audit events and storage records small
// whatever a client sends.
const (
	MaxJustificationLength = 1000
	MaxTicketLength        = 128
)

// GroupPrefix marks an eligibility subject that names a group rather than a user.
const GroupPrefix = "group:"

// Decision is the answer to a question about a caller and a role.
type Decision struct {
	Allowed bool
	Reason  Reason
	// Message explains the decision in plain words for the person who asked.
	Message string
	// EligibleUntil is when the caller's eligibility for the role ends; zero means it
	// does not end. Set only when the caller is eligible.
	EligibleUntil time.Time
}

func allow(until time.Time) Decision {
	return Decision{Allowed: true, Reason: ReasonAllowed, EligibleUntil: until}
}

func deny(reason Reason, format string, args ...any) Decision {
	return Decision{Reason: reason, Message: fmt.Sprintf(format, args...)}
}

// Caller is the base identity, authenticated by something in front of caddy-jit.
type Caller struct {
	User   string
	Groups []string
}

// Eligibility lets its subjects activate a role inside an optional window.
type Eligibility struct {
	// Subjects are user names, or group names prefixed with "group:".
	Subjects []string
	// From and Until bound the window; a zero value leaves that side open.
	From, Until time.Time
}

// covers reports whether the caller is one of the subjects.
func (e Eligibility) covers(c Caller) bool {
	for _, s := range e.Subjects {
		if group, ok := strings.CutPrefix(s, GroupPrefix); ok {
			if slices.Contains(c.Groups, group) {
				return true
			}
		} else if s == c.User {
			return true
		}
	}
	return false
}

// Role is a named privilege and the rules for activating it.
type Role struct {
	Name            string
	MaxDuration     time.Duration
	DefaultDuration time.Duration
	// JustificationMinLength is the shortest justification accepted, in characters;
	// zero means a justification is optional.
	JustificationMinLength int
	// Ticket, when set, makes a ticket reference mandatory; it must match in full.
	Ticket *regexp.Regexp
	// TicketFormat describes the expected ticket to people, e.g. the pattern as the
	// operator wrote it; Ticket's own pattern is shown when it is empty.
	TicketFormat string
	Eligibility  []Eligibility

	// Approval, when set, makes an activation wait for approvers.
	Approval *Approval
	// BreakGlass lets an eligible user skip approval and allowed hours in an
	// emergency, with a mandatory justification.
	BreakGlass bool
	// MaxTotal bounds a session with its extensions, from its start; a value not above
	// MaxDuration means sessions cannot be extended.
	MaxTotal time.Duration
	// ExtendWithoutApproval lets the holder of a session of a role that needs approval
	// extend it alone (with their code), as before approvals covered extensions.
	ExtendWithoutApproval bool
	// AllowedHours are when the role may be activated (without break-glass); none
	// means at any time.
	AllowedHours []HoursWindow
	// MaxActive is how many sessions of the role may be active at once; 0 is no limit.
	MaxActive int
	// RecordBodies, when positive, keeps up to that many bytes of each mutating
	// request's body for session review.
	RecordBodies int64
	// StepUp is the proof of presence the role accepts (and asks of its approvers).
	StepUp StepUp
}

// TicketRequired reports whether activating the role needs a ticket reference.
func (r *Role) TicketRequired() bool { return r.Ticket != nil }

// TicketHint describes the ticket reference the role expects.
func (r *Role) TicketHint() string {
	if r.TicketFormat != "" || r.Ticket == nil {
		return r.TicketFormat
	}
	return r.Ticket.String()
}

// Eligible decides whether the caller may activate the role at the given time. When
// several grants cover the caller, the one that lasts longest wins.
func (r *Role) Eligible(c Caller, at time.Time) Decision {
	var (
		found, inWindow bool
		until           time.Time
		soonestFrom     time.Time
		latestUntil     time.Time
	)
	for _, e := range r.Eligibility {
		if !e.covers(c) {
			continue
		}
		found = true
		switch {
		case !e.From.IsZero() && at.Before(e.From):
			if soonestFrom.IsZero() || e.From.Before(soonestFrom) {
				soonestFrom = e.From
			}
		case !e.Until.IsZero() && !at.Before(e.Until):
			if e.Until.After(latestUntil) {
				latestUntil = e.Until
			}
		default:
			if !inWindow || (!until.IsZero() && (e.Until.IsZero() || e.Until.After(until))) {
				until = e.Until
			}
			inWindow = true
		}
	}
	switch {
	case inWindow:
		return allow(until)
	case !found:
		return deny(ReasonNotEligible, "%s is not eligible for the role %s", c.User, r.Name)
	case !soonestFrom.IsZero():
		return deny(ReasonNotEligible, "%s is eligible for the role %s only from %s", c.User, r.Name, soonestFrom.UTC().Format(time.RFC3339))
	default:
		return deny(ReasonNotEligible, "%s's eligibility for the role %s ended at %s", c.User, r.Name, latestUntil.UTC().Format(time.RFC3339))
	}
}

// Request is an activation as the user asked for it.
type Request struct {
	Caller        Caller
	Duration      time.Duration
	Justification string
	Ticket        string
	// Start is when the session should begin; zero means now.
	Start time.Time
	// BreakGlass asks to skip approval and allowed hours.
	BreakGlass bool
}

// Activation decides a request at the given time: the start, eligibility at the start,
// break-glass and allowed hours, then duration, justification and ticket, in the order
// a user fills the form.
func (r *Role) Activation(req Request, at time.Time) Decision {
	start := at
	if !req.Start.IsZero() {
		switch {
		case req.BreakGlass:
			return deny(ReasonBreakGlassScheduled, "break-glass access starts now; it cannot be scheduled")
		case req.Start.Before(at.Add(-time.Minute)):
			return deny(ReasonStartInvalid, "the start time %s has passed", req.Start.UTC().Format(time.RFC3339))
		case req.Start.After(at.Add(MaxStartAhead)):
			return deny(ReasonStartInvalid, "a session can be scheduled at most %d days ahead", int(MaxStartAhead/(24*time.Hour)))
		case req.Start.After(at):
			start = req.Start
		}
	}
	d := r.Eligible(req.Caller, start)
	if !d.Allowed {
		return d
	}
	if req.BreakGlass && !r.BreakGlass {
		return deny(ReasonBreakGlassNotAllowed, "the role %s has no break-glass access", r.Name)
	}
	if !req.BreakGlass && !r.WithinHours(start) {
		return deny(ReasonOutsideHours, "the role %s can be activated only during its allowed hours (%s)%s", r.Name, r.hoursText(), r.breakGlassHint())
	}
	minJustification := r.JustificationMinLength
	if req.BreakGlass {
		minJustification = max(minJustification, BreakGlassMinJustification)
	}
	switch {
	case req.Duration <= 0:
		return deny(ReasonDurationInvalid, "the duration must be positive")
	case req.Duration > r.MaxDuration:
		return deny(ReasonDurationTooLong, "the role %s can be activated for at most %s", r.Name, FormatDuration(r.MaxDuration))
	}
	justification := strings.TrimSpace(req.Justification)
	length := len([]rune(justification))
	switch {
	case minJustification > 0 && length == 0:
		return deny(ReasonJustificationMissing, "a justification is required")
	case length < minJustification:
		return deny(ReasonJustificationTooShort, "the justification is too short: at least %d characters are required", minJustification)
	case length > MaxJustificationLength:
		return deny(ReasonJustificationTooLong, "the justification is too long: at most %d characters", MaxJustificationLength)
	}
	if r.Ticket != nil {
		ticket := strings.TrimSpace(req.Ticket)
		switch {
		case ticket == "":
			return deny(ReasonTicketInvalid, "a ticket reference is required")
		case len(ticket) > MaxTicketLength || !r.Ticket.MatchString(ticket):
			return deny(ReasonTicketInvalid, "the ticket reference %q does not have the expected form (%s)", truncate(ticket, 40), r.TicketHint())
		}
	}
	return d
}

// FormatDuration prints a duration the way people say it: 1h30m rather than 1h30m0s.
func FormatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func truncate(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n]) + "…"
}
