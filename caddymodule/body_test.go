package caddymodule

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/caddy-jit/caddy-jit/audit"
	"github.com/caddy-jit/caddy-jit/session"
)

// bodyBlockingStorage is a file storage whose writes of recorded bodies hang until
// released, as a slow disk or a network storage that stopped answering would.
type bodyBlockingStorage struct {
	*certmagic.FileStorage
	started chan string
	release chan struct{}
}

func newBodyBlockingStorage(t *testing.T) *bodyBlockingStorage {
	return &bodyBlockingStorage{FileStorage: &certmagic.FileStorage{Path: t.TempDir()}, started: make(chan string, 100), release: make(chan struct{})}
}

func (s *bodyBlockingStorage) Store(ctx context.Context, key string, value []byte) error {
	if strings.HasPrefix(key, "jit/bodies/") {
		s.started <- key
		<-s.release
	}
	return s.FileStorage.Store(ctx, key, value)
}

// newTestSharedState is the state Provision would share, over st; the test's end
// destructs it.
func newTestSharedState(tb testing.TB, st certmagic.Storage) *sharedState {
	tb.Helper()
	// Caddy's instance id, which names the audit chain, lives in its data folder.
	tb.Setenv("XDG_DATA_HOME", tb.TempDir())
	s, err := newSharedState(st, zap.NewNop())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := s.Destruct(); err != nil {
			tb.Error(err)
		}
	})
	return s
}

// recordingGate is a gate whose role records the first 16 bytes of each body, with
// its audit events observed.
func recordingGate(t *testing.T, st certmagic.Storage) (*benchGate, *observer.ObservedLogs) {
	core, logs := observer.New(zapcore.InfoLevel)
	return newGate(t, gateOptions{storage: st, recordBodies: 16, audit: zap.New(core)}), logs
}

