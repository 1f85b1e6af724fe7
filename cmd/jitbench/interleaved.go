package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"time"
)

// The interleaved run measures latency at one connection the way a difference of a
// few tens of microseconds can be seen on a shared machine: one client sends one
// request to each config in turn, in a new random order every time, so that every
// config meets the same moments of the machine's noise. Runs one after the other
// (the load tables) each meet their own moments, and on this machine their p99s move
// by more between runs than the gate adds.

// interleavedKeys are the configs of the interleaved run, and interleavedPairs what
// it compares: the gate with its request shape, caddy-jit's code, the shape alone.
var (
	interleavedKeys  = []string{"A'", "S", "B"}
	interleavedPairs = [][2]string{{"B", "A'"}, {"B", "S"}, {"S", "A'"}}
)

// interleavedBlocks is how many equal parts of the window the added p99 is also
// worked out for, to show how far it moves within one run.
const interleavedBlocks = 5

// timedSample is one measured request of an interleaved run.
type timedSample struct {
	// At is when the request started, from the start of the measured window.
	At      time.Duration
	Latency time.Duration
}

// interleavedResult is one interleaved run over several configs.
type interleavedResult struct {
	Keys   []string
	Window time.Duration
	// Samples holds each config's measured requests, in the order sent.
	Samples map[string][]timedSample
	// Errors counts every failed request, warm-up included, by config and then by
	// what went wrong.
	Errors map[string]map[string]int
	// OK counts each config's successful requests, warm-up included.
	OK map[string]int
	// Orders counts the orders the configs were sent in (keys joined by " "), warm-up
	// included: every order should show up about as often as every other.
	Orders map[string]int
}

// runInterleaved sends, for warm + window, one request to each target in a random
// order, again and again, each target over a keep-alive connection of its own; the
// requests of an iteration that started during warm are not measured.
func runInterleaved(ctx context.Context, targets map[string]target, keys []string, warm, window time.Duration) (interleavedResult, error) {
	r := interleavedResult{Keys: keys, Window: window, Samples: map[string][]timedSample{}, Errors: map[string]map[string]int{}, OK: map[string]int{}, Orders: map[string]int{}}
	clients := map[string]*http.Client{}
	reqs := map[string]*http.Request{}
	start := time.Now()
	measureFrom := start.Add(warm)
	end := measureFrom.Add(window)
	ctx, cancel := context.WithDeadline(ctx, end.Add(10*time.Second))
	defer cancel()
	var dials atomic.Int64
	for _, k := range keys {
		t, ok := targets[k]
		if !ok {
			return r, fmt.Errorf("interleaved run: no target for config %s", k)
		}
		tr := newTransport(&dials)
		defer tr.CloseIdleConnections()
		clients[k] = newClient(tr)
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.URL, nil)
		if err != nil {
			return r, err
		}
		req.Header = t.Header.Clone()
		reqs[k] = req
		r.Errors[k] = map[string]int{}
	}
	order := slices.Clone(keys)
	for {
		t0 := time.Now()
		if !t0.Before(end) || ctx.Err() != nil {
			return r, nil
		}
		rand.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		r.Orders[strings.Join(order, " ")]++
		for _, k := range order {
			sent := time.Now()
			problem := doOne(clients[k], reqs[k], targets[k].BodySize)
			lat := time.Since(sent)
			if problem != "" {
				r.Errors[k][problem]++
				continue
			}
			r.OK[k]++
			if !t0.Before(measureFrom) {
				r.Samples[k] = append(r.Samples[k], timedSample{At: sent.Sub(measureFrom), Latency: lat})
			}
		}
	}
}

// latencies returns the sorted latencies of the samples that started in [from, to).
func latencies(samples []timedSample, from, to time.Duration) []time.Duration {
	var out []time.Duration
	for _, s := range samples {
		if s.At >= from && s.At < to {
			out = append(out, s.Latency)
		}
	}
	slices.Sort(out)
	return out
}

// interleavedRow is one config's latency in an interleaved run.
type interleavedRow struct {
	Key                  string
	Requests, Errors     int
	P50, P90, P99, P9999 time.Duration
}

// addedLatency is num's latency minus den's, from one interleaved run.
type addedLatency struct {
	Num, Den string
	P50, P99 time.Duration
	// BlockP99 is the added p99 in each of interleavedBlocks equal parts of the
	// window, in time order.
	BlockP99 []time.Duration
}

// summarizeInterleaved works out each config's percentiles and, for each pair, what
// num adds to den.
func summarizeInterleaved(r interleavedResult, pairs [][2]string) ([]interleavedRow, []addedLatency) {
	var rows []interleavedRow
	for _, k := range r.Keys {
		l := latencies(r.Samples[k], 0, r.Window+time.Hour)
		errs := 0
		for _, n := range r.Errors[k] {
			errs += n
		}
		rows = append(rows, interleavedRow{Key: k, Requests: len(l), Errors: errs,
			P50: percentile(l, 50), P90: percentile(l, 90), P99: percentile(l, 99), P9999: percentile(l, 99.9)})
	}
	var added []addedLatency
	for _, p := range pairs {
		num, okNum := r.Samples[p[0]]
		den, okDen := r.Samples[p[1]]
		if !okNum || !okDen {
			continue
		}
		all := r.Window + time.Hour
		a := addedLatency{Num: p[0], Den: p[1],
			P50: percentile(latencies(num, 0, all), 50) - percentile(latencies(den, 0, all), 50),
			P99: percentile(latencies(num, 0, all), 99) - percentile(latencies(den, 0, all), 99)}
		block := r.Window / interleavedBlocks
		for i := range interleavedBlocks {
			from, to := time.Duration(i)*block, time.Duration(i+1)*block
			if i == interleavedBlocks-1 {
				to = all // a request may start a moment after the window's end
			}
			a.BlockP99 = append(a.BlockP99, percentile(latencies(num, from, to), 99)-percentile(latencies(den, from, to), 99))
		}
		added = append(added, a)
	}
	return rows, added
}
