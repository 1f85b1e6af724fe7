package integration

import (
	"text/template"
)

// ---------------------------------------------------------------------------
// Caddyfile.

// standardRoles is the jit global option's body that most tests use. Extra lines
// (e.g. eligibility windows) go into console-admin via envOptions.ExtraEligible.
// carol is eligible for viewer only: the standard site (`jit console-admin`) forbids
// her, yet she can open a viewer activation form and so hold a valid CSRF token.
const standardRoles = `
		role console-admin {
			max_duration 1h
			default_duration 15m
			justification required 10
			eligible alice bob frank locky r1 r2 r3 r4 r5 r6
{{- range .ExtraEligible}}
			eligible {{.}}
{{- end}}
		}
		role viewer {
			max_duration 1h
			justification optional
			eligible alice carol
		}`

var caddyfileTemplate = template.Must(template.New("Caddyfile").Parse(`{
	admin localhost:{{.AdminPort}}
	persist_config off
	storage file_system "{{.StorageDir}}"
{{- if .Global}}
{{.Global}}
{{- end}}
	jit {
		issuer "caddy-jit integration"
{{- if .JitOptions}}
{{.JitOptions}}
{{- end}}
{{- if .Batched}}
		audit {
{{- if .AuditOutput}}
			{{.AuditOutput}}
{{- else}}
			output file "{{.AuditLog}}"
{{- end}}
{{- if .AuditSettings}}
{{.AuditSettings}}
{{- end}}
		}
{{- end}}
` + standardRoles + `
	}
{{- if not .Batched}}
	log audit {
{{- if .AuditOutput}}
		{{.AuditOutput}}
{{- else}}
		output file "{{.AuditLog}}"
{{- end}}
		include http.handlers.jit.audit
		format json
	}
{{- end}}
}
{{range .Sites}}
{{if .TLS}}https{{else}}http{{end}}://{{if .Host}}{{.Host}}{{else}}localhost{{end}}:{{.Port}} {
{{- if .Bind}}
	bind {{.Bind}}
{{- end}}
{{- if .TLS}}
	tls internal
{{- end}}
{{- if .Auth}}
	basic_auth {
{{- range $.Users}}
		{{.Name}} {{.Hash}}
{{- end}}
	}
{{- end}}
{{.Jit}}
	reverse_proxy {{if .Upstream}}{{.Upstream}}{{else}}{{$.Upstream}}{{end}}{{if .Proxy}} {
{{.Proxy}}
	}{{end}}
}
{{end}}
`))

// siteSpec is one site block: a port of its own, basic_auth or not, and its jit lines.
type siteSpec struct {
	Port int
	Auth bool
	// Jit is the site's jit directive lines (with matchers, if any).
	Jit string
	// TLS serves the site over HTTPS (https://localhost:PORT) with `tls internal`;
	// the global options then need `local_certs` and `skip_install_trust`.
	TLS bool
	// Proxy is the body of the reverse_proxy block (e.g. header_up lines), if any.
	Proxy string
	// Host replaces localhost in the site address (http://HOST:PORT): the site then
	// matches requests whose Host header names HOST, with or without a port. The
	// tests reach it at 127.0.0.1:PORT and send Host: HOST (see browser.host).
	Host string
	// Bind, if set, is the site's bind address.
	Bind string
	// Upstream, if set, is where the site's reverse_proxy goes instead of the env's
	// own upstream (e.g. a real application the test started).
	Upstream string
}

type caddyfileData struct {
	AdminPort     int
	StorageDir    string
	AuditLog      string
	Global        string
	JitOptions    string
	ExtraEligible []string
	Users         []userHash
	Sites         []siteSpec
	Upstream      string
	// AuditOutput replaces the audit log's output line (e.g. to roll it, or to send it
	// somewhere that fails).
	AuditOutput string
	// Batched writes the audit log through the jit option's batched output
	// (`audit { output … }`) instead of a Caddy `log` block; AuditSettings are the
	// audit block's other lines.
	Batched       bool
	AuditSettings string
}

// envOptions change the standard environment.
type envOptions struct {
	// ExtraEligible are extra `eligible …` lines for console-admin.
	ExtraEligible []string
	// Global holds extra global option lines (e.g. local_certs).
	Global string
	// JitOptions holds extra lines for the jit global option (e.g. groups).
	JitOptions string
	// Sites replaces the single standard site (basic_auth, `jit console-admin`).
	// Ports left 0 are chosen freely.
	Sites []siteSpec
	// StorageDir, if set, is the storage directory instead of one of the env's own:
	// two envs given the same one are a cluster.
	StorageDir string
	// Stopped leaves Caddy unstarted: start it with env.start or startTogether.
	Stopped bool
	// Binary, if set, is the Caddy binary to run instead of caddyBin (e.g. the
	// jitfaults build of faultsBinary).
	Binary string
	// AuditOutput replaces the audit log's `output file …` line.
	AuditOutput string
	// Batched and AuditSettings: see caddyfileData.
	Batched       bool
	AuditSettings string
}
