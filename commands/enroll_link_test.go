package commands

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-jit/caddy-jit/authority"
	"github.com/caddy-jit/caddy-jit/internal/adminapi"
	"github.com/caddy-jit/caddy-jit/stepup"
)

// `caddy jit enroll <user> --link`: through a stand-in admin API, and offline on the
// storage a running instance shares.

const testLinkPath = "/.jit/enroll?token=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"

func TestEnrollLinkCommand(t *testing.T) {
	body, _ := json.Marshal(adminapi.EnrollLink{User: "alice", LinkPath: testLinkPath, Expires: "2026-03-02T09:00:00Z"})
	for _, tt := range []struct {
		name      string
		args      []string
		wantQuery url.Values
		wantOut   []string
	}{
		{"site and ttl", []string{"--link", "--ttl", "2h", "--site", "https://console.example.com/"},
			url.Values{"link": {"1"}, "ttl": {"2h0m0s"}, "by": {operatorLogin()}},
			[]string{"\nhttps://console.example.com" + testLinkPath + "\n", "valid until 2026-03-02 09:00 UTC", "Send it to alice alone"}},
		{"days", []string{"--link", "--ttl", "7d"},
			url.Values{"link": {"1"}, "ttl": {"168h0m0s"}, "by": {operatorLogin()}},
			[]string{"\n" + testLinkPath + "\n", "--site"}},
		{"defaults", []string{"--link"},
			url.Values{"link": {"1"}, "by": {operatorLogin()}},
			[]string{"\n" + testLinkPath + "\n", "https://console.example.com" + testLinkPath, "code of their current authenticator"}},
		{"replace", []string{"--link", "--replace"},
			url.Values{"link": {"1"}, "replace": {"1"}, "by": {operatorLogin()}},
			[]string{"\n" + testLinkPath + "\n", "without a code of it (--replace)"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			stub := &adminStub{status: http.StatusOK, body: string(body)}
			addr := stub.start(t)
			out, _, err := runJitStreams(t, append([]string{"enroll", "alice", "--address", addr}, tt.args...)...)
			if err != nil {
				t.Fatalf("enroll --link: %v\n%s", err, out)
			}
			req := stub.only(t)
			if req.method != http.MethodPost || req.path != "/jit/enrollments/alice" {
				t.Errorf("request %s %s, want POST /jit/enrollments/alice", req.method, req.path)
			}
			if req.query.Encode() != tt.wantQuery.Encode() {
				t.Errorf("query %v, want %v", req.query, tt.wantQuery)
			}
			for _, want := range tt.wantOut {
				if !strings.Contains(out, want) {
					t.Errorf("output does not hold %q:\n%s", want, out)
				}
			}
		})
	}
}

func TestEnrollLinkCommandErrors(t *testing.T) {
	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"ttl without link", []string{"--ttl", "2h"}, "go with --link"},
		{"site without link", []string{"--site", "https://console.example.com"}, "go with --link"},
		{"replace without link", []string{"--replace"}, "a plain enrollment always replaces"},
		{"png with link", []string{"--link", "--png", "x.png"}, "do not go together"},
		{"bad ttl", []string{"--link", "--ttl", "soon"}, `--ttl "soon" is not a duration`},
		{"ttl too long", []string{"--link", "--ttl", "60d"}, "at most 30d"},
		{"site with a path", []string{"--link", "--site", "https://console.example.com/admin"}, "want the origin"},
		{"site without scheme", []string{"--link", "--site", "console.example.com"}, "want the origin"},
		{"site with a query", []string{"--link", "--site", "https://console.example.com/?x=1"}, "want the origin"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			stub := &adminStub{status: http.StatusOK, body: "{}"}
			addr := stub.start(t)
			_, _, err := runJitStreams(t, append([]string{"enroll", "alice", "--address", addr}, tt.args...)...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want one saying %q", err, tt.want)
			}
			if len(stub.requests) != 0 {
				t.Errorf("the admin API was asked: %+v", stub.requests)
			}
		})
	}
	// An admin API that does not make links (an older caddy-jit) is named as such.
	stub := &adminStub{status: http.StatusOK, body: enrollmentJSON(t, "alice", testOTPAuthURI)}
	addr := stub.start(t)
	out, _, err := runJitStreams(t, "enroll", "alice", "--link", "--address", addr)
	if err == nil || !strings.Contains(err.Error(), "without a link_path") {
		t.Errorf("error %v, want one saying the answer has no link_path", err)
	}
	if strings.Contains(out, "otpauth") {
		t.Errorf("output shows a secret:\n%s", out)
	}
}

