package caddymodule

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-jit/caddy-jit/internal/printable"
	"github.com/caddy-jit/caddy-jit/policy"
)

// RoleConfig is one role.
type RoleConfig struct {
	// MaxDuration is the longest session an activation may ask for. Required.
	MaxDuration caddy.Duration `json:"max_duration,omitempty"`
	// DefaultDuration is preselected on the activation page. Default: max_duration,
	// at most 1h.
	DefaultDuration caddy.Duration `json:"default_duration,omitempty"`
	// Justification sets whether a justification is required and its minimum length.
	// Default: required, at least 10 characters.
	Justification *JustificationConfig `json:"justification,omitempty"`
	// Ticket is a regular expression a ticket reference must match in full; when set,
	// a ticket reference is required.
	Ticket string `json:"ticket,omitempty"`
	// Eligible lists who may activate the role, and when.
	Eligible []EligibleConfig `json:"eligible,omitempty"`
	// Approval, when set, makes activations wait for approvers.
	Approval *ApprovalConfig `json:"approval,omitempty"`
	// BreakGlass lets an eligible user skip approval and allowed hours in an
	// emergency, with a justification; every approver and notify target is alerted.
	BreakGlass bool `json:"break_glass,omitempty"`
	// MaxTotal bounds a session with its extensions, from its start. Sessions can be
	// extended only when it is longer than max_duration.
	MaxTotal caddy.Duration `json:"max_total,omitempty"`
	// ExtendWithoutApproval lets a role with approval have its sessions extended by
	// their holder alone, with a code. Default: extensions need approval too.
	ExtendWithoutApproval bool `json:"extend_without_approval,omitempty"`
	// AllowedHours are when the role may be activated: `DAYS HH:MM-HH:MM [TIME_ZONE]`
	// each. Default: any time.
	AllowedHours []string `json:"allowed_hours,omitempty"`
	// MaxActive is how many sessions of the role may be active at once. Default: no
	// limit.
	MaxActive int `json:"max_active,omitempty"`
	// Notify lists where this role's events go, beside the global targets.
	Notify []NotifyConfig `json:"notify,omitempty"`
	// RecordBodies, when positive, keeps up to that many bytes of the body of every
	// mutating request (every method but the safe ones: see mutating) made under the role's sessions, in
	// storage, for session review. Every such request's size and SHA-256 are in its
	// access event either way.
	RecordBodies int64 `json:"record_bodies,omitempty"`
	// StepUp is the proof of presence the role accepts at activation, and asks of
	// the approvers of its requests: "webauthn" (a passkey or security key), "totp"
	// (a code from an authenticator app) or "any" (whichever the user has). Default:
	// any.
	StepUp string `json:"step_up,omitempty"`
}

// JustificationConfig is the justification rule of a role.
type JustificationConfig struct {
	// Optional makes the justification optional.
	Optional bool `json:"optional,omitempty"`
	// MinLength is the minimum length, in characters, of a required justification.
	// Default: 10.
	MinLength int `json:"min_length,omitempty"`
}

// EligibleConfig is one grant of eligibility.
type EligibleConfig struct {
	// Subjects are user names, or group names prefixed with "group:".
	Subjects []string `json:"subjects"`
	// From is when the eligibility starts: a date (YYYY-MM-DD, the start of that day
	// in UTC) or an RFC 3339 time. Default: always.
	From string `json:"from,omitempty"`
	// Until is when the eligibility ends: a date (YYYY-MM-DD, the end of that day in
	// UTC) or an RFC 3339 time. Default: never.
	Until string `json:"until,omitempty"`
}

func buildRoles(configs map[string]*RoleConfig) (map[string]*policy.Role, error) {
	roles := make(map[string]*policy.Role, len(configs))
	for name, rc := range configs {
		r, err := rc.build(name)
		if err != nil {
			return nil, fmt.Errorf("jit: role %s: %w", name, err)
		}
		roles[name] = r
	}
	return roles, nil
}

// roleOf is a role as configured now, or nil: the lookup the sweeps and pages need.
// validRoleName keeps role names to what reads well in URLs, cookies and logs.
var validRoleName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

