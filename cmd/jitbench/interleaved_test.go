package main

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestRunInterleaved drives three real local servers: a fast one, one that waits 2 ms
// before answering, and one that always fails.
func TestRunInterleaved(t *testing.T) {
	const delay = 2 * time.Millisecond
	fast, err := startLocalServer(upstreamHandler())
	if err != nil {
		t.Fatal(err)
	}
	defer fast.Close()
	up := upstreamHandler()
	slow, err := startLocalServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(delay)
		up.ServeHTTP(w, r)
	}))
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	failing, err := startLocalServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no", http.StatusBadGateway)
	}))
	if err != nil {
		t.Fatal(err)
	}
	defer failing.Close()
	header := http.Header{"User-Agent": {"jitbench-test"}}
	targets := map[string]target{
		"fast":    {URL: "http://" + fast.addr + "/", Header: header, BodySize: upstreamBodySize},
		"slow":    {URL: "http://" + slow.addr + "/", Header: header, BodySize: upstreamBodySize},
		"failing": {URL: "http://" + failing.addr + "/", Header: header, BodySize: upstreamBodySize},
	}

	r, err := runInterleaved(context.Background(), targets, []string{"fast", "slow", "failing"}, 100*time.Millisecond, 400*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	iterations := 0
	for _, n := range r.Orders {
		iterations += n
	}
	if iterations < 20 {
		t.Fatalf("only %d iterations in 0.5 s", iterations)
	}
	// Every iteration sends one request to each target.
	if r.OK["fast"] != iterations || r.OK["slow"] != iterations || r.OK["failing"] != 0 {
		t.Errorf("OK = %v after %d iterations; want fast and slow each %d, failing 0", r.OK, iterations, iterations)
	}
	if got := r.Errors["failing"]["status 502 Bad Gateway"]; got != iterations {
		t.Errorf("failing's errors = %v, want %d× status 502", r.Errors["failing"], iterations)
	}
	if len(r.Errors["fast"])+len(r.Errors["slow"]) != 0 {
		t.Errorf("errors on the answering servers: %v", r.Errors)
	}
	// Measured: the same iterations for both, fewer than all (the warm-up is not).
	if n := len(r.Samples["fast"]); n == 0 || n != len(r.Samples["slow"]) || n >= iterations {
		t.Errorf("measured %d fast and %d slow requests of %d iterations", n, len(r.Samples["slow"]), iterations)
	}
	if len(r.Samples["failing"]) != 0 {
		t.Errorf("failed requests were measured: %d", len(r.Samples["failing"]))
	}
	for _, s := range r.Samples["slow"] {
		if s.Latency < delay {
			t.Fatalf("a request to the server that waits %s took %s", delay, s.Latency)
		}
	}
	// Shuffled: with three targets, the first place went to each of the two that
	// answer at some point (the chance of missing one in 20 iterations is (2/3)^20).
	firsts := map[string]int{}
	for order, n := range r.Orders {
		if strings.Count(order, " ") != 2 {
			t.Errorf("order %q does not name three targets", order)
		}
		firsts[strings.Fields(order)[0]] += n
	}
	if firsts["fast"] == 0 || firsts["slow"] == 0 {
		t.Errorf("orders %v: the order is not shuffled", r.Orders)
	}

	rows, added := summarizeInterleaved(r, [][2]string{{"slow", "fast"}, {"slow", "nothing"}})
	if len(rows) != 3 || rows[1].Key != "slow" || rows[1].P50 < delay || rows[2].Errors != iterations {
		t.Errorf("rows = %+v", rows)
	}
	if len(added) != 1 || added[0].Num != "slow" || len(added[0].BlockP99) != interleavedBlocks {
		t.Fatalf("added = %+v; want slow − fast only, with %d blocks", added, interleavedBlocks)
	}

	_, err = runInterleaved(context.Background(), targets, []string{"fast", "elsewhere"}, 0, time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "no target for config elsewhere") {
		t.Errorf("a config without a target: err = %v", err)
	}
}

