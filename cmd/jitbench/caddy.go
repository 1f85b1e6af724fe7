package main

import (
	"bytes"
	"context"
	"debug/buildinfo"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"text/template"
	"time"
)

// modulePath is the module jitbench builds Caddy from.
const modulePath = "github.com/caddy-jit/caddy-jit"

// buildCaddy builds ./cmd/caddy of the module the go command finds from the working
// directory into dir, once.
func buildCaddy(ctx context.Context, dir string) (string, error) {
	gomod, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	mod := strings.TrimSpace(string(gomod))
	if err != nil || mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("cannot find the caddy-jit module from here (go env GOMOD: %q, %v): run jitbench inside it or pass -caddy PATH", mod, err)
	}
	if data, err := os.ReadFile(mod); err != nil || !bytes.Contains(data, []byte("module "+modulePath+"\n")) {
		return "", fmt.Errorf("%s is not the %s module: run jitbench inside it or pass -caddy PATH", mod, modulePath)
	}
	root := filepath.Dir(mod)
	bin := filepath.Join(dir, "caddy")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/caddy")
	cmd.Dir = root
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 10 * time.Second
	logf("building ./cmd/caddy in %s (GOTOOLCHAIN=%s)…", root, os.Getenv("GOTOOLCHAIN"))
	start := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/caddy in %s: %v\n%s", root, err, out)
	}
	logf("built in %s", time.Since(start).Round(time.Millisecond))
	return bin, nil
}

// checkCaddy makes sure bin is a Caddy with the jit handler.
func checkCaddy(ctx context.Context, bin string) error {
	out, err := exec.CommandContext(ctx, bin, "list-modules").Output()
	if err != nil {
		return fmt.Errorf("%s list-modules: %v", bin, err)
	}
	for line := range strings.Lines(string(out)) {
		if strings.TrimSpace(line) == "http.handlers.jit" {
			return nil
		}
	}
	return fmt.Errorf("%s has no http.handlers.jit module: pass a Caddy built from this module (go build ./cmd/caddy)", bin)
}

// describeBinary says which Go and which caddy-jit revision built bin.
func describeBinary(bin string) string {
	info, err := buildinfo.ReadFile(bin)
	if err != nil {
		return "build info unreadable: " + err.Error()
	}
	var rev, modified string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				modified = " + local changes"
			}
		}
	}
	version := info.Main.Version
	for _, d := range info.Deps {
		if d.Path == modulePath {
			version = d.Version
		}
	}
	s := info.GoVersion
	if info.Main.Path != "" {
		s += ", main module " + info.Main.Path
	}
	if version != "" {
		s += " " + version
	}
	if rev != "" {
		s += fmt.Sprintf(", revision %.12s%s", rev, modified)
	}
	return s
}

// benchConfig is one of the compared Caddy configurations.
type benchConfig struct {
	Key  string // A, A', S, B, C
	Name string
	// Chain is the site's handler chain, for the report.
	Chain       string
	BasicAuth   bool
	ForwardAuth bool
	Jit         bool
	// Shape: the client sends B's session cookie, and Caddy takes it out and adds
	// B's identity headers, with plain request_header handlers.
	Shape bool
}

var configs = []benchConfig{
	{Key: "A", Name: "plain", Chain: "reverse_proxy"},
	{Key: "A'", Name: "basic_auth", Chain: "basic_auth + reverse_proxy", BasicAuth: true},
	{Key: "S", Name: "request shape", Chain: "basic_auth + request_header (B's session cookie taken out, B's three X-Jit-* headers put in) + reverse_proxy: B's requests without the gate", BasicAuth: true, Shape: true},
	{Key: "B", Name: "jit", Chain: "basic_auth + jit + reverse_proxy", BasicAuth: true, Jit: true},
	{Key: "C", Name: "forward_auth", Chain: "basic_auth + forward_auth + reverse_proxy", BasicAuth: true, ForwardAuth: true},
}

// The jit role and the user the benchmark activates.
const (
	benchRole = "bench-admin"
	benchUser = "bench"
	// sessionLength is the session jitbench activates: longer than any sensible run.
	sessionLength = 12 * time.Hour
)

type caddyfileData struct {
	benchConfig
	AdminPort  int
	SitePort   int
	StorageDir string
	CaddyLog   string
	AuditLog   string
	User       string
	Hash       string
	AuthAddr   string
	Upstream   string
	Role       string
	MaxSession string
	// ShapeSessionID stands for B's session id in S's X-Jit-Session header: as long.
	ShapeSessionID string
}

// The Caddyfile of every config. Caddy's own log goes to a file, and no site has a
// `log` directive, so nothing is written per request except the jit `access` audit
// event, which the batched audit output writes to its own file.
var caddyfileTemplate = template.Must(template.New("Caddyfile").Parse(`{
	admin localhost:{{.AdminPort}}
	persist_config off
	grace_period 2s
	storage file_system "{{.StorageDir}}"
	log default {
		output file "{{.CaddyLog}}"
		level INFO
{{- if .Jit}}
		# As docs/audit.md and Caddyfile.example advise: audit events go to their own log only.
		exclude http.handlers.jit.audit
{{- end}}
	}
{{- if .Jit}}
	jit {
		issuer "caddy-jit jitbench"
		# As Caddyfile.example: the batched audit output, one write per flush.
		audit {
			output file "{{.AuditLog}}" {
				roll_disabled
			}
		}
		role {{.Role}} {
			max_duration {{.MaxSession}}
			default_duration {{.MaxSession}}
			justification optional
			eligible {{.User}}
		}
	}
{{- end}}
}

http://127.0.0.1:{{.SitePort}} {
	bind 127.0.0.1
{{- if .BasicAuth}}
	basic_auth {
		{{.User}} {{.Hash}}
	}
{{- end}}
{{- if .Shape}}
	request_header -Cookie
	request_header X-Jit-User {{.User}}
	request_header X-Jit-Role {{.Role}}
	request_header X-Jit-Session {{.ShapeSessionID}}
{{- end}}
{{- if .ForwardAuth}}
	forward_auth {{.AuthAddr}} {
		uri /verify
		copy_headers Remote-User
	}
{{- end}}
{{- if .Jit}}
	jit {{.Role}}
{{- end}}
	reverse_proxy {{.Upstream}}
}
`))

