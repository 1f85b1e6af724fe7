package main

import (
	"crypto/sha256"
	"math"
	"os"
	"runtime"
	"testing"
	"time"
)

func TestProcessCPU(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("CPU times come from /proc")
	}
	m := startCPU(os.Getpid())
	// Burn about 200 ms of CPU: both clocks must see it, /proc in 10 ms ticks.
	sum := sha256.Sum256(nil)
	for start := time.Now(); time.Since(start) < 200*time.Millisecond; {
		sum = sha256.Sum256(sum[:])
	}
	caddy, self, ok := m.stop()
	if !ok {
		t.Fatal("the CPU times of this process could not be read")
	}
	if caddy < 100*time.Millisecond || self < 100*time.Millisecond {
		t.Errorf("200 ms of work measured as %s by /proc and %s by getrusage", caddy, self)
	}
	if d := caddy - self; d > 50*time.Millisecond || d < -50*time.Millisecond {
		t.Errorf("/proc says %s and getrusage %s for the same process", caddy, self)
	}
	if _, err := processCPU(-1); err == nil {
		t.Error("processCPU(-1) did not fail")
	}
}

func TestMedianRatio(t *testing.T) {
	for _, tt := range []struct {
		name string
		a, b []float64
		want float64
	}{
		{"odd", []float64{90, 80, 100}, []float64{100, 100, 100}, 0.9},
		{"even", []float64{90, 80, 100, 70}, []float64{100, 100, 100, 100}, 0.85},
		{"paired, not of the means", []float64{50, 200}, []float64{100, 100}, 1.25},
		{"a round without a baseline is skipped", []float64{90, 10}, []float64{100, 0}, 0.9},
		{"shorter b", []float64{90, 10}, []float64{100}, 0.9},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := medianRatio(tt.a, tt.b); math.Abs(got-tt.want) > 1e-9 {
				t.Errorf("medianRatio = %v, want %v", got, tt.want)
			}
		})
	}
	if !math.IsNaN(medianRatio(nil, []float64{1})) {
		t.Error("no rounds: want NaN")
	}
}

func TestCPUPerRequest(t *testing.T) {
	runs := []runResult{run1s("B", 1, 100, time.Millisecond, nil), run1s("B", 2, 300, time.Millisecond, nil), run1s("B", 3, 50, time.Millisecond, nil)}
	runs[0].CaddyCPU, runs[0].BenchCPU, runs[0].CPUKnown = 10*time.Millisecond, 4*time.Millisecond, true
	runs[1].CaddyCPU, runs[1].BenchCPU, runs[1].CPUKnown = 30*time.Millisecond, 12*time.Millisecond, true
	runs[2].CaddyCPU = time.Hour // a profiled round: not counted
	s := summarize(cfgByKey("B"), runs)
	if s.CaddyCPU != 100*time.Microsecond || s.BenchCPU != 40*time.Microsecond {
		t.Errorf("CPU per request: Caddy %s, jitbench %s; want 100µs and 40µs", s.CaddyCPU, s.BenchCPU)
	}
	if len(s.RoundRPS) != 3 || s.RoundRPS[1] != 300 {
		t.Errorf("RoundRPS = %v", s.RoundRPS)
	}
	a := summarize(cfgByKey("A'"), []runResult{run1s("A'", 1, 100, time.Millisecond, nil)})
	if a.CaddyCPU != 0 || formatCPU(a.CaddyCPU) != "n/a" {
		t.Errorf("no CPU time known: got %s (%s)", a.CaddyCPU, formatCPU(a.CaddyCPU))
	}
	got := map[string]string{}
	a.CaddyCPU, a.BenchCPU = 80*time.Microsecond, 40*time.Microsecond
	for _, c := range compare([]summary{a, s}) {
		got[c.Label] = c.Value
	}
	for label, want := range map[string]string{
		"Caddy's CPU per request, gated − basic_auth-plain (B − A')":                                  "+20.0 µs (+25.0 %)",
		"CPU per request of Caddy and jitbench (client, upstream), gated − basic_auth-plain (B − A')": "+20.0 µs (+16.7 %)",
		"throughput, gated / basic_auth-plain, median of the round-by-round ratios (B / A')":          "1.00× (+0.0 %)",
	} {
		if got[label] != want {
			t.Errorf("%s = %q, want %q", label, got[label], want)
		}
	}
}
