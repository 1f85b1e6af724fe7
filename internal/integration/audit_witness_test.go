package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/caddy-jit/caddy-jit/audit"
)

// Signed checkpoints, a witness off the host, and what they let `verify` prove
// (issue 16): the witness receives every checkpoint, each verifies with the key the
// site publishes — checked by Node's jose, not only by our code — and a log cut short
// or a checkpoint forged is found.

// checkpointScript verifies a checkpoint's compact JWS with the JWKS key its kid
// names, which must be published with use "audit"; it prints the signed payload.
// (jose's createLocalJWKSet takes only keys with use "sig", so the key is picked here.)
const checkpointScript = `import { compactVerify, importJWK } from 'jose';
const [jws, jwks] = process.argv.slice(2);
try {
  const [header] = jws.split('.');
  const { kid, alg } = JSON.parse(Buffer.from(header, 'base64url').toString());
  const jwk = JSON.parse(jwks).keys.find((k) => k.kid === kid);
  if (!jwk) throw new Error('no key ' + kid + ' in the JWKS');
  if (jwk.use !== 'audit') throw new Error('key ' + kid + ' has use ' + jwk.use + ', not audit');
  const key = await importJWK(jwk, alg);
  const { payload } = await compactVerify(jws, key, { algorithms: ['EdDSA', 'Ed25519'] });
  process.stdout.write(new TextDecoder().decode(payload));
} catch (e) {
  process.stderr.write(String(e.code || e.message));
  process.exit(1);
}
`

// verifyCheckpointWithJose returns the payload jose verified, or its error.
func verifyCheckpointWithJose(t *testing.T, jws, jwks string) (string, string) {
	t.Helper()
	dir := joseVerifier(t)
	script := filepath.Join(dir, "checkpoint.mjs")
	if err := os.WriteFile(script, []byte(checkpointScript), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("node", script, jws, jwks)
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", strings.TrimSpace(stderr.String())
	}
	return stdout.String(), ""
}

// witness is an HTTP server off the (pretend) host that keeps every checkpoint POSTed
// to it as a line of a file, as docs/audit.md asks of a witness.
type witness struct {
	srv  *httptest.Server
	mu   sync.Mutex
	file string
	got  int
}

func newWitness(t *testing.T) *witness {
	w := &witness{file: filepath.Join(t.TempDir(), "witnessed.jsonl")}
	w.srv = httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil || r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" || !json.Valid(body) {
			http.Error(rw, "want a POST of one JSON checkpoint", http.StatusBadRequest)
			return
		}
		w.mu.Lock()
		defer w.mu.Unlock()
		f, err := os.OpenFile(w.file, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
		if err == nil {
			_, err = f.Write(append(body, '\n'))
			f.Close()
		}
		if err != nil {
			http.Error(rw, err.Error(), http.StatusInternalServerError)
			return
		}
		w.got++
	}))
	t.Cleanup(w.srv.Close)
	return w
}

func (w *witness) lines(t *testing.T) []map[string]any {
	w.mu.Lock()
	defer w.mu.Unlock()
	return chainedEvents(t, w.file)
}

