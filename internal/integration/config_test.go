package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// 16. An operator's mistake in the Caddyfile fails the load: `caddy run` and `caddy adapt`
// exit non-zero and name the file, the line and what to fix.
func TestCaddyfileMistakeFailsTheLoad(t *testing.T) {
	dir := t.TempDir()
	hash := userHashes(t)[0]
	// The valid Caddyfile each case breaks on one line.
	base := []string{
		"{",
		fmt.Sprintf("\tadmin localhost:%d", freePort(t)),
		"\tpersist_config off",
		fmt.Sprintf("\tstorage file_system %q", filepath.Join(dir, "storage")),
		"\tjit {",
		"\t\taudit {",
		fmt.Sprintf("\t\t\toutput file %q", filepath.Join(dir, "audit.log")),
		"\t\t\tflush_interval 50ms",
		"\t\t\tcheckpoint 1000 60s",
		"\t\t\twitness https://witness.example/jit",
		"\t\t}",
		"\t\trole console-admin {",
		"\t\t\tmax_duration 1h",
		"\t\t\tticket ^INC-[0-9]+$",
		"\t\t\teligible " + hash.Name + " until 2030-12-31",
		"\t\t}",
		"\t\trole viewer {",
		"\t\t\tmax_duration 30m",
		"\t\t\teligible " + hash.Name,
		"\t\t}",
		"\t}",
		"}",
		fmt.Sprintf("http://localhost:%d {", freePort(t)),
		"\tbasic_auth {",
		"\t\t" + hash.Name + " " + hash.Hash,
		"\t}",
		"\tjit console-admin",
		"\treverse_proxy 127.0.0.1:9",
		"}",
	}
	cases := []struct {
		name string
		// old is the line of base that the case replaces with new.
		old, new string
		// want are the pieces of the message that say what is wrong and how to fix it.
		want []string
	}{
		{"unknown role named by a site", "\tjit console-admin", "\tjit console-admin x",
			[]string{`unknown role "x"`, "console-admin, viewer"}},
		{"bad duration", "\t\t\tmax_duration 1h", "\t\t\tmax_duration 1hour",
			[]string{`max_duration "1hour"`, "positive duration such as 30m"}},
		{"unknown subdirective inside role", "\t\t\tmax_duration 30m", "\t\t\tmax_duraton 30m",
			[]string{`unrecognized role setting "max_duraton"`, "expected max_duration"}},
		{"bad date", "\t\t\teligible " + hash.Name + " until 2030-12-31", "\t\t\teligible " + hash.Name + " until 2030-13-45",
			[]string{`"2030-13-45"`, "neither a date (2026-12-31) nor an RFC 3339 time"}},
		{"audit output names no writer", fmt.Sprintf("\t\t\toutput file %q", filepath.Join(dir, "audit.log")), "\t\t\toutput fil audit.log",
			[]string{`audit output "fil"`, "want file, net, stdout, stderr or discard"}},
		{"audit flush_interval not a duration", "\t\t\tflush_interval 50ms", "\t\t\tflush_interval soon",
			[]string{`flush_interval "soon"`, "positive duration"}},
		{"audit checkpoint of no events", "\t\t\tcheckpoint 1000 60s", "\t\t\tcheckpoint 0 60s",
			[]string{`audit checkpoint "0"`, "at least 1"}},
		{"audit witness not a URL", "\t\t\twitness https://witness.example/jit", "\t\t\twitness witness.example",
			[]string{`audit witness "witness.example"`, "http or https URL"}},
		{"bad ticket regex", "\t\t\tticket ^INC-[0-9]+$", "\t\t\tticket ^INC-[0-9+$",
			[]string{`ticket pattern "^INC-[0-9+$"`, "not a valid regular expression"}},
	}

	// A control: the file without a mistake adapts.
	good := filepath.Join(dir, "Caddyfile.good")
	if err := os.WriteFile(good, []byte(strings.Join(base, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := runCaddy(t, dir, "adapt", "--config", good, "--adapter", "caddyfile"); err != nil {
		t.Fatalf("the valid Caddyfile does not adapt (%v), so the cases below prove nothing:\n%s", err, out)
	}

	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			lines := append([]string(nil), base...)
			line := 0
			for j, l := range lines {
				if l == tc.old {
					lines[j], line = tc.new, j+1
					break
				}
			}
			if line == 0 {
				t.Fatalf("test bug: the base Caddyfile has no line %q", tc.old)
			}
			file := filepath.Join(dir, fmt.Sprintf("Caddyfile.bad%d", i))
			if err := os.WriteFile(file, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			for _, cmd := range [][]string{
				{"run", "--config", file, "--adapter", "caddyfile"},
				{"adapt", "--config", file, "--adapter", "caddyfile"},
			} {
				out, err := runCaddy(t, dir, cmd...)
				var exit *exec.ExitError
				if !errors.As(err, &exit) || exit.ExitCode() == 0 {
					t.Errorf("caddy %s: want a non-zero exit, got %v; output:\n%s", cmd[0], err, out)
					continue
				}
				if at := fmt.Sprintf("%s:%d", file, line); !strings.Contains(out, at) {
					t.Errorf("caddy %s: the output does not point at %s (the line %q); output:\n%s", cmd[0], at, tc.new, out)
				}
				for _, w := range tc.want {
					if !strings.Contains(out, w) {
						t.Errorf("caddy %s: the output does not say %q; output:\n%s", cmd[0], w, out)
					}
				}
			}
		})
	}
}

// runCaddy runs the Caddy binary with args in dir, bounded by a timeout, and returns its
// combined output; err is the exit error, or a timeout.
func runCaddy(t *testing.T, dir string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, caddyBin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"HOME="+dir,
		"XDG_CONFIG_HOME="+filepath.Join(dir, "xdg-config"),
		"XDG_DATA_HOME="+filepath.Join(dir, "xdg-data"),
	)
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		return string(out), fmt.Errorf("caddy %s did not finish within 20s: %w", strings.Join(args, " "), ctx.Err())
	}
	return readableLog(string(out)), err
}

