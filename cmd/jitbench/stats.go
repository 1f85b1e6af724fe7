package main

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"time"
)

// percentile returns the nearest-rank p-th percentile (0 < p ≤ 100) of sorted
// latencies: the smallest value with at least p % of the values at or below it.
// It returns 0 for no values.
func percentile(sorted []time.Duration, p float64) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(n)))
	rank = min(max(rank, 1), n)
	return sorted[rank-1]
}

// summary is one config at one connection count, over all its rounds.
type summary struct {
	Config benchConfig
	Rounds int
	// Requests/s per round: mean, min and max.
	MeanRPS, MinRPS, MaxRPS float64
	// P50 and P99 are over the measured requests of all rounds together.
	P50, P99 time.Duration
	Requests int
	Errors   int
	// ErrorDetail says, round by round, what went wrong.
	ErrorDetail []string
	// Redials counts connections opened beyond one per goroutine, over all rounds.
	Redials int64
	// RoundRPS is the requests/s of each round, in order.
	RoundRPS []float64
	// CaddyCPU and BenchCPU are the CPU time per request (warm-up included) of Caddy
	// and of jitbench, over the rounds whose CPU time is known; 0 where none is.
	CaddyCPU, BenchCPU time.Duration
}

func (s summary) valid() bool { return s.Errors == 0 && s.Requests > 0 }

func summarize(cfg benchConfig, runs []runResult) summary {
	s := summary{Config: cfg, Rounds: len(runs)}
	if len(runs) == 0 {
		return s
	}
	var all []time.Duration
	var caddyCPU, benchCPU time.Duration
	cpuRequests := 0
	s.MinRPS = math.Inf(1)
	for _, r := range runs {
		rps := r.rps()
		s.RoundRPS = append(s.RoundRPS, rps)
		if r.CPUKnown {
			caddyCPU += r.CaddyCPU
			benchCPU += r.BenchCPU
			cpuRequests += r.OK + r.errorCount()
		}
		s.MeanRPS += rps / float64(len(runs))
		s.MinRPS = min(s.MinRPS, rps)
		s.MaxRPS = max(s.MaxRPS, rps)
		all = append(all, r.Latencies...)
		s.Requests += len(r.Latencies)
		s.Errors += r.errorCount()
		s.Redials += max(r.Dials-int64(r.Conns), 0)
		if len(r.Errors) > 0 {
			var parts []string
			for _, k := range sortedKeys(r.Errors) {
				parts = append(parts, fmt.Sprintf("%d× %s", r.Errors[k], k))
			}
			s.ErrorDetail = append(s.ErrorDetail, fmt.Sprintf("round %d: %s", r.Round, strings.Join(parts, "; ")))
		}
	}
	if cpuRequests > 0 {
		s.CaddyCPU = caddyCPU / time.Duration(cpuRequests)
		s.BenchCPU = benchCPU / time.Duration(cpuRequests)
	}
	slices.Sort(all)
	s.P50 = percentile(all, 50)
	s.P99 = percentile(all, 99)
	return s
}

// sortedKeys returns m's keys, most frequent first.
func sortedKeys(m map[string]int) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if m[keys[i]] != m[keys[j]] {
			return m[keys[i]] > m[keys[j]]
		}
		return keys[i] < keys[j]
	})
	return keys
}

// comparisonSpec is one line of the comparison table: A over B's throughput, or A's
// latency minus B's.
type comparisonSpec struct {
	Label string
	Num   string // config key
	Den   string // config key
	// Metric is "rps" (a ratio of the means), "rps-paired" (the median of the
	// round-by-round ratios), "p50" or "p99" (a difference), "cpu" (Caddy's CPU per
	// request, a difference) or "all-cpu" (Caddy's and jitbench's together).
	Metric string
}

var comparisonSpecs = []comparisonSpec{
	{"throughput, gated / plain", "B", "A", "rps"},
	{"throughput, gated / basic_auth-plain", "B", "A'", "rps"},
	{"throughput, gated / basic_auth-plain, median of the round-by-round ratios", "B", "A'", "rps-paired"},
	{"Caddy's CPU per request, gated − basic_auth-plain", "B", "A'", "cpu"},
	{"CPU per request of Caddy and jitbench (client, upstream), gated − basic_auth-plain", "B", "A'", "all-cpu"},
	{"throughput, gated / request shape", "B", "S", "rps"},
	{"Caddy's CPU per request, gated − request shape", "B", "S", "cpu"},
	{"throughput, request shape / basic_auth-plain", "S", "A'", "rps"},
	{"throughput, gated / forward_auth", "B", "C", "rps"},
	{"throughput, forward_auth / basic_auth-plain", "C", "A'", "rps"},
	{"added p99, gated − plain", "B", "A", "p99"},
	{"added p99, gated − basic_auth-plain", "B", "A'", "p99"},
	{"added p99, forward_auth − basic_auth-plain", "C", "A'", "p99"},
	{"added p50, gated − basic_auth-plain", "B", "A'", "p50"},
	{"added p50, forward_auth − basic_auth-plain", "C", "A'", "p50"},
}

