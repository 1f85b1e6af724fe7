package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// target is what one config's load requests look like.
type target struct {
	URL    string
	Header http.Header
	// BodySize is the body every answer must have.
	BodySize int64
}

// runResult is one run: one config at one connection count for one round.
type runResult struct {
	Key   string
	Conns int
	Round int
	// Window is the measured time (after the warm-up).
	Window time.Duration
	// Latencies are those of the successful requests that started in the window, sorted.
	Latencies []time.Duration
	// Errors counts every failed request, warm-up included, by what went wrong.
	Errors map[string]int
	// OK counts every successful request, warm-up included.
	OK int
	// Dials counts the connections opened; more than Conns means some were re-dialled.
	Dials int64
	// CaddyCPU and BenchCPU are the CPU time Caddy and jitbench (load generator,
	// upstream, forward_auth endpoint) used during the whole run, warm-up included,
	// where CPUKnown; a run with a CPU profile being taken is not counted.
	CaddyCPU, BenchCPU time.Duration
	CPUKnown           bool
}

func (r runResult) errorCount() int {
	n := 0
	for _, c := range r.Errors {
		n += c
	}
	return n
}

func (r runResult) rps() float64 {
	if r.Window <= 0 {
		return 0
	}
	return float64(len(r.Latencies)) / r.Window.Seconds()
}

// runLoad drives t with conns goroutines, each on a keep-alive connection of its own,
// sending GETs back to back for warm + window; requests started during warm are not
// measured.
func runLoad(ctx context.Context, t target, conns int, warm, window time.Duration) runResult {
	start := time.Now()
	measureFrom := start.Add(warm)
	end := measureFrom.Add(window)
	// A request hanging past the end is cut off 10 s later and counted as an error.
	ctx, cancel := context.WithDeadline(ctx, end.Add(10*time.Second))
	defer cancel()
	var dials atomic.Int64
	results := make([]workerResult, conns)
	var wg sync.WaitGroup
	for i := range conns {
		wg.Go(func() { results[i] = work(ctx, t, measureFrom, end, &dials) })
	}
	wg.Wait()
	r := runResult{Conns: conns, Window: window, Errors: map[string]int{}, Dials: dials.Load()}
	for _, w := range results {
		r.Latencies = append(r.Latencies, w.latencies...)
		r.OK += w.ok
		for k, v := range w.errors {
			r.Errors[k] += v
		}
	}
	slices.Sort(r.Latencies)
	return r
}

type workerResult struct {
	latencies []time.Duration
	ok        int
	errors    map[string]int
}

// work is one load goroutine: its own Transport, limited to a single connection.
func work(ctx context.Context, t target, measureFrom, end time.Time, dials *atomic.Int64) workerResult {
	tr := newTransport(dials)
	defer tr.CloseIdleConnections()
	client := newClient(tr)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.URL, nil)
	if err != nil {
		return workerResult{errors: map[string]int{err.Error(): 1}}
	}
	req.Header = t.Header.Clone()
	w := workerResult{errors: map[string]int{}}
	for {
		t0 := time.Now()
		if !t0.Before(end) || ctx.Err() != nil {
			return w
		}
		problem := doOne(client, req, t.BodySize)
		lat := time.Since(t0)
		if problem != "" {
			w.errors[problem]++
			if ctx.Err() != nil {
				return w
			}
			continue
		}
		w.ok++
		if !t0.Before(measureFrom) {
			w.latencies = append(w.latencies, lat)
		}
	}
}

// doOne sends req and reads the whole answer; it returns what was wrong, or "".
func doOne(client *http.Client, req *http.Request, bodySize int64) string {
	resp, err := client.Do(req)
	if err != nil {
		// Transport errors are rare here and their text names the cause; don't spin.
		time.Sleep(10 * time.Millisecond)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return "timeout"
		}
		return "transport error: " + err.Error()
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	switch {
	case resp.StatusCode != http.StatusOK:
		return "status " + resp.Status
	case err != nil:
		return "reading the body: " + err.Error()
	case n != bodySize:
		return fmt.Sprintf("body of %d bytes, want %d", n, bodySize)
	}
	return ""
}

// newTransport is a load connection: one keep-alive connection, counted in dials when
// it is opened.
func newTransport(dials *atomic.Int64) *http.Transport {
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	return &http.Transport{
		Proxy: nil, // loopback only, whatever the environment says
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dials.Add(1)
			return dialer.DialContext(ctx, network, addr)
		},
		MaxConnsPerHost:     1,
		MaxIdleConns:        1,
		MaxIdleConnsPerHost: 1,
		IdleConnTimeout:     time.Minute,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
	}
}

// newClient sends over tr and does not follow redirects: a redirect is an answer to
// count, not to chase.
func newClient(tr *http.Transport) *http.Client {
	return &http.Client{
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}
