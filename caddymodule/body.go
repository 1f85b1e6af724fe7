package caddymodule

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"hash"
	"io"
	"net/http"

	"github.com/caddy-jit/caddy-jit/audit"
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
	// contentType is the request's Content-Type, as sent.
	contentType string
	// dropped is set when the recorded bytes were not queued for storage.
	dropped bool
}

// mutating reports whether a method may change state, so that its body is audited:
// every method but those HTTP and WebDAV define as safe, so that WebDAV's MKCOL,
// PROPPATCH, COPY, MOVE and LOCK, and any method a console makes up, count too.
// CONNECT opens a tunnel (a WebSocket over HTTP/2), whose bytes are no request body.
func mutating(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodConnect,
		"PROPFIND", "REPORT", "SEARCH":
		return false
	}
	return true
}

func newBodyDigest(r *http.Request, recordLimit int64) *bodyDigest {
	d := &bodyDigest{hash: sha256.New(), limit: recordLimit, contentType: r.Header.Get("Content-Type")}
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

// record hands the recorded bytes to the body writer, which stores them for session
// review off the request path: the key is known at once, for the access event, and a
// full queue drops the body rather than make the request wait.
func (d *bodyDigest) record(s *sharedState, c *session.Claims) {
	if d == nil || d.keep == nil || d.size == 0 {
		return
	}
	key, queued := s.bodies.Put(c, d.keep.Bytes())
	d.key, d.dropped = key, !queued
}

// digest is what the access event says about the body; nil for a request that does
// not change state.
func (d *bodyDigest) digest() *audit.BodyDigest {
	if d == nil {
		return nil
	}
	return &audit.BodyDigest{Size: d.size, SHA256: hex.EncodeToString(d.hash.Sum(nil)), Complete: d.eof, Key: d.key, Dropped: d.dropped, Type: d.contentType}
}
