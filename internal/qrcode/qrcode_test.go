package qrcode

import (
	"bytes"
	"image"
	"image/color"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/boombuler/barcode/qr"
)

const testOTPAuthURI = "otpauth://totp/caddy-jit:alice?algorithm=SHA1&digits=6&issuer=caddy-jit&period=30&secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"

var qrTestContents = []struct {
	name    string
	content string
}{
	{"short", "hello"},
	{"otpauth URI", testOTPAuthURI},
	{"unicode user", "otpauth://totp/caddy-jit:J%C3%BCrgen%20M%C3%BCller?issuer=caddy-jit&secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"},
	{"long", strings.Repeat("otpauth://totp/x?secret=ABCDEFGH&", 10)},
}

// parseTerminalQR turns lines of half blocks back into rows of modules, true for
// light (drawn) modules: two rows per line.
func parseTerminalQR(t *testing.T, lines []string) [][]bool {
	t.Helper()
	var rows [][]bool
	for i, line := range lines {
		var top, bottom []bool
		for _, r := range line {
			switch r {
			case '█':
				top, bottom = append(top, true), append(bottom, true)
			case '▀':
				top, bottom = append(top, true), append(bottom, false)
			case '▄':
				top, bottom = append(top, false), append(bottom, true)
			case ' ':
				top, bottom = append(top, false), append(bottom, false)
			default:
				t.Fatalf("line %d: unexpected character %q in %q", i, r, line)
			}
		}
		rows = append(rows, top, bottom)
	}
	return rows
}

// checkTerminalQR checks that lines are the terminal rendering of content: the
// dimensions, the quiet zone, and every module against barcode's own matrix.
func checkTerminalQR(t *testing.T, lines []string, content string) {
	t.Helper()
	code, err := qr.Encode(content, qrLevel, qr.Auto)
	if err != nil {
		t.Fatal(err)
	}
	n := code.Bounds().Dx()
	if code.Bounds().Dy() != n {
		t.Fatalf("QR code is not square: %v", code.Bounds())
	}
	side := n + 2*qrTerminalQuiet
	if want := (side + 1) / 2; len(lines) != want {
		t.Fatalf("got %d lines, want %d for a %d-module code", len(lines), want, n)
	}
	for i, line := range lines {
		if got := utf8.RuneCountInString(line); got != side {
			t.Fatalf("line %d has %d columns, want %d", i, got, side)
		}
	}
	rows := parseTerminalQR(t, lines)
	for y, row := range rows {
		for x, light := range row {
			mx, my := x-qrTerminalQuiet, y-qrTerminalQuiet
			var want bool
			switch {
			case y >= side: // the half row below the picture: background
				want = false
			case mx < 0 || my < 0 || mx >= n || my >= n: // quiet zone
				want = true
			default:
				want = !isDarkColor(code.At(mx, my))
			}
			if light != want {
				t.Fatalf("module (%d,%d) (row %d, column %d): light=%v, want %v", mx, my, y, x, light, want)
			}
		}
	}
}

func TestQRTerminalRoundTrip(t *testing.T) {
	for _, tc := range qrTestContents {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := WriteTerminal(&buf, tc.content); err != nil {
				t.Fatal(err)
			}
			out := buf.String()
			if !strings.HasSuffix(out, "\n") {
				t.Fatalf("output does not end with a newline")
			}
			lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
			checkTerminalQR(t, lines, tc.content)
		})
	}
}

func TestQRTerminalSize(t *testing.T) {
	// A long but realistic enrollment URI must fit the width of an 80-column terminal:
	// a wrapped line would break the code (its height just scrolls).
	uri := "otpauth://totp/ACME%20Production%20Admin%20Console:firstname.lastname%40subsidiary.example.com" +
		"?algorithm=SHA1&digits=6&issuer=ACME%20Production%20Admin%20Console&period=30&secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
	var buf bytes.Buffer
	if err := WriteTerminal(&buf, uri); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if width := utf8.RuneCountInString(lines[0]); width > 80 {
		t.Errorf("QR code of a %d-byte URI is %d columns wide; want at most 80", len(uri), width)
	}
}

func TestQRErrors(t *testing.T) {
	tests := []struct {
		name    string
		content string
		want    string
	}{
		{"empty", "", "nothing to put in a QR code"},
		{"too long", strings.Repeat("x", 5000), "QR code of 5000 bytes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			err := WriteTerminal(&buf, tc.content)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("WriteTerminal: error %v, want one containing %q", err, tc.want)
			}
			if buf.Len() != 0 {
				t.Errorf("WriteTerminal wrote %d bytes despite the error", buf.Len())
			}
			path := filepath.Join(t.TempDir(), "qr.png")
			err = WritePNG(path, tc.content)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("WritePNG: error %v, want one containing %q", err, tc.want)
			}
			if _, err := os.Stat(path); !os.IsNotExist(err) {
				t.Errorf("WritePNG left a file behind: %v", err)
			}
		})
	}
}

