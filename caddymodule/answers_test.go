package caddymodule

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

func TestWantsJSON(t *testing.T) {
	for accept, want := range map[string]bool{
		"application/json":                  true,
		"application/json, text/plain":      true,
		"text/html,application/xhtml+xml":   false,
		"text/html, application/json;q=0.9": false,
		"":                                  false,
		"*/*":                               false,
	} {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.Header.Set("Accept", accept)
		if got := wantsJSON(r); got != want {
			t.Errorf("Accept %q: got %v, want %v", accept, got, want)
		}
	}
}

func TestTurnAwayAnswersAsTheClientAsked(t *testing.T) {
	paused := gateRefusal{status: http.StatusServiceUnavailable, code: "storage_unavailable", title: "Access paused", message: "storage is <down>", user: "alice"}
	limited := gateRefusal{status: http.StatusTooManyRequests, code: "too_many_refusals", title: "Too many refused requests", message: "wait", user: "alice",
		jsonFields: map[string]any{"retry_after": 60}}
	for _, tt := range []struct {
		name     string
		accept   string
		refusal  gateRefusal
		wantJSON map[string]any // nil: a page
		wantPage []string
	}{
		{"an API client gets the code and the message", "application/json", paused,
			map[string]any{"error": "storage_unavailable", "message": "storage is <down>"}, nil},
		{"an API client gets the further fields too", "application/json", limited,
			map[string]any{"error": "too_many_refusals", "message": "wait", "retry_after": float64(60)}, nil},
		{"a browser gets a page with the title and the message, escaped", "text/html", paused,
			nil, []string{"Access paused", "storage is &lt;down&gt;"}},
		{"a browser never sees the JSON-only fields", "text/html", limited,
			nil, []string{"Too many refused requests", "wait"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			r.Header.Set("Accept", tt.accept)
			w := httptest.NewRecorder()
			if err := new(Handler).turnAway(w, r, tt.refusal); err != nil {
				t.Fatal(err)
			}
			if w.Code != tt.refusal.status {
				t.Errorf("status %d, want %d", w.Code, tt.refusal.status)
			}
			if w.Header().Get("Cache-Control") != "no-store" {
				t.Errorf("Cache-Control %q, want no-store", w.Header().Get("Cache-Control"))
			}
			if tt.wantJSON == nil {
				if ct := w.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
					t.Errorf("Content-Type %q, want a page", ct)
				}
				for _, want := range tt.wantPage {
					if !strings.Contains(w.Body.String(), want) {
						t.Errorf("the page does not say %q:\n%s", want, w.Body)
					}
				}
				if strings.Contains(w.Body.String(), "retry_after") {
					t.Errorf("the page shows a JSON field:\n%s", w.Body)
				}
				return
			}
			if ct := w.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q, want application/json", ct)
			}
			var got map[string]any
			if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
				t.Fatalf("%v in %s", err, w.Body)
			}
			if len(got) != len(tt.wantJSON) {
				t.Errorf("answer %v, want %v", got, tt.wantJSON)
			}
			for k, v := range tt.wantJSON {
				if got[k] != v {
					t.Errorf("%s = %v, want %v", k, got[k], v)
				}
			}
		})
	}
}

func TestStoreUnreachableLogsTheCauseAndAnswers503WithoutIt(t *testing.T) {
	core, logs := observer.New(zapcore.ErrorLevel)
	h := &Handler{logger: zap.New(core)}
	err := h.storeUnreachable("listing sessions", "alice", errors.New("disk on fire"))
	var he caddyhttp.HandlerError
	if !errors.As(err, &he) || he.StatusCode != http.StatusServiceUnavailable || strings.Contains(err.Error(), "disk on fire") {
		t.Errorf("error %v, want a 503 that keeps the cause to the log", err)
	}
	entries := logs.FilterMessage("listing sessions").All()
	if len(entries) != 1 {
		t.Fatalf("%d log entries, want 1", len(entries))
	}
	if f := entries[0].ContextMap(); f["user"] != "alice" || f["error"] != "disk on fire" {
		t.Errorf("log fields %v, want the user and the cause", f)
	}
}
