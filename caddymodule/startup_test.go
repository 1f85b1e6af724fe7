package caddymodule

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/certmagic"
	"go.uber.org/zap/zaptest/observer"

	"github.com/caddy-jit/caddy-jit/audit"
)

// TestRequestsWaitForTheAppToStart: a request that reaches the gate before its jit
// app's Start (Caddy starts the http app first about half the time) neither reaches
// the upstream nor writes an audit event until the audit trail is set up, and then
// its access event follows audit_started. A config that never starts turns it away.
func TestRequestsWaitForTheAppToStart(t *testing.T) {
	tests := []struct {
		name string
		// then is what happens while the request waits; cancel cancels its context.
		then       func(t *testing.T, g *benchGate)
		cancel     bool
		wait       time.Duration
		wantStatus int
		wantErr    error
		// wantEvents are the audit events written from the request on, in order.
		wantEvents []string
	}{
		{
			name:       "the app starts",
			then:       func(t *testing.T, g *benchGate) { startForTest(t, g.h.app) },
			wantStatus: http.StatusOK,
			wantEvents: []string{audit.EventAuditStarted, audit.EventAccess},
		},
		{
			name: "the config is cleaned up without having started",
			then: func(t *testing.T, g *benchGate) {
				if err := g.h.app.Cleanup(); err != nil {
					t.Fatal(err)
				}
			},
			wantStatus: http.StatusServiceUnavailable,
		},
		{
			name:       "the app does not start within startWait",
			wait:       300 * time.Millisecond,
			wantStatus: http.StatusServiceUnavailable,
		},
		{
			name:    "the client goes away",
			cancel:  true,
			wantErr: context.Canceled,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, logs := recordingGate(t, &certmagic.FileStorage{Path: t.TempDir()})
			g.h.app.start = newStartGate() // as Provision does
			if tt.wait > 0 {
				defer func(w time.Duration) { startWait = w }(startWait)
				startWait = tt.wait
			}
			var upstream atomic.Int32
			next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
				upstream.Add(1)
				return g.next.ServeHTTP(w, r)
			})
			logs.TakeAll() // the activation's events

			r := g.request(g.token)
			ctx, cancel := context.WithCancel(r.Context())
			defer cancel()
			r = r.WithContext(ctx)
			w := httptest.NewRecorder()
			done := make(chan error, 1)
			go func() { done <- g.h.ServeHTTP(w, r, next) }()

			// Waiting: nothing reaches the upstream or the audit trail. (A gate that
			// did not wait would have done both by now.)
			select {
			case err := <-done:
				t.Fatalf("the request was answered before the app started: %v, status %d", err, w.Code)
			case <-time.After(100 * time.Millisecond):
			}
			if upstream.Load() != 0 || logs.Len() != 0 {
				t.Fatalf("while waiting: %d upstream requests, audit events %v", upstream.Load(), eventNames(logs.All()))
			}
			if tt.then != nil {
				tt.then(t, g)
			}
			if tt.cancel {
				cancel()
			}
			var err error
			select {
			case err = <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("the request still waits")
			}
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
			} else if err != nil || w.Code != tt.wantStatus {
				t.Fatalf("err %v, status %d; want status %d", err, w.Code, tt.wantStatus)
			}
			if tt.wantStatus == http.StatusServiceUnavailable && w.Header().Get("Retry-After") != "1" {
				t.Errorf("Retry-After = %q, want 1", w.Header().Get("Retry-After"))
			}
			wantUpstream := int32(0)
			if tt.wantStatus == http.StatusOK {
				wantUpstream = 1
			}
			if upstream.Load() != wantUpstream {
				t.Errorf("%d upstream requests, want %d", upstream.Load(), wantUpstream)
			}
			if got := eventNames(logs.All()); !slices.Equal(got, tt.wantEvents) {
				t.Errorf("audit events %v, want %v", got, tt.wantEvents)
			}
		})
	}
}

// startForTest runs the app's Start as Caddy would, and its Stop at the end.
func startForTest(t *testing.T, a *App) {
	t.Helper()
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Stop() })
}

func eventNames(entries []observer.LoggedEntry) []string {
	var names []string
	for _, e := range entries {
		names = append(names, e.Message)
	}
	return names
}
