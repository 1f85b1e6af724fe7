#!/usr/bin/env bash
# Builds Caddy with caddy-jit using xcaddy, the way operators add plugins. The result is
# the same server as `go build ./cmd/caddy`. Usage: ./xcaddy.sh [OUTPUT]  (default ./caddy)
set -euo pipefail
cd "$(dirname "$0")"
export GOTOOLCHAIN=go1.27.3
output=${1:-./caddy}
case "$output" in /*) ;; *) output="$PWD/$output" ;; esac
caddy_version=$(go list -m -f '{{.Version}}' github.com/caddyserver/caddy/v2)
# The zero pseudo-version names "this checkout" without asking a module proxy for a
# release; the replacement points it at this folder. Our go.mod's requirements
# (e.g. klauspost/compress v1.20.2) carry over to the build.
go run github.com/caddyserver/xcaddy/cmd/xcaddy@v0.4.5 build "$caddy_version" \
	--output "$output" \
	--with github.com/caddy-jit/caddy-jit@v0.0.0-00010101000000-000000000000="$PWD"
"$output" list-modules | grep -E '^(jit|http\.handlers\.jit|admin\.api\.jit)$'
