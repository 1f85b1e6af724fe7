package audit

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/klauspost/compress/zstd"
)

// Reading the files of an audit log, compressed by rotation or not, line by line.

// maxAuditLine bounds one line of an audit log; caddy-jit's events are far smaller.
const maxAuditLine = 16 << 20

// Input is one audit log file. Open is called once per pass over the log, so
// that an analysis may read it more than once.
type Input struct {
	Name string
	Open func() (io.ReadCloser, error)
}

// Files are the files at paths, read in that order: rotated files first.
func Files(paths ...string) []Input {
	inputs := make([]Input, len(paths))
	for i, p := range paths {
		inputs[i] = Input{Name: p, Open: func() (io.ReadCloser, error) { return os.Open(p) }}
	}
	return inputs
}

// Data is a log held in memory, under a name for the places it reports.
func Data(name string, data []byte) Input {
	return Input{Name: name, Open: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil }}
}

// DamagedError is a compressed file that cannot be read to its end: cut short, or its
// bytes changed. Lines is how many whole lines were read from it before the damage.
type DamagedError struct {
	File, Compression string
	Lines             int
	Err               error
}

func (e *DamagedError) Error() string {
	return fmt.Sprintf("reading the audit log %s (%s): %v: the compressed file is cut short or damaged after line %d", e.File, e.Compression, e.Err, e.Lines)
}

func (e *DamagedError) Unwrap() error { return e.Err }

// Scan calls fn with each line of the inputs, in order. It returns the first
// error of reading a file (a *DamagedError for a damaged compressed file) or of fn.
func Scan(inputs []Input, fn func(*Line) error) error {
	for _, in := range inputs {
		if err := scanAuditInput(in, fn); err != nil {
			return err
		}
	}
	return nil
}

func scanAuditInput(in Input, fn func(*Line) error) error {
	rc, err := in.Open()
	if err != nil {
		return fmt.Errorf("reading the audit log: %w", err)
	}
	defer rc.Close()
	br := bufio.NewReaderSize(rc, 64<<10)
	// Rotated files are compressed by default (Caddy's roll_compression: gzip, or
	// zstd): read them as they are.
	compression := ""
	magic, _ := br.Peek(4)
	switch {
	case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
		compression = "gzip"
		gz, err := gzip.NewReader(br)
		if err != nil {
			return &DamagedError{File: in.Name, Compression: compression, Err: err}
		}
		defer gz.Close()
		br = bufio.NewReaderSize(gz, 64<<10)
	case bytes.Equal(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		compression = "zstd"
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return &DamagedError{File: in.Name, Compression: compression, Err: err}
		}
		defer zr.Close()
		br = bufio.NewReaderSize(zr, 64<<10)
	}
	var (
		buf     []byte
		tooLong bool
		n       int
	)
	for {
		chunk, err := br.ReadSlice('\n')
		if !tooLong && len(buf)+len(chunk) <= maxAuditLine+1 {
			buf = append(buf, chunk...)
		} else {
			tooLong, buf = true, buf[:0]
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if err != nil && !errors.Is(err, io.EOF) {
			if compression != "" {
				return &DamagedError{File: in.Name, Compression: compression, Lines: n, Err: err}
			}
			return fmt.Errorf("reading the audit log %s: %w", in.Name, err)
		}
		if len(buf) > 0 || tooLong {
			n++
			complete := len(buf) > 0 && buf[len(buf)-1] == '\n'
			var line *Line
			if tooLong {
				line = &Line{File: in.Name, Line: n, Problem: fmt.Sprintf("a line longer than %d MiB (caddy-jit writes none)", maxAuditLine>>20)}
			} else {
				line = ParseLine(in.Name, n, bytes.TrimSuffix(buf, []byte{'\n'}))
				if !complete && line.Problem == notJSONProblem {
					line.Problem += ": the file ends in the middle of it"
				}
			}
			if ferr := fn(line); ferr != nil {
				return ferr
			}
		}
		if err != nil { // io.EOF
			return nil
		}
		buf, tooLong = buf[:0], false
	}
}
