package caddymodule

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	lru "github.com/hashicorp/golang-lru/v2"
	"go.uber.org/zap"

	"github.com/caddy-jit/caddy-jit/audit"
	"github.com/caddy-jit/caddy-jit/internal/words"
	"github.com/caddy-jit/caddy-jit/policy"
)

// The refusal limit: a user whose state-changing requests under /.jit/ keep being
// refused (any 4xx answer to a POST: a bad form, a wrong code, a CSRF failure) is
// answered 429 for a while, before any form is read or storage touched. A refusal is
// cheap for us but still writes an audit event; without the limit one signed-in
// client could write the audit log as fast as it can send forms.
//
// Each user has a token bucket of Burst refusals that refills one every Refill.
// While it is empty, POSTs are answered 429 with Retry-After, and the first such
// answer of a run writes one `refusals_limited` audit event; the run ends when the
// bucket is full again.

// Defaults of the refusal limit. No person makes 50 refused requests in a row; a
// script that does is limited after them to 10 a minute, each event bounded in size
// (session/auditbound.go). The burst leaves room for tools and test suites that try
// many bad forms on purpose, such as the security suite's CSRF table (30 in a row).
const (
	DefaultRefusalBurst  = 50
	DefaultRefusalRefill = 6 * time.Second
	maxRefusalBurst      = 1000
	maxRefusalRefill     = time.Hour
	// refusalUsers bounds how many users' buckets are kept: the least recently seen
	// goes first, so that no client can grow the memory the limit holds.
	refusalUsers = 10_000
)

// RefusalsConfig limits repeated refused POSTs of one user under /.jit/.
type RefusalsConfig struct {
	// Burst is how many refused POSTs a user may make in a row before the next
	// ones are answered 429. Default: 50; at most 1000.
	Burst int `json:"burst,omitempty"`
	// Refill is how often one more refusal is allowed once the burst is spent.
	// Default: 6s; at most 1h.
	Refill caddy.Duration `json:"refill,omitempty"`
}

// refusalLimit is a config's refusal limit, with the buckets it shares with every
// config of the process.
type refusalLimit struct {
	burst   int
	refill  time.Duration
	buckets *refusalBuckets
}

// refusalPool keeps the buckets across config reloads: a reload must not give a
// limited client a fresh burst.
var refusalPool = caddy.NewUsagePool()

const refusalPoolKey = "refusals"

// provisionRefusals fills in the defaults, checks the settings and attaches the
// shared buckets; release undoes the attachment in Cleanup.
func provisionRefusals(c *RefusalsConfig) (*refusalLimit, error) {
	lim := &refusalLimit{burst: DefaultRefusalBurst, refill: DefaultRefusalRefill}
	if c != nil {
		if c.Burst < 0 || c.Burst > maxRefusalBurst {
			return nil, fmt.Errorf("jit: refusals burst must be from 1 to %d, got %d", maxRefusalBurst, c.Burst)
		}
		if c.Refill < 0 || time.Duration(c.Refill) > maxRefusalRefill {
			return nil, fmt.Errorf("jit: refusals refill must be a positive duration of at most 1h, got %s", time.Duration(c.Refill))
		}
		if c.Burst > 0 {
			lim.burst = c.Burst
		}
		if c.Refill > 0 {
			lim.refill = time.Duration(c.Refill)
		}
	}
	val, _, err := refusalPool.LoadOrNew(refusalPoolKey, func() (caddy.Destructor, error) {
		return newRefusalBuckets(refusalUsers)
	})
	if err != nil {
		return nil, err
	}
	lim.buckets = val.(*refusalBuckets)
	return lim, nil
}

func (l *refusalLimit) release() error {
	if l == nil || l.buckets == nil {
		return nil
	}
	_, err := refusalPool.Delete(refusalPoolKey)
	return err
}

// refusalBuckets are the users' buckets, at most a fixed number of them.
type refusalBuckets struct {
	users *lru.Cache[string, *refusalBucket]
}

func newRefusalBuckets(size int) (*refusalBuckets, error) {
	users, err := lru.New[string, *refusalBucket](size)
	if err != nil {
		return nil, err
	}
	return &refusalBuckets{users: users}, nil
}

// Destruct has nothing to stop: the buckets are plain memory.
func (*refusalBuckets) Destruct() error { return nil }

// refusalBucket is one user's bucket, kept as the time it will be full again (the
// "theoretical arrival time" of GCRA): each refusal pushes it one refill later.
type refusalBucket struct {
	mu   sync.Mutex
	full time.Time
	// refused counts the refusals since the bucket was last full; limited says that
	// this run of refusals was already audited.
	refused int
	limited bool
}

