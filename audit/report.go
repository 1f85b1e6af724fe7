package audit

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/caddy-jit/caddy-jit/internal/words"
	"github.com/caddy-jit/caddy-jit/policy"
)

// The periodic report: activations, refusals, unused eligibility and alerts over a
// window of audit logs.

// Report settings and the alerts' thresholds.
const (
	DefaultNoisyActivations   = 10
	UnusedEligibilityPeriod   = 30 * 24 * time.Hour
	ExpiringEligibilityNotice = 14 * 24 * time.Hour
	CodeFailureBurst          = 5
	CodeFailureBurstWindow    = 15 * time.Minute
)

// Alert kinds.
const (
	AlertNoisy               = "noisy"
	AlertUnusedEligibility   = "unused_eligibility"
	AlertExpiringEligibility = "expiring_eligibility"
	AlertOutsideHours        = "outside_hours"
	AlertCodeFailures        = "totp_failures"
	AlertLockedOut           = "locked_out"
	AlertBreakGlass          = "break_glass"
)

// ReportOptions are the report's settings.
type ReportOptions struct {
	// Roles are the configured roles: their eligibility and allowed hours drive the
	// alerts that need the config. Nil skips those alerts, and the report says so.
	Roles map[string]*policy.Role
	// Noisy: more activations of a role by a user in the window are an alert; below 1
	// means DefaultNoisyActivations.
	Noisy int
}

// ReportRow is one user's use of one role in the window.
type ReportRow struct {
	Role        string `json:"role"`
	User        string `json:"user"`
	Activations int64  `json:"activations"`
	BreakGlass  int64  `json:"break_glass"`
	// Elevated is the time the user's sessions of the role were active, within the
	// window; a session not ended counts until it expires or now.
	ElevatedSeconds int64     `json:"elevated_seconds"`
	Elevated        string    `json:"elevated"`
	Requests        int64     `json:"requests"`
	LastUse         time.Time `json:"last_use,omitzero"`
}

// ReportAlert is one finding worth a look.
type ReportAlert struct {
	Kind      string    `json:"kind"`
	At        time.Time `json:"at,omitzero"`
	Where     string    `json:"where,omitempty"`
	User      string    `json:"user,omitempty"`
	Role      string    `json:"role,omitempty"`
	SessionID string    `json:"session_id,omitempty"`
	Count     int64     `json:"count,omitempty"`
	Message   string    `json:"message"`
}

// Report is the outcome of Report.
type Report struct {
	From  time.Time `json:"from"`
	To    time.Time `json:"to"`
	Files []string  `json:"files"`
	Lines int64     `json:"lines"`
	// Events counts the events read; Skipped the lines that are not events.
	Events      int64         `json:"events"`
	Skipped     int64         `json:"skipped"`
	FirstEvent  time.Time     `json:"first_event,omitzero"`
	LastEvent   time.Time     `json:"last_event,omitzero"`
	Rows        []ReportRow   `json:"rows"`
	Alerts      []ReportAlert `json:"alerts"`
	ConfigAware bool          `json:"config_alerts"`
	Notes       []string      `json:"notes"`
}

type roleUser struct{ role, user string }

type reportSession struct {
	user, role          string
	start, expires      time.Time
	expiresAt           time.Time // when expires was set
	end                 time.Time
	activated, accessed bool
}

type codeFailure struct {
	at    time.Time
	where string
}

