//go:build jitfaults

package caddymodule

import "net/http"

// FaultHeader makes the gate panic, in builds with the jitfaults tag only, so that the
// fail-closed tests can show a panic never opens the door. It is an X-Jit- header, so
// it never reaches an upstream either.
const FaultHeader = "X-Jit-Fault"

func injectFault(r *http.Request) {
	if r.Header.Get(FaultHeader) == "panic" {
		panic("injected fault")
	}
}
