package workflow

import (
	"time"

	"github.com/caddy-jit/caddy-jit/session"
)

// Notification events: what the people who must know are told.
const (
	NotifyRequested   = "requested"
	NotifyApproved    = "approved"
	NotifyDenied      = "denied"
	NotifyExpired     = "expired"
	NotifyActivated   = "activated"
	NotifyExtended    = "extended"
	NotifyDeactivated = "deactivated"
	NotifyRevoked     = "revoked"
	NotifyReplaced    = "replaced"
	NotifyExpiring    = "expiring"
	NotifyBreakGlass  = "break_glass"
)

// Notification is one step of the workflow, for webhooks and e-mail. It never holds a
// secret.
type Notification struct {
	Event         string    `json:"event"`
	Time          time.Time `json:"time"`
	RequestID     string    `json:"request_id,omitempty"`
	SessionID     string    `json:"session_id,omitempty"`
	User          string    `json:"user"`
	Role          string    `json:"role"`
	Justification string    `json:"justification,omitempty"`
	Ticket        string    `json:"ticket,omitempty"`
	Start         time.Time `json:"start,omitzero"`
	Expires       time.Time `json:"expires,omitzero"`
	Deadline      time.Time `json:"deadline,omitzero"`
	By            string    `json:"by,omitempty"`
	Comment       string    `json:"comment,omitempty"`
	Reason        string    `json:"reason,omitempty"`
	Approvers     []string  `json:"approvers,omitempty"`
	BreakGlass    bool      `json:"break_glass,omitempty"`
	// Alert names the approvers to tell directly (requests and break-glass), beyond the
	// configured targets.
	Alert []string `json:"alert,omitempty"`
	// ApprovalURL, on a request waiting for approvers, is its page on the site it was
	// made at: opening it decides nothing, each decision needs the approver's proof.
	ApprovalURL string `json:"approval_url,omitempty"`
}

// Notifier delivers notifications. Notify must not block: delivery happens elsewhere,
// never on a user's request.
type Notifier interface {
	Notify(Notification)
}

func (a *Workflow) notify(n Notification) {
	if a.Notifier != nil {
		a.Notifier.Notify(n)
	}
}

func recordNotification(event string, r *session.Record, now time.Time) Notification {
	return Notification{
		Event: event, Time: now.UTC(), RequestID: r.RequestID, SessionID: r.ID, User: r.User, Role: r.Role,
		Justification: r.Justification, Ticket: r.Ticket, Start: r.Start, Expires: r.Expires,
		Approvers: r.Approvers, BreakGlass: r.BreakGlass,
	}
}

func requestNotification(event string, r *Request, now time.Time) Notification {
	n := Notification{
		Event: event, Time: now.UTC(), RequestID: r.ID, SessionID: r.SessionID, User: r.User, Role: r.Role,
		Justification: r.Justification, Ticket: r.Ticket, Start: r.Start, Deadline: r.Deadline,
		Approvers: r.Approvers(),
	}
	if r.State == RequestPending && r.Audience != "" {
		n.ApprovalURL = r.Audience + ApprovalPath(r.ID)
	}
	return n
}

// ApprovalPath is the site-relative address of a request's approval page.
func ApprovalPath(id string) string { return "/.jit/approvals/" + id }

// Metrics counts what the authority decides, for monitoring. Implementations must be
// cheap and must not block.
type Metrics interface {
	// Activation counts an activation by its result: "succeeded", "requested" (waits
	// for approval) or the reason it was refused.
	Activation(role, result string)
}

type noMetrics struct{}

func (noMetrics) Activation(string, string) {}

func (a *Workflow) metrics() Metrics {
	if a.Metrics == nil {
		return noMetrics{}
	}
	return a.Metrics
}