// A link made offline works on the storage a running instance shares.
func TestEnrollLinkOffline(t *testing.T) {
	f := newOfflineFixture(t)
	ctl, stderr := openTestControl(t, f.caddyfile)
	link, err := ctl.enrollLink("dave", operatorLogin(), 0, false)
	if err != nil {
		t.Fatal(err)
	}
	token, ok := strings.CutPrefix(link.LinkPath, "/.jit/enroll?token=")
	if !ok || link.User != "dave" {
		t.Fatalf("link %+v", link)
	}
	expires, err := time.Parse(time.RFC3339, link.Expires)
	if err != nil || expires.Sub(time.Now()) < 23*time.Hour || expires.Sub(time.Now()) > 24*time.Hour {
		t.Errorf("expires %q (%v), want in 24h", link.Expires, err)
	}
	running, err := authority.New(context.Background(), f.storage, authority.Config{
		Issuer: "offline test", MaxFailures: 2, LockoutDuration: time.Hour, Audit: zap.NewNop(), Now: time.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	pending, err := running.StepUp.OpenEnrollmentLink(context.Background(), token, "dave", "")
	if err != nil {
		t.Fatalf("the running instance cannot open the link: %v", err)
	}
	if err := running.StepUp.ConfirmEnrollment(context.Background(), stepup.EnrollConfirmation{Token: token, User: "dave",
		Browser: pending.Browser, Opening: pending.Opening, Code: totpCode(t, pending.Secret, time.Now())}); err != nil {
		t.Fatalf("confirming: %v", err)
	}
	if !strings.Contains(stderr.String(), "The admin API is off in "+f.caddyfile+": stored the link in") {
		t.Errorf("no note on stderr:\n%s", stderr.String())
	}
	checkAudit(t, stderr.String(), map[string]any{"event": "enroll_link_created", "user": "dave", "expires": link.Expires})
	if strings.Contains(stderr.String(), token) {
		t.Error("the token is on stderr")
	}
	if _, err := ctl.enrollLink("dave", operatorLogin(), 31*24*time.Hour, false); err == nil {
		t.Error("a link of 31 days was made")
	}

	// dave is enrolled now: a replacing link made offline needs no code of his current
	// authenticator; a newer one cancels it; a direct enrollment cancels that.
	replacing, err := ctl.enrollLink("dave", operatorLogin(), 0, true)
	if err != nil {
		t.Fatal(err)
	}
	replacingToken := strings.TrimPrefix(replacing.LinkPath, "/.jit/enroll?token=")
	if p, err := running.StepUp.OpenEnrollmentLink(context.Background(), replacingToken, "dave", ""); err != nil || !p.Enrolled || p.NeedsCurrentCode {
		t.Fatalf("the replacing link: %+v, %v; want one that replaces without a current code", p, err)
	}
	newer, err := ctl.enrollLink("dave", operatorLogin(), 0, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := running.StepUp.OpenEnrollmentLink(context.Background(), replacingToken, "dave", ""); !errors.Is(err, stepup.ErrEnrollLinkCancelled) {
		t.Errorf("the replacing link after a newer one: %v, want it cancelled", err)
	}
	if _, err := ctl.enroll("dave", operatorLogin()); err != nil {
		t.Fatal(err)
	}
	newerToken := strings.TrimPrefix(newer.LinkPath, "/.jit/enroll?token=")
	if _, err := running.StepUp.OpenEnrollmentLink(context.Background(), newerToken, "dave", ""); !errors.Is(err, stepup.ErrEnrollLinkCancelled) {
		t.Errorf("the newer link after a direct enrollment's cancellation: %v, want it cancelled", err)
	}
	checkAudit(t, stderr.String(),
		map[string]any{"event": "enroll_link_created", "user": "dave", "replace": false},
		map[string]any{"event": "enroll_link_created", "user": "dave", "replace": true},
		map[string]any{"event": "enroll_link_created", "user": "dave", "replace": false},
		map[string]any{"event": "enroll_link_cancelled", "user": "dave", "reason": "newer_link"},
		map[string]any{"event": "enroll_link_cancelled", "user": "dave", "reason": "enrolled"},
		map[string]any{"event": "enrolled", "user": "dave"})
}
