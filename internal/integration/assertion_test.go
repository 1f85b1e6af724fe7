package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// joseVersion is the npm package that plays the independent verifier: an upstream
// written in JavaScript checking X-Jit-Assertion as its documentation says.
const joseVersion = "6.2.17"

const verifyScript = `import { jwtVerify, createLocalJWKSet } from 'jose';
const [token, jwks, audience, issuer] = process.argv.slice(2);
try {
  const { payload, protectedHeader } = await jwtVerify(token, createLocalJWKSet(JSON.parse(jwks)), {
    audience, issuer, typ: 'jit-assertion+jwt', algorithms: ['EdDSA', 'Ed25519'],
  });
  process.stdout.write(JSON.stringify({ payload, protectedHeader }));
} catch (e) {
  process.stderr.write(String(e.code || e.message));
  process.exit(1);
}
`

// joseVerifier installs the npm package jose once per test run and returns the folder
// of the verify script.
func joseVerifier(t *testing.T) string {
	t.Helper()
	return npmTool(t, "jose", joseVersion, "verify.mjs", verifyScript, "the assertion is verified by the npm package jose")
}

var npmTools sync.Map // package name → *npmInstall

type npmInstall struct {
	once sync.Once
	dir  string
	err  error
}

// npmTool installs the npm package name@version under the test run's folder, once per
// run, beside a script file that uses it, and returns their folder. what says what
// the package does, for the message when Node.js is missing.
func npmTool(t *testing.T, name, version, scriptName, script, what string) string {
	t.Helper()
	if _, err := exec.LookPath("node"); err != nil {
		t.Fatalf("node is not installed: %s under Node.js; install nodejs and npm (apt-get install -y nodejs npm), as .ci/run does", what)
	}
	v, _ := npmTools.LoadOrStore(name, &npmInstall{})
	in := v.(*npmInstall)
	in.once.Do(func() {
		in.dir = filepath.Join(binDir, name+"-tool")
		if in.err = os.MkdirAll(in.dir, 0o755); in.err != nil {
			return
		}
		if in.err = os.WriteFile(filepath.Join(in.dir, scriptName), []byte(script), 0o644); in.err != nil {
			return
		}
		out, err := exec.Command("npm", "install", "--no-audit", "--no-fund", "--silent", "--prefix", in.dir, name+"@"+version).CombinedOutput()
		if err != nil {
			in.err = fmt.Errorf("%w\n%s", err, out)
		}
	})
	if in.err != nil {
		t.Fatalf("npm install %s@%s: %v", name, version, in.err)
	}
	return in.dir
}

// verifyWithJose runs the JavaScript verifier; it returns the payload, or the error
// code jose gave.
func verifyWithJose(t *testing.T, token, jwks, audience, issuer string) (map[string]any, string) {
	t.Helper()
	dir := joseVerifier(t)
	cmd := exec.Command("node", filepath.Join(dir, "verify.mjs"), token, jwks, audience, issuer)
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, strings.TrimSpace(stderr.String())
	}
	var out struct {
		Payload map[string]any `json:"payload"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		t.Fatalf("the verifier printed %q: %v", stdout.String(), err)
	}
	return out.Payload, ""
}

// X-Jit-Assertion: a short-lived JWS for the upstream, verified by an independent JOSE
// implementation against the site's /.jit/jwks.json.
func TestAssertionVerifiedByJoseForNode(t *testing.T) {
	const upstream = "https://console-backend.internal"
	e := newEnv(t, envOptions{Sites: []siteSpec{{Auth: true, Jit: "\tjit " + roleAdmin + " {\n\t\tassertion " + upstream + "\n\t}"}}})
	site := e.site(0)
	alice := e.enroll("alice")
	b := e.browser("alice")
	token := b.mustActivate(site, roleAdmin, adminURI, alice, nil)
	sid := sessionID(t, token)

	forged := "eyJhbGciOiJub25lIn0.eyJzdWIiOiJyb290In0."
	wantStatus(t, b.get(site+adminURI, withHeader("X-Jit-Assertion", forged)), http.StatusOK, "a request under the session")
	got := e.up.last(t).Header.Values("X-Jit-Assertion")
	if len(got) != 1 || got[0] == forged || got[0] == "" {
		t.Fatalf("the upstream received X-Jit-Assertion %q, want exactly one of ours", got)
	}
	assertion := got[0]

	// The keys, as an upstream fetches them through the site (with its credentials).
	r := b.get(site + "/.jit/jwks.json")
	wantStatus(t, r, http.StatusOK, "GET /.jit/jwks.json")
	jwks := []byte(r.Body)

	payload, failure := verifyWithJose(t, assertion, string(jwks), upstream, "caddy-jit integration")
	if failure != "" {
		t.Fatalf("jose refused our assertion: %s", failure)
	}
	if payload["sub"] != "alice" || payload["role"] != roleAdmin || payload["sid"] != sid || payload["aud"] != upstream {
		t.Errorf("payload %v, want sub alice, role %s, sid %s, aud %s", payload, roleAdmin, sid, upstream)
	}
	if amr, _ := payload["amr"].([]any); len(amr) != 1 || amr[0] != "otp" {
		t.Errorf("payload amr %v, want [otp]: the session was made with a TOTP code", payload["amr"])
	}
	exp, _ := payload["exp"].(float64)
	iat, _ := payload["iat"].(float64)
	if exp-iat <= 0 || exp-iat > 120 {
		t.Errorf("the assertion lives %v s, want at most 120", exp-iat)
	}

	// What jose must refuse: another audience, an edited payload, the session cookie.
	for _, tt := range []struct{ name, token, audience, want string }{
		{"another upstream", assertion, "https://elsewhere.internal", "ERR_JWT_CLAIM_VALIDATION_FAILED"},
		{"edited", tamper(assertion), upstream, "ERR_JWS_SIGNATURE_VERIFICATION_FAILED"},
		{"the session cookie", token, upstream, "ERR_JWT_CLAIM_VALIDATION_FAILED"},
	} {
		if _, failure := verifyWithJose(t, tt.token, string(jwks), tt.audience, "caddy-jit integration"); failure == "" {
			t.Errorf("%s: jose accepted it", tt.name)
		} else if !strings.Contains(failure, "ERR_") {
			t.Errorf("%s: jose failed with %q, not a JOSE error code", tt.name, failure)
		}
	}

	// A forged header without a session never reaches the upstream.
	before := e.up.count()
	e.browser("bob").get(site+adminURI, withHeader("X-Jit-Assertion", assertion))
	wantNoUpstream(t, e.up, before, "a request without a session, carrying alice's assertion")
}

// tamper changes the payload of a compact JWS, keeping its signature.
func tamper(token string) string {
	parts := strings.Split(token, ".")
	if len(parts) != 3 || len(parts[1]) < 4 {
		return token
	}
	p := []byte(parts[1])
	if p[2] == 'A' {
		p[2] = 'B'
	} else {
		p[2] = 'A'
	}
	return parts[0] + "." + string(p) + "." + parts[2]
}
