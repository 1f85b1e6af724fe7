// Package qrcode draws the QR code of an otpauth URI three ways: as text for a
// terminal (`caddy jit enroll`), as a PNG file (`caddy jit enroll --png`) and as an
// image (the enrollment page). It knows nothing of caddy-jit: content in, a code out.
package qrcode

import (
	"bufio"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"

	"github.com/boombuler/barcode"
	"github.com/boombuler/barcode/qr"
	"github.com/caddy-jit/caddy-jit/internal/privatefile"
)

// The terminal rendering draws the LIGHT modules (and the quiet zone) with block
// characters and leaves the dark modules as the terminal's background, like
// `qrencode -t UTF8`. On the usual light-on-dark terminal this shows a normal
// dark-on-light code, which every authenticator app scans. Drawing the dark modules
// instead would show an inverted (light-on-dark) code there, which many scanners reject;
// and forcing black-on-white with ANSI colours would put escape codes into logs and
// pipes. The price: on a terminal with a light background the code appears inverted;
// the command's help says to use --png (or the printed URI) there.
const (
	// qrLevel is the error correction level: M (15%), as authenticator apps expect
	// and as pquerna/otp's own key.Image uses.
	qrLevel = qr.M

	// qrTerminalQuiet is the quiet zone around the terminal code, in modules. The
	// standard asks for 4; 2 keeps the code within an 80x25 terminal and scans fine
	// from a screen, where nothing but the background surrounds it.
	qrTerminalQuiet = 2

	// qrPNGQuiet is the quiet zone of the PNG image, in modules (the standard's 4).
	qrPNGQuiet = 4

	// qrPNGMinSize is the smallest width and height of the PNG image, in pixels.
	qrPNGMinSize = 512
)

// encode makes the QR code of content.
func encode(content string) (barcode.Barcode, error) {
	if content == "" {
		return nil, errors.New("nothing to put in a QR code")
	}
	code, err := qr.Encode(content, qrLevel, qr.Auto)
	if err != nil {
		return nil, fmt.Errorf("making a QR code of %d bytes: %v", len(content), err)
	}
	return code, nil
}

// qrDark reports whether the module at (x, y) of code is dark; modules outside the
// code (the quiet zone) are light.
func qrDark(code barcode.Barcode, x, y int) bool {
	b := code.Bounds()
	if !(image.Point{X: x, Y: y}).In(b) {
		return false
	}
	return isDarkColor(code.At(x, y))
}

// isDarkColor tells dark from light pixels.
func isDarkColor(c color.Color) bool {
	return color.GrayModel.Convert(c).(color.Gray).Y < 0x80
}

// Half blocks for two QR rows per text line, indexed by (top light) | (bottom light)<<1.
var qrHalfBlocks = [4]string{" ", "▀", "▄", "█"}

// WriteTerminal writes the QR code of content to w as text: two rows of modules per
// line with Unicode half blocks, one module per column, light modules and a quiet zone
// of qrTerminalQuiet modules drawn as blocks, dark modules left blank (see above). With
// a code of N modules a side, that is N+4 columns and (N+5)/2 lines; the row below the
// last one of an odd count is left blank (the terminal's dark background).
func WriteTerminal(w io.Writer, content string) error {
	code, err := encode(content)
	if err != nil {
		return err
	}
	b := code.Bounds()
	lo := -qrTerminalQuiet
	hiX, hiY := b.Dx()+qrTerminalQuiet, b.Dy()+qrTerminalQuiet // exclusive
	light := func(x, y int) bool {
		if y >= hiY { // below the picture: not drawn
			return false
		}
		return !qrDark(code, b.Min.X+x, b.Min.Y+y)
	}

	bw := bufio.NewWriter(w)
	for y := lo; y < hiY; y += 2 {
		for x := lo; x < hiX; x++ {
			i := 0
			if light(x, y) {
				i |= 1
			}
			if light(x, y+1) {
				i |= 2
			}
			bw.WriteString(qrHalfBlocks[i])
		}
		bw.WriteByte('\n')
	}
	return bw.Flush()
}

// Image draws the QR code of content as a black-on-white image, as WritePNG writes it:
// for a page to show inline.
func Image(content string) (*image.Paletted, error) {
	code, err := encode(content)
	if err != nil {
		return nil, err
	}
	return qrImage(code), nil
}

// qrImage draws code as a black-on-white image with a quiet zone of qrPNGQuiet modules,
// each module a square of whole pixels, at least qrPNGMinSize pixels a side.
func qrImage(code barcode.Barcode) *image.Paletted {
	b := code.Bounds()
	modules := max(b.Dx(), b.Dy()) + 2*qrPNGQuiet
	scale := (qrPNGMinSize + modules - 1) / modules
	size := modules * scale

	// Palette index 0 (white) is the zero value, so the image starts all light.
	img := image.NewPaletted(image.Rect(0, 0, size, size), color.Palette{color.White, color.Black})
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			if !qrDark(code, x, y) {
				continue
			}
			px := (x - b.Min.X + qrPNGQuiet) * scale
			py := (y - b.Min.Y + qrPNGQuiet) * scale
			for dy := range scale {
				row := img.Pix[(py+dy)*img.Stride:]
				for dx := range scale {
					row[px+dx] = 1
				}
			}
		}
	}
	return img
}

// WritePNG writes the QR code of content to path as a PNG image. The code holds a
// secret, so the file gets mode 0600 whatever the umask or an earlier file at path
// allowed (see privatefile).
func WritePNG(path, content string) error {
	if path == "" {
		return errors.New("no file name for the PNG image")
	}
	img, err := Image(content)
	if err != nil {
		return err
	}
	return privatefile.Write(path, "QR code image", func(w io.Writer) error { return png.Encode(w, img) })
}
