package main

import (
	"math"
	"slices"
	"strings"
	"testing"
	"time"
)

func ms(f float64) time.Duration { return time.Duration(f * float64(time.Millisecond)) }

func TestPercentile(t *testing.T) {
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(i+1) * time.Millisecond
	}
	tests := []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one value, p50", []time.Duration{7}, 50, 7},
		{"one value, p99", []time.Duration{7}, 99, 7},
		{"two values, p50 is the lower", []time.Duration{1, 2}, 50, 1},
		{"two values, p51 is the upper", []time.Duration{1, 2}, 51, 2},
		{"1..100 ms, p50", hundred, 50, 50 * time.Millisecond},
		{"1..100 ms, p99", hundred, 99, 99 * time.Millisecond},
		{"1..100 ms, p100", hundred, 100, 100 * time.Millisecond},
		{"1..100 ms, p99.5 rounds up", hundred, 99.5, 100 * time.Millisecond},
		{"1..100 ms, tiny p is the minimum", hundred, 0.001, 1 * time.Millisecond},
		{"three values, p99", []time.Duration{1, 5, 9}, 99, 9},
		{"three values, p33 is the first", []time.Duration{1, 5, 9}, 33, 1},
		{"three values, p34 is the second", []time.Duration{1, 5, 9}, 34, 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := percentile(tt.sorted, tt.p); got != tt.want {
				t.Errorf("percentile(%v, %v) = %v, want %v", tt.sorted, tt.p, got, tt.want)
			}
		})
	}
}

func TestRatioAndFormats(t *testing.T) {
	tests := []struct {
		name string
		got  string
		want string
	}{
		{"ratio below one", formatRatio(ratio(800, 1000)), "0.80× (-20.0 %)"},
		{"ratio above one", formatRatio(ratio(1500, 1000)), "1.50× (+50.0 %)"},
		{"equal", formatRatio(ratio(1000, 1000)), "1.00× (+0.0 %)"},
		{"zero denominator", formatRatio(ratio(5, 0)), "n/a"},
		{"negative denominator", formatRatio(ratio(5, -1)), "n/a"},
		{"NaN numerator", formatRatio(ratio(math.NaN(), 1)), "n/a"},
		{"sub-millisecond latency", formatLatency(412 * time.Microsecond), "0.412 ms"},
		{"few milliseconds", formatLatency(ms(5.1234)), "5.123 ms"},
		{"tens of milliseconds", formatLatency(ms(12.345)), "12.35 ms"},
		{"hundreds of milliseconds", formatLatency(ms(123.45)), "123.5 ms"},
		{"seconds", formatLatency(2 * time.Second), "2000 ms"},
		{"positive delta", formatDelta(30 * time.Microsecond), "+0.030 ms"},
		{"zero delta", formatDelta(0), "+0.000 ms"},
		{"negative delta", formatDelta(-1500 * time.Microsecond), "-1.500 ms"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Errorf("got %q, want %q", tt.got, tt.want)
			}
		})
	}
}