func (rc *RoleConfig) build(name string) (*policy.Role, error) {
	if !validRoleName.MatchString(name) {
		return nil, errors.New("a role name has 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit")
	}
	if rc.MaxDuration <= 0 {
		return nil, errors.New("max_duration is required and must be positive, e.g. max_duration 1h")
	}
	r := &policy.Role{
		Name:                   name,
		MaxDuration:            time.Duration(rc.MaxDuration),
		DefaultDuration:        time.Duration(rc.DefaultDuration),
		JustificationMinLength: DefaultJustificationMinLength,
	}
	if r.DefaultDuration == 0 {
		r.DefaultDuration = min(r.MaxDuration, maxDefaultDuration)
	}
	if r.DefaultDuration < 0 || r.DefaultDuration > r.MaxDuration {
		return nil, fmt.Errorf("default_duration %s must be positive and at most max_duration %s", r.DefaultDuration, r.MaxDuration)
	}
	if j := rc.Justification; j != nil {
		switch {
		case j.Optional:
			r.JustificationMinLength = 0
		case j.MinLength < 0 || j.MinLength > policy.MaxJustificationLength:
			return nil, fmt.Errorf("justification min_length must be between 1 and %d", policy.MaxJustificationLength)
		case j.MinLength > 0:
			r.JustificationMinLength = j.MinLength
		}
	}
	if rc.Ticket != "" {
		re, err := compileTicket(rc.Ticket)
		if err != nil {
			return nil, err
		}
		r.Ticket, r.TicketFormat = re, rc.Ticket
	}
	if len(rc.Eligible) == 0 {
		return nil, errors.New("no one is eligible: add at least one `eligible SUBJECT…` line")
	}
	for _, ec := range rc.Eligible {
		e, err := ec.build()
		if err != nil {
			return nil, err
		}
		r.Eligibility = append(r.Eligibility, e)
	}
	if err := rc.buildWorkflow(r); err != nil {
		return nil, err
	}
	if rc.StepUp != "" {
		step, err := policy.ParseStepUp(rc.StepUp)
		if err != nil {
			return nil, err
		}
		r.StepUp = step
	}
	return r, nil
}

// validRPID is a WebAuthn RP ID: a lower-case domain name (browsers refuse IP
// addresses and ports there).
var validRPID = regexp.MustCompile(`^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z]([a-z0-9-]{0,61}[a-z0-9])?$`)

// checkRPID checks an rp_id setting.
func checkRPID(id string) error {
	if len(id) > 253 || !validRPID.MatchString(id) {
		return fmt.Errorf("%q is not a domain name such as example.com (lower case, no scheme, port or path; not an IP address)", id)
	}
	return nil
}

// compileTicket compiles a ticket pattern so that it must match the whole reference.
func compileTicket(pattern string) (*regexp.Regexp, error) {
	if _, err := regexp.Compile(pattern); err != nil {
		return nil, fmt.Errorf("ticket pattern %q is not a valid regular expression: %v", pattern, err)
	}
	return regexp.MustCompile(`^(?:` + pattern + `)$`), nil
}

func (ec EligibleConfig) build() (policy.Eligibility, error) {
	e := policy.Eligibility{Subjects: ec.Subjects}
	if len(ec.Subjects) == 0 {
		return e, errors.New("an eligible line names no subject: list user names or group:NAME")
	}
	for _, s := range ec.Subjects {
		if err := checkSubject(s); err != nil {
			return e, err
		}
	}
	var err error
	if ec.From != "" {
		if e.From, err = parseDate(ec.From, false); err != nil {
			return e, fmt.Errorf("eligible from: %w", err)
		}
	}
	if ec.Until != "" {
		if e.Until, err = parseDate(ec.Until, true); err != nil {
			return e, fmt.Errorf("eligible until: %w", err)
		}
	}
	if !e.From.IsZero() && !e.Until.IsZero() && !e.From.Before(e.Until) {
		return e, fmt.Errorf("eligible from %s is not before until %s", ec.From, ec.Until)
	}
	return e, nil
}

func checkSubject(s string) error {
	name := strings.TrimPrefix(s, policy.GroupPrefix)
	if name == "" || len(s) > maxUserLength || strings.ContainsFunc(s, printable.IsControl) {
		return fmt.Errorf("eligible subject %q is not a user name or group:NAME", s)
	}
	return nil
}

// parseDate reads a date or an RFC 3339 time. A plain date as the end of a window
// means the end of that day, so `until 2026-12-31` includes the 31st.
func parseDate(s string, endOfDay bool) (time.Time, error) {
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		if endOfDay {
			t = t.AddDate(0, 0, 1)
		}
		return t, nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is neither a date (2026-12-31) nor an RFC 3339 time (2026-12-31T18:00:00Z)", s)
	}
	return t, nil
}
