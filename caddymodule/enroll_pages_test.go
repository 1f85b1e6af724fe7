package caddymodule

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"image"
	"image/png"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"go.uber.org/zap"

	"github.com/caddy-jit/caddy-jit/session"
)

func TestEnrollLinkCaddyfileOption(t *testing.T) {
	src := strings.Replace(validGlobal, "\t\tsync_interval 2s\n", "\t\tsync_interval 2s\n\t\tenroll_link_ttl 2d\n", 1)
	cfg, err := adapt(t, src)
	if err != nil {
		t.Fatal(err)
	}
	app := cfg["apps"].(map[string]any)["jit"].(map[string]any)
	if got := app["enroll_link_ttl"]; got != float64(48*time.Hour) {
		t.Errorf("enroll_link_ttl = %v, want %d", got, 48*time.Hour)
	}

	site := "\nhttp://example.com {\n\tjit db-admin\n}\n"
	role := "\t\trole db-admin {\n\t\t\tmax_duration 1h\n\t\t\teligible alice\n\t\t}\n"
	for _, tt := range []struct{ name, line, want string }{
		{"no value", "\t\tenroll_link_ttl\n", "wrong argument count"},
		{"not a duration", "\t\tenroll_link_ttl soon\n", `enroll_link_ttl "soon": want a positive duration`},
		{"zero", "\t\tenroll_link_ttl 0s\n", "want a positive duration"},
		{"too long", "\t\tenroll_link_ttl 31d\n", "at most 30d"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := adapt(t, "{\n\tjit {\n"+tt.line+role+"\t}\n}"+site)
			if err == nil || !strings.Contains(err.Error(), "Caddyfile:3") || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want one at Caddyfile:3 saying %q", err, tt.want)
			}
		})
	}

	// The default, and a JSON config checked as strictly.
	var a App
	a.setDefaults()
	if time.Duration(a.EnrollLinkTTL) != DefaultEnrollLinkTTL || DefaultEnrollLinkTTL != 24*time.Hour {
		t.Errorf("default enroll_link_ttl = %s, want 24h", time.Duration(a.EnrollLinkTTL))
	}
	a.EnrollLinkTTL = -1
	if err := a.Validate(); err == nil || !strings.Contains(err.Error(), "enroll_link_ttl") {
		t.Errorf("Validate with a negative enroll_link_ttl = %v", err)
	}
}

func TestEnrollLinkTTLChoice(t *testing.T) {
	for _, tt := range []struct {
		requested, def, want time.Duration
		ok                   bool
	}{
		{0, 0, 24 * time.Hour, true},
		{0, 2 * time.Hour, 2 * time.Hour, true},
		{time.Hour, 2 * time.Hour, time.Hour, true},
		{30 * 24 * time.Hour, 0, 30 * 24 * time.Hour, true},
		{30*24*time.Hour + time.Second, 0, 0, false},
		{-time.Hour, 0, 0, false},
	} {
		got, err := enrollLinkTTL(tt.requested, tt.def)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("enrollLinkTTL(%s, %s) = %s, %v; want %s (ok %v)", tt.requested, tt.def, got, err, tt.want, tt.ok)
		}
	}
}

const testLinkPath = "/.jit/enroll?token=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"

