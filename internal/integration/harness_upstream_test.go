package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/websocket"
)

// ---------------------------------------------------------------------------
// The upstream: records every request, answers 200 with a JSON echo; a WebSocket
// echo at wsPath and a slow stream at streamPath.

const (
	// wsPath is the upstream's WebSocket echo.
	wsPath = "/ws/echo"
	// streamPath answers with a line every streamEvery for streamLines lines, flushing each.
	streamPath  = "/stream"
	streamEvery = 200 * time.Millisecond
	streamLines = 150
)

// connEnd is the end of a WebSocket or stream as the upstream saw it.
type connEnd struct {
	Path  string
	At    time.Time
	Lines int // lines the stream wrote; 0 for a WebSocket
}

type upstreamRequest struct {
	Method   string      `json:"method"`
	Path     string      `json:"path"`
	RawQuery string      `json:"raw_query"`
	Host     string      `json:"host"`
	Header   http.Header `json:"header"`
	// Body is the request body as received (the first MiB), for mutating requests.
	Body string `json:"body,omitempty"`
}

type upstream struct {
	srv  *httptest.Server
	mu   sync.Mutex
	reqs []upstreamRequest
	// ends learns of every WebSocket or stream that ended.
	ends chan connEnd
	// quit ends the streams when the test is over.
	quit chan struct{}
}

func newUpstream(t *testing.T) *upstream {
	u := &upstream{ends: make(chan connEnd, 64), quit: make(chan struct{})}
	echo := websocket.Server{
		// Origin checks are the proxied application's business, not this test's.
		Handshake: func(*websocket.Config, *http.Request) error { return nil },
		Handler: func(c *websocket.Conn) {
			_, _ = io.Copy(c, c)
			u.ended(connEnd{Path: wsPath, At: time.Now()})
		},
	}
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := upstreamRequest{Method: r.Method, Path: r.URL.Path, RawQuery: r.URL.RawQuery, Host: r.Host, Header: r.Header.Clone()}
		if r.Method != http.MethodGet && r.Method != http.MethodHead && r.Body != nil {
			body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
			rec.Body = string(body)
		}
		u.mu.Lock()
		u.reqs = append(u.reqs, rec)
		u.mu.Unlock()
		switch r.URL.Path {
		case wsPath:
			echo.ServeHTTP(w, r)
			return
		case streamPath:
			u.stream(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Upstream", "integration")
		_ = json.NewEncoder(w).Encode(rec)
	}))
	t.Cleanup(u.srv.Close)
	t.Cleanup(func() { close(u.quit) }) // runs first: Close waits for the streams
	return u
}

// stream writes a numbered line every streamEvery, flushing each, until it has written
// streamLines or the proxy went away.
func (u *upstream) stream(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Upstream", "integration")
	rc := http.NewResponseController(w)
	tick := time.NewTicker(streamEvery)
	defer tick.Stop()
	n := 0
	defer func() { u.ended(connEnd{Path: streamPath, At: time.Now(), Lines: n}) }()
	for n < streamLines {
		if _, err := fmt.Fprintf(w, "line %d\n", n); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
		n++
		select {
		case <-r.Context().Done():
			return
		case <-u.quit:
			return
		case <-tick.C:
		}
	}
}

func (u *upstream) ended(c connEnd) {
	select {
	case u.ends <- c:
	default:
	}
}

// waitEnd waits until the upstream saw a WebSocket or stream at path end; ok is false
// if none did within timeout.
func (u *upstream) waitEnd(path string, timeout time.Duration) (connEnd, bool) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		select {
		case c := <-u.ends:
			if c.Path == path {
				return c, true
			}
		case <-timer.C:
			return connEnd{}, false
		}
	}
}

func (u *upstream) addr() string { return strings.TrimPrefix(u.srv.URL, "http://") }

func (u *upstream) count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.reqs)
}

func (u *upstream) requests() []upstreamRequest {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.reqs)
}

// last returns the last request the upstream received; the test fails if none.
func (u *upstream) last(t *testing.T) upstreamRequest {
	t.Helper()
	reqs := u.requests()
	if len(reqs) == 0 {
		t.Fatal("the upstream received no request")
	}
	return reqs[len(reqs)-1]
}
