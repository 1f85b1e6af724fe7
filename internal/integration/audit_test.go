package integration

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Session logs an auditor can trust (issue 7): the chain on logs a real Caddy writes,
// no lost events under load, bodies of mutating requests, metrics, write errors.

// auditFiles lists the audit log and its rotated files, oldest first, as an operator's
// glob would (lumberjack names rotated files NAME-TIMESTAMP.EXT, gzipped by default,
// which sort first).
func (e *env) auditFiles() []string {
	e.t.Helper()
	dir := filepath.Dir(e.data.AuditLog)
	base := strings.TrimSuffix(filepath.Base(e.data.AuditLog), ".log")
	matches, err := filepath.Glob(filepath.Join(dir, base+"*.log*"))
	if err != nil {
		e.t.Fatal(err)
	}
	sort.Strings(matches)
	return matches
}

// chainedEvents reads every line of the files, in order.
func chainedEvents(t *testing.T, files ...string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		var r io.Reader = fh
		if strings.HasSuffix(f, ".gz") {
			if r, err = gzip.NewReader(fh); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
		}
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
		for sc.Scan() {
			dec := json.NewDecoder(bytes.NewReader(sc.Bytes()))
			dec.UseNumber()
			var m map[string]any
			if err := dec.Decode(&m); err != nil {
				t.Fatalf("%s: a line is not JSON: %v: %s", f, err, sc.Bytes())
			}
			out = append(out, m)
		}
		fh.Close()
	}
	return out
}

// jitCLI runs `caddy jit ARGS…` and returns its exit code and standard output (what
// it wrote to standard error is logged).
func jitCLI(t *testing.T, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(caddyBin, append([]string{"jit"}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if stderr.Len() > 0 {
		t.Logf("caddy jit %s: standard error:\n%s", strings.Join(args, " "), stderr.String())
	}
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode(), string(out)
		}
		t.Fatalf("caddy jit %v: %v", args, err)
	}
	return 0, string(out)
}

