// Package integration tests caddy-jit end to end: TestMain builds the real Caddy binary
// (./cmd/caddy), and every test starts it as a child process on ports of its own, with
// file storage in a temporary directory, a real upstream that records what reaches it,
// and a browser-like HTTP client. The tests assert both what the client sees and what
// did or did not reach the upstream, and read the audit log that Caddy writes.
//
// Run with:
//
//	GOTOOLCHAIN=go1.27.3 go test -race -count=1 ./internal/integration/ -v
package integration