func TestAuditCheckpointsReachTheWitnessAndVerifyWithThePublishedKey(t *testing.T) {
	wit := newWitness(t)
	e := newEnv(t, envOptions{Batched: true, AuditSettings: "\t\t\tcheckpoint 100 1h\n\t\t\twitness " + wit.srv.URL})
	site := e.site(0)
	alice := e.enroll("alice")
	b := e.browser("alice")
	token := b.mustActivate(site, roleAdmin, adminURI, alice, nil)
	jwks := b.get(site + "/.jit/jwks.json")
	wantStatus(t, jwks, http.StatusOK, "the published keys")
	runLoad(site, "alice", token, 4, 350, make(chan struct{}))
	e.stop()

	logged := chainedEvents(t, e.data.AuditLog)
	witnessed := wit.lines(t)
	if n := countEvents(logged, "checkpoint"); n < 4 || len(witnessed) != n {
		t.Fatalf("%d checkpoints in the log, %d at the witness: want at least 4 (every 100 events and at stop), all witnessed", n, len(witnessed))
	}
	for i, cp := range witnessed {
		jws, _ := cp["signature"].(string)
		payload, errText := verifyCheckpointWithJose(t, jws, jwks.Body)
		if errText != "" {
			t.Fatalf("witnessed checkpoint %d does not verify with jose against /.jit/jwks.json: %s", i, errText)
		}
		var signed map[string]any
		if err := json.Unmarshal([]byte(payload), &signed); err != nil {
			t.Fatal(err)
		}
		for field, key := range map[string]string{"seq": "head_seq", "head": "head", "count": "count", "instance": "instance", "time": "time"} {
			if jsonText(signed[field]) != jsonText(cp[key]) {
				t.Errorf("checkpoint %d: the signed %s is %v, the event says %s %v", i, field, signed[field], key, cp[key])
			}
		}
	}
	// The last checkpoint covers the log's last event before it: the stop's.
	lastCP := witnessed[len(witnessed)-1]
	if jsonText(lastCP["head_seq"]) != jsonText(logged[len(logged)-2]["seq"]) || logged[len(logged)-1]["event"] != "checkpoint" {
		t.Errorf("the log does not end with a checkpoint over its last event: last checkpoint %v", lastCP)
	}
	// A key that is not published does not verify: the check can fail.
	forgedSet := strings.Replace(jwks.Body, `"use":"audit"`, `"use":"sig"`, 1)
	if _, errText := verifyCheckpointWithJose(t, lastCP["signature"].(string), forgedSet); errText == "" {
		t.Errorf("jose verified a checkpoint with a key not published for audit")
	}

	jwksFile := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(jwksFile, []byte(jwks.Body), 0o600); err != nil {
		t.Fatal(err)
	}
	whole, err := os.ReadFile(e.data.AuditLog)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(strings.TrimSuffix(string(whole), "\n"), "\n")
	if code, v, out := verifyChain(t, "--witness", wit.file, "--jwks", jwksFile, e.data.AuditLog); code != 0 || v.CheckpointsVerified != int64(len(witnessed)) || v.Witnessed != len(witnessed) {
		t.Fatalf("the whole log with its witness: exit %d, %d checkpoints verified, %d witnessed; want 0, %d, %d\n%s", code, v.CheckpointsVerified, v.Witnessed, len(witnessed), len(witnessed), out)
	}

	// The newest 120 lines cut off, the final checkpoint with them.
	const cut = 120
	truncated := writeTemp(t, "truncated.log", strings.Join(lines[:len(lines)-cut], ""))
	lastKept := jsonText(logged[len(logged)-cut-1]["seq"])
	wantCut := lastKept + "–" + jsonText(logged[len(logged)-1]["seq"])
	for _, args := range [][]string{{"--witness", wit.file, "--jwks", jwksFile}, {"--config", e.cfgFile}} {
		code, v, out := verifyChain(t, append(args, truncated)...)
		if code != 3 || !v.Intact || len(v.Cuts) != 1 {
			t.Errorf("verify %v of a log cut short: exit %d, intact %v, cuts %v; want 3, intact, one cut\n%s", args, code, v.Intact, v.Cuts, out)
			continue
		}
		c := v.Cuts[0]
		if got := fmt.Sprintf("%d–%d", c.FromSeq-1, c.ToSeq); got != wantCut {
			t.Errorf("verify %v: the cut runs after seq %s, want after %s", args, got, wantCut)
		}
	}

	// A checkpoint forged: its head_seq edited, then its head, then signed by a key
	// the site does not publish (the signature of another checkpoint moved onto it).
	cpLine := -1
	for i, ev := range logged {
		if ev["event"] == "checkpoint" {
			cpLine = i
			break
		}
	}
	original := lines[cpLine]
	seq := jsonText(logged[cpLine]["head_seq"])
	nextCP := witnessed[1]["signature"].(string)
	for name, forged := range map[string]string{
		"head_seq edited":   strings.Replace(original, `"head_seq":`+seq, `"head_seq":`+seq+`0`, 1),
		"head edited":       strings.Replace(original, `"head":"`, `"head":"0`, 1),
		"another signature": strings.Replace(original, logged[cpLine]["signature"].(string), nextCP, 1),
	} {
		if forged == original {
			t.Fatalf("%s: the edit did not apply to %s", name, original)
		}
		edited := slices.Clone(lines)
		edited[cpLine] = forged
		file := writeTemp(t, "forged.log", strings.Join(edited, ""))
		code, v, out := verifyChain(t, "--jwks", jwksFile, file)
		if code != 1 || v.Intact || !strings.Contains(out, "checkpoint") {
			t.Errorf("%s: verify exit %d, intact %v; want 1, a break at the checkpoint\n%s", name, code, v.Intact, out)
		}
	}
}

// verifyChain runs `caddy jit audit verify --json ARGS…` and returns its exit code and
// result.
func verifyChain(t *testing.T, args ...string) (int, audit.ChainVerification, string) {
	t.Helper()
	code, out := jitCLI(t, append([]string{"audit", "verify", "--json"}, args...)...)
	var v audit.ChainVerification
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("caddy jit audit verify --json %v: exit %d, not JSON: %v\n%s", args, code, err, out)
	}
	return code, v, out
}

func writeTemp(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func jsonText(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
