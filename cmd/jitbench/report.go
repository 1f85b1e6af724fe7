package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/caddy-jit/caddy-jit/internal/words"
)

// report is everything the Markdown output shows.
type report struct {
	Command    string
	WorkDir    string
	Started    time.Time
	Machine    machine
	LoadBefore string
	LoadAfter  string
	// Caddy says which binary ran and what built it.
	Caddy    string
	Warmup   time.Duration
	Duration time.Duration
	Rounds   int
	Configs  []benchConfig
	Tables   []connTable
	// Interleaved is the interleaved latency run, where there was one.
	Interleaved *interleavedReport
	// Audit says how many access events the gated config's audit log holds.
	Audit string
}

// connTable is the results for one connection count.
type connTable struct {
	Conns       int
	Rows        []summary
	Comparisons []comparison
}

func newConnTable(conns int, rows []summary) connTable {
	return connTable{Conns: conns, Rows: rows, Comparisons: compare(rows)}
}

// interleavedReport is the interleaved run's part of the report.
type interleavedReport struct {
	Window time.Duration
	Rows   []interleavedRow
	Added  []addedLatency
	Orders map[string]int
}

func renderInterleaved(p func(string, ...any), in *interleavedReport) {
	p("## 1 connection, interleaved\n\n")
	p("One client sends one request to each of these configs in turn, in a new random order every time, for %s after a %s warm-up, each config over a keep-alive connection of its own: every config meets the same moments of the machine's noise, which the runs above, one after the other, do not.\n\n", in.Window, warmup)
	p("| config | requests | errors | p50 | p90 | p99 | p99.9 |\n|---|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range in.Rows {
		errs := strconv.Itoa(r.Errors)
		if r.Errors > 0 {
			errs += " **INVALID**"
		}
		p("| %s | %d | %s | %s | %s | %s | %s |\n", r.Key, r.Requests, errs, formatLatency(r.P50), formatLatency(r.P90), formatLatency(r.P99), formatLatency(r.P9999))
	}
	p("\n| added latency | p50 | p99 | p99 in each fifth of the window |\n|---|---:|---:|---|\n")
	for _, a := range in.Added {
		var blocks []string
		for _, b := range a.BlockP99 {
			blocks = append(blocks, formatDelta(b))
		}
		p("| %s − %s | %s | %s | %s |\n", a.Num, a.Den, formatDelta(a.P50), formatDelta(a.P99), strings.Join(blocks, ", "))
	}
	var orders []string
	for _, o := range sortedKeys(in.Orders) {
		orders = append(orders, fmt.Sprintf("%s: %d", o, in.Orders[o]))
	}
	p("\nOrders sent (warm-up included): %s.\n\n", strings.Join(orders, "; "))
}

// renderMarkdown renders r; it is a pure function of r.
func renderMarkdown(r report) string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }

	p("# caddy-jit gate overhead (jitbench)\n\n")
	p("Command: `%s` in `%s`, started %s.\n\n", r.Command, r.WorkDir, words.TimeToSecond(r.Started))
	p("| | |\n|---|---|\n")
	p("| machine | %s, %s, %s |\n", words.Plural(r.Machine.CPUs, "CPU"), r.Machine.OSArch, r.Machine.CPUModel)
	p("| Go | jitbench %s; caddy %s |\n", r.Machine.Go, r.Caddy)
	p("| load average | before: %s; after: %s |\n", r.LoadBefore, r.LoadAfter)
	keys := make([]string, len(r.Configs))
	for i, c := range r.Configs {
		keys[i] = c.Key
	}
	p("| runs | per connection count, %s of: %s warm-up (discarded) + %s measured, configs alternating run by run (%s, %s, …) |\n\n",
		words.Plural(r.Rounds, "round"), r.Warmup, r.Duration, strings.Join(keys, ", "), strings.Join(keys, ", "))

	p("Each config is its own Caddy process of the same binary (own ports, own storage), over the same upstream:\n\n")
	for _, c := range r.Configs {
		p("- **%s %s**: %s\n", c.Key, c.Name, c.Chain)
	}
	p("\n")

	invalid := false
	for _, t := range r.Tables {
		p("## %s\n\n", words.Plural(t.Conns, "connection"))
		p("| config | requests/s (mean) | min–max over rounds | p50 | p99 | requests | errors | Caddy CPU per request | jitbench CPU per request |\n")
		p("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		var details []string
		for _, s := range t.Rows {
			errs := strconv.Itoa(s.Errors)
			if !s.valid() {
				errs += " **INVALID**"
				invalid = true
			}
			p("| %s %s | %.0f | %.0f–%.0f | %s | %s | %d | %s | %s | %s |\n",
				s.Config.Key, s.Config.Name, s.MeanRPS, s.MinRPS, s.MaxRPS,
				formatLatency(s.P50), formatLatency(s.P99), s.Requests, errs, formatCPU(s.CaddyCPU), formatCPU(s.BenchCPU))
			for _, d := range s.ErrorDetail {
				details = append(details, fmt.Sprintf("- %s %s, %s", s.Config.Key, s.Config.Name, d))
			}
			if s.Redials > 0 {
				details = append(details, fmt.Sprintf("- %s %s: %d connection(s) re-dialled beyond one per goroutine", s.Config.Key, s.Config.Name, s.Redials))
			}
		}
		p("\n")
		if len(details) > 0 {
			p("%s\n\n", strings.Join(details, "\n"))
		}
		if len(t.Comparisons) > 0 {
			p("| comparison | value |\n|---|---:|\n")
			for _, c := range t.Comparisons {
				p("| %s | %s |\n", c.Label, c.Value)
			}
			p("\n")
		}
	}

	if r.Interleaved != nil {
		renderInterleaved(p, r.Interleaved)
	}

	p("## Notes\n\n")
	if invalid {
		p("- **Some runs had errors (any answer but 200 with the full body counts): those rows are invalid and their comparisons are not given.**\n")
	}
	p("- A has no basic_auth; A', S, B and C all pay it (bcrypt cost 4; Caddy's basic_auth caches the verified hash, so that is a cache hit after the first request). B − A' is the gate alone, with the request shape it needs; B − A is the gate with its authentication.\n")
	p("- S sends B's requests (the same session cookie in, the same three identity headers out to the upstream) through Caddy's own request_header handlers, without the gate: B − S is what caddy-jit's code costs, S − A' what the shape of a gated request costs whoever makes it.\n")
	p("- C is the forward_auth pattern (Authelia, oauth2-proxy): one extra HTTP subrequest per request to a minimal endpoint inside jitbench that looks a cookie up in a map.\n")
	p("- Audit: B writes its `access` event for every request through the batched audit output (`jit { audit { output file … } }`), to a file, not turned off; Caddy's own log goes to a file and no site logs requests.")
	if r.Audit != "" {
		p(" %s", r.Audit)
	}
	p("\n")
	p("- Latency is measured by the client, from sending the request to reading the last byte of the answer; p50 and p99 are over all measured requests of all rounds; requests/s is measured requests over the measured time, per round.\n")
	p("- The load generator, the upstream, the forward_auth endpoint and Caddy share this machine's CPUs, so absolute numbers understate Caddy on its own; compare the configs with each other.\n")
	p("- CPU per request is the CPU time (user + system) the Caddy process, and jitbench itself (load generator, upstream, forward_auth endpoint), used during a run, warm-up included, over the requests it answered; rounds with a CPU profile being taken are left out. Unlike requests/s, it does not move with what else the machine runs.\n")
	return b.String()
}
