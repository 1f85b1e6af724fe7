package caddymodule

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
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
	running, err := session.NewAuthority(context.Background(), f.storage, session.Config{
		Issuer: "offline test", MaxFailures: 2, LockoutDuration: time.Hour, Audit: zap.NewNop(), Now: time.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	pending, err := running.OpenEnrollmentLink(context.Background(), token, "dave", "")
	if err != nil {
		t.Fatalf("the running instance cannot open the link: %v", err)
	}
	if err := running.ConfirmEnrollment(context.Background(), session.EnrollConfirmation{Token: token, User: "dave",
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
	if p, err := running.OpenEnrollmentLink(context.Background(), replacingToken, "dave", ""); err != nil || !p.Enrolled || p.NeedsCurrentCode {
		t.Fatalf("the replacing link: %+v, %v; want one that replaces without a current code", p, err)
	}
	newer, err := ctl.enrollLink("dave", operatorLogin(), 0, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := running.OpenEnrollmentLink(context.Background(), replacingToken, "dave", ""); !errors.Is(err, session.ErrEnrollLinkCancelled) {
		t.Errorf("the replacing link after a newer one: %v, want it cancelled", err)
	}
	if _, err := ctl.enroll("dave", operatorLogin()); err != nil {
		t.Fatal(err)
	}
	newerToken := strings.TrimPrefix(newer.LinkPath, "/.jit/enroll?token=")
	if _, err := running.OpenEnrollmentLink(context.Background(), newerToken, "dave", ""); !errors.Is(err, session.ErrEnrollLinkCancelled) {
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

func TestEnrollPageRendersTheQRCodeInline(t *testing.T) {
	const uri = "otpauth://totp/caddy-jit:alice?algorithm=SHA1&digits=6&issuer=caddy-jit&period=30&secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
	qr, err := qrDataURL(uri)
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	form := enrollForm{User: "alice<script>", Issuer: "caddy-jit", Token: "tok\"en", CSRF: "c", Expires: time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC),
		QR: qr, Secret: groupsOfFour("JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"), Enrolled: true, Error: "The code is wrong.", ErrorField: "code",
		Opening: "0a1b2c", LinkPath: enrollLinkPath("tok")}
	if err := render(rec, http.StatusBadRequest, "enroll.html", form); err != nil {
		t.Fatal(err)
	}
	page := rec.Body.String()
	for _, want := range []string{
		`<img src="data:image/png;base64,`, `<code id="secret" aria-labelledby="secret-label">JBSW Y3DP EHPK 3PXP JBSW Y3DP EHPK 3PXP</code>`,
		`name="token" value="tok&#34;en"`, `name="csrf" value="c"`, `alice&lt;script&gt;`, `id="error-summary"`, `aria-invalid="true"`,
		"2026-03-02 09:00 UTC", "keeps working until you confirm", `name="opening" value="0a1b2c"`, "shown on this page only",
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

// The page shown again after a failed confirmation asks for codes and shows no key;
// a link that needs a code of the current authenticator asks for it.
func TestEnrollPageWithoutTheKey(t *testing.T) {
	for _, tt := range []struct {
		name         string
		form         enrollForm
		want, absent []string
	}{
		{"after a wrong code, enrolled", enrollForm{User: "alice", Token: "tok", LinkPath: enrollLinkPath("tok"), Opening: "0a1b", Enrolled: true, NeedsCurrent: true,
			Error: "The code of your current authenticator is wrong.", ErrorField: "current_code"},
			[]string{`name="current_code"`, `id="current_code"`, `href="/.jit/enroll?token=tok"`, "Open the link again", `name="opening" value="0a1b"`, "with a code of each", `aria-invalid="true"`},
			[]string{"<img", `id="secret"`}},
		{"a replacing link", enrollForm{User: "alice", Token: "tok", LinkPath: enrollLinkPath("tok"), Enrolled: true},
			[]string{"made this link to replace it"},
			[]string{`name="current_code"`, "<img"}},
		{"a first enrollment", enrollForm{User: "bob", Token: "tok", LinkPath: enrollLinkPath("tok")},
			[]string{`name="code"`},
			[]string{`name="current_code"`, "You already have"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			if err := render(rec, http.StatusBadRequest, "enroll.html", tt.form); err != nil {
				t.Fatal(err)
			}
			for _, want := range tt.want {
				if !strings.Contains(rec.Body.String(), want) {
					t.Errorf("the page does not hold %q", want)
				}
			}
			for _, bad := range tt.absent {
				if strings.Contains(rec.Body.String(), bad) {
					t.Errorf("the page holds %q", bad)
				}
			}
		})
	}
}

// The binding cookie: HttpOnly, SameSite=Lax, __Host- over HTTPS (so path /), the
// enrollment page only over HTTP; read by its scheme's name only, bounded.
func TestEnrollCookie(t *testing.T) {
	expires := time.Now().Add(2 * time.Hour)
	value := strings.Repeat("A", session.EnrollBindingLength)
	for _, tt := range []struct {
		name     string
		https    bool
		value    string
		wantName string
		wantPath string
		deleted  bool
	}{
		{"http", false, value, "jit_enroll", "/.jit/enroll", false},
		{"https", true, value, "__Host-jit_enroll", "/", false},
		{"http delete", false, "", "jit_enroll", "/.jit/enroll", true},
		{"https delete", true, "", "__Host-jit_enroll", "/", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/.jit/enroll", nil)
			if tt.https {
				r = httptest.NewRequest(http.MethodGet, "https://example.com/.jit/enroll", nil)
			}
			c := enrollCookieFor(r, tt.value, expires)
			if c.Name != tt.wantName || c.Path != tt.wantPath || !c.HttpOnly || c.SameSite != http.SameSiteLaxMode || c.Secure != tt.https || c.Domain != "" {
				t.Errorf("cookie %+v", c)
			}
			if tt.deleted != (c.MaxAge < 0) || (!tt.deleted && (c.MaxAge < 7199 || c.MaxAge > 7201)) {
				t.Errorf("MaxAge %d, want deleted %v or about 2h", c.MaxAge, tt.deleted)
			}
			if err := c.Valid(); err != nil {
				t.Errorf("invalid cookie: %v", err)
			}
		})
	}
	for _, tt := range []struct {
		name   string
		https  bool
		header string
		want   string
	}{
		{"http", false, "jit_enroll=" + value, value},
		{"https", true, "__Host-jit_enroll=" + value, value},
		{"https ignores the plain name", true, "jit_enroll=" + value, ""},
		{"http ignores the __Host- name", false, "__Host-jit_enroll=" + value, ""},
		{"oversize", false, "jit_enroll=" + value + "A", ""},
		{"none", false, "other=1", ""},
	} {
		t.Run("read "+tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/.jit/enroll", nil)
			if tt.https {
				r = httptest.NewRequest(http.MethodPost, "https://example.com/.jit/enroll", nil)
			}
			r.Header.Set("Cookie", tt.header)
			if got := enrollCookie(r); got != tt.want {
				t.Errorf("enrollCookie = %q, want %q", got, tt.want)
			}
		})
	}
}

// The admin API's query: replace goes with link only; a plain enrollment replaces.
func TestWantsEnrollLink(t *testing.T) {
	for _, tt := range []struct {
		query   string
		link    bool
		replace bool
		err     string
	}{
		{"", false, false, ""},
		{"link=1", true, false, ""},
		{"link=1&replace=1", true, true, ""},
		{"link=true&replace=true", true, true, ""},
		{"link=1&replace=0", true, false, ""},
		{"link=1&replace=yes", false, false, `replace="yes"`},
		{"replace=1", false, false, "a plain enrollment always replaces"},
		{"ttl=2h", false, false, "add link=1"},
		{"link=maybe", false, false, "want link=1"},
	} {
		t.Run(tt.query, func(t *testing.T) {
			q, _ := url.ParseQuery(tt.query)
			link, err := wantsEnrollLink(q)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Errorf("error %v, want one saying %q", err, tt.err)
				}
				return
			}
			replace, rerr := replaceFlag(q)
			if err != nil || rerr != nil || link != tt.link || replace != tt.replace {
				t.Errorf("link %v replace %v (%v, %v), want %v %v", link, replace, err, rerr, tt.link, tt.replace)
			}
		})
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
