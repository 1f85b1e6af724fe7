#!/usr/bin/env bash
# Builds Caddy with caddy-jit using xcaddy, the way operators add plugins. The result is
# the same server as `go build ./cmd/caddy`. Usage: ./xcaddy.sh [OUTPUT]  (default ./caddy)
set -euo pipefail
cd "$(dirname "$0")"
export GOTOOLCHAIN=go1.27.3
output=${1:-./caddy}
case "$output" in /*) ;; *) output="$PWD/$output" ;; esac
caddy_version=$(go list -m -f '{{.Version}}' github.com/caddyserver/caddy/v2)
XCADDY_SKIP_CLEANUP=0 go run github.com/caddyserver/xcaddy/cmd/xcaddy@v0.4.5 build "$caddy_version" \
	--output "$output" \
	--with github.com/caddy-jit/caddy-jit="$PWD" \
	--with github.com/klauspost/compress@v1.20.2
"$output" list-modules | grep -E '^(jit|http\.handlers\.jit|admin\.api\.jit)$'
