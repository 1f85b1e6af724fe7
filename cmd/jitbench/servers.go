package main

import (
	"bytes"
	"errors"
	"net"
	"net/http"
	"strconv"
	"time"
)

// upstreamBodySize is the size of the upstream's fixed answer.
const upstreamBodySize = 1024

// localServer is an HTTP server of jitbench's own on a loopback port.
type localServer struct {
	srv  *http.Server
	addr string
}

func startLocalServer(h http.Handler) (*localServer, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &localServer{
		srv:  &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute},
		addr: l.Addr().String(),
	}
	go func() {
		if err := s.srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logf("server on %s: %v", s.addr, err)
		}
	}()
	return s, nil
}

func (s *localServer) Close() error { return s.srv.Close() }

// upstreamHandler answers every request 200 with the same 1 KiB body.
func upstreamHandler() http.Handler {
	line := []byte("jitbench upstream body, 1 KiB.\n")
	body := bytes.Repeat(line, upstreamBodySize/len(line)+1)[:upstreamBodySize]
	size := strconv.Itoa(len(body))
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		h := w.Header()
		h["Content-Type"] = []string{"text/plain; charset=utf-8"}
		h["Content-Length"] = []string{size}
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(body)
	})
}

// authCookie is the cookie the forward_auth endpoint checks.
const authCookie = "bench_auth"

// authHandler is a minimal forward_auth endpoint, the way Authelia or oauth2-proxy
// sit behind Caddy: it looks the cookie up in a map fixed at start and answers 200
// with Remote-User, or 401. The map is never written after start, so concurrent reads
// need no lock.
func authHandler(sessions map[string]string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := r.Cookie(authCookie)
		if err == nil {
			if user, ok := sessions[c.Value]; ok {
				w.Header().Set("Remote-User", user)
				w.WriteHeader(http.StatusOK)
				return
			}
		}
		w.WriteHeader(http.StatusUnauthorized)
	})
}
