package audit

import (
	"errors"
	"strconv"
	"time"

	"github.com/caddy-jit/caddy-jit/policy"
)

// One session's story, read back from audit logs: how it started, what it did, how it
// ended.

// ErrSessionNotInLog: no event of the session is in the files.
var ErrSessionNotInLog = errors.New("no event of the session is in the audit log")

// StoryActivation is how a session started.
type StoryActivation struct {
	At            time.Time `json:"at"`
	Where         string    `json:"where"`
	Justification string    `json:"justification"`
	Ticket        string    `json:"ticket,omitempty"`
	Start         time.Time `json:"start,omitzero"`
	Expires       time.Time `json:"expires,omitzero"`
	Duration      string    `json:"duration,omitempty"`
	ClientIP      string    `json:"client_ip,omitempty"`
	BreakGlass    bool      `json:"break_glass,omitempty"`
	RequestID     string    `json:"request_id,omitempty"`
	Approvers     []string  `json:"approvers,omitempty"`
}

// StoryRequest is the approval request a session came from.
type StoryRequest struct {
	RequestID       string          `json:"request_id"`
	RequestedAt     time.Time       `json:"requested_at,omitzero"`
	Where           string          `json:"where,omitempty"`
	Justification   string          `json:"justification,omitempty"`
	Duration        string          `json:"duration,omitempty"`
	Ticket          string          `json:"ticket,omitempty"`
	Start           time.Time       `json:"start,omitzero"`
	ClientIP        string          `json:"client_ip,omitempty"`
	ApprovalsNeeded int64           `json:"approvals_needed,omitempty"`
	Deadline        time.Time       `json:"deadline,omitzero"`
	Decisions       []StoryDecision `json:"decisions"`
}

// StoryDecision is one approver's decision.
type StoryDecision struct {
	At       time.Time `json:"at"`
	Where    string    `json:"where"`
	By       string    `json:"by"`
	Approved bool      `json:"approved"`
	Comment  string    `json:"comment,omitempty"`
	ClientIP string    `json:"client_ip,omitempty"`
}

// StoryExtension is one extension of the session.
type StoryExtension struct {
	At            time.Time `json:"at"`
	Where         string    `json:"where"`
	From          time.Time `json:"from,omitzero"`
	To            time.Time `json:"to,omitzero"`
	Justification string    `json:"justification,omitempty"`
	ClientIP      string    `json:"client_ip,omitempty"`
}

// StoryAccess is one request made under the session.
type StoryAccess struct {
	At     time.Time `json:"at"`
	Where  string    `json:"where"`
	Method string    `json:"method"`
	URI    string    `json:"uri"`
	// URILength is the URI's length in characters where the log cut it (0: whole).
	URILength      int64  `json:"uri_len,omitempty"`
	Status         int64  `json:"status"`
	Bytes          int64  `json:"bytes"`
	DurationUS     int64  `json:"duration_us"`
	ClientIP       string `json:"client_ip,omitempty"`
	BodyBytes      *int64 `json:"body_bytes,omitempty"`
	BodySHA256     string `json:"body_sha256,omitempty"`
	BodyType       string `json:"body_type,omitempty"`
	BodyIncomplete bool   `json:"body_incomplete,omitempty"`
	BodyKey        string `json:"body_key,omitempty"`
}

// StoryFailure is a refused step of the session: a failed extension, or an approved
// request that could not start.
type StoryFailure struct {
	At       time.Time `json:"at"`
	Where    string    `json:"where"`
	Event    string    `json:"event"`
	Reason   string    `json:"reason"`
	ClientIP string    `json:"client_ip,omitempty"`
}

// How a session ended.
const (
	EndDeactivated = "deactivated"
	EndRevoked     = "revoked"
	EndReplaced    = "replaced" // the browser that held it took another session
	EndExpired     = "expired"
	EndActive      = "active" // not ended yet: it expires at At
	EndUnknown     = "unknown"
)

// StoryEnd is how the session ended.
type StoryEnd struct {
	How    string    `json:"how"`
	At     time.Time `json:"at,omitzero"`
	Where  string    `json:"where,omitempty"`
	By     string    `json:"by,omitempty"`
	Reason string    `json:"reason,omitempty"`
	// LocalOnly: revoked on one instance only, storage being unreachable.
	LocalOnly bool `json:"local_only,omitempty"`
}

// StoryTotals sum up the session.
type StoryTotals struct {
	Requests int64            `json:"requests"`
	Bytes    int64            `json:"bytes"`
	Statuses map[string]int64 `json:"statuses"`
	// Elevated is how long the session admitted requests (to now if it still does).
	ElevatedSeconds int64  `json:"elevated_seconds"`
	Elevated        string `json:"elevated"`
}

