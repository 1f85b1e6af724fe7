package caddymodule

import (
	"errors"
	"fmt"
	"net"
	"net/mail"
	"net/url"
	"strconv"
	"strings"
	"time"

	// Time zones for allowed_hours, wherever Caddy runs (a scratch container has no
	// zoneinfo).
	_ "time/tzdata"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-jit/caddy-jit/internal/printable"
	"github.com/caddy-jit/caddy-jit/policy"
)

// Defaults of the workflow settings.
const (
	DefaultApprovalCount   = 1
	DefaultApprovalExpires = 24 * time.Hour
	maxApprovalCount       = 10
	// DefaultRecordBodies is what `record_bodies` without a size keeps of each body.
	DefaultRecordBodies = 64 << 10
	maxRecordBodies     = 10 << 20
)

// ApprovalConfig makes a role's activations wait for approvers.
type ApprovalConfig struct {
	// Approvers are user names, or group names prefixed with "group:".
	Approvers []string `json:"approvers"`
	// Count is how many distinct approvers must approve. Default: 1.
	Count int `json:"count,omitempty"`
	// Expires is how long a request waits for its approvals. Default: 24h.
	Expires caddy.Duration `json:"expires,omitempty"`
}

// NotifyConfig is one place notifications go: a webhook or e-mail addresses.
type NotifyConfig struct {
	// Webhook is an http(s) URL that receives a JSON POST per event.
	Webhook string `json:"webhook,omitempty"`
	// Secret, when set, signs webhook bodies with HMAC-SHA256 (X-Jit-Signature).
	Secret string `json:"secret,omitempty"`
	// Format is the webhook body: "json" (default) or "slack" (a Slack-compatible
	// {"text": …} message).
	Format string `json:"format,omitempty"`
	// Email lists addresses that receive an e-mail per event, through the smtp setting.
	Email []string `json:"email,omitempty"`
}

// SMTPConfig is the mail server that `notify email` uses.
type SMTPConfig struct {
	// Address is host:port of the mail server.
	Address string `json:"address"`
	// From is the sender address.
	From string `json:"from"`
	// Username and Password, when set, authenticate with PLAIN (only over TLS, or to
	// a server on the loopback interface).
	Username string `json:"username,omitempty"`
	Password string `json:"password,omitempty"`
	// TLS is "starttls" (default: upgrade, and refuse a server that cannot unless it
	// is on the loopback interface), "implicit" (TLS from the first byte, port 465) or
	// "none".
	TLS string `json:"tls,omitempty"`
}

func (ac *ApprovalConfig) build() (*policy.Approval, error) {
	if len(ac.Approvers) == 0 {
		return nil, errors.New("approval names no approvers: add `approvers USER… | group:NAME`")
	}
	for _, s := range ac.Approvers {
		if err := checkSubject(s); err != nil {
			return nil, fmt.Errorf("approval: %w", err)
		}
	}
	a := &policy.Approval{Approvers: ac.Approvers, Count: ac.Count, Expires: time.Duration(ac.Expires)}
	if a.Count == 0 {
		a.Count = DefaultApprovalCount
	}
	if a.Expires == 0 {
		a.Expires = DefaultApprovalExpires
	}
	switch {
	case a.Count < 1 || a.Count > maxApprovalCount:
		return nil, fmt.Errorf("approval count %d: want 1 to %d", a.Count, maxApprovalCount)
	case a.Expires < 0:
		return nil, fmt.Errorf("approval expires %s must be positive", a.Expires)
	}
	users := 0
	for _, s := range ac.Approvers {
		if !strings.HasPrefix(s, policy.GroupPrefix) {
			users++
		}
	}
	if users == len(ac.Approvers) && users < a.Count {
		return nil, fmt.Errorf("approval count %d but only %d approvers: no request could ever be approved", a.Count, users)
	}
	return a, nil
}

// buildWorkflow adds the approval, break-glass, extension, hours and count rules to r.
func (rc *RoleConfig) buildWorkflow(r *policy.Role) error {
	if rc.Approval != nil {
		a, err := rc.Approval.build()
		if err != nil {
			return err
		}
		r.Approval = a
	}
	r.BreakGlass = rc.BreakGlass
	r.MaxTotal = time.Duration(rc.MaxTotal)
	if r.MaxTotal != 0 && r.MaxTotal < r.MaxDuration {
		return fmt.Errorf("max_total %s is shorter than max_duration %s: a session could not even start", r.MaxTotal, r.MaxDuration)
	}
	if rc.MaxActive < 0 {
		return fmt.Errorf("max_active %d must not be negative", rc.MaxActive)
	}
	r.MaxActive = rc.MaxActive
	if rc.RecordBodies < 0 || rc.RecordBodies > maxRecordBodies {
		return fmt.Errorf("record_bodies %d: want 1 byte to %d bytes (10 MiB)", rc.RecordBodies, maxRecordBodies)
	}
	r.RecordBodies = rc.RecordBodies
	for _, spec := range rc.AllowedHours {
		w, err := parseHours(strings.Fields(spec))
		if err != nil {
			return fmt.Errorf("allowed_hours %q: %w", spec, err)
		}
		r.AllowedHours = append(r.AllowedHours, w)
	}
	for _, n := range rc.Notify {
		if err := n.validate(); err != nil {
			return err
		}
	}
	return rc.buildExtension(r)
}