func TestEnrollLinkCommand(t *testing.T) {
	body, _ := json.Marshal(enrollLinkResponse{User: "alice", LinkPath: testLinkPath, Expires: "2026-03-02T09:00:00Z"})
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
			[]string{"\n" + testLinkPath + "\n", "https://console.example.com" + testLinkPath}},
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
	cmd := enrollCommand()
	if err := cmd.ParseFlags([]string{"--config", f.caddyfile}); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	ctl, err := openControl(caddycmd.Flags{FlagSet: cmd.Flags()}, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	defer ctl.close()
	link, err := ctl.enrollLink("dave", operatorLogin(), 0)
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
	running, err := session.NewAuthority(context.Background(), f.storage, session.Config{
		Issuer: "offline test", MaxFailures: 2, LockoutDuration: time.Hour, Audit: zap.NewNop(), Now: time.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	pending, err := running.EnrollmentLink(context.Background(), token, "dave")
	if err != nil {
		t.Fatalf("the running instance cannot open the link: %v", err)
	}
	if err := running.ConfirmEnrollment(context.Background(), token, "dave", totpCode(t, pending.Secret, time.Now())); err != nil {
		t.Fatalf("confirming: %v", err)
	}
	if !strings.Contains(stderr.String(), "The admin API is off in "+f.caddyfile+": stored the link in") {
		t.Errorf("no note on stderr:\n%s", stderr.String())
	}
	checkAudit(t, stderr.String(), map[string]any{"event": "enroll_link_created", "user": "dave", "expires": link.Expires})
	if strings.Contains(stderr.String(), token) {
		t.Error("the token is on stderr")
	}
	if _, err := ctl.enrollLink("dave", operatorLogin(), 31*24*time.Hour); err == nil {
		t.Error("a link of 31 days was made")
	}
}

func TestEnrollPageRendersTheQRCodeInline(t *testing.T) {
	const uri = "otpauth://totp/caddy-jit:alice?algorithm=SHA1&digits=6&issuer=caddy-jit&period=30&secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
	qr, err := qrDataURL(uri)
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	form := enrollForm{User: "alice<script>", Issuer: "caddy-jit", Token: "tok\"en", CSRF: "c", Expires: time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC),
		QR: qr, Secret: groupsOfFour("JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"), Enrolled: true, Error: "The code is wrong.", ErrorField: "code"}
	if err := render(rec, http.StatusBadRequest, "enroll.html", form); err != nil {
		t.Fatal(err)
	}
	page := rec.Body.String()
	for _, want := range []string{
		`<img src="data:image/png;base64,`, `<code id="secret" aria-labelledby="secret-label">JBSW Y3DP EHPK 3PXP JBSW Y3DP EHPK 3PXP</code>`,
		`name="token" value="tok&#34;en"`, `name="csrf" value="c"`, `alice&lt;script&gt;`, `id="error-summary"`, `aria-invalid="true"`,
		"2026-03-02 09:00 UTC", "keeps working until you confirm",
	} {
		if !strings.Contains(page, want) {
			t.Errorf("the page does not hold %q", want)
		}
	}
	for _, bad := range []string{"<script>", "style=", "ZgotmplZ"} {
		if strings.Contains(page, bad) {
			t.Errorf("the page holds %q", bad)
		}
	}

	// The image is a PNG of the QR code of the URI, as the CLI's --png draws it.
	raw, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(string(qr), "data:image/png;base64,"))
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	code, _ := encodeQR(uri)
	want := qrImage(code)
	if img.Bounds() != want.Bounds() || !sameImage(img, want) {
		t.Error("the inline image is not the QR code of the URI")
	}
	if zbarimg, err := exec.LookPath("zbarimg"); err == nil {
		path := filepath.Join(t.TempDir(), "qr.png")
		if err := os.WriteFile(path, raw, 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(zbarimg, "-q", "--raw", path).Output()
		if err != nil || strings.TrimSuffix(string(out), "\n") != uri {
			t.Errorf("zbarimg reads %q (%v), want the URI", out, err)
		}
	}
}

func sameImage(a, b image.Image) bool {
	for y := a.Bounds().Min.Y; y < a.Bounds().Max.Y; y++ {
		for x := a.Bounds().Min.X; x < a.Bounds().Max.X; x++ {
			if isDarkColor(a.At(x, y)) != isDarkColor(b.At(x, y)) {
				return false
			}
		}
	}
	return true
}

func TestGroupsOfFour(t *testing.T) {
	for in, want := range map[string]string{"": "", "ABC": "ABC", "ABCD": "ABCD", "ABCDE": "ABCD E", "ABCDEFGH": "ABCD EFGH"} {
		if got := groupsOfFour(in); got != want {
			t.Errorf("groupsOfFour(%q) = %q, want %q", in, got, want)
		}
	}
}