type comparison struct {
	Label string // with the keys, e.g. "throughput, gated / plain (B / A)"
	Value string
}

// compare works out comparisonSpecs over the summaries of one connection count. A
// comparison that involves an invalid run says so instead of a number; one that
// names a config not measured is left out.
func compare(rows []summary) []comparison {
	byKey := map[string]summary{}
	for _, s := range rows {
		byKey[s.Config.Key] = s
	}
	var out []comparison
	for _, c := range comparisonSpecs {
		num, ok1 := byKey[c.Num]
		den, ok2 := byKey[c.Den]
		if !ok1 || !ok2 {
			continue
		}
		op := "−"
		if strings.HasPrefix(c.Metric, "rps") {
			op = "/"
		}
		cmp := comparison{Label: fmt.Sprintf("%s (%s %s %s)", c.Label, c.Num, op, c.Den)}
		switch {
		case !num.valid() || !den.valid():
			var bad []string
			for _, s := range []summary{num, den} {
				if !s.valid() {
					bad = append(bad, s.Config.Key)
				}
			}
			cmp.Value = "invalid (errors or no requests in " + strings.Join(bad, ", ") + ")"
		case c.Metric == "rps":
			cmp.Value = formatRatio(ratio(num.MeanRPS, den.MeanRPS))
		case c.Metric == "rps-paired":
			cmp.Value = formatRatio(medianRatio(num.RoundRPS, den.RoundRPS))
		case c.Metric == "cpu":
			cmp.Value = formatCPUDelta(num.CaddyCPU, den.CaddyCPU)
		case c.Metric == "all-cpu":
			cmp.Value = formatCPUDelta(num.CaddyCPU+num.BenchCPU, den.CaddyCPU+den.BenchCPU)
		case c.Metric == "p50":
			cmp.Value = formatDelta(num.P50 - den.P50)
		default:
			cmp.Value = formatDelta(num.P99 - den.P99)
		}
		out = append(out, cmp)
	}
	return out
}

// medianRatio returns the median of a[i]/b[i] over the rounds both have: each round's
// configs ran one after the other, so a pair shares most of what the machine was doing.
func medianRatio(a, b []float64) float64 {
	var rs []float64
	for i := range min(len(a), len(b)) {
		if r := ratio(a[i], b[i]); !math.IsNaN(r) {
			rs = append(rs, r)
		}
	}
	if len(rs) == 0 {
		return math.NaN()
	}
	slices.Sort(rs)
	if n := len(rs); n%2 == 0 {
		return (rs[n/2-1] + rs[n/2]) / 2
	}
	return rs[len(rs)/2]
}

// formatCPUDelta prints num − den, CPU per request, and how much that is of den; n/a
// where either is unknown.
func formatCPUDelta(num, den time.Duration) string {
	if num <= 0 || den <= 0 {
		return "n/a"
	}
	return fmt.Sprintf("%+.1f µs (%+.1f %%)", float64(num-den)/float64(time.Microsecond), (float64(num)/float64(den)-1)*100)
}

// formatCPU prints a CPU time per request in microseconds, or n/a.
func formatCPU(d time.Duration) string {
	if d <= 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond))
}

// ratio returns a/b, or NaN when b is not positive.
func ratio(a, b float64) float64 {
	if b <= 0 || math.IsNaN(a) || math.IsNaN(b) {
		return math.NaN()
	}
	return a / b
}

func formatRatio(r float64) string {
	if math.IsNaN(r) || math.IsInf(r, 0) {
		return "n/a"
	}
	return fmt.Sprintf("%.2f× (%+.1f %%)", r, (r-1)*100)
}

// formatLatency prints d in milliseconds: to the microsecond below 10 ms, with three
// significant digits above.
func formatLatency(d time.Duration) string {
	ms := float64(d) / float64(time.Millisecond)
	a := math.Abs(ms)
	switch {
	case a < 10:
		return fmt.Sprintf("%.3f ms", ms)
	case a < 100:
		return fmt.Sprintf("%.2f ms", ms)
	case a < 1000:
		return fmt.Sprintf("%.1f ms", ms)
	default:
		return fmt.Sprintf("%.0f ms", ms)
	}
}

func formatDelta(d time.Duration) string {
	if d >= 0 {
		return "+" + formatLatency(d)
	}
	return formatLatency(d)
}
