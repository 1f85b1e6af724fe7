package caddymodule

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"sync/atomic"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// accessRecorder notes the status and size of a response passed under a session, for
// its access event. It is caddyhttp's recorder without buffering, allocated with the
// rest of a gatedRequest.
// Flush, Push and Unwrap come from the embedded wrapper, so streams work through it;
// Hijack is its own, so that a WebSocket's traffic to the client is counted too.
type accessRecorder struct {
	caddyhttp.ResponseWriterWrapper
	status      int
	size        int64
	wroteHeader bool
	hijacked    *countingConn
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

// Hijack hands over the connection of an upgraded request (a WebSocket) wrapped so
// that what is written to the client still counts towards the access event's bytes.
func (r *accessRecorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(r.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	counted := &countingConn{Conn: conn}
	r.hijacked = counted
	// Buffered writes go through the counting connection as well.
	brw.Writer.Reset(counted)
	return counted, brw, nil
}

// countingConn counts the bytes written to a hijacked connection.
type countingConn struct {
	net.Conn
	written atomic.Int64
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.written.Add(int64(n))
	return n, err
}

// bytes is what the response sent: its body, or for an upgraded connection, all that
// was written to the client after the upgrade.
func (r *accessRecorder) bytes() int64 {
	if r.hijacked != nil {
		return r.size + r.hijacked.written.Load()
	}
	return r.size
}

var (
	_ http.ResponseWriter = (*accessRecorder)(nil)
	_ http.Hijacker       = (*accessRecorder)(nil)
)
