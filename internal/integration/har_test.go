package integration

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// harValidatorVersion is the npm package that judges the archives: the validator of
// the HAR 1.2 schema that HAR tools use.
const harValidatorVersion = "5.1.5"

const harValidateScript = `const validate = require('har-validator');
const data = JSON.parse(require('fs').readFileSync(process.argv[2], 'utf8'));
validate.har(data).then(() => process.stdout.write('valid'), (e) => {
  process.stderr.write(JSON.stringify(e.errors || String(e)));
  process.exit(1);
});
`

// harValidator installs har-validator once per test run and returns the folder of its
// script.
func harValidator(t *testing.T) string {
	t.Helper()
	return npmTool(t, "har-validator", harValidatorVersion, "validate.js", harValidateScript, "HAR files are validated by the npm package har-validator")
}

// A real session — a GET, a POST whose body the role records, ended by a revocation —
// written by `caddy jit audit session --har` is an HTTP Archive that har-validator
// accepts, holds the recorded body, and no cookie, token or Authorization value.
func TestSessionAsHARValidates(t *testing.T) {
	e := newEnv(t, envOptions{
		JitOptions: `
		role recorder {
			max_duration 1h
			justification optional
			record_bodies 1KiB
			eligible alice
		}`,
		Sites: []siteSpec{{Auth: true, Jit: "\tjit recorder"}},
	})
	site := e.site(0)
	alice := e.enroll("alice")
	b := e.browser("alice")
	token := b.mustActivate(site, "recorder", adminURI, alice, nil)
	sid := sessionID(t, token)
	wantStatus(t, b.get(site+"/admin/users?page=2"), http.StatusOK, "a GET under the session")
	body := `{"action":"disable","user":"mallory"}`
	r := b.do(http.MethodPost, site+"/admin/users", strings.NewReader(body), withHeader("Content-Type", "application/json"))
	wantStatus(t, r, http.StatusOK, "a POST under the session")
	post := e.waitEvent(match{"event": "access", "method": "POST"})
	pollUntil(5*time.Second, func() bool {
		_, err := os.Stat(filepath.Join(e.data.StorageDir, filepath.FromSlash(post.str("body_key"))))
		return err == nil
	})
	e.revoke(sid)
	e.stop()

	file := filepath.Join(t.TempDir(), "session.har")
	code, out := jitCLI(t, "audit", "session", sid, e.data.AuditLog, "--har", file, "--config", e.cfgFile, "--origin", site)
	if code != 0 || !strings.Contains(out, "Wrote ") {
		t.Fatalf("audit session --har: exit %d\n%s", code, out)
	}
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(file); fi.Mode().Perm() != 0o600 {
		t.Errorf("the HAR file's mode is %v, want 0600: it may hold request bodies", fi.Mode().Perm())
	}

	cmd := exec.Command("node", filepath.Join(harValidator(t), "validate.js"), file)
	cmd.Dir = harValidator(t)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil || stdout.String() != "valid" {
		t.Fatalf("har-validator refused the archive: %v: %s\n%s", err, stderr.String(), raw)
	}

	var h struct {
		Log struct {
			Comment string `json:"comment"`
			Entries []struct {
				Request struct {
					Method   string `json:"method"`
					URL      string `json:"url"`
					Headers  []struct{ Name, Value string }
					PostData *struct {
						Text     string `json:"text"`
						MimeType string `json:"mimeType"`
					} `json:"postData"`
				} `json:"request"`
				Response struct {
					Status int `json:"status"`
				} `json:"response"`
			} `json:"entries"`
		} `json:"log"`
	}
	if err := json.Unmarshal(raw, &h); err != nil {
		t.Fatal(err)
	}
	var sawGet, sawPost bool
	for _, en := range h.Log.Entries {
		switch {
		case en.Request.Method == "GET" && en.Request.URL == site+"/admin/users?page=2" && en.Response.Status == 200:
			sawGet = true
		case en.Request.Method == "POST" && en.Request.URL == site+"/admin/users":
			sawPost = en.Request.PostData != nil && en.Request.PostData.Text == body && en.Request.PostData.MimeType == "application/json"
		}
	}
	if !sawGet || !sawPost {
		t.Errorf("the archive lacks the GET (%v) or the POST with its recorded body and type (%v):\n%s", sawGet, sawPost, raw)
	}
	if !strings.Contains(h.Log.Comment, "ended: revoked") {
		t.Errorf("the archive's comment does not say the session was revoked: %q", h.Log.Comment)
	}
	for _, secret := range []string{token, password("alice"), "Authorization", "Cookie", cookieName, "X-Jit-Assertion"} {
		if strings.Contains(string(raw), secret) {
			t.Errorf("the archive holds %q", secret)
		}
	}
}
