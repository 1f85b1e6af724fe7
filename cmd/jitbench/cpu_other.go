//go:build !linux

package main

import (
	"errors"
	"time"
)

var errNoCPUTimes = errors.New("CPU times are read from /proc, on Linux only")

func processCPU(int) (time.Duration, error) { return 0, errNoCPUTimes }

func selfCPU() (time.Duration, error) { return 0, errNoCPUTimes }
