// Command caddy is a complete Caddy server with the standard modules and caddy-jit,
// so that `go build ./cmd/caddy` gives the same binary as xcaddy.sh without xcaddy.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddy-jit/caddy-jit"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
)

func main() {
	caddycmd.Main()
}