func TestParseConns(t *testing.T) {
	tests := []struct {
		in      string
		want    []int
		wantErr bool
	}{
		{"1,16,64", []int{1, 16, 64}, false},
		{" 4 , 2 ", []int{4, 2}, false},
		{"8", []int{8}, false},
		{"", nil, true},
		{"0", nil, true},
		{"-3", nil, true},
		{"1,,2", nil, true},
		{"1,x", nil, true},
		{"2,2", nil, true},
		{"5000", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseConns(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("parseConns(%q) error = %v, wantErr %v", tt.in, err, tt.wantErr)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("parseConns(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

// run1s builds a runResult of n requests of lat each, in a 1 s window.
func run1s(key string, round, n int, lat time.Duration, errs map[string]int) runResult {
	lats := make([]time.Duration, n)
	for i := range lats {
		lats[i] = lat
	}
	return runResult{Key: key, Conns: 1, Round: round, Window: time.Second, Latencies: lats, Errors: errs, OK: n, Dials: 1}
}

func cfgByKey(key string) benchConfig {
	for _, c := range configs {
		if c.Key == key {
			return c
		}
	}
	panic("no config " + key)
}

func TestSummarize(t *testing.T) {
	tests := []struct {
		name                 string
		runs                 []runResult
		mean, minRPS, maxRPS float64
		p50, p99             time.Duration
		errors               int
		valid                bool
	}{
		{
			name: "three rounds",
			runs: []runResult{
				run1s("A", 1, 100, time.Millisecond, nil),
				run1s("A", 2, 200, 2*time.Millisecond, nil),
				run1s("A", 3, 300, 3*time.Millisecond, nil),
			},
			mean: 200, minRPS: 100, maxRPS: 300,
			// 600 latencies pooled: 100×1 ms, 200×2 ms, 300×3 ms; the 300th is 2 ms.
			p50: 2 * time.Millisecond, p99: 3 * time.Millisecond,
			valid: true,
		},
		{
			name: "errors make it invalid",
			runs: []runResult{run1s("B", 1, 50, time.Millisecond, map[string]int{"status 502 Bad Gateway": 2})},
			mean: 50, minRPS: 50, maxRPS: 50,
			p50: time.Millisecond, p99: time.Millisecond,
			errors: 2, valid: false,
		},
		{
			name:  "no requests is invalid",
			runs:  []runResult{run1s("C", 1, 0, 0, nil)},
			valid: false,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := summarize(cfgByKey(tt.runs[0].Key), tt.runs)
			if s.MeanRPS != tt.mean || s.MinRPS != tt.minRPS || s.MaxRPS != tt.maxRPS {
				t.Errorf("rps mean/min/max = %v/%v/%v, want %v/%v/%v", s.MeanRPS, s.MinRPS, s.MaxRPS, tt.mean, tt.minRPS, tt.maxRPS)
			}
			if s.P50 != tt.p50 || s.P99 != tt.p99 {
				t.Errorf("p50/p99 = %v/%v, want %v/%v", s.P50, s.P99, tt.p50, tt.p99)
			}
			if s.Errors != tt.errors || s.valid() != tt.valid {
				t.Errorf("errors %d valid %v, want %d %v", s.Errors, s.valid(), tt.errors, tt.valid)
			}
		})
	}
}

func sample(key string, rps float64, p50, p99 time.Duration, errs int) summary {
	return summary{Config: cfgByKey(key), Rounds: 1, MeanRPS: rps, MinRPS: rps, MaxRPS: rps, P50: p50, P99: p99, Requests: int(rps), Errors: errs}
}

func TestCompare(t *testing.T) {
	us := time.Microsecond
	valid := []summary{
		sample("A", 10000, 100*us, 300*us, 0),
		sample("A'", 8000, 120*us, 400*us, 0),
		sample("B", 7200, 130*us, 450*us, 0),
		sample("C", 4000, 250*us, 900*us, 0),
		sample("S", 7500, 125*us, 440*us, 0),
	}
	tests := []struct {
		name string
		rows []summary
		want map[string]string
	}{
		{
			name: "all valid",
			rows: valid,
			want: map[string]string{
				"throughput, gated / plain (B / A)":                     "0.72× (-28.0 %)",
				"throughput, gated / basic_auth-plain (B / A')":         "0.90× (-10.0 %)",
				"throughput, gated / forward_auth (B / C)":              "1.80× (+80.0 %)",
				"throughput, forward_auth / basic_auth-plain (C / A')":  "0.50× (-50.0 %)",
				"added p99, gated − plain (B − A)":                      "+0.150 ms",
				"added p99, gated − basic_auth-plain (B − A')":          "+0.050 ms",
				"added p99, forward_auth − basic_auth-plain (C − A')":   "+0.500 ms",
				"added p50, gated − basic_auth-plain (B − A')":          "+0.010 ms",
				"added p50, forward_auth − basic_auth-plain (C − A')":   "+0.130 ms",
				"throughput, gated / request shape (B / S)":             "0.96× (-4.0 %)",
				"throughput, request shape / basic_auth-plain (S / A')": "0.94× (-6.2 %)",
			},
		},
		{
			name: "errors in B invalidate B's comparisons only",
			rows: []summary{valid[0], valid[1], sample("B", 7200, 130*us, 450*us, 3), valid[3]},
			want: map[string]string{
				"throughput, gated / plain (B / A)":                    "invalid (errors or no requests in B)",
				"throughput, forward_auth / basic_auth-plain (C / A')": "0.50× (-50.0 %)",
				"added p99, gated − basic_auth-plain (B − A')":         "invalid (errors or no requests in B)",
			},
		},
		{
			name: "without A' its comparisons are left out",
			rows: []summary{valid[0], valid[2], valid[3]},
			want: map[string]string{
				"throughput, gated / plain (B / A)":             "0.72× (-28.0 %)",
				"throughput, gated / basic_auth-plain (B / A')": "",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := map[string]string{}
			for _, c := range compare(tt.rows) {
				got[c.Label] = c.Value
			}
			for label, want := range tt.want {
				if got[label] != want {
					t.Errorf("%s = %q, want %q", label, got[label], want)
				}
			}
		})
	}
}

func TestRenderMarkdown(t *testing.T) {
	us := time.Microsecond
	rows := []summary{
		sample("A", 10000, 100*us, 300*us, 0),
		sample("A'", 8000, 120*us, 400*us, 0),
		sample("B", 7200, 130*us, 450*us, 0),
		sample("C", 4000, 250*us, 900*us, 0),
	}
	bad := sample("B", 7000, 130*us, 450*us, 2)
	bad.ErrorDetail = []string{"round 1: 2× status 502 Bad Gateway"}
	base := report{
		Command:    "jitbench -duration 1s -rounds 1 -conns 1",
		WorkDir:    "/work/main",
		Started:    time.Date(2026, 11, 2, 10, 0, 0, 0, time.UTC),
		Machine:    machine{CPUs: 2, OSArch: "linux/amd64", CPUModel: "Test CPU", Go: "go1.27.3"},
		LoadBefore: "1.00", LoadAfter: "2.00",
		Caddy:  "go1.27.3",
		Warmup: time.Second, Duration: time.Second, Rounds: 1,
		Configs: configs,
		Audit:   "B's audit log holds 5 `access` events for 5 successful gated requests (warm-up included).",
	}
	tests := []struct {
		name    string
		tables  []connTable
		want    []string
		notWant []string
	}{
		{
			name:   "valid",
			tables: []connTable{newConnTable(1, rows)},
			want: []string{
				"Command: `jitbench -duration 1s -rounds 1 -conns 1` in `/work/main`, started 2026-11-02 10:00:00 UTC.",
				"| machine | 2 CPUs, linux/amd64, Test CPU |",
				"(A, A', S, B, C, A, A', S, B, C, …)",
				"- **B jit**: basic_auth + jit + reverse_proxy",
				"## 1 connection\n",
				"| config | requests/s (mean) | min–max over rounds | p50 | p99 | requests | errors | Caddy CPU per request | jitbench CPU per request |",
				"| A plain | 10000 | 10000–10000 | 0.100 ms | 0.300 ms | 10000 | 0 | n/a | n/a |",
				"CPU per request is the CPU time",
				"| B jit | 7200 | 7200–7200 | 0.130 ms | 0.450 ms | 7200 | 0 |",
				"| throughput, gated / basic_auth-plain (B / A') | 0.90× (-10.0 %) |",
				"| added p99, gated − plain (B − A) | +0.150 ms |",
				"through the batched audit output",
				"B's audit log holds 5 `access` events",
			},
			notWant: []string{"INVALID", "invalid"},
		},
		{
			name:   "errors",
			tables: []connTable{newConnTable(16, []summary{rows[0], rows[1], bad, rows[3]})},
			want: []string{
				"## 16 connections",
				"| B jit | 7000 | 7000–7000 | 0.130 ms | 0.450 ms | 7000 | 2 **INVALID** |",
				"- B jit, round 1: 2× status 502 Bad Gateway",
				"| throughput, gated / plain (B / A) | invalid (errors or no requests in B) |",
				"Some runs had errors",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := base
			r.Tables = tt.tables
			md := renderMarkdown(r)
			for _, w := range tt.want {
				if !strings.Contains(md, w) {
					t.Errorf("the Markdown lacks %q:\n%s", w, md)
				}
			}
			for _, w := range tt.notWant {
				if strings.Contains(md, w) {
					t.Errorf("the Markdown has %q:\n%s", w, md)
				}
			}
			if md != renderMarkdown(r) {
				t.Error("rendering twice gave different Markdown")
			}
		})
	}
}

func TestCPUModel(t *testing.T) {
	tests := []struct {
		name, cpuinfo, want string
	}{
		{"x86", "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) CPU @ 2.20GHz\nprocessor\t: 1\nmodel name\t: other\n", "Intel(R) Xeon(R) CPU @ 2.20GHz"},
		{"arm with Hardware", "processor\t: 0\nBogoMIPS\t: 48.00\nHardware\t: BCM2835\nModel\t: Raspberry Pi 4\n", "BCM2835"},
		{"arm with Model only", "processor\t: 0\nModel\t: Raspberry Pi 4\n", "Raspberry Pi 4"},
		{"nothing", "", "unknown"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := cpuModel(tt.cpuinfo); got != tt.want {
				t.Errorf("cpuModel = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestShellQuote(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"jitbench", "-duration", "1s", "-conns", "1,16"}, "jitbench -duration 1s -conns 1,16"},
		{[]string{"jitbench", "-out", "my report.md"}, "jitbench -out 'my report.md'"},
		{[]string{"jitbench", "-caddy", "it's"}, `jitbench -caddy 'it'\''s'`},
		{[]string{"jitbench", ""}, "jitbench ''"},
	}
	for _, tt := range tests {
		if got := shellQuote(tt.args); got != tt.want {
			t.Errorf("shellQuote(%q) = %q, want %q", tt.args, got, tt.want)
		}
	}
}
