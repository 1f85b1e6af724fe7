package caddymodule

import (
	"io"
	"net/http"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// accessRecorder notes the status and size of a response passed under a session, for
// its access event. It is caddyhttp's recorder without buffering, allocated with the
// rest of a gatedRequest.
// Flush, Hijack, Push and Unwrap come from the embedded wrapper, so WebSockets and
// streams work through it.
type accessRecorder struct {
	caddyhttp.ResponseWriterWrapper
	status      int
	size        int64
	wroteHeader bool
}

func (r *accessRecorder) WriteHeader(status int) {
	if r.wroteHeader {
		return
	}
	// Saved even when informational: a WebSocket upgrade's 101 is its only status.
	r.status = status
	if status < 100 || status > 199 {
		r.wroteHeader = true
	}
	r.ResponseWriter.WriteHeader(status)
}

func (r *accessRecorder) Write(data []byte) (int, error) {
	r.WriteHeader(http.StatusOK)
	n, err := r.ResponseWriter.Write(data)
	r.size += int64(n)
	return n, err
}

func (r *accessRecorder) ReadFrom(src io.Reader) (int64, error) {
	r.WriteHeader(http.StatusOK)
	n, err := r.ResponseWriterWrapper.ReadFrom(src)
	r.size += n
	return n, err
}

var _ http.ResponseWriter = (*accessRecorder)(nil)