// Story is everything the audit log says about one session.
type Story struct {
	SessionID  string           `json:"session_id"`
	User       string           `json:"user,omitempty"`
	Role       string           `json:"role,omitempty"`
	Activation *StoryActivation `json:"activation,omitempty"`
	Request    *StoryRequest    `json:"request,omitempty"`
	Extensions []StoryExtension `json:"extensions"`
	Accesses   []StoryAccess    `json:"accesses"`
	Failures   []StoryFailure   `json:"failures"`
	End        StoryEnd         `json:"end"`
	Totals     StoryTotals      `json:"totals"`
	// Closed are the session_ended events: one per instance that served the session,
	// with what it served there.
	Closed []StoryClosed `json:"closed"`
}

// StoryClosed is one instance's session_ended event.
type StoryClosed struct {
	At       time.Time `json:"at"`
	Where    string    `json:"where"`
	Instance string    `json:"instance"`
	How      string    `json:"how"`
	By       string    `json:"by,omitempty"`
	Requests int64     `json:"requests"`
	Mutating int64     `json:"mutating_requests"`
	BytesIn  int64     `json:"bytes_in"`
	BytesOut int64     `json:"bytes_out"`
	// First and Last are the times of the first and last access events it counts.
	First time.Time `json:"first_access"`
	Last  time.Time `json:"last_access"`
	// Statuses counts its responses by class, as Totals.Statuses does.
	Statuses map[string]int64 `json:"statuses"`
	// Complete says whether the instance's access events of the session in these
	// files number what its session_ended counts: nothing of that story is missing.
	Complete bool `json:"complete"`
}

// FormatElapsed prints an elapsed time to the second, the way people say it.
func FormatElapsed(d time.Duration) string {
	if d = d.Round(time.Second); d <= 0 {
		return "0s"
	}
	return policy.FormatDuration(d)
}

// StatusClasses name the classes of Totals.Statuses and StoryClosed.Statuses, in order.
var StatusClasses = []string{"1xx", "2xx", "3xx", "4xx", "5xx", "other"}

func accessStatusClass(status int64) string {
	if status < 100 || status > 999 {
		return "other"
	}
	return strconv.FormatInt(status/100, 10) + "xx"
}