// A1. Under load every privileged request yields exactly one access event, written by
// the batched output, the log rolls over into several files, and the chain holds
// across all of them.
func TestAuditEveryRequestOnceAcrossRotatedFiles(t *testing.T) {
	const requests = 10000
	e := newEnv(t, envOptions{Batched: true, AuditOutput: fmt.Sprintf(`output file "%s" {
				roll_size 1MiB
				roll_keep 20
			}`, filepath.Join(t.TempDir(), "jit-audit.log"))})
	// The harness reads e.data.AuditLog; point it at the rolled file.
	e.data.AuditLog = regexp.MustCompile(`output file "([^"]+)"`).FindStringSubmatch(e.data.AuditOutput)[1]
	site := e.site(0)
	alice := e.enroll("alice")
	token := e.browser("alice").mustActivate(site, roleAdmin, adminURI, alice, nil)

	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	var next, failed atomic.Int64
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= requests {
				req, _ := http.NewRequest(http.MethodGet, site+"/admin/load", nil)
				req.SetBasicAuth("alice", password("alice"))
				req.Header.Set("Cookie", cookieName+"="+token)
				resp, err := client.Do(req)
				if err != nil {
					failed.Add(1)
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if n := failed.Load(); n != 0 {
		t.Fatalf("%d of %d requests failed", n, requests)
	}
	if got := e.up.count(); got < requests {
		t.Fatalf("the upstream saw %d requests, want at least %d", got, requests)
	}
	// Stop, so that every event is written and the chain head saved.
	e.stop()

	files := e.auditFiles()
	if len(files) < 3 {
		t.Errorf("the audit log rolled into %d files, want at least 3 (1 MiB each): %v", len(files), files)
	}
	events := chainedEvents(t, files...)
	access := 0
	seen := map[string]bool{}
	var lastSeq int64
	instance := ""
	for i, ev := range events {
		seq, err := ev["seq"].(json.Number).Int64()
		if err != nil {
			t.Fatalf("event %d has no integer seq: %v", i, ev)
		}
		if instance == "" {
			instance, _ = ev["instance"].(string)
		}
		if ev["instance"] != instance || (lastSeq != 0 && seq != lastSeq+1) {
			t.Fatalf("event %d: instance %v seq %d after seq %d: the chain skips or repeats", i, ev["instance"], seq, lastSeq)
		}
		lastSeq = seq
		if ev["event"] == "access" && ev["uri"] == "/admin/load" {
			access++
			key := fmt.Sprint(ev["seq"])
			if seen[key] {
				t.Fatalf("seq %s twice", key)
			}
			seen[key] = true
		}
	}
	if access != requests {
		t.Fatalf("%d access events for %d requests, want exactly one each", access, requests)
	}
	if n := countEvents(events, "checkpoint"); n < requests/1000 {
		t.Errorf("%d checkpoints over %d events, want one every 1000 at least", n, len(events))
	}

	code, out := jitCLI(t, append([]string{"audit", "verify", "--config", e.cfgFile}, files...)...)
	if code != 0 {
		t.Fatalf("caddy jit audit verify over %d rotated files: exit %d\n%s", len(files), code, out)
	}
	// Given out of order, the rotated files no longer make a chain.
	if len(files) >= 2 {
		swapped := append([]string{files[1], files[0]}, files[2:]...)
		if code, out := jitCLI(t, append([]string{"audit", "verify"}, swapped...)...); code != 1 {
			t.Errorf("verify with two files swapped: exit %d, want 1\n%s", code, out)
		}
	}
}

// A2. A restart continues the chain: the events after it link to those before it.
func TestAuditChainContinuesAcrossRestartAndReload(t *testing.T) {
	e := newEnv(t, envOptions{})
	site := e.site(0)
	alice := e.enroll("alice")
	b := e.browser("alice")
	b.mustActivate(site, roleAdmin, adminURI, alice, nil)
	b.get(site + "/admin/before")
	e.reload()
	b.get(site + "/admin/after-reload")
	e.restart()
	b.get(site + "/admin/after-restart")
	e.stop()

	events := chainedEvents(t, e.data.AuditLog)
	if len(events) < 5 {
		t.Fatalf("only %d events", len(events))
	}
	for i := 1; i < len(events); i++ {
		prev, _ := events[i-1]["seq"].(json.Number).Int64()
		seq, _ := events[i]["seq"].(json.Number).Int64()
		if seq != prev+1 || events[i]["instance"] != events[0]["instance"] {
			t.Fatalf("event %d: seq %d of %v after seq %d of %v: the chain did not continue", i, seq, events[i]["instance"], prev, events[i-1]["instance"])
		}
	}
	if code, out := jitCLI(t, "audit", "verify", e.data.AuditLog); code != 0 {
		t.Fatalf("verify after a reload and a restart: exit %d\n%s", code, out)
	}
}

// A3. Tampering with a log a real Caddy wrote is detected and located, through the CLI
// an auditor runs.
func TestAuditVerifyLocatesTamperingInARealLog(t *testing.T) {
	e := newEnv(t, envOptions{})
	site := e.site(0)
	alice := e.enroll("alice")
	b := e.browser("alice")
	b.mustActivate(site, roleAdmin, adminURI, alice, nil)
	for i := range 8 {
		b.get(fmt.Sprintf("%s/admin/page-%d", site, i))
	}
	e.stop()
	raw, err := os.ReadFile(e.data.AuditLog)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(strings.TrimSuffix(string(raw), "\n"), "\n")
	for i := range lines {
		lines[i] = strings.TrimSuffix(lines[i], "\n")
	}
	n := len(lines)
	if n < 8 {
		t.Fatalf("only %d lines", n)
	}
	tests := []struct {
		name     string
		mutate   func([]string) []string
		wantLine int // the line number the report must name
	}{
		{"edit", func(l []string) []string {
			l[5] = strings.Replace(l[5], `"/admin/page-`, `"/admin/other-`, 1)
			return l
		}, 6},
		{"delete", func(l []string) []string { return append(l[:5:5], l[6:]...) }, 6},
		{"insert", func(l []string) []string { return append(append(l[:5:5], l[3]), l[5:]...) }, 6},
		{"reorder", func(l []string) []string { l[4], l[5] = l[5], l[4]; return l }, 5},
		{"truncate mid-line", func(l []string) []string { l[n-1] = l[n-1][:len(l[n-1])/2]; return l }, n},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			changed := tt.mutate(append([]string(nil), lines...))
			path := filepath.Join(t.TempDir(), "jit-audit.log")
			if err := os.WriteFile(path, []byte(strings.Join(changed, "\n")+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			code, out := jitCLI(t, "audit", "verify", path)
			if code != 1 {
				t.Fatalf("exit %d, want 1\n%s", code, out)
			}
			if want := "jit-audit.log:" + strconv.Itoa(tt.wantLine) + ":"; !strings.Contains(out, want) {
				t.Errorf("the report does not name %s:\n%s", want, out)
			}
		})
	}
	if code, out := jitCLI(t, "audit", "verify", e.data.AuditLog); code != 0 {
		t.Fatalf("the untouched log: exit %d\n%s", code, out)
	}
}

// A4. A mutating request's access event holds its body's size and SHA-256; a role
// with record_bodies keeps the body in storage for review.
func TestAuditBodiesOfMutatingRequests(t *testing.T) {
	e := newEnv(t, envOptions{
		JitOptions: `
		role recorder {
			max_duration 1h
			justification optional
			record_bodies 16B
			eligible alice
		}`,
		Sites: []siteSpec{{Auth: true, Jit: "\tjit recorder"}},
	})
	site := e.site(0)
	alice := e.enroll("alice")
	b := e.browser("alice")
	b.mustActivate(site, "recorder", adminURI, alice, nil)
	body := `{"action":"delete-all-users","confirm":true}`
	r := b.do(http.MethodPost, site+"/admin/users", strings.NewReader(body), withHeader("Content-Type", "application/json"))
	wantStatus(t, r, http.StatusOK, "a POST under the session")
	if got := e.up.last(t).Body; got != body {
		t.Errorf("the upstream received %q, want the body unchanged", got)
	}
	b.get(site + "/admin/users")

	ev := e.waitEvent(match{"event": "access", "method": "POST"})
	sum := sha256.Sum256([]byte(body))
	if ev.str("body_sha256") != hex.EncodeToString(sum[:]) || ev.str("body_bytes") != strconv.Itoa(len(body)) || ev.str("body_type") != "application/json" {
		t.Errorf("access event body fields: %v; want body_bytes %d body_sha256 %x body_type application/json", ev, len(body), sum)
	}
	key := ev.str("body_key")
	if key == "" || ev.str("body_recorded") != "" {
		t.Fatalf("access event %v; want a body_key, and no body_recorded (it is false only for a dropped body)", ev)
	}
	// The body is written off the request path: it lands shortly after the event.
	var stored []byte
	var err error
	pollUntil(5*time.Second, func() bool {
		stored, err = os.ReadFile(filepath.Join(e.data.StorageDir, filepath.FromSlash(key)))
		return err == nil
	})
	if err != nil {
		t.Fatalf("reading the recorded body %s: %v", key, err)
	}
	if string(stored) != body[:16] {
		t.Errorf("recorded body %q, want the first 16 bytes %q", stored, body[:16])
	}
	get := e.waitEvent(match{"event": "access", "method": "GET", "uri": "/admin/users"})
	if _, ok := get["body_sha256"]; ok {
		t.Errorf("a GET's access event has body fields: %v", get)
	}
	// A WebDAV method changes state as much as a POST does; a PROPFIND only reads.
	dav := `<propertyupdate/>`
	b.do("PROPPATCH", site+"/admin/dav", strings.NewReader(dav), withHeader("Content-Type", "application/xml"))
	b.do("PROPFIND", site+"/admin/dav", strings.NewReader(dav), withHeader("Content-Type", "application/xml"))
	davSum := sha256.Sum256([]byte(dav))
	if ev := e.waitEvent(match{"event": "access", "method": "PROPPATCH"}); ev.str("body_sha256") != hex.EncodeToString(davSum[:]) {
		t.Errorf("a PROPPATCH's access event %v, want body_sha256 %x", ev, davSum)
	}
	if ev := e.waitEvent(match{"event": "access", "method": "PROPFIND"}); ev.str("body_sha256") != "" {
		t.Errorf("a PROPFIND's access event has body fields: %v", ev)
	}
}