// Report sums up the use of every role by every user in the window of the given
// length that ends at now, and raises the alerts of a privileged-access review.
func Summarize(inputs []Input, window time.Duration, now time.Time, opts ReportOptions) (*Report, error) {
	if window <= 0 {
		return nil, errors.New("the report's window must be positive")
	}
	noisy := int64(opts.Noisy)
	if noisy < 1 {
		noisy = DefaultNoisyActivations
	}
	from := now.Add(-window)
	inWindow := func(t time.Time) bool { return !t.Before(from) && !t.After(now) }
	rep := &Report{From: from, To: now, Files: make([]string, 0, len(inputs)), Rows: []ReportRow{}, Alerts: []ReportAlert{},
		ConfigAware: opts.Roles != nil, Notes: []string{}}
	for _, in := range inputs {
		rep.Files = append(rep.Files, in.Name)
	}
	rows := map[roleUser]*ReportRow{}
	row := func(role, user string) *ReportRow {
		k := roleUser{role, user}
		if rows[k] == nil {
			rows[k] = &ReportRow{Role: role, User: user}
		}
		return rows[k]
	}
	lastUse := map[roleUser]time.Time{}
	used := func(role, user string, at time.Time) {
		k := roleUser{role, user}
		if !at.After(now) && at.After(lastUse[k]) {
			lastUse[k] = at
		}
	}
	lastActivation := map[roleUser]time.Time{}
	sessions := map[string]*reportSession{}
	sess := func(id string) *reportSession {
		if sessions[id] == nil {
			sessions[id] = &reportSession{}
		}
		return sessions[id]
	}
	failures := map[string][]codeFailure{}
	breakGlass := map[string]bool{}
	alert := func(a ReportAlert) { rep.Alerts = append(rep.Alerts, a) }

	err := Scan(inputs, func(l *Line) error {
		rep.Lines++
		at, ok := l.Time(FieldTime)
		if l.Problem != "" || l.Event() == "" || !ok {
			rep.Skipped++
			return nil
		}
		rep.Events++
		if rep.FirstEvent.IsZero() || at.Before(rep.FirstEvent) {
			rep.FirstEvent = at
		}
		if at.After(rep.LastEvent) {
			rep.LastEvent = at
		}
		user, role, id := l.Text("user"), l.Text("role"), l.Text("session_id")
		switch event := l.Event(); event {
		case EventActivationSucceeded:
			s := sess(id)
			s.user, s.role, s.activated = user, role, true
			s.start, _ = l.Time("start")
			if s.start.IsZero() {
				s.start = at
			}
			if exp, ok := l.Time("expires"); ok && (s.expiresAt.IsZero() || !at.Before(s.expiresAt)) {
				s.expires, s.expiresAt = exp, at
			}
			if at.After(now) {
				return nil
			}
			used(role, user, at)
			k := roleUser{role, user}
			if at.After(lastActivation[k]) {
				lastActivation[k] = at
			}
			if !inWindow(at) {
				return nil
			}
			r := row(role, user)
			r.Activations++
			bg := l.Bool("break_glass")
			if bg {
				r.BreakGlass++
				if !breakGlass[id] {
					breakGlass[id] = true
					alert(ReportAlert{Kind: AlertBreakGlass, At: at, Where: l.Where(), User: user, Role: role, SessionID: id,
						Message: fmt.Sprintf("%s used break-glass access to %s: %q", user, role, l.Text("justification"))})
				}
			}
			if pr := opts.Roles[role]; pr != nil && !pr.WithinHours(s.start) {
				how := ""
				if bg {
					how = " (break-glass)"
				}
				alert(ReportAlert{Kind: AlertOutsideHours, At: at, Where: l.Where(), User: user, Role: role, SessionID: id,
					Message: fmt.Sprintf("%s activated %s%s at %s, outside its allowed hours", user, role, how, words.Time(s.start))})
			}
		case EventBreakGlass:
			if inWindow(at) && !breakGlass[id] {
				breakGlass[id] = true
				alert(ReportAlert{Kind: AlertBreakGlass, At: at, Where: l.Where(), User: user, Role: role, SessionID: id,
					Message: fmt.Sprintf("%s used break-glass access to %s: %q", user, role, l.Text("justification"))})
			}
		case EventExtended:
			s := sess(id)
			if exp, ok := l.Time("expires"); ok && (s.expiresAt.IsZero() || !at.Before(s.expiresAt)) {
				s.expires, s.expiresAt = exp, at
			}
		case EventDeactivated, EventRevoked, EventReplaced:
			if !l.Bool("local_only") {
				if s := sess(id); s.end.IsZero() {
					s.end = at
				}
			}
		case EventAccess:
			if inWindow(at) {
				row(role, user).Requests++
				used(role, user, at)
				sess(id).accessed = true
			}
		case EventActivationFailed, EventApprovalFailed, EventExtensionFailed, EventReconfirmFailed:
			if !inWindow(at) {
				return nil
			}
			if event == EventApprovalFailed {
				user = l.Text("by") // the approver's code; user is the requester
			}
			if r := l.Text("reason"); r == "totp_invalid" || r == "totp_replayed" {
				failures[user] = append(failures[user], codeFailure{at: at, where: l.Where()})
			}
			// A refusal for a lockout (reason locked_out) repeats the lockout, which
			// has its own event when it begins.
		case EventLockedOut:
			if inWindow(at) {
				msg := fmt.Sprintf("%s was locked out after repeated wrong codes", user)
				if until, ok := l.Time("until"); ok {
					msg += ", until " + words.Time(until)
				}
				alert(ReportAlert{Kind: AlertLockedOut, At: at, Where: l.Where(), User: user, Message: msg})
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}

	// Elevated time, clipped to the window.
	missingActivations := 0
	for _, s := range sessions {
		if !s.activated {
			if s.accessed {
				missingActivations++
			}
			continue
		}
		end := s.expires
		if !s.end.IsZero() && (end.IsZero() || s.end.Before(end)) {
			end = s.end
		}
		if end.IsZero() || end.After(now) {
			end = now
		}
		start := s.start
		if start.Before(from) {
			start = from
		}
		if d := end.Sub(start); d > 0 {
			row(s.role, s.user).ElevatedSeconds += int64(d / time.Second)
		}
	}
	for k, r := range rows {
		r.Elevated = FormatElapsed(time.Duration(r.ElevatedSeconds) * time.Second)
		r.LastUse = lastUse[k]
		if r.Activations > noisy {
			alert(ReportAlert{Kind: AlertNoisy, User: r.User, Role: r.Role, Count: r.Activations,
				Message: fmt.Sprintf("%s activated %s %d times in the window (more than %d)", r.User, r.Role, r.Activations, noisy)})
		}
		rep.Rows = append(rep.Rows, *r)
	}
	slices.SortFunc(rep.Rows, func(a, b ReportRow) int {
		if c := compareStrings(a.Role, b.Role); c != 0 {
			return c
		}
		return compareStrings(a.User, b.User)
	})

	for user, fs := range failures {
		for _, b := range codeFailureBursts(fs) {
			alert(ReportAlert{Kind: AlertCodeFailures, At: b.from, Where: b.where, User: user, Count: b.count,
				Message: fmt.Sprintf("%d wrong or replayed codes for %s from %s to %s", b.count, user, words.Time(b.from), words.Time(b.to))})
		}
	}

	if opts.Roles != nil {
		rep.eligibilityAlerts(opts.Roles, now, lastActivation)
	} else {
		rep.Notes = append(rep.Notes, "no config given (--config): the unused-eligibility, expiring-eligibility and outside-hours alerts were skipped")
	}
	if rep.Skipped > 0 {
		rep.Notes = append(rep.Notes, fmt.Sprintf("%s of the files are not audit events and were skipped: check the files with `caddy jit audit verify`", words.Plural(rep.Skipped, "line")))
	}
	if missingActivations > 0 {
		rep.Notes = append(rep.Notes, fmt.Sprintf("%s used in the window started before the files begin: their elevated time is not counted", words.Plural(int64(missingActivations), "session")))
	}
	if opts.Roles != nil && (rep.FirstEvent.IsZero() || rep.FirstEvent.After(now.Add(-UnusedEligibilityPeriod))) {
		rep.Notes = append(rep.Notes, "the files cover less than the last 30 days: an unused-eligibility alert may miss an older activation")
	}
	slices.SortStableFunc(rep.Alerts, func(a, b ReportAlert) int {
		switch {
		case a.At.IsZero() != b.At.IsZero():
			if a.At.IsZero() {
				return 1
			}
			return -1
		case !a.At.Equal(b.At):
			return a.At.Compare(b.At)
		}
		if c := compareStrings(a.Kind, b.Kind); c != 0 {
			return c
		}
		if c := compareStrings(a.Role, b.Role); c != 0 {
			return c
		}
		return compareStrings(a.User, b.User)
	})
	return rep, nil
}

type failureBurst struct {
	from, to time.Time
	where    string
	count    int64
}

// codeFailureBursts finds the runs of at least CodeFailureBurst failures within
// CodeFailureBurstWindow; overlapping runs are one burst.
func codeFailureBursts(fs []codeFailure) []failureBurst {
	slices.SortStableFunc(fs, func(a, b codeFailure) int { return a.at.Compare(b.at) })
	var out []failureBurst
	var cur *failureBurst
	lo := 0
	for hi := range fs {
		for fs[hi].at.Sub(fs[lo].at) > CodeFailureBurstWindow {
			lo++
		}
		switch {
		case hi-lo+1 >= CodeFailureBurst && cur == nil:
			out = append(out, failureBurst{from: fs[lo].at, to: fs[hi].at, where: fs[lo].where, count: int64(hi - lo + 1)})
			cur = &out[len(out)-1]
		case hi-lo+1 >= CodeFailureBurst:
			cur.to = fs[hi].at
			cur.count++
		default:
			cur = nil
		}
	}
	return out
}

// eligibilityAlerts are the alerts that need the roles: eligible users who do not use
// their eligibility, and eligibility that ends soon.
func (rep *Report) eligibilityAlerts(roles map[string]*policy.Role, now time.Time, lastActivation map[roleUser]time.Time) {
	names := make([]string, 0, len(roles))
	for name := range roles {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		r := roles[name]
		seen := map[string]bool{}
		for _, e := range r.Eligibility {
			for _, subject := range e.Subjects {
				if seen[subject] {
					continue
				}
				seen[subject] = true
				if strings.HasPrefix(subject, policy.GroupPrefix) {
					if !e.Until.IsZero() && e.Until.After(now) && !e.Until.After(now.Add(ExpiringEligibilityNotice)) {
						rep.Alerts = append(rep.Alerts, ReportAlert{Kind: AlertExpiringEligibility, At: e.Until, Role: name,
							Message: fmt.Sprintf("the eligibility of %s for %s ends at %s", subject, name, words.Time(e.Until))})
					}
					continue
				}
				d := r.Eligible(policy.Caller{User: subject}, now)
				if !d.Allowed {
					continue
				}
				if !d.EligibleUntil.IsZero() && !d.EligibleUntil.After(now.Add(ExpiringEligibilityNotice)) {
					rep.Alerts = append(rep.Alerts, ReportAlert{Kind: AlertExpiringEligibility, At: d.EligibleUntil, User: subject, Role: name,
						Message: fmt.Sprintf("%s's eligibility for %s ends at %s", subject, name, words.Time(d.EligibleUntil))})
				}
				since := now.Add(-UnusedEligibilityPeriod)
				if !r.Eligible(policy.Caller{User: subject}, since).Allowed {
					continue // eligible for less than the period: too early to say
				}
				if last := lastActivation[roleUser{name, subject}]; last.Before(since) {
					msg := fmt.Sprintf("%s is eligible for %s but has not activated it in 30 days", subject, name)
					if !last.IsZero() {
						msg += " (last at " + words.Time(last) + ")"
					}
					rep.Alerts = append(rep.Alerts, ReportAlert{Kind: AlertUnusedEligibility, User: subject, Role: name, Message: msg})
				}
			}
		}
	}
}