// readableLog turns Caddy's JSON log lines into "level: msg (error)" lines, so that
// quotes in messages read as the operator sees them; other lines stay as they are.
func readableLog(out string) string {
	var sb strings.Builder
	for line := range strings.Lines(out) {
		var entry struct {
			Level string `json:"level"`
			Msg   string `json:"msg"`
			Error string `json:"error"`
		}
		if json.Unmarshal([]byte(line), &entry) != nil || entry.Msg == "" {
			sb.WriteString(line)
			continue
		}
		fmt.Fprintf(&sb, "%s: %s", entry.Level, entry.Msg)
		if entry.Error != "" {
			fmt.Fprintf(&sb, " (%s)", entry.Error)
		}
		sb.WriteByte('\n')
	}
	return sb.String()
}

// 17. With a matcher, jit guards only what it matches, and the activation pages stay
// reachable although they do not match.
func TestMatcherKeepsActivationPagesReachable(t *testing.T) {
	e := newEnv(t, envOptions{Sites: []siteSpec{
		{Auth: true, Jit: "\t@admin path /admin*\n\tjit @admin " + roleAdmin},
	}})
	alice := e.enroll("alice")
	b := e.browser("alice")
	site := e.site(0)

	r := b.get(site + "/public")
	if wantStatus(t, r, http.StatusOK, "unguarded path without a session") {
		if got := e.up.last(t); got.Path != "/public" {
			t.Errorf("the upstream got %s, want /public", got.Path)
		}
		if r.Header.Get("X-Upstream") != "integration" {
			t.Errorf("the 200 did not come from the upstream: %s", r)
		}
	}
	hits := e.up.count()

	wantActivationRedirect(t, b.get(site+"/admin/x"), roleAdmin, "/admin/x")
	// Variants of the guarded path that Caddy's path matcher treats as /admin*.
	for _, p := range []string{"/ADMIN/x", "/admin", "//admin/x", "/./admin/x", "/admin%2Fx", "/admin;x"} {
		wantNot2xx(t, b.get(site+p), "guarded path variant "+p+" without a session")
	}
	wantNoUpstream(t, e.up, hits, "guarded paths without a session")

	page := b.get(site + activationPath(roleAdmin, "/admin/x"))
	if wantStatus(t, page, http.StatusOK, "activation page outside the matcher") {
		if f := formFields(t, page.Body, "/.jit/activate"); f.Get("role") != roleAdmin || f.Get("csrf") == "" {
			t.Errorf("the activation page has no usable form: %v", f)
		}
	}
	if r := b.get(site + "/.jit/jwks.json"); wantStatus(t, r, http.StatusOK, "JWKS outside the matcher") {
		if !strings.Contains(r.Body, `"keys"`) {
			t.Errorf("the JWKS has no keys: %s", r)
		}
	}
	wantStatus(t, b.get(site+"/.jit/"), http.StatusOK, "status page outside the matcher")
	wantNoUpstream(t, e.up, hits, "the /.jit/ pages")

	b.mustActivate(site, roleAdmin, "/admin/x", alice, nil)
	wantNoUpstream(t, e.up, hits, "activation")
	r = b.get(site + "/admin/x")
	if wantStatus(t, r, http.StatusOK, "guarded path under the session") {
		got := e.up.last(t)
		if got.Path != "/admin/x" || got.Header.Get("X-Jit-User") != "alice" || got.Header.Get("X-Jit-Role") != roleAdmin {
			t.Errorf("the upstream got %s with X-Jit-User=%q X-Jit-Role=%q, want /admin/x, alice, %s",
				got.Path, got.Header.Get("X-Jit-User"), got.Header.Get("X-Jit-Role"), roleAdmin)
		}
	}
}