// post sends a POST under the gate's session and fails the test if it does not end
// within 5 s, however storage behaves.
func (g *benchGate) post(t *testing.T, body string) {
	t.Helper()
	r := g.request(g.token)
	r.Method = http.MethodPost
	r.Body = bodyOf(body)
	w := &benchWriter{header: http.Header{}}
	done := make(chan error, 1)
	go func() { done <- g.h.ServeHTTP(w, r, g.next) }()
	select {
	case err := <-done:
		if err != nil || w.code != http.StatusOK {
			t.Fatalf("POST: %d, %v", w.code, err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the POST waits for storage")
	}
}

// lastEvent returns the fields of the last audit event of that name.
func lastEvent(t *testing.T, logs *observer.ObservedLogs, event string) map[string]any {
	t.Helper()
	entries := logs.FilterMessage(event).All()
	if len(entries) == 0 {
		t.Fatalf("no %s event", event)
	}
	return entries[len(entries)-1].ContextMap()
}

func TestRecordedBodyIsWrittenOffTheRequestPath(t *testing.T) {
	st := newBodyBlockingStorage(t)
	g, logs := recordingGate(t, st)

	g.post(t, `{"action":"delete-all-users"}`)

	access := lastEvent(t, logs, audit.EventAccess)
	key, _ := access["body_key"].(string)
	if key == "" {
		t.Fatalf("the access event names no body_key: %v", access)
	}
	if _, ok := access["body_recorded"]; ok {
		t.Errorf("a queued body's access event says body_recorded: %v", access)
	}
	if got := <-st.started; got != key {
		t.Fatalf("storing %s, want the access event's key %s", got, key)
	}
	if st.Exists(context.Background(), key) {
		t.Fatal("the body is in storage while its write still hangs")
	}
	close(st.release)
	waitFor(t, func() bool { return g.h.app.shared.bodies.Waiting() == 0 })
	stored, err := g.h.app.authority.Records.LoadBody(context.Background(), key)
	if err != nil || string(stored) != `{"action":"delet` {
		t.Fatalf("recorded body %q, %v; want the first 16 bytes", stored, err)
	}
}

func TestFullBodyQueueDropsTheBodyNotTheRequest(t *testing.T) {
	st := newBodyBlockingStorage(t)
	g, logs := recordingGate(t, st)
	shared := g.h.app.shared
	if err := shared.bodies.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	shared.bodies = session.StartBodyWriter(g.h.app.authority.Records, session.BodyWriterConfig{
		Length: 1, Dropped: countBodyDropped, Report: shared.reportBodyDrop(zap.NewNop())})
	before := bodiesDropped(t, session.BodyQueueFull)

	g.post(t, "first: being written")
	<-st.started
	g.post(t, "second: takes the queue's one place")
	g.post(t, "third: dropped")
	access := lastEvent(t, logs, audit.EventAccess)
	if access["body_recorded"] != false || access["body_key"] == "" {
		t.Errorf("the dropped body's access event: %v; want body_key and body_recorded: false", access)
	}
	g.post(t, "fourth: dropped in the same burst")

	dropped := logs.FilterMessage(audit.EventBodyDropped).All()
	if len(dropped) != 1 {
		t.Fatalf("%d body_dropped events, want one for the burst", len(dropped))
	}
	ev := dropped[0].ContextMap()
	if ev["reason"] != session.BodyQueueFull || ev["session_id"] != access["session_id"] || ev["body_key"] != access["body_key"] ||
		ev["user"] != "alice" || ev["role"] != "admin" {
		t.Errorf("body_dropped %v; want reason queue_full and the third POST's session and body_key", ev)
	}
	if got := bodiesDropped(t, session.BodyQueueFull) - before; got != 2 {
		t.Errorf("caddy_jit_bodies_dropped_total{reason=queue_full} rose by %v, want 2", got)
	}
	close(st.release)
}

// bodiesDropped reads caddy_jit_bodies_dropped_total for one reason, as /metrics would.
func bodiesDropped(t *testing.T, reason string) float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	if err := registerMetrics(reg, nil); err != nil {
		t.Fatal(err)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "caddy_jit_bodies_dropped_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// A reload keeps the writer with what it holds; the last config to let go of the state
// waits until every queued body is in storage.
func TestBodyWriterSurvivesReloadAndDrainsOnStop(t *testing.T) {
	t.Setenv("XDG_DATA_HOME", t.TempDir())
	st := newBodyBlockingStorage(t)
	key := StorageName(st)
	load := func() *sharedState {
		v, _, err := sharedStates.LoadOrNew(key, func() (caddy.Destructor, error) { return newSharedState(st, zap.NewNop()) })
		if err != nil {
			t.Fatal(err)
		}
		return v.(*sharedState)
	}
	old := load()
	claims := &session.Claims{Grant: session.Grant{SessionID: "AAAAAAAAAAAAAAAAAAAAAA", Subject: "alice", Role: "admin"}}
	var keys []string
	put := func(w *session.BodyWriter) {
		k, queued := w.Put(claims, []byte("body"))
		if !queued {
			t.Fatal("a body was dropped with room in the queue")
		}
		keys = append(keys, k)
	}
	put(old.bodies)
	<-st.started

	reloaded := load() // the new config overlaps the old one, as in a reload
	if reloaded.bodies != old.bodies {
		t.Fatal("a reload started another body writer")
	}
	if _, err := sharedStates.Delete(key); err != nil { // the old config lets go
		t.Fatal(err)
	}
	put(reloaded.bodies)
	put(reloaded.bodies)

	stopped := make(chan error, 1)
	go func() { _, err := sharedStates.Delete(key); stopped <- err }() // the last config lets go
	select {
	case err := <-stopped:
		t.Fatalf("the stop returned (%v) before the queued bodies were written", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(st.release)
	select {
	case err := <-stopped:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(bodyDrainTimeout + 5*time.Second):
		t.Fatal("the stop did not end")
	}
	for _, k := range keys {
		if !st.Exists(context.Background(), k) {
			t.Errorf("queued body %s is not in storage after the stop", k)
		}
	}
}

func waitFor(t *testing.T, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !ok(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
	}
}

func TestMutatingMethods(t *testing.T) {
	for method, want := range map[string]bool{
		"GET": false, "HEAD": false, "OPTIONS": false, "TRACE": false, "CONNECT": false,
		"PROPFIND": false, "REPORT": false, "SEARCH": false,
		"POST": true, "PUT": true, "PATCH": true, "DELETE": true,
		"MKCOL": true, "PROPPATCH": true, "COPY": true, "MOVE": true, "LOCK": true, "UNLOCK": true,
		"PURGE": true, "get": true, // methods are case-sensitive: an unknown one may change state
	} {
		if got := mutating(method); got != want {
			t.Errorf("mutating(%q) = %v, want %v", method, got, want)
		}
	}
}
