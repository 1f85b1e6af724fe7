package privatefile

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Whatever was at the path, what is written there is the owner's alone, and a write
// that fails leaves nothing behind: neither a half file nor a temporary one.
func TestWrite(t *testing.T) {
	tests := []struct {
		name    string
		before  func(t *testing.T, path string)
		write   func(io.Writer) error
		wantErr string
	}{
		{"new file", nil, func(w io.Writer) error { _, err := io.WriteString(w, "new"); return err }, ""},
		{"over a world-readable file", func(t *testing.T, path string) { must(t, os.WriteFile(path, []byte("old"), 0o644)) },
			func(w io.Writer) error { _, err := io.WriteString(w, "new"); return err }, ""},
		{"over a symbolic link, which is replaced, not followed", func(t *testing.T, path string) {
			must(t, os.WriteFile(path+".target", []byte("old"), 0o644))
			must(t, os.Symlink(path+".target", path))
		}, func(w io.Writer) error { _, err := io.WriteString(w, "new"); return err }, ""},
		{"a failed write", nil, func(io.Writer) error { return errors.New("encoder broke") }, "writing the archive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "out.har")
			if tt.before != nil {
				tt.before(t, path)
			}
			err := Write(path, "archive", tt.write)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want one saying %q", err, tt.wantErr)
				}
				if entries, _ := os.ReadDir(dir); len(entries) != 0 {
					t.Fatalf("a failed write left %v", entries)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			info, err := os.Lstat(path)
			if err != nil || !info.Mode().IsRegular() || info.Mode().Perm() != 0o600 {
				t.Fatalf("the file is %v (%v), want a regular file with mode 0600", info.Mode(), err)
			}
			if got, _ := os.ReadFile(path); string(got) != "new" {
				t.Fatalf("the file holds %q", got)
			}
			if target, err := os.ReadFile(path + ".target"); err == nil && string(target) != "old" {
				t.Fatalf("the link's target was written: %q", target)
			}
			if entries, _ := os.ReadDir(dir); len(entries) > 2 {
				t.Fatalf("temporary files left: %v", entries)
			}
		})
	}
	if err := Write("", "archive", nil); err == nil || !strings.Contains(err.Error(), "no file name for the archive") {
		t.Fatalf("no path: %v", err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