// 18. The session's placeholders reach the handlers after jit, here reverse_proxy's
// header_up.
func TestPlaceholdersReachLaterHandlers(t *testing.T) {
	e := newEnv(t, envOptions{Sites: []siteSpec{{
		Auth: true,
		Jit:  "\tjit " + roleAdmin,
		Proxy: "\t\theader_up X-Webauth-User {http.jit.user}\n" +
			"\t\theader_up X-Jit-Expires-Copy {http.jit.expires}\n" +
			"\t\theader_up X-Role-Copy {http.jit.role}\n" +
			"\t\theader_up X-Sid-Copy {http.jit.session_id}",
	}}})
	alice := e.enroll("alice")
	b := e.browser("alice")
	site := e.site(0)

	token := b.mustActivate(site, roleAdmin, adminURI, alice, nil)
	_, claims := tokenParts(t, token)
	exp := tokenExpiry(t, token)

	// The client's own copies must not survive either.
	r := b.get(site+adminURI,
		withHeader("X-Webauth-User", "root"),
		withHeader("X-Role-Copy", "superuser"),
		withHeader("X-Sid-Copy", "forged"),
		withHeader("X-Jit-Expires-Copy", "2099-01-01T00:00:00Z"))
	if !wantStatus(t, r, http.StatusOK, "request under the session") {
		t.FailNow()
	}
	h := e.up.last(t).Header
	want := map[string]string{
		"X-Webauth-User":     "alice",
		"X-Role-Copy":        roleAdmin,
		"X-Sid-Copy":         fmt.Sprint(claims["sid"]),
		"X-Jit-Expires-Copy": exp.UTC().Format(time.RFC3339),
	}
	for name, v := range want {
		if got := h.Values(name); len(got) != 1 || got[0] != v {
			t.Errorf("upstream %s=%q, want exactly [%q]", name, got, v)
		}
	}
	if got := h.Get("X-Sid-Copy"); got != h.Get("X-Jit-Session") {
		t.Errorf("{http.jit.session_id}=%q differs from X-Jit-Session=%q", got, h.Get("X-Jit-Session"))
	}
	if got, err := time.Parse(time.RFC3339, h.Get("X-Jit-Expires-Copy")); err != nil {
		t.Errorf("{http.jit.expires}=%q is not RFC 3339: %v", h.Get("X-Jit-Expires-Copy"), err)
	} else if !got.Equal(exp) {
		t.Errorf("{http.jit.expires}=%s, want the token's exp %s", got, exp.UTC().Format(time.RFC3339))
	}
}

// 19. `eligible group:NAME` admits whoever the groups placeholder puts in that group.
func TestGroupEligibility(t *testing.T) {
	e := newEnv(t, envOptions{
		// Test only: the client sets its own groups here. In production the groups come
		// from the identity provider through forward_auth's copy_headers, which replace
		// whatever the client sent.
		JitOptions:    "\t\tgroups {http.request.header.X-Test-Groups}",
		ExtraEligible: []string{"group:ops"},
	})
	site := e.site(0)
	// dave is named nowhere: only his group can make him eligible.
	dave := e.enroll("dave")

	inOps := e.browser("dave")
	inOps.headers = http.Header{"X-Test-Groups": {"dev, ops"}}
	wantActivationRedirect(t, inOps.get(site+adminURI), roleAdmin, adminURI)
	token := inOps.mustActivate(site, roleAdmin, adminURI, dave, nil)
	if _, claims := tokenParts(t, token); claims["sub"] != "dave" {
		t.Errorf("token sub=%v, want dave", claims["sub"])
	}
	if r := inOps.get(site + adminURI); wantStatus(t, r, http.StatusOK, "dave in ops, under the session") {
		if u := e.up.last(t).Header.Get("X-Jit-User"); u != "dave" {
			t.Errorf("upstream X-Jit-User=%q, want dave", u)
		}
	}
	e.waitEvent(match{"event": "activation_succeeded", "user": "dave", "role": roleAdmin})
	hits := e.up.count()

	for _, groups := range []string{"dev", "devops", "ops-team", ""} {
		b := e.browser("dave")
		if groups != "" {
			b.headers = http.Header{"X-Test-Groups": {groups}}
		}
		what := fmt.Sprintf("dave with X-Test-Groups %q", groups)
		wantStatus(t, b.get(site+adminURI), http.StatusForbidden, what)
		wantStatus(t, b.get(site+activationPath(roleAdmin, "/")), http.StatusForbidden, what+", activation page")
	}
	// Nor can a form taken while in ops, with a right code, once dave is out of ops.
	f := inOps.activationForm(site, roleAdmin, "/")
	f.Set("justification", "integration test: not in ops any more")
	f.Set("code", dave.next(t))
	r := inOps.postForm(site+"/.jit/activate", f, withHeader("X-Test-Groups", "dev"))
	wantStatus(t, r, http.StatusForbidden, "activation POST by dave with X-Test-Groups dev")
	if c := setCookie(r, cookieName); c != nil && c.Value != "" {
		t.Errorf("a session cookie was set for dave outside ops: %s", r)
	}
	e.waitEvent(match{"event": "activation_failed", "user": "dave", "reason": "not_eligible"})
	wantNoUpstream(t, e.up, hits, "dave outside ops")
}
