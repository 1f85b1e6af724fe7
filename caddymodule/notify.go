package caddymodule

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-jit/caddy-jit/internal/words"
	"github.com/caddy-jit/caddy-jit/workflow"
)

// Delivery of notifications: a queue and workers that live with the shared state, so a
// config reload neither blocks on nor drops deliveries in progress. Nothing here runs
// on a user's request: Notify only enqueues.
const (
	notifyQueueSize = 1024
	notifyWorkers   = 2
	// notifyAttempts is how often a delivery is tried before it is given up (and
	// logged as an error).
	notifyAttempts = 6
	notifyTimeout  = 10 * time.Second
)

// notifyBackoff is the wait before retry n (1-based): 1s, 2s, 4s, … capped at 1 minute.
var notifyBackoff = func(n int) time.Duration {
	return min(time.Second<<(n-1), time.Minute)
}

// notifyTarget is one place notifications go.
type notifyTarget interface {
	deliver(ctx context.Context, n workflow.Notification) error
	String() string
}

type delivery struct {
	target  notifyTarget
	n       workflow.Notification
	attempt int
}

// dispatcher queues deliveries and retries them with backoff.
type dispatcher struct {
	queue  chan delivery
	logger *zap.Logger
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func newDispatcher(logger *zap.Logger) *dispatcher {
	ctx, cancel := context.WithCancel(context.Background())
	d := &dispatcher{queue: make(chan delivery, notifyQueueSize), logger: logger, ctx: ctx, cancel: cancel}
	for range notifyWorkers {
		d.wg.Add(1)
		go d.work()
	}
	return d
}

func (d *dispatcher) enqueue(dl delivery) {
	select {
	case d.queue <- dl:
	default:
		d.logger.Error("notification dropped: the delivery queue is full", zap.String("event", dl.n.Event),
			zap.String("target", dl.target.String()), zap.String("user", dl.n.User), zap.String("role", dl.n.Role))
	}
}

func (d *dispatcher) work() {
	defer d.wg.Done()
	for {
		select {
		case <-d.ctx.Done():
			return
		case dl := <-d.queue:
			d.attempt(dl)
		}
	}
}

func (d *dispatcher) attempt(dl delivery) {
	dl.attempt++
	ctx, cancel := context.WithTimeout(d.ctx, notifyTimeout)
	err := dl.target.deliver(ctx, dl.n)
	cancel()
	if err == nil {
		return
	}
	fields := []zap.Field{zap.String("event", dl.n.Event), zap.String("target", dl.target.String()),
		zap.Int("attempt", dl.attempt), zap.Error(err)}
	if dl.attempt >= notifyAttempts || d.ctx.Err() != nil {
		d.logger.Error("notification not delivered; giving up", fields...)
		return
	}
	wait := notifyBackoff(dl.attempt)
	d.logger.Warn("notification not delivered; retrying", append(fields, zap.Duration("retry_in", wait))...)
	time.AfterFunc(wait, func() {
		if d.ctx.Err() == nil {
			d.enqueue(dl)
		}
	})
}

// stop ends delivery; what is still queued is logged as lost.
func (d *dispatcher) stop() {
	d.cancel()
	d.wg.Wait()
	for {
		select {
		case dl := <-d.queue:
			d.logger.Error("notification not delivered: caddy-jit stopped", zap.String("event", dl.n.Event), zap.String("target", dl.target.String()))
		default:
			return
		}
	}
}

// appNotifier is a config's view of where notifications go.
type appNotifier struct {
	d      *dispatcher
	global []notifyTarget
	roles  map[string][]notifyTarget
}

// Notify enqueues the notification for the global targets and its role's.
func (a *appNotifier) Notify(n workflow.Notification) {
	for _, t := range a.global {
		a.d.enqueue(delivery{target: t, n: n})
	}
	for _, t := range a.roles[n.Role] {
		a.d.enqueue(delivery{target: t, n: n})
	}
}

// targets counts the places notifications go; with none, the authority gets no
// notifier and skips the work of preparing them (such as the expiring-session scan).
func (a *appNotifier) targets() int {
	n := len(a.global)
	for _, ts := range a.roles {
		n += len(ts)
	}
	return n
}

func (a *App) buildNotifier(d *dispatcher) *appNotifier {
	an := &appNotifier{d: d, roles: map[string][]notifyTarget{}}
	client := &http.Client{Timeout: notifyTimeout, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	build := func(n NotifyConfig) notifyTarget {
		if n.Webhook != "" {
			return &webhookTarget{url: n.Webhook, secret: []byte(n.Secret), slack: n.Format == "slack", client: client}
		}
		return &emailTarget{smtp: a.SMTP, to: n.Email}
	}
	for _, n := range a.Notify {
		an.global = append(an.global, build(n))
	}
	for name, rc := range a.Roles {
		for _, n := range rc.Notify {
			an.roles[name] = append(an.roles[name], build(n))
		}
	}
	return an
}

// Webhooks.

// Headers of a webhook delivery.
const (
	HeaderWebhookEvent     = "X-Jit-Event"
	HeaderWebhookDelivery  = "X-Jit-Delivery"
	HeaderWebhookSignature = "X-Jit-Signature"
)

type webhookTarget struct {
	url    string
	secret []byte
	slack  bool
	client *http.Client
}

func (w *webhookTarget) String() string { return "webhook " + redactURL(w.url) }

// redactURL keeps a URL's secret parts (user info, query: Slack puts its token in
// the path, so everything after the host) out of logs.
func redactURL(raw string) string {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return "(invalid URL)"
	}
	host, _, _ := strings.Cut(rest, "/")
	if _, h, ok := strings.Cut(host, "@"); ok {
		host = h
	}
	return scheme + "://" + host + "/…"
}

func (w *webhookTarget) deliver(ctx context.Context, n workflow.Notification) error {
	var body []byte
	var err error
	if w.slack {
		body, err = json.Marshal(map[string]string{"text": slackText(n)})
	} else {
		body, err = json.Marshal(n)
	}
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "caddy-jit")
	req.Header.Set(HeaderWebhookEvent, n.Event)
	req.Header.Set(HeaderWebhookDelivery, deliveryID(n))
	if len(w.secret) > 0 {
		req.Header.Set(HeaderWebhookSignature, SignWebhook(w.secret, time.Now(), body))
	}
	resp, err := w.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("the receiver answered %s", resp.Status)
	}
	return nil
}