var weekdays = map[string]time.Weekday{
	"sun": time.Sunday, "mon": time.Monday, "tue": time.Tuesday, "wed": time.Wednesday,
	"thu": time.Thursday, "fri": time.Friday, "sat": time.Saturday,
}

// parseHours reads `DAYS HH:MM-HH:MM [TIME_ZONE]`: DAYS is `daily` or a comma list of
// days and ranges such as `mon-fri` or `sat,sun`; the time zone is an IANA name
// (default UTC).
func parseHours(args []string) (policy.HoursWindow, error) {
	var w policy.HoursWindow
	if len(args) < 2 || len(args) > 3 {
		return w, errors.New("want DAYS HH:MM-HH:MM [TIME_ZONE], e.g. mon-fri 08:00-18:00 Europe/Paris")
	}
	if args[0] == "daily" || args[0] == "*" {
		w.Days = [7]bool{true, true, true, true, true, true, true}
	} else {
		for part := range strings.SplitSeq(strings.ToLower(args[0]), ",") {
			from, to, isRange := strings.Cut(part, "-")
			first, ok1 := weekdays[from]
			last, ok2 := weekdays[to]
			if !isRange {
				last, ok2 = first, ok1
			}
			if !ok1 || !ok2 {
				return w, fmt.Errorf("days %q: use daily, or mon, tue, wed, thu, fri, sat, sun, ranges such as mon-fri, joined by commas", args[0])
			}
			for d := first; ; d = (d + 1) % 7 {
				w.Days[d] = true
				if d == last {
					break
				}
			}
		}
	}
	from, to, ok := strings.Cut(args[1], "-")
	var err1, err2 error
	w.From, err1 = parseClock(from)
	w.To, err2 = parseClock(to)
	if !ok || err1 != nil || err2 != nil || w.From == 24*60 {
		return w, fmt.Errorf("hours %q: want HH:MM-HH:MM in 24-hour time, e.g. 08:00-18:00 (22:00-06:00 spans midnight)", args[1])
	}
	w.Location = time.UTC
	if len(args) == 3 {
		loc, err := time.LoadLocation(args[2])
		if err != nil {
			return w, fmt.Errorf("time zone %q: want an IANA name such as Europe/Paris or UTC", args[2])
		}
		w.Location = loc
	}
	return w, nil
}

func parseClock(s string) (int, error) {
	h, m, ok := strings.Cut(s, ":")
	hour, err1 := strconv.Atoi(h)
	minute, err2 := strconv.Atoi(m)
	if !ok || len(h) != 2 || len(m) != 2 || err1 != nil || err2 != nil || hour > 24 || minute > 59 || (hour == 24 && minute != 0) || hour < 0 || minute < 0 {
		return 0, errors.New("bad clock time")
	}
	return hour*60 + minute, nil
}

func (n NotifyConfig) validate() error {
	switch {
	case n.Webhook != "" && len(n.Email) > 0:
		return errors.New("a notify target is either a webhook or e-mail addresses, not both")
	case n.Webhook != "":
		u, err := url.Parse(n.Webhook)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("notify webhook %q: want an absolute http:// or https:// URL", n.Webhook)
		}
		if n.Format != "" && n.Format != "json" && n.Format != "slack" {
			return fmt.Errorf("notify webhook format %q: want json or slack", n.Format)
		}
	case len(n.Email) > 0:
		for _, addr := range n.Email {
			if _, err := mail.ParseAddress(addr); err != nil || strings.ContainsFunc(addr, printable.IsControl) {
				return fmt.Errorf("notify email %q is not an e-mail address", addr)
			}
		}
		if n.Secret != "" || n.Format != "" {
			return errors.New("notify email takes addresses only; secret and format are for webhooks")
		}
	default:
		return errors.New("notify names no target: `notify webhook URL [SECRET]` or `notify email ADDRESS…`")
	}
	return nil
}

func (s *SMTPConfig) validate() error {
	if _, port, err := net.SplitHostPort(s.Address); err != nil || port == "" {
		return fmt.Errorf("smtp address %q: want host:port, e.g. smtp.example.com:587", s.Address)
	}
	if _, err := mail.ParseAddress(s.From); err != nil || strings.ContainsFunc(s.From, printable.IsControl) {
		return fmt.Errorf("smtp from %q is not an e-mail address", s.From)
	}
	switch s.TLS {
	case "", "starttls", "implicit", "none":
	default:
		return fmt.Errorf("smtp tls %q: want starttls, implicit or none", s.TLS)
	}
	if (s.Username == "") != (s.Password == "") {
		return errors.New("smtp: username and password go together")
	}
	return nil
}

// validateNotify checks the global notify targets and that e-mail has a server.
func (a *App) validateNotify() error {
	emails := false
	for _, n := range a.Notify {
		if err := n.validate(); err != nil {
			return err
		}
		emails = emails || len(n.Email) > 0
	}
	for name, rc := range a.Roles {
		for _, n := range rc.Notify {
			if len(n.Email) > 0 {
				emails = true
			}
			if err := n.validate(); err != nil {
				return fmt.Errorf("role %s: %w", name, err)
			}
		}
	}
	if a.SMTP != nil {
		if err := a.SMTP.validate(); err != nil {
			return err
		}
	} else if emails {
		return errors.New("notify email needs a mail server: add `smtp { address HOST:PORT  from ADDRESS }` to the jit option")
	}
	return nil
}

// Caddyfile parsing of the workflow settings.
