package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

// profileCapture is a CPU profile being taken from a Caddy's admin endpoint
// (/debug/pprof/profile) while the load runs.
type profileCapture struct {
	done chan error
}

// startProfile waits out the warm-up, then asks Caddy for a CPU profile covering the
// measured window and writes it to path.
func startProfile(ctx context.Context, adminURL, path string, warm, window time.Duration) *profileCapture {
	p := &profileCapture{done: make(chan error, 1)}
	go func() {
		p.done <- captureProfile(ctx, adminURL, path, warm, window)
	}()
	return p
}

func (p *profileCapture) wait() error { return <-p.done }

func captureProfile(ctx context.Context, adminURL, path string, warm, window time.Duration) error {
	select {
	case <-time.After(warm):
	case <-ctx.Done():
		return ctx.Err()
	}
	seconds := max(1, int(window/time.Second))
	url := fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", adminURL, seconds)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Transport: &http.Transport{Proxy: nil}}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, msg)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
