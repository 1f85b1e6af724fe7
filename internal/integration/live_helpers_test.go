package integration

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/websocket"
)

// liveStream is a response to streamPath being read line by line.
type liveStream struct {
	lines chan string
	done  chan struct{}
	// endedAt and err are set before done is closed.
	endedAt time.Time
	err     error
	cancel  context.CancelFunc
}

// openStream requests streamPath under the token and reads it in the background; it
// fails the test unless the gate admits it and the first line arrives.
func openStream(t *testing.T, site, host, user, token string) *liveStream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, site+streamPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	req.SetBasicAuth(user, password(user))
	req.Header.Set("Cookie", cookieName+"="+token)
	client := &http.Client{
		Transport:     &http.Transport{DisableKeepAlives: true},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", streamPath, err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		t.Fatalf("GET %s under a session: want 200, got %s", streamPath, resp.Status)
	}
	s := &liveStream{lines: make(chan string, streamLines+1), done: make(chan struct{}), cancel: cancel}
	go func() {
		defer close(s.done)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			s.lines <- sc.Text()
		}
		s.err = sc.Err()
		s.endedAt = time.Now()
	}()
	select {
	case line := <-s.lines:
		if line != "line 0" {
			t.Errorf("the stream's first line is %q, want \"line 0\"", line)
		}
	case <-s.done:
		t.Fatalf("the stream ended before its first line: %v", s.err)
	case <-time.After(3 * time.Second):
		t.Fatalf("no line of the stream within 3s")
	}
	return s
}

// waitEnded waits until the stream ends; it returns when, or fails the test if it is
// still open at the deadline.
func (s *liveStream) waitEnded(t *testing.T, deadline time.Time, what string) time.Time {
	t.Helper()
	select {
	case <-s.done:
		return s.endedAt
	case <-time.After(time.Until(deadline)):
		s.cancel()
		<-s.done
		t.Errorf("%s: the stream was still open at the deadline", what)
		return time.Time{}
	}
}

// dialWebSocket opens the upstream's WebSocket echo through the gate under the token.
func dialWebSocket(t *testing.T, site, user, token string) (*websocket.Conn, error) {
	t.Helper()
	cfg, err := websocket.NewConfig(strings.Replace(site, "http://", "ws://", 1)+wsPath, site)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(user+":"+password(user))))
	cfg.Header.Set("Cookie", cookieName+"="+token)
	cfg.Dialer = &net.Dialer{Timeout: 5 * time.Second}
	ws, err := websocket.DialConfig(cfg)
	if err == nil {
		t.Cleanup(func() { ws.Close() })
	}
	return ws, err
}

// wsEcho sends a message over the WebSocket and checks that it comes back.
func wsEcho(t *testing.T, ws *websocket.Conn, msg string) bool {
	t.Helper()
	_ = ws.SetDeadline(time.Now().Add(3 * time.Second))
	if err := websocket.Message.Send(ws, msg); err != nil {
		t.Errorf("sending %q over the WebSocket: %v", msg, err)
		return false
	}
	var got string
	if err := websocket.Message.Receive(ws, &got); err != nil {
		t.Errorf("receiving the echo of %q: %v", msg, err)
		return false
	}
	if got != msg {
		t.Errorf("the WebSocket echoed %q, want %q", got, msg)
		return false
	}
	return true
}

// waitWSClosed reads until the server closes the WebSocket; it returns when, or fails
// the test if the socket is still open at the deadline.
func waitWSClosed(t *testing.T, ws *websocket.Conn, deadline time.Time, what string) time.Time {
	t.Helper()
	_ = ws.SetReadDeadline(deadline)
	for {
		var msg string
		err := websocket.Message.Receive(ws, &msg)
		if err == nil {
			t.Logf("%s: unexpected message %q while waiting for the close", what, msg)
			continue
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Errorf("%s: the WebSocket was still open at the deadline", what)
			return time.Time{}
		}
		return time.Now()
	}
}
