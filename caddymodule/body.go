package caddymodule

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"hash"
	"io"
	"net/http"

	"github.com/caddy-jit/caddy-jit/session"
)

// bodyDigest hashes the body of a mutating request as the upstream reads it, so that
// its access event says what was sent: size and SHA-256, and for a role that records
// bodies, the first bytes kept in storage for session review.
type bodyDigest struct {
	body  io.ReadCloser
	hash  hash.Hash
	size  int64
	eof   bool
	keep  *bytes.Buffer
	limit int64
	key   string
}

// mutating reports whether a method changes state, so that its body is audited.
func mutating(method string) bool {
	switch method {
	case http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
		return true
	}
	return false
}

func newBodyDigest(r *http.Request, recordLimit int64) *bodyDigest {
	d := &bodyDigest{hash: sha256.New(), limit: recordLimit}
	if recordLimit > 0 {
		d.keep = new(bytes.Buffer)
	}
	if r.Body == nil || r.Body == http.NoBody {
		d.eof = true
		return d
	}
	d.body = r.Body
	r.Body = d
	return d
}

func (d *bodyDigest) Read(p []byte) (int, error) {
	n, err := d.body.Read(p)
	if n > 0 {
		d.hash.Write(p[:n])
		d.size += int64(n)
		if d.keep != nil && int64(d.keep.Len()) < d.limit {
			d.keep.Write(p[:min(n, int(d.limit-int64(d.keep.Len())))])
		}
	}
	if err == io.EOF {
		d.eof = true
	}
	return n, err
}

func (d *bodyDigest) Close() error { return d.body.Close() }

// store keeps the recorded bytes for session review; a failure is reported in the
// access event as a missing key, never as a failed request.
func (d *bodyDigest) store(ctx context.Context, a *session.Authority, sessionID string) error {
	if d == nil || d.keep == nil || d.size == 0 {
		return nil
	}
	// After the response: the request's own context is over by now.
	key, err := a.Records.StoreBody(context.WithoutCancel(ctx), sessionID, d.keep.Bytes())
	if err != nil {
		return err
	}
	d.key = key
	return nil
}

// digest is what the access event says about the body; nil for a request that does
// not change state.
func (d *bodyDigest) digest() *session.BodyDigest {
	if d == nil {
		return nil
	}
	return &session.BodyDigest{Size: d.size, SHA256: hex.EncodeToString(d.hash.Sum(nil)), Complete: d.eof, Key: d.key}
}