// deliveryID is stable across retries of one notification, so a receiver can drop
// duplicates.
func deliveryID(n workflow.Notification) string {
	sum := sha256.Sum256([]byte(n.Event + "\x00" + n.RequestID + "\x00" + n.SessionID + "\x00" + n.Time.Format(time.RFC3339Nano)))
	return hex.EncodeToString(sum[:12])
}

// SignWebhook returns the X-Jit-Signature value for a body sent at t:
// "t=UNIX,v1=HEX" where HEX is HMAC-SHA256(secret, "UNIX.BODY"). Receivers recompute
// it, compare in constant time and refuse old timestamps, which stops replays.
func SignWebhook(secret []byte, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(ts))
	mac.Write([]byte("."))
	mac.Write(body)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac.Sum(nil))
}

// slackEscape keeps user text from forming Slack mentions or links (<!channel>).
var slackEscape = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;")

func slackText(n workflow.Notification) string {
	return slackEscape.Replace(summary(n))
}

// summary is a notification in one line of plain words.
func summary(n workflow.Notification) string {
	var b strings.Builder
	prefix := "caddy-jit: "
	if n.BreakGlass || n.Event == workflow.NotifyBreakGlass {
		prefix = "caddy-jit BREAK-GLASS: "
	}
	b.WriteString(prefix)
	switch n.Event {
	case workflow.NotifyRequested:
		fmt.Fprintf(&b, "%s asks for the role %s", n.User, n.Role)
	case workflow.NotifyApproved:
		fmt.Fprintf(&b, "%s's request for the role %s was approved by %s", n.User, n.Role, strings.Join(n.Approvers, ", "))
	case workflow.NotifyDenied:
		fmt.Fprintf(&b, "%s's request for the role %s was denied by %s", n.User, n.Role, n.By)
	case workflow.NotifyExpired:
		fmt.Fprintf(&b, "%s's request for the role %s expired undecided", n.User, n.Role)
	case workflow.NotifyActivated:
		fmt.Fprintf(&b, "%s activated the role %s", n.User, n.Role)
	case workflow.NotifyExtended:
		fmt.Fprintf(&b, "%s extended the role %s", n.User, n.Role)
	case workflow.NotifyExtensionRequested:
		fmt.Fprintf(&b, "%s asks for more time on the role %s", n.User, n.Role)
	case workflow.NotifyDeactivated:
		fmt.Fprintf(&b, "%s ended their session of the role %s", n.User, n.Role)
	case workflow.NotifyRevoked:
		fmt.Fprintf(&b, "%s's session of the role %s was revoked by %s", n.User, n.Role, n.By)
	case workflow.NotifyReplaced:
		fmt.Fprintf(&b, "%s's session of the role %s was replaced by another session in the same browser", n.User, n.Role)
	case workflow.NotifyExpiring:
		fmt.Fprintf(&b, "%s's session of the role %s ends soon", n.User, n.Role)
	case workflow.NotifyBreakGlass:
		fmt.Fprintf(&b, "%s used break-glass to activate the role %s", n.User, n.Role)
	default:
		fmt.Fprintf(&b, "%s: %s, role %s", n.Event, n.User, n.Role)
	}
	if !n.Expires.IsZero() {
		fmt.Fprintf(&b, " until %s", words.Time(n.Expires))
	}
	if n.Start.After(n.Time) {
		fmt.Fprintf(&b, ", starting %s", words.Time(n.Start))
	}
	if n.Justification != "" {
		fmt.Fprintf(&b, ". Why: %q", n.Justification)
	}
	if n.Ticket != "" {
		fmt.Fprintf(&b, ". Ticket: %s", n.Ticket)
	}
	if n.Comment != "" {
		fmt.Fprintf(&b, ". Comment: %q", n.Comment)
	}
	if len(n.Alert) > 0 {
		fmt.Fprintf(&b, ". Approvers: %s", strings.Join(n.Alert, ", "))
	}
	if n.RequestID != "" {
		fmt.Fprintf(&b, " (request %s)", n.RequestID)
	}
	if n.ApprovalURL != "" {
		fmt.Fprintf(&b, ". Decide: %s", n.ApprovalURL)
	}
	if n.SessionID != "" {
		fmt.Fprintf(&b, " (session %s)", n.SessionID)
	}
	return b.String()
}

// E-mail.
