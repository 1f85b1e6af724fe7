//go:build linux

package main

import "syscall"

// procAttr puts Caddy in a process group of its own, so that a Ctrl-C at the terminal
// reaches only jitbench, which then stops Caddy itself; and kills Caddy should
// jitbench die without cleaning up.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
