//go:build !jitfaults

package caddymodule

import "net/http"

// injectFault does nothing in a normal build; a build with the jitfaults tag (for the
// fail-closed tests only) replaces it.
func injectFault(*http.Request) {}