// wait is how long a POST of user at t must wait, zero when it may go on. first is
// set on the first limited answer of a run, which alone is audited; refused is then
// the number of refusals that emptied the bucket.
func (l *refusalLimit) wait(user string, t time.Time) (wait time.Duration, first bool, refused int) {
	if l == nil {
		return 0, false, 0 // an app built by hand in a test, not provisioned
	}
	b, ok := l.buckets.users.Get(user)
	if !ok {
		return 0, false, 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.full.After(t) {
		b.refused, b.limited = 0, false
		return 0, false, 0
	}
	over := b.full.Sub(t) - time.Duration(l.burst-1)*l.refill
	if over <= 0 {
		return 0, false, 0
	}
	first, b.limited = !b.limited, true
	return over, first, b.refused
}

// refused counts one refusal of user at t.
func (l *refusalLimit) refused(user string, t time.Time) {
	l.reserve(user, t)
	l.settle(user, t, true)
}

// reserve takes a refusal's place in user's bucket at t while a POST is answered, so
// that POSTs answered at the same time cannot all pass a bucket that has room for one;
// settle then keeps it as a refusal or gives it back.
func (l *refusalLimit) reserve(user string, t time.Time) {
	if l == nil {
		return
	}
	b, ok := l.buckets.users.Get(user)
	if !ok {
		b = &refusalBucket{}
		if prev, found, _ := l.buckets.users.PeekOrAdd(user, b); found {
			b = prev
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.full.After(t) {
		b.full, b.refused, b.limited = t, 0, false
	}
	// Requests refused together can overdraw the bucket; it never holds more than
	// a burst of debt, so that the wait stays at most one refill.
	b.full = b.full.Add(l.refill)
	if most := t.Add(time.Duration(l.burst) * l.refill); b.full.After(most) {
		b.full = most
	}
}

// settle ends a reservation: a refusal is counted; any other answer gives the place
// back.
func (l *refusalLimit) settle(user string, t time.Time, refused bool) {
	if l == nil {
		return
	}
	b, ok := l.buckets.users.Peek(user)
	if !ok {
		return // evicted meanwhile: nothing to count against
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if refused {
		b.refused++
		return
	}
	b.full = b.full.Add(-l.refill)
	if b.full.Before(t) {
		b.full = t
	}
}

// refusalKey is whose bucket a request counts against: the canonical user name, so
// that spellings of one account (Alice, ALICE) share one; the name as sent when it
// has no canonical form.
func refusalKey(c policy.Caller, user string) string {
	if c.User != "" {
		return c.User
	}
	return user
}

// limitedPost answers a POST of a limited user with 429 and reports true; it reads
// no form and touches no storage. The first answer of a run is audited.
func (h *Handler) limitedPost(w http.ResponseWriter, r *http.Request, user string) (bool, error) {
	t := now()
	wait, first, refused := h.app.refusals.wait(user, t)
	if wait <= 0 {
		return false, nil
	}
	jitMetrics.refusalsLimited.Inc()
	until := t.Add(wait)
	if first {
		h.app.authority.Audit.Event(audit.EventRefusalsLimited, zap.String("user", user), zap.Int("count", refused),
			zap.String("until", until.UTC().Format(time.RFC3339)), zap.String("client_ip", clientIP(r)), zap.String("uri", r.URL.Path))
	}
	secs := int((wait + time.Second - 1) / time.Second)
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	msg := fmt.Sprintf("%s of yours were refused recently, so no more are accepted from you for now. Try again at %s (in %s).",
		words.Plural(refused, "request"), until.UTC().Format("15:04:05 UTC"), words.Plural(secs, "second"))
	return true, h.turnAway(w, r, gateRefusal{
		status: http.StatusTooManyRequests, code: "too_many_refusals", title: "Too many refused requests", message: msg, user: user,
		jsonFields: map[string]any{"retry_after": secs, "retry_at": until.UTC().Format(time.RFC3339)},
	})
}

// countRefusal settles the place a POST reserved: kept when it was answered with a
// 4xx status, written or returned as a handler error, given back otherwise.
func (h *Handler) countRefusal(user string, rec *refusalRecorder, err error) {
	status := rec.status
	var he caddyhttp.HandlerError
	if status == 0 && errors.As(err, &he) {
		status = he.StatusCode
	}
	h.app.refusals.settle(user, now(), rec.spent || (status >= 400 && status < 500))
}

// refusalRecorder notes the status of a POST's answer.
type refusalRecorder struct {
	caddyhttp.ResponseWriterWrapper
	status int
	// spent keeps the POST's place although it was not refused (spendRefusal).
	spent bool
}

// spendRefusal keeps the place in the user's allowance that the POST answered
// through w reserved, as a refusal would, and reports whether w had one (w is then
// servePage's recorder). Counting the POST apart with refused does not work inside
// the recorder: its answer is not a refusal, so settling gives a place back, and at
// the bucket's cap that place was never taken (the bucket never fills).
func spendRefusal(w http.ResponseWriter) bool {
	rec, ok := w.(*refusalRecorder)
	if ok {
		rec.spent = true
	}
	return ok
}

func newRefusalRecorder(w http.ResponseWriter) *refusalRecorder {
	return &refusalRecorder{ResponseWriterWrapper: caddyhttp.ResponseWriterWrapper{ResponseWriter: w}}
}

func (r *refusalRecorder) WriteHeader(status int) {
	if r.status == 0 && (status < 100 || status > 199) {
		r.status = status
	}
	r.ResponseWriter.WriteHeader(status)
}

func (r *refusalRecorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(p)
}

func (r *refusalRecorder) ReadFrom(src io.Reader) (int64, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriterWrapper.ReadFrom(src)
}

// parseRefusals reads the `refusals` block of the jit global option:
//
//	refusals {
//		burst N
//		refill DURATION
//	}
func parseRefusals(d *caddyfile.Dispenser) (*RefusalsConfig, error) {
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	c := &RefusalsConfig{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "burst":
			if err := countArg(d, "refusals burst", maxRefusalBurst, &c.Burst); err != nil {
				return nil, err
			}
		case "refill":
			if err := durationArg(d, &c.Refill); err != nil {
				return nil, err
			}
			if time.Duration(c.Refill) > maxRefusalRefill {
				return nil, d.Errf("refusals refill %s: at most 1h, or a limited user waits longer than anyone would", time.Duration(c.Refill))
			}
		default:
			return nil, d.Errf("unrecognized refusals setting %q: expected burst or refill", d.Val())
		}
	}
	return c, nil
}

// Interface guards.
var _ caddy.Destructor = (*refusalBuckets)(nil)
