package main

import (
	"fmt"
	"os"
	"runtime"
	"strings"
)

// machine describes where the benchmark ran.
type machine struct {
	CPUs     int
	OSArch   string
	CPUModel string
	Go       string
}

func thisMachine() machine {
	data, _ := os.ReadFile("/proc/cpuinfo")
	return machine{
		CPUs:     runtime.NumCPU(),
		OSArch:   runtime.GOOS + "/" + runtime.GOARCH,
		CPUModel: cpuModel(string(data)),
		Go:       runtime.Version(),
	}
}

// cpuModel finds the CPU's name in /proc/cpuinfo text: "model name" on x86, else
// "Hardware", "Model" or "cpu model" as some ARM and MIPS kernels write it.
func cpuModel(cpuinfo string) string {
	fields := map[string]string{}
	for line := range strings.Lines(cpuinfo) {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if _, seen := fields[k]; !seen && v != "" {
			fields[k] = v
		}
	}
	for _, k := range []string{"model name", "Hardware", "Model", "cpu model"} {
		if v, ok := fields[k]; ok {
			return v
		}
	}
	return "unknown"
}

// loadAverage returns the 1-minute load average, or "unknown".
func loadAverage() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "unknown"
	}
	return fmt.Sprintf("%s (1 min), %s (5 min)", f[0], f[1])
}

// shellQuote quotes args so that a POSIX shell reads them back unchanged.
func shellQuote(args []string) string {
	out := make([]string, len(args))
	for i, a := range args {
		if a != "" && strings.Trim(a, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./=:,+@%") == "" {
			out[i] = a
		} else {
			out[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
	}
	return strings.Join(out, " ")
}
