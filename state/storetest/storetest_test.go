package storetest

import (
	"testing"

	"github.com/caddyserver/certmagic"

	"github.com/caddy-jit/caddy-jit/state"
)

// Caddy's file storage is the reference the conformance test describes.
func TestFileStorage(t *testing.T) {
	dir := t.TempDir()
	Conformance(t, func() state.Store { return &certmagic.FileStorage{Path: dir} })
}