// checkPNGQR decodes the PNG at path and checks it against barcode's matrix of content.
func checkPNGQR(t *testing.T, path, content string) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("mode %v, want 0600", perm)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, format, err := image.Decode(f)
	if err != nil {
		t.Fatalf("decoding %s: %v", path, err)
	}
	if format != "png" {
		t.Fatalf("format %q, want png", format)
	}
	b := img.Bounds()
	if b.Dx() != b.Dy() || b.Dx() < 256 {
		t.Fatalf("image is %dx%d, want square and at least 256x256", b.Dx(), b.Dy())
	}

	code, err := qr.Encode(content, qrLevel, qr.Auto)
	if err != nil {
		t.Fatal(err)
	}
	n := code.Bounds().Dx()
	modules := n + 2*qrPNGQuiet
	if b.Dx()%modules != 0 {
		t.Fatalf("image side %d is not a whole number of %d modules", b.Dx(), modules)
	}
	scale := b.Dx() / modules
	for my := -qrPNGQuiet; my < n+qrPNGQuiet; my++ {
		for mx := -qrPNGQuiet; mx < n+qrPNGQuiet; mx++ {
			want := false
			if mx >= 0 && my >= 0 && mx < n && my < n {
				want = isDarkColor(code.At(mx, my))
			}
			// every pixel of the module's square
			px, py := b.Min.X+(mx+qrPNGQuiet)*scale, b.Min.Y+(my+qrPNGQuiet)*scale
			for dy := range scale {
				for dx := range scale {
					if got := isDarkColor(img.At(px+dx, py+dy)); got != want {
						t.Fatalf("module (%d,%d) pixel (%d,%d): dark=%v, want %v", mx, my, px+dx, py+dy, got, want)
					}
				}
			}
		}
	}
}

func TestQRPNG(t *testing.T) {
	for _, tc := range qrTestContents {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "qr.png")
			if err := WritePNG(path, tc.content); err != nil {
				t.Fatal(err)
			}
			checkPNGQR(t, path, tc.content)
			entries, err := os.ReadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			if len(entries) != 1 {
				t.Errorf("directory holds %d entries, want only qr.png (no temporary file left)", len(entries))
			}
		})
	}
}

func TestQRPNGReplacesWiderFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "qr.png")
	if err := os.WriteFile(path, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil { // whatever the umask
		t.Fatal(err)
	}
	if err := WritePNG(path, testOTPAuthURI); err != nil {
		t.Fatal(err)
	}
	checkPNGQR(t, path, testOTPAuthURI)
}

func TestQRPNGBadPath(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		path string
		want string
	}{
		{"no name", "", "no file name"},
		{"missing directory", filepath.Join(dir, "missing", "qr.png"), "writing the QR code image"},
		{"a directory", dir, "writing the QR code image"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := WritePNG(tc.path, testOTPAuthURI)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
			if tc.path != "" && !strings.Contains(err.Error(), tc.path) {
				t.Errorf("error %q does not name the path %s", err, tc.path)
			}
		})
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		t.Errorf("left %d entries behind in %s", len(entries), dir)
	}
}

// TestQRDecodesWithZbar decodes both renderings with a real QR reader, zbarimg (Debian's
// zbar-tools), when it is installed: the PNG as it is, and the terminal rendering as a
// light-on-dark terminal shows it (blocks light, blanks and the margin dark).
func TestQRDecodesWithZbar(t *testing.T) {
	zbarimg, err := exec.LookPath("zbarimg")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("zbarimg not installed: .ci/run installs zbar-tools")
		}
		t.Skip("zbarimg not installed (apt-get install zbar-tools)")
	}
	decode := func(t *testing.T, path string) string {
		t.Helper()
		out, err := exec.Command(zbarimg, "-q", "--raw", path).Output()
		if err != nil {
			t.Fatalf("zbarimg %s: %v", path, err)
		}
		return strings.TrimSuffix(string(out), "\n")
	}
	for _, tc := range qrTestContents {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			pngPath := filepath.Join(dir, "qr.png")
			if err := WritePNG(pngPath, tc.content); err != nil {
				t.Fatal(err)
			}
			if got := decode(t, pngPath); got != tc.content {
				t.Errorf("PNG decodes to %q, want %q", got, tc.content)
			}

			var buf bytes.Buffer
			if err := WriteTerminal(&buf, tc.content); err != nil {
				t.Fatal(err)
			}
			rows := parseTerminalQR(t, strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n"))
			const scale, margin = 6, 10 // pixels per module; terminal background around the text, in modules
			w, h := len(rows[0]), len(rows)
			img := image.NewGray(image.Rect(0, 0, (w+2*margin)*scale, (h+2*margin)*scale))
			for py := range img.Rect.Dy() {
				for px := range img.Rect.Dx() {
					x, y := px/scale-margin, py/scale-margin
					c := color.Gray{Y: 0x20} // dark terminal background
					if x >= 0 && y >= 0 && x < w && y < h && rows[y][x] {
						c = color.Gray{Y: 0xe0} // light block
					}
					img.SetGray(px, py, c)
				}
			}
			termPath := filepath.Join(dir, "terminal.png")
			f, err := os.Create(termPath)
			if err != nil {
				t.Fatal(err)
			}
			if err := png.Encode(f, img); err != nil {
				t.Fatal(err)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
			if got := decode(t, termPath); got != tc.content {
				t.Errorf("terminal rendering decodes to %q, want %q", got, tc.content)
			}
		})
	}
}
