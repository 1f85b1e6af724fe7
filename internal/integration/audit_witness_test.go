package integration

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
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
}

func jsonText(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