func TestSummarizeInterleaved(t *testing.T) {
	us := time.Microsecond
	// Ten seconds, one request per config per 100 ms: 100 each. A' answers in 100 µs;
	// B in 130 µs, except one request in every fifth of the window that takes 1 ms
	// more than that fifth's number (1..5).
	r := interleavedResult{Keys: []string{"A'", "B"}, Window: 10 * time.Second, Samples: map[string][]timedSample{}, Errors: map[string]map[string]int{"A'": {}, "B": {"timeout": 2}}}
	for i := range 100 {
		at := time.Duration(i) * 100 * time.Millisecond
		r.Samples["A'"] = append(r.Samples["A'"], timedSample{At: at, Latency: 100 * us})
		lat := 130 * us
		if i%20 == 7 {
			lat = time.Duration(i/20+1) * time.Millisecond
		}
		r.Samples["B"] = append(r.Samples["B"], timedSample{At: at, Latency: lat})
	}
	// A request that started just after the window's end belongs to the last fifth.
	r.Samples["A'"] = append(r.Samples["A'"], timedSample{At: r.Window + us, Latency: 100 * us})
	r.Samples["B"] = append(r.Samples["B"], timedSample{At: r.Window + us, Latency: 130 * us})

	rows, added := summarizeInterleaved(r, [][2]string{{"B", "A'"}})
	want := []interleavedRow{
		{Key: "A'", Requests: 101, P50: 100 * us, P90: 100 * us, P99: 100 * us, P9999: 100 * us},
		// Of 101, p99 is the 100th: the second largest of the five slow ones (4 ms).
		{Key: "B", Requests: 101, Errors: 2, P50: 130 * us, P90: 130 * us, P99: 4 * time.Millisecond, P9999: 5 * time.Millisecond},
	}
	for i := range want {
		if rows[i] != want[i] {
			t.Errorf("row %d = %+v, want %+v", i, rows[i], want[i])
		}
	}
	if len(added) != 1 {
		t.Fatalf("added = %+v", added)
	}
	a := added[0]
	if a.P50 != 30*us || a.P99 != 4*time.Millisecond-100*us {
		t.Errorf("added p50/p99 = %v/%v, want 30µs/3.9ms", a.P50, a.P99)
	}
	// Each fifth has 20 requests (21 in the last), so its p99 is its slow request.
	for i, got := range a.BlockP99 {
		if want := time.Duration(i+1)*time.Millisecond - 100*us; got != want {
			t.Errorf("fifth %d: added p99 %v, want %v", i+1, got, want)
		}
	}
}

func TestRenderInterleaved(t *testing.T) {
	us := time.Microsecond
	r := report{Configs: configs, Interleaved: &interleavedReport{
		Window: 10 * time.Second,
		Rows: []interleavedRow{
			{Key: "A'", Requests: 9000, P50: 300 * us, P90: 400 * us, P99: 700 * us, P9999: 2 * time.Millisecond},
			{Key: "B", Requests: 9000, Errors: 1, P50: 320 * us, P90: 430 * us, P99: 740 * us, P9999: 2 * time.Millisecond},
		},
		Added:  []addedLatency{{Num: "B", Den: "A'", P50: 20 * us, P99: 40 * us, BlockP99: []time.Duration{30 * us, -10 * us, 40 * us, 50 * us, 45 * us}}},
		Orders: map[string]int{"A' B": 4600, "B A'": 4401},
	}}
	md := renderMarkdown(r)
	for _, w := range []string{
		"## 1 connection, interleaved\n",
		"for 10s after a 1s warm-up",
		"| A' | 9000 | 0 | 0.300 ms | 0.400 ms | 0.700 ms | 2.000 ms |",
		"| B | 9000 | 1 **INVALID** | 0.320 ms |",
		"| B − A' | +0.020 ms | +0.040 ms | +0.030 ms, -0.010 ms, +0.040 ms, +0.050 ms, +0.045 ms |",
		"Orders sent (warm-up included): A' B: 4600; B A': 4401.",
	} {
		if !strings.Contains(md, w) {
			t.Errorf("the Markdown lacks %q:\n%s", w, md)
		}
	}
	r.Interleaved = nil
	if strings.Contains(renderMarkdown(r), "interleaved") {
		t.Error("a report without an interleaved run has its section")
	}
}
