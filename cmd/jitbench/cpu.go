package main

import "time"

// cpuMeter measures the CPU time one run costs Caddy and jitbench. CPU time is what a
// request costs whatever else the machine does, where requests/s moves with every
// neighbour: on a shared machine it is the steadier measure of the gate's cost.
type cpuMeter struct {
	pid         int
	caddy, self time.Duration
	err         error
}

func startCPU(pid int) cpuMeter {
	m := cpuMeter{pid: pid}
	if m.caddy, m.err = processCPU(pid); m.err == nil {
		m.self, m.err = selfCPU()
	}
	return m
}

// stop returns the CPU time Caddy and jitbench used since startCPU; ok is false where
// it could not be read.
func (m cpuMeter) stop() (caddy, self time.Duration, ok bool) {
	if m.err != nil {
		return 0, 0, false
	}
	c, err1 := processCPU(m.pid)
	s, err2 := selfCPU()
	if err1 != nil || err2 != nil {
		return 0, 0, false
	}
	return c - m.caddy, s - m.self, true
}
