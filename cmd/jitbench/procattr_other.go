//go:build !linux

package main

import "syscall"

// procAttr: outside Linux, Caddy stays in jitbench's process group.
func procAttr() *syscall.SysProcAttr { return nil }