// SessionStory tells one session's story from the audit log: its activation (and
// the approval request it came from), extensions, every request made under it, and
// its end; now is when a session that has not ended is counted to. It returns
// ErrSessionNotInLog when no event names the session.
func SessionStory(inputs []Input, sessionID string, now time.Time) (*Story, error) {
	if sessionID == "" {
		return nil, errors.New("no session id")
	}
	s := &Story{SessionID: sessionID, Extensions: []StoryExtension{}, Accesses: []StoryAccess{}, Failures: []StoryFailure{},
		Totals: StoryTotals{Statuses: map[string]int64{}}, Closed: []StoryClosed{}}
	found := false
	var requestID string
	var localEnd *StoryEnd
	accessesOf := map[string]int64{} // by instance, for StoryClosed.Complete
	var expires, expiresAt time.Time // the latest expiry, and when it was set
	setExpires := func(t, at time.Time) {
		if !t.IsZero() && (expiresAt.IsZero() || !at.Before(expiresAt)) {
			expires, expiresAt = t, at
		}
	}
	err := Scan(inputs, func(l *Line) error {
		if l.Problem != "" || l.Text("session_id") != sessionID {
			return nil
		}
		found = true
		at := l.At()
		if s.User == "" {
			s.User, s.Role = l.Text("user"), l.Text("role")
		}
		if rid := l.Text("request_id"); rid != "" && requestID == "" {
			requestID = rid
		}
		switch l.Event() {
		case EventActivationSucceeded:
			if s.Activation != nil {
				return nil
			}
			a := &StoryActivation{At: at, Where: l.Where(), Justification: l.Text("justification"), Ticket: l.Text("ticket"),
				Duration: l.Text("duration"), ClientIP: l.Text("client_ip"), BreakGlass: l.Bool("break_glass"),
				RequestID: l.Text("request_id"), Approvers: l.Strings("approvers")}
			a.Start, _ = l.Time("start")
			a.Expires, _ = l.Time("expires")
			if a.Start.IsZero() {
				a.Start = at
			}
			s.Activation = a
			setExpires(a.Expires, at)
		case EventBreakGlass:
			if s.Activation != nil {
				s.Activation.BreakGlass = true
			}
		case EventExtended:
			e := StoryExtension{At: at, Where: l.Where(), Justification: l.Text("extension_justification"), ClientIP: l.Text("extension_client_ip")}
			e.From, _ = l.Time("from")
			e.To, _ = l.Time("expires")
			s.Extensions = append(s.Extensions, e)
			setExpires(e.To, at)
		case EventExtensionFailed, EventReconfirmFailed:
			s.Failures = append(s.Failures, StoryFailure{At: at, Where: l.Where(), Event: l.Event(), Reason: l.Text("reason"), ClientIP: l.Text("client_ip")})
		case EventAccess:
			a := StoryAccess{At: at, Where: l.Where(), Method: l.Text("method"), URI: l.Text("uri"), ClientIP: l.Text("client_ip"),
				BodySHA256: l.Text("body_sha256"), BodyType: l.Text("body_type"), BodyKey: l.Text("body_key")}
			a.URILength, _ = l.Int("uri" + CutLenSuffix)
			a.Status, _ = l.Int("status")
			a.Bytes, _ = l.Int("bytes")
			a.DurationUS, _ = l.Int("duration_us")
			if n, ok := l.Int("body_bytes"); ok {
				a.BodyBytes = &n
			}
			if f := l.field("body_complete"); f != nil && f.kind == 'b' && f.str == "false" {
				a.BodyIncomplete = true
			}
			s.Accesses = append(s.Accesses, a)
			accessesOf[l.Text(FieldInstance)]++
			s.Totals.Requests++
			s.Totals.Bytes += a.Bytes
			s.Totals.Statuses[accessStatusClass(a.Status)]++
		case EventSessionEnded:
			c := StoryClosed{At: at, Where: l.Where(), Instance: l.Text(FieldInstance), How: l.Text("how"), By: l.Text("by")}
			c.Requests, _ = l.Int("requests")
			c.Mutating, _ = l.Int("mutating_requests")
			c.BytesIn, _ = l.Int("bytes_in")
			c.BytesOut, _ = l.Int("bytes_out")
			c.First, _ = l.Time("first_access")
			c.Last, _ = l.Time("last_access")
			c.Statuses = map[string]int64{}
			for _, class := range StatusClasses {
				if n, _ := l.Int("status_" + class); n > 0 {
					c.Statuses[class] = n
				}
			}
			s.Closed = append(s.Closed, c)
		case EventDeactivated, EventRevoked, EventReplaced:
			end := StoryEnd{How: l.Event(), At: at, Where: l.Where(), By: l.Text("by"), Reason: l.Text("reason"), LocalOnly: l.Bool("local_only")}
			switch {
			case end.LocalOnly:
				if localEnd == nil {
					localEnd = &end
				}
			case s.End.How == "":
				s.End = end
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, ErrSessionNotInLog
	}
	if requestID != "" {
		if err := s.readRequest(inputs, requestID); err != nil {
			return nil, err
		}
	}
	for i, c := range s.Closed {
		s.Closed[i].Complete = accessesOf[c.Instance] == c.Requests
	}
	switch {
	case s.End.How != "":
	case localEnd != nil:
		s.End = *localEnd
	case expires.IsZero():
		s.End = StoryEnd{How: EndUnknown}
	case expires.After(now):
		s.End = StoryEnd{How: EndActive, At: expires}
	default:
		s.End = StoryEnd{How: EndExpired, At: expires}
	}
	if a := s.Activation; a != nil {
		end := expires
		if s.End.How == EndDeactivated || s.End.How == EndRevoked || s.End.How == EndReplaced {
			end = s.End.At
		}
		if end.IsZero() || end.After(now) {
			end = now
		}
		if d := end.Sub(a.Start); d > 0 {
			s.Totals.ElevatedSeconds = int64(d / time.Second)
			s.Totals.Elevated = FormatElapsed(d)
		}
	}
	if s.Totals.Elevated == "" {
		s.Totals.Elevated = "0s"
	}
	return s, nil
}

// readRequest fills in the approval request the session came from.
func (s *Story) readRequest(inputs []Input, requestID string) error {
	r := &StoryRequest{RequestID: requestID, Decisions: []StoryDecision{}}
	s.Request = r
	return Scan(inputs, func(l *Line) error {
		if l.Problem != "" || l.Text("request_id") != requestID {
			return nil
		}
		at := l.At()
		switch l.Event() {
		case EventActivationRequested:
			r.RequestedAt, r.Where = at, l.Where()
			r.Justification, r.Duration, r.Ticket, r.ClientIP = l.Text("justification"), l.Text("duration"), l.Text("ticket"), l.Text("client_ip")
			r.Start, _ = l.Time("start")
			r.ApprovalsNeeded, _ = l.Int("approvals_needed")
			r.Deadline, _ = l.Time("deadline")
		case EventRequestApproved, EventRequestDenied:
			r.Decisions = append(r.Decisions, StoryDecision{At: at, Where: l.Where(), By: l.Text("by"), Approved: l.Event() == EventRequestApproved,
				Comment: l.Text("comment"), ClientIP: l.Text("client_ip")})
		case EventActivationFailed:
			s.Failures = append(s.Failures, StoryFailure{At: at, Where: l.Where(), Event: l.Event(), Reason: l.Text("reason"), ClientIP: l.Text("client_ip")})
		}
		return nil
	})
}
