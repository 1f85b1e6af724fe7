package caddymodule

import (
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/caddy-jit/caddy-jit/session"
)

// Prometheus metrics, registered in Caddy's metrics registry so that they appear on
// its /metrics. The collectors are made once per process and registered into each
// config's registry, so a reload neither resets nor duplicates them.
var jitMetrics struct {
	activations      *prometheus.CounterVec
	activeSessions   *prometheus.GaugeVec
	requests         *prometheus.CounterVec
	denials          *prometheus.CounterVec
	codeFailures     *prometheus.CounterVec
	lockouts         prometheus.Counter
	syncAge          prometheus.GaugeFunc
	auditWriteErrors prometheus.Counter
	auditQueueWaits  prometheus.CounterFunc
	refusalsLimited  prometheus.Counter
	bodiesDropped    *prometheus.CounterVec
	// state is the shared state the sync-age gauge reads.
	state atomic.Pointer[session.State]
}

// The collectors exist from the start, so that counting never waits for a config.
func init() { initMetrics() }

func initMetrics() {
	const ns, sub = "caddy", "jit"
	m := &jitMetrics
	m.activations = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "activations_total",
		Help: "Activations by role and result: succeeded, requested (waits for approval), or the reason for a refusal."}, []string{"role", "result"})
	m.activeSessions = prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "active_sessions",
		Help: "Sessions active now, by role (counted from storage every 30 s, and after a session starts or ends here)."}, []string{"role"})
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "requests_total",
		Help: "Privileged requests passed under a session, by role and status class (2xx, 3xx, 4xx, 5xx)."}, []string{"role", "code"})
	m.denials = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "denials_total",
		Help: "Gated requests refused, by reason."}, []string{"reason"})
	m.codeFailures = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "totp_failures_total",
		Help: "TOTP codes refused, by reason: totp_invalid, totp_replayed, locked_out."}, []string{"reason"})
	m.lockouts = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "lockouts_total",
		Help: "Lockouts begun after repeated wrong codes."})
	m.syncAge = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "revocation_sync_age_seconds",
		Help: "Seconds since the revocation set was last read from storage."}, func() float64 {
		if st := m.state.Load(); st != nil {
			return time.Since(st.LastSync()).Seconds()
		}
		return 0
	})
	m.auditWriteErrors = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "audit_write_errors_total",
		Help: "Audit events that a log sink failed to write (each also reported in Caddy's log)."})
	m.auditQueueWaits = prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "audit_queue_waits_total",
		Help: "Audit events whose request waited for room because the batched output's queue was full (no event is dropped)."}, func() float64 {
		if st := m.state.Load(); st != nil && st.Chain != nil {
			return float64(st.Chain.QueueWaits())
		}
		return 0
	})
	m.refusalsLimited = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "refusals_limited_total",
		Help: "POSTs under /.jit/ answered 429 because the user's earlier ones kept being refused."})
	m.bodiesDropped = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "bodies_dropped_total",
		Help: "Recorded request bodies (record_bodies) not stored for review, by reason: queue_full, storage_error, stopped."}, []string{"reason"})
}

// registerMetrics registers the collectors in a config's registry.
func registerMetrics(registry *prometheus.Registry, state *session.State) error {
	jitMetrics.state.Store(state)
	if registry == nil {
		return nil
	}
	m := &jitMetrics
	for _, c := range []prometheus.Collector{m.activations, m.activeSessions, m.requests, m.denials, m.codeFailures, m.lockouts, m.syncAge, m.auditWriteErrors, m.auditQueueWaits, m.refusalsLimited, m.bodiesDropped} {
		if err := registry.Register(c); err != nil {
			var already prometheus.AlreadyRegisteredError
			if !errors.As(err, &already) {
				return err
			}
		}
	}
	return nil
}

// authorityMetrics is the workflow.Metrics of the authority.
type authorityMetrics struct{}

func (authorityMetrics) Activation(role, result string) {
	jitMetrics.activations.WithLabelValues(role, result).Inc()
}
func (authorityMetrics) CodeFailure(reason string) {
	jitMetrics.codeFailures.WithLabelValues(reason).Inc()
}
func (authorityMetrics) Lockout() { jitMetrics.lockouts.Inc() }

var statusClasses = [...]string{"1xx", "2xx", "3xx", "4xx", "5xx"}

// roleRequests are one role's requests_total counters, by status class and "other"
// last, each looked up when first counted so that /metrics shows no series at zero.
type roleRequests [len(statusClasses) + 1]atomic.Pointer[prometheus.Counter]

// requestCounters holds each role's counters once looked up: WithLabelValues hashes
// both labels and takes the vector's lock on every privileged request. The roles are
// those of verified sessions, so the map is as bounded as the vector.
var requestCounters sync.Map // role → *roleRequests

// countRequest counts a privileged request by role and status class.
func countRequest(role string, status int) {
	class := status/100 - 1
	if class < 0 || class >= len(statusClasses) {
		class = len(statusClasses)
	}
	byClass, ok := requestCounters.Load(role)
	if !ok {
		byClass, _ = requestCounters.LoadOrStore(role, new(roleRequests))
	}
	slot := &byClass.(*roleRequests)[class]
	counter := slot.Load()
	if counter == nil {
		label := "other"
		if class < len(statusClasses) {
			label = statusClasses[class]
		}
		// Two requests may both look it up: the vector gives both the same child.
		c := jitMetrics.requests.WithLabelValues(role, label)
		counter = &c
		slot.Store(counter)
	}
	(*counter).Inc()
}

func countDenial(reason string) { jitMetrics.denials.WithLabelValues(reason).Inc() }

func countBodyDropped(reason string) { jitMetrics.bodiesDropped.WithLabelValues(reason).Inc() }

// setActiveSessions replaces the active-session gauge with counts by role.
func setActiveSessions(byRole map[string]int) {
	jitMetrics.activeSessions.Reset()
	for role, n := range byRole {
		jitMetrics.activeSessions.WithLabelValues(role).Set(float64(n))
	}
}

// auditErrorSink receives what zap reports when a sink fails to write an audit event
// (zap.ErrorOutput): it counts the failure and reports it in Caddy's own log, at most
// once every 10 s with the number of failures since the last report.
type auditErrorSink struct {
	logger  *zap.Logger
	mu      sync.Mutex
	last    time.Time
	pending int
}

func (s *auditErrorSink) Write(p []byte) (int, error) {
	jitMetrics.auditWriteErrors.Inc()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pending++
	if time.Since(s.last) >= 10*time.Second {
		s.logger.Error("writing audit events failed: the audit log is missing events; fix the log output (disk full? permissions?)",
			zap.Int("failed_events", s.pending), zap.String("error", strings.TrimSpace(string(p))))
		s.last, s.pending = time.Now(), 0
	}
	return len(p), nil
}

func (s *auditErrorSink) Sync() error { return nil }

// failed hears of the batched output's failures: a batch of events not written, or
// (events 0) the chain head not saved before one.
func (s *auditErrorSink) failed(err error, events int) {
	if events == 0 {
		s.logger.Warn("saving the audit chain head before writing events failed; after a crash now, the chain could fork rather than show a cut", zap.Error(err))
		return
	}
	jitMetrics.auditWriteErrors.Add(float64(events - 1))
	_, _ = s.Write([]byte(err.Error()))
}
