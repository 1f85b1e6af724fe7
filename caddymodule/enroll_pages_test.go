package caddymodule

import (
	"bytes"
	"encoding/base64"
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

	"github.com/caddy-jit/caddy-jit/internal/qrcode"
	"github.com/caddy-jit/caddy-jit/stepup"
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

func TestEnrollPageRendersTheQRCodeInline(t *testing.T) {
	const uri = "otpauth://totp/caddy-jit:alice?algorithm=SHA1&digits=6&issuer=caddy-jit&period=30&secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
	qr, err := qrDataURL(uri)
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	form := enrollForm{User: "alice<script>", Issuer: "caddy-jit", Token: "tok\"en", CSRF: "c", Expires: time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC),
		QR: qr, Secret: groupsOfFour("JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"), Enrolled: true, Error: "The code is wrong.", ErrorField: "code",
		Opening: "0a1b2c", LinkPath: EnrollLinkPath("tok")}
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
	want, err := qrcode.Image(uri)
	if err != nil {
		t.Fatal(err)
	}
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
		{"after a wrong code, enrolled", enrollForm{User: "alice", Token: "tok", LinkPath: EnrollLinkPath("tok"), Opening: "0a1b", Enrolled: true, NeedsCurrent: true,
			Error: "The code of your current authenticator is wrong.", ErrorField: "current_code"},
			[]string{`name="current_code"`, `id="current_code"`, `href="/.jit/enroll?token=tok"`, "Open the link again", `name="opening" value="0a1b"`, "with a code of each", `aria-invalid="true"`},
			[]string{"<img", `id="secret"`}},
		{"a replacing link", enrollForm{User: "alice", Token: "tok", LinkPath: EnrollLinkPath("tok"), Enrolled: true},
			[]string{"made this link to replace it"},
			[]string{`name="current_code"`, "<img"}},
		{"a first enrollment", enrollForm{User: "bob", Token: "tok", LinkPath: EnrollLinkPath("tok")},
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
	value := strings.Repeat("A", stepup.EnrollBindingLength)
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

// sameImage compares two images pixel by pixel, colour for colour.
func sameImage(a, b image.Image) bool {
	for y := a.Bounds().Min.Y; y < a.Bounds().Max.Y; y++ {
		for x := a.Bounds().Min.X; x < a.Bounds().Max.X; x++ {
			ar, ag, ab, aa := a.At(x, y).RGBA()
			br, bg, bb, ba := b.At(x, y).RGBA()
			if ar != br || ag != bg || ab != bb || aa != ba {
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
