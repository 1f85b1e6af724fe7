// Package privatefile writes files that hold secrets or personal data (a TOTP
// enrollment's QR code, a session's HTTP Archive with its recorded bodies) so that only
// their owner can read them, whatever the umask or an earlier file at the path allowed.
package privatefile

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// Write writes what write produces to path with mode 0600: into a new file next to
// path, renamed over it once whole. An earlier file at path, with its mode, is
// replaced rather than written through; a symbolic link there is replaced, not
// followed; and a reader never sees half a file. what names the file in errors.
func Write(path, what string, write func(io.Writer) error) (err error) {
	if path == "" {
		return fmt.Errorf("no file name for the %s", what)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("writing the %s %s: %v", what, path, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err = tmp.Chmod(0o600); err != nil {
		return fmt.Errorf("writing the %s %s: %v", what, path, err)
	}
	bw := bufio.NewWriter(tmp)
	if err = write(bw); err != nil {
		return fmt.Errorf("writing the %s %s: %v", what, path, err)
	}
	if err = bw.Flush(); err != nil {
		return fmt.Errorf("writing the %s %s: %v", what, path, err)
	}
	if err = tmp.Close(); err != nil {
		return fmt.Errorf("writing the %s %s: %v", what, path, err)
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("writing the %s %s: %v", what, path, err)
	}
	return nil
}
