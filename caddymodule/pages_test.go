package caddymodule

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/caddy-jit/caddy-jit/policy"
)

func TestServePublicAnswersGetAndHeadOnly(t *testing.T) {
	for _, tt := range []struct {
		method     string
		wantStatus int
		wantCache  string
		wantAllow  string
	}{
		{http.MethodGet, http.StatusOK, "public, max-age=3600", ""},
		{http.MethodHead, http.StatusOK, "public, max-age=3600", ""},
		{http.MethodPost, http.StatusMethodNotAllowed, "", "GET, HEAD"},
		{http.MethodDelete, http.StatusMethodNotAllowed, "", "GET, HEAD"},
	} {
		t.Run(tt.method, func(t *testing.T) {
			w := httptest.NewRecorder()
			if err := servePublic(w, httptest.NewRequest(tt.method, "/.jit/style.css", nil), "text/css; charset=utf-8", 3600, []byte("body{}")); err != nil {
				t.Fatal(err)
			}
			if w.Code != tt.wantStatus || w.Header().Get("Allow") != tt.wantAllow {
				t.Errorf("%d, Allow %q; want %d, Allow %q", w.Code, w.Header().Get("Allow"), tt.wantStatus, tt.wantAllow)
			}
			if tt.wantStatus != http.StatusOK {
				return
			}
			if w.Header().Get("Cache-Control") != tt.wantCache || w.Header().Get("Content-Type") != "text/css; charset=utf-8" || w.Body.String() != "body{}" {
				t.Errorf("Cache-Control %q, Content-Type %q, body %q", w.Header().Get("Cache-Control"), w.Header().Get("Content-Type"), w.Body)
			}
		})
	}
}

func TestPostedFormSendsTheUserBackWhenItCannotBeTrusted(t *testing.T) {
	h, _ := refusalHandler(t, 50)
	caller := policy.Caller{User: "alice"}
	valid := h.app.authority.Keyring.CSRFToken("alice", "http://console.example", time.Now())
	for _, tt := range []struct {
		name        string
		contentType string
		body        url.Values
		wantStatus  int // 0: the form is read
		wantPage    string
	}{
		{"a good form is read", "application/x-www-form-urlencoded", url.Values{"session": {"s1"}, "csrf": {valid}}, 0, ""},
		{"not a form", "application/json", url.Values{"session": {"s1"}, "csrf": {valid}}, http.StatusBadRequest, "must be sent as application/x-www-form-urlencoded."},
		{"a field twice", "application/x-www-form-urlencoded", url.Values{"session": {"s1", "s2"}, "csrf": {valid}}, http.StatusBadRequest, "sent more than once."},
		{"no CSRF token", "application/x-www-form-urlencoded", url.Values{"session": {"s1"}}, http.StatusForbidden, "Open the status page and try again."},
		{"another user's CSRF token", "application/x-www-form-urlencoded",
			url.Values{"session": {"s1"}, "csrf": {h.app.authority.Keyring.CSRFToken("bob", "http://console.example", time.Now())}}, http.StatusForbidden, "Form expired"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := pageRequest(http.MethodPost, "/.jit/deactivate", "alice", tt.body.Encode(), "text/html")
			r.Header.Set("Content-Type", tt.contentType)
			w := httptest.NewRecorder()
			form, err := h.postedForm(w, r, caller, "the status page", "session")
			if err != nil {
				t.Fatal(err)
			}
			if tt.wantStatus == 0 {
				if form == nil || form["session"] != "s1" || form["csrf"] != valid {
					t.Errorf("form %v, want the posted fields", form)
				}
				return
			}
			if form != nil || w.Code != tt.wantStatus || !strings.Contains(w.Body.String(), tt.wantPage) {
				t.Errorf("form %v, %d; want none and %d with a page saying %q:\n%s", form, w.Code, tt.wantStatus, tt.wantPage, w.Body)
			}
		})
	}
}