func renderCaddyfile(d caddyfileData) ([]byte, error) {
	var buf bytes.Buffer
	err := caddyfileTemplate.Execute(&buf, d)
	return buf.Bytes(), err
}

// instance is one running Caddy.
type instance struct {
	cfg      benchConfig
	dir      string
	data     caddyfileData
	cmd      *exec.Cmd
	done     chan struct{}
	waitErr  error
	outFile  *os.File
	baseURL  string
	adminURL string
}

// launchInstance writes the config's Caddyfile into a directory of its own under root
// and starts `caddy run` on it without waiting.
func launchInstance(bin, root string, cfg benchConfig, common caddyfileData) (*instance, error) {
	dir := filepath.Join(root, strings.ReplaceAll(cfg.Key, "'", "prime")+"-"+cfg.Name)
	if err := os.MkdirAll(filepath.Join(dir, "storage"), 0o700); err != nil {
		return nil, err
	}
	adminPort, err := freePort()
	if err != nil {
		return nil, err
	}
	sitePort, err := freePort()
	if err != nil {
		return nil, err
	}
	d := common
	d.benchConfig = cfg
	d.AdminPort, d.SitePort = adminPort, sitePort
	d.StorageDir = filepath.Join(dir, "storage")
	d.CaddyLog = filepath.Join(dir, "caddy.log")
	d.AuditLog = filepath.Join(dir, "audit.log")
	d.Role = benchRole
	d.MaxSession = sessionLength.String()
	d.ShapeSessionID = strings.Repeat("s", 22) // 16 random bytes, base64url
	caddyfile, err := renderCaddyfile(d)
	if err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(cfgPath, caddyfile, 0o600); err != nil {
		return nil, err
	}
	out, err := os.Create(filepath.Join(dir, "caddy.out"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "run", "--config", cfgPath, "--adapter", "caddyfile")
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Env = append(os.Environ(),
		"HOME="+dir,
		"XDG_CONFIG_HOME="+filepath.Join(dir, "xdg-config"),
		"XDG_DATA_HOME="+filepath.Join(dir, "xdg-data"),
	)
	cmd.SysProcAttr = procAttr()
	if err := cmd.Start(); err != nil {
		out.Close()
		return nil, fmt.Errorf("starting caddy for %s: %v", cfg.Key, err)
	}
	in := &instance{
		cfg: cfg, dir: dir, data: d, cmd: cmd, done: make(chan struct{}), outFile: out,
		baseURL:  fmt.Sprintf("http://127.0.0.1:%d", sitePort),
		adminURL: fmt.Sprintf("http://localhost:%d", adminPort),
	}
	go func() {
		in.waitErr = cmd.Wait()
		close(in.done)
	}()
	return in, nil
}

// awaitReady waits until the admin API serves a config and the site port accepts
// connections.
func (in *instance) awaitReady(ctx context.Context, client *http.Client) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-in.done:
			return fmt.Errorf("caddy for %s exited during start-up (%v); its output:\n%s", in.label(), in.waitErr, in.outputTail(40))
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("caddy for %s was not ready within 30s; its output:\n%s", in.label(), in.outputTail(40))
		}
		if in.ready(ctx, client) {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (in *instance) ready(ctx context.Context, client *http.Client) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, in.adminURL+"/config/", nil)
	if err != nil {
		return false
	}
	resp, err := client.Do(req)
	if err != nil {
		return false
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || strings.TrimSpace(string(body)) == "null" {
		return false
	}
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", in.data.SitePort), time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// stop asks Caddy to exit and kills it if it has not within 10 s.
func (in *instance) stop() {
	select {
	case <-in.done:
	default:
		_ = in.cmd.Process.Signal(os.Interrupt)
		select {
		case <-in.done:
		case <-time.After(10 * time.Second):
			logf("caddy for %s did not exit within 10s of SIGINT; killing it", in.label())
			_ = in.cmd.Process.Kill()
			<-in.done
		}
	}
	in.outFile.Close()
}

func (in *instance) label() string { return in.cfg.Key + " " + in.cfg.Name }

// outputTail returns the last n lines of Caddy's output and log file.
func (in *instance) outputTail(n int) string {
	var all []string
	for _, name := range []string{"caddy.out", "caddy.log"} {
		data, _ := os.ReadFile(filepath.Join(in.dir, name))
		if len(data) > 0 {
			all = append(all, "== "+name+" ==")
			all = append(all, strings.Split(strings.TrimRight(string(data), "\n"), "\n")...)
		}
	}
	if len(all) > n {
		all = all[len(all)-n:]
	}
	return strings.Join(all, "\n")
}

// countAccessEvents counts the jit `access` audit events in the instance's audit log.
func (in *instance) countAccessEvents() (int, error) {
	data, err := os.ReadFile(in.data.AuditLog)
	if err != nil {
		return 0, err
	}
	return bytes.Count(data, []byte(`"event":"access"`)), nil
}

// freePort finds a free loopback port: listen on :0, close, reuse the number.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "jitbench: "+format+"\n", args...)
}
