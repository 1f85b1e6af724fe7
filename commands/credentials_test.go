package commands

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/caddy-jit/caddy-jit/authority"
	"github.com/caddy-jit/caddy-jit/internal/adminapi"
	"github.com/caddy-jit/caddy-jit/internal/testkit"
	"github.com/caddy-jit/caddy-jit/stepup"
)

// Two passkeys as the admin API shows them: one bound to its device and used, one
// synced and never used.
var (
	cliLaptop = adminapi.Passkey{
		ID: "q2x7wEAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", Name: "laptop", AAGUID: testkit.SoftKeyAAGUID, RPID: "example.com",
		Created: cliTestStart, LastUsed: ptr(cliTestStart.Add(2 * time.Hour)),
	}
	cliPhone = adminapi.Passkey{
		ID: "BBBBBBBBBBBBBBBBBBBBBB", Name: "Jürgen's\x1b[2J phone \u202e", RPID: "admin.example.com",
		Created: cliTestStart.Add(time.Hour), Synced: true,
	}
)

func ptr[T any](v T) *T { return &v }

func passkeysJSON(t *testing.T, list ...adminapi.Passkey) string {
	t.Helper()
	b, err := json.Marshal(append([]adminapi.Passkey{}, list...))
	if err != nil {
		t.Fatal(err)
	}
	return string(b) + "\n"
}

func removalJSON(t *testing.T, r adminapi.PasskeyRemoval) string {
	t.Helper()
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	return string(b) + "\n"
}

func TestCredentialsRequestTheAdminAPI(t *testing.T) {
	by := operatorLogin()
	removed := removalJSON(t, adminapi.PasskeyRemoval{User: "alice", Removed: cliLaptop, Remaining: 1})
	for _, tc := range []struct {
		name        string
		args        []string
		body        string
		wantMethod  string
		wantEscaped string
		wantQuery   url.Values
	}{
		{"list", []string{"credentials", "alice"}, passkeysJSON(t), http.MethodGet, "/jit/credentials/alice", url.Values{}},
		{"list escaped", []string{"credentials", "ops/Jürgen Müller?x#y"}, passkeysJSON(t), http.MethodGet, "/jit/credentials/ops%2FJ%C3%BCrgen%20M%C3%BCller%3Fx%23y", url.Values{}},
		{"list as JSON", []string{"credentials", "alice", "--json"}, passkeysJSON(t), http.MethodGet, "/jit/credentials/alice", url.Values{}},
		{"remove", []string{"credentials", "remove", "alice", cliLaptop.ID}, removed,
			http.MethodDelete, "/jit/credentials/alice/" + cliLaptop.ID, url.Values{"by": {by}, "reason": {""}}},
		{"remove by another name", []string{"credentials", "remove", "alice", cliLaptop.ID, "--by", "carol & co", "--reason", "key lost"}, removed,
			http.MethodDelete, "/jit/credentials/alice/" + cliLaptop.ID, url.Values{"by": {"carol & co"}, "reason": {"key lost"}}},
		{"remove an id with a leading dash", []string{"credentials", "remove", "alice", "--", "-AAAAAAAAAAAAAAAAAAAAA"}, removed,
			http.MethodDelete, "/jit/credentials/alice/-AAAAAAAAAAAAAAAAAAAAA", url.Values{"by": {by}, "reason": {""}}},
		{"remove escaped", []string{"credentials", "remove", "ops/carol", "a/b?c#d"}, removed,
			http.MethodDelete, "/jit/credentials/ops%2Fcarol/a%2Fb%3Fc%23d", url.Values{"by": {by}, "reason": {""}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stub := &adminStub{status: http.StatusOK, body: tc.body}
			// The flags go before a "--", after which all is arguments.
			args := slices.Clone(tc.args)
			at := slices.Index(args, "--")
			if at < 0 {
				at = len(args)
			}
			args = slices.Insert(args, at, "--address", stub.start(t))
			if _, _, err := runJitStreams(t, args...); err != nil {
				t.Fatalf("%v: %v", args, err)
			}
			req := stub.only(t)
			if req.method != tc.wantMethod || req.escapedPath != tc.wantEscaped {
				t.Errorf("request %s %s, want %s %s", req.method, req.escapedPath, tc.wantMethod, tc.wantEscaped)
			}
			if !reflect.DeepEqual(req.query, tc.wantQuery) {
				t.Errorf("query %v, want %v", req.query, tc.wantQuery)
			}
		})
	}
}

func TestCredentialsTableAndJSON(t *testing.T) {
	body := passkeysJSON(t, cliLaptop, cliPhone)
	for _, tc := range []struct {
		name  string
		args  []string
		body  string
		want  []string // lines, after collapsing runs of spaces
		exact string   // the whole output, when set
	}{
		{
			name: "table", args: []string{"credentials", "alice"}, body: body,
			want: []string{
				"ID NAME RP_ID SYNCED CREATED LAST_USED AAGUID",
				cliLaptop.ID + " laptop example.com no 2026-03-01 09:00 UTC 2026-03-01 11:00 UTC " + testkit.SoftKeyAAGUID,
				"BBBBBBBBBBBBBBBBBBBBBB Jürgen's?[2J phone ? admin.example.com yes 2026-03-01 10:00 UTC never -",
			},
		},
		{name: "json", args: []string{"credentials", "alice", "--json"}, body: body, exact: body},
		{name: "json gets a newline", args: []string{"credentials", "alice", "--json"}, body: strings.TrimSpace(body), exact: body},
		{name: "none", args: []string{"credentials", "alice"}, body: "[]\n", exact: "No passkeys of \"alice\".\n"},
		{name: "none as JSON", args: []string{"credentials", "alice", "--json"}, body: "[]\n", exact: "[]\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stub := &adminStub{status: http.StatusOK, body: tc.body}
			out, stderr, err := runJitStreams(t, append(tc.args, "--address", stub.start(t))...)
			if err != nil {
				t.Fatalf("credentials: %v", err)
			}
			if stderr != "" {
				t.Errorf("stderr %q, want nothing through the admin API", stderr)
			}
			if tc.exact != "" && out != tc.exact {
				t.Errorf("output:\n%q\nwant\n%q", out, tc.exact)
			}
			if tc.want == nil {
				return
			}
			lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
			if len(lines) != len(tc.want) {
				t.Fatalf("output has %d lines, want %d:\n%s", len(lines), len(tc.want), out)
			}
			col := runeIndex(lines[0], "SYNCED")
			for i, line := range lines {
				if got := strings.Join(strings.Fields(line), " "); got != tc.want[i] {
					t.Errorf("line %d:\n got %q\nwant %q", i, got, tc.want[i])
				}
				if i > 0 && runeIndex(line, []string{" no ", " yes "}[i-1])+1 != col {
					t.Errorf("line %d: SYNCED is not aligned under its header:\n%s", i, out)
				}
			}
		})
	}
}

func TestRemoveCredentialSaysWhatTheUserHasLeft(t *testing.T) {
	const removed = "Removed the passkey \"laptop\" of alice (id " + "q2x7wEAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA" +
		", rp_id example.com, registered 2026-03-01 09:00 UTC, last used 2026-03-01 11:00 UTC). "
	unnamed := cliPhone
	unnamed.Name = ""
	for _, tc := range []struct {
		name    string
		removal adminapi.PasskeyRemoval
		want    string
	}{
		{"TOTP left", adminapi.PasskeyRemoval{User: "alice", Removed: cliLaptop, Remaining: 0, TOTPEnrolled: true},
			removed + "alice has 0 passkeys left.\nalice can register another passkey on /.jit/enroll of a protected site, with a code of their TOTP authenticator.\n"},
		{"other passkeys left", adminapi.PasskeyRemoval{User: "alice", Removed: cliLaptop, Remaining: 1},
			removed + "alice has 1 passkey left.\nalice steps up with their other passkeys. Registering another on /.jit/enroll takes a TOTP code, and they have no TOTP authenticator: an enrollment link gives them one (caddy jit enroll alice --link).\n"},
		{"nothing left", adminapi.PasskeyRemoval{User: "alice", Removed: cliLaptop},
			removed + "alice has 0 passkeys left.\nalice has no passkey and no TOTP authenticator left, so they cannot step up: send them an enrollment link (caddy jit enroll alice --link).\n"},
		{"an unnamed passkey of a name to quote", adminapi.PasskeyRemoval{User: "Jürgen O'Neil", Removed: unnamed, Remaining: 2},
			"Removed the unnamed passkey of Jürgen O'Neil (id BBBBBBBBBBBBBBBBBBBBBB, rp_id admin.example.com, registered 2026-03-01 10:00 UTC, last used never). Jürgen O'Neil has 2 passkeys left.\n" +
				"Jürgen O'Neil steps up with their other passkeys. Registering another on /.jit/enroll takes a TOTP code, and they have no TOTP authenticator: an enrollment link gives them one (caddy jit enroll 'Jürgen O'\\''Neil' --link).\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stub := &adminStub{status: http.StatusOK, body: removalJSON(t, tc.removal)}
			out, _, err := runJitStreams(t, "credentials", "remove", tc.removal.User, tc.removal.Removed.ID, "--address", stub.start(t))
			if err != nil {
				t.Fatal(err)
			}
			if out != tc.want {
				t.Errorf("output:\n%s\nwant\n%s", out, tc.want)
			}
		})
	}
}

func TestCredentialsErrorsArePlain(t *testing.T) {
	for _, tc := range []struct {
		name    string
		args    []string
		status  int
		body    string
		want    []string
		notWant []string
	}{
		{
			name: "no such passkey", args: []string{"credentials", "remove", "alice", "AAAAAAAAAAAAAAAAAAAAAA"}, status: http.StatusNotFound,
			body:    `{"error":"alice has no passkey with the id \"AAAAAAAAAAAAAAAAAAAAAA\": list their passkeys with ` + "`caddy jit credentials USER`" + `"}` + "\n",
			want:    []string{`removing the passkey "AAAAAAAAAAAAAAAAAAAAAA" of "alice"`, "HTTP 404", `alice has no passkey with the id "AAAAAAAAAAAAAAAAAAAAAA"`},
			notWant: []string{`{"error"`},
		},
		{
			name: "bad user name", args: []string{"credentials", "al\x01ice"}, status: http.StatusBadRequest,
			body: `{"error":"the user name \"al\\u0001ice\" holds a slash or a control character"}`,
			want: []string{"listing the passkeys of", "HTTP 400", "holds a slash or a control character"},
		},
		{
			name: "jit not configured", args: []string{"credentials", "alice"}, status: http.StatusNotFound,
			body: `{"error":"caddy-jit is not configured: the running config has no jit app (global ` + "`jit`" + ` option)"}`,
			want: []string{"HTTP 404", "caddy-jit is not configured"},
		},
		{
			name: "an older caddy-jit", args: []string{"credentials", "alice"}, status: http.StatusNotFound,
			body: "404 page not found\n",
			want: []string{"has no /jit/ endpoint", "built with caddy-jit"},
		},
		{
			name: "not a passkey list", args: []string{"credentials", "alice", "--json"}, status: http.StatusOK,
			body: `{"sessions":[]}`,
			want: []string{"something other than caddy-jit's JSON"},
		},
		{
			name: "a removal without the passkey", args: []string{"credentials", "remove", "alice", "AAAAAAAAAAAAAAAAAAAAAA"}, status: http.StatusOK,
			body: `{"user":"alice"}`,
			want: []string{"without the passkey it removed"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stub := &adminStub{status: tc.status, body: tc.body}
			out, _, err := runJitStreams(t, append(tc.args, "--address", stub.start(t))...)
			if err == nil {
				t.Fatalf("%v succeeded:\n%s", tc.args, out)
			}
			for _, want := range tc.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
			for _, notWant := range tc.notWant {
				if strings.Contains(err.Error(), notWant) {
					t.Errorf("error %q contains %q", err, notWant)
				}
			}
			if out != "" {
				t.Errorf("printed something despite the error:\n%s", out)
			}
		})
	}
}

func TestCredentialsArgs(t *testing.T) {
	const addr = "127.0.0.1:1" // never reached: each case fails before
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"list nobody", []string{"credentials"}, "want exactly one user name, got 0 arguments: caddy jit credentials <user>"},
		{"list two users", []string{"credentials", "alice", "bob"}, "want exactly one user name, got 2"},
		{"list an empty name", []string{"credentials", "", "--address", addr}, "no user name: caddy jit credentials <user>"},
		{"remove without an id", []string{"credentials", "remove", "alice"}, "want a user name and a passkey id, got 1"},
		{"remove three", []string{"credentials", "remove", "alice", "a", "b"}, "want a user name and a passkey id, got 3"},
		{"remove for an empty name", []string{"credentials", "remove", "", "AAAA", "--address", addr}, "no user name"},
		{"remove an empty id", []string{"credentials", "remove", "alice", "", "--address", addr}, "no passkey id"},
		{"--by with a control character", []string{"credentials", "remove", "alice", "AAAA", "--by", "eve\nmallory", "--address", addr}, "--by holds a control character"},
		{"--by too long", []string{"credentials", "remove", "alice", "AAAA", "--by", strings.Repeat("é", 65), "--address", addr}, "--by is longer than 64 characters"},
		{"an id with a leading dash, before '--'", []string{"credentials", "remove", "alice", "-pYjT_gQr"}, "unknown shorthand flag: 'p' in -pYjT_gQr; if that is a passkey id, put it after '--'"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := runJitStreams(t, tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestCredentialsCommandsAreRegistered(t *testing.T) {
	cmd := jitCommand()
	for path, flags := range map[string][]string{
		"credentials":        {"json", "address", "config", "adapter"},
		"credentials remove": {"by", "reason", "address", "config", "adapter"},
	} {
		sub, _, err := cmd.Find(strings.Fields(path))
		if err != nil || sub.CommandPath() != "jit "+path {
			t.Errorf("caddy jit %s: found %q, %v", path, sub.CommandPath(), err)
			continue
		}
		if sub.Short == "" || sub.Long == "" || sub.RunE == nil {
			t.Errorf("caddy jit %s lacks Short, Long or RunE", path)
		}
		for _, flag := range flags {
			if sub.Flags().Lookup(flag) == nil {
				t.Errorf("caddy jit %s lacks --%s", path, flag)
			}
		}
	}
}

// credentialsFixture is a Caddyfile with the admin API off, user_names
// case_insensitive, and a file storage in which a running instance registered alice's
// passkey "laptop".
type credentialsFixture struct {
	*offlineFixture
	running *authority.Authority
	laptop  *testkit.SoftKey
}

func newCredentialsFixture(t *testing.T) *credentialsFixture {
	t.Helper()
	dir := t.TempDir()
	f := &credentialsFixture{offlineFixture: &offlineFixture{
		caddyfile: filepath.Join(t.TempDir(), "Caddyfile"),
		storage:   &certmagic.FileStorage{Path: dir},
	}}
	src := "{\n\tadmin off\n\tstorage file_system \"" + dir + "\"\n\tjit {\n\t\tuser_names case_insensitive\n" +
		"\t\trole r {\n\t\t\tmax_duration 1h\n\t\t\teligible alice\n\t\t}\n\t}\n}\n"
	if err := os.WriteFile(f.caddyfile, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	var err error
	f.running, err = authority.New(context.Background(), f.storage, authority.Config{
		Issuer: "caddy-jit", MaxFailures: 5, LockoutDuration: time.Hour, Audit: zap.NewNop(), Now: time.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	f.laptop = testkit.NewSoftKey(t, "https://console.example.com")
	site := stepup.Site{Origin: "https://console.example.com"}
	options, ceremony, err := f.running.StepUp.Passkeys().BeginRegistration(context.Background(), "alice", site)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.running.StepUp.Passkeys().FinishRegistration(context.Background(), "alice", site, ceremony, "laptop", f.laptop.Create(options)); err != nil {
		t.Fatal(err)
	}
	return f
}

// ids lists the credential ids the running instance finds for alice now.
func (f *credentialsFixture) ids(t *testing.T) []string {
	t.Helper()
	list, err := f.running.StepUp.Passkeys().List(context.Background(), "alice")
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, pk := range list {
		ids = append(ids, pk.ID)
	}
	return ids
}

func TestOfflineCredentials(t *testing.T) {
	f := newCredentialsFixture(t)
	stdout, stderr, err := runJitStreams(t, "credentials", "ALICE", "--json", "--config", f.caddyfile)
	if err != nil {
		t.Fatalf("credentials on storage: %v\nstderr:\n%s", err, stderr)
	}
	var list []adminapi.Passkey
	if err := json.Unmarshal([]byte(stdout), &list); err != nil {
		t.Fatalf("--json printed no passkey list: %v\n%s", err, stdout)
	}
	if len(list) != 1 || list[0].ID != f.laptop.ID() || list[0].Name != "laptop" || list[0].RPID != "console.example.com" || list[0].AAGUID != testkit.SoftKeyAAGUID {
		t.Errorf("listed %+v, want alice's laptop %s at console.example.com", list, f.laptop.ID())
	}
	checkNote(t, f.offlineFixture, stderr, "read")
	checkAudit(t, stderr)

	// An id may start with '-': it goes after "--".
	stdout, stderr, err = runJitStreams(t, "credentials", "remove", "--config", f.caddyfile, "--", "Alice", f.laptop.ID())
	if err != nil {
		t.Fatalf("credentials remove on storage: %v\nstderr:\n%s", err, stderr)
	}
	if want := "Removed the passkey \"laptop\" of alice (id " + f.laptop.ID() + ", rp_id console.example.com, "; !strings.HasPrefix(stdout, want) ||
		!strings.Contains(stdout, "alice has no passkey and no TOTP authenticator left") {
		t.Errorf("stdout %q, want it to start %q and say alice has nothing left", stdout, want)
	}
	if ids := f.ids(t); len(ids) != 0 {
		t.Errorf("the running instance still finds %v", ids)
	}
	checkNote(t, f.offlineFixture, stderr, "changed")
	checkAudit(t, stderr, map[string]any{"event": "passkey_removed", "user": "alice", "credential_id": f.laptop.ID(), "rp_id": "console.example.com"})

	stdout, _, err = runJitStreams(t, "credentials", "alice", "--config", f.caddyfile)
	if err != nil || stdout != "No passkeys of \"alice\".\n" {
		t.Errorf("after the removal: %q, %v", stdout, err)
	}
}

func TestOfflineRemoveCredentialBy(t *testing.T) {
	f := newCredentialsFixture(t)
	_, stderr, err := runJitStreams(t, "credentials", "remove", "--by", "carol", "--config", f.caddyfile, "--", "alice", f.laptop.ID())
	if err != nil {
		t.Fatalf("credentials remove --by: %v\nstderr:\n%s", err, stderr)
	}
	events := auditEvents(t, stderr)
	if len(events) != 1 || events[0]["msg"] != "passkey_removed" || events[0]["by"] != "carol via caddy jit on storage (admin API off)" {
		t.Errorf("audit events %v, want one passkey_removed by carol via caddy jit on storage", events)
	}
}

func TestOfflineRemoveCredentialRefusals(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"an id alice does not have", []string{"remove", "alice", "AAAAAAAAAAAAAAAAAAAAAA"}, `alice has no passkey with the id "AAAAAAAAAAAAAAAAAAAAAA": list their passkeys`},
		{"a malformed id", []string{"remove", "alice", "../../keys/signing"}, "is not base64url"},
		{"a user name with a slash", []string{"remove", "ops/carol", "AAAAAAAAAAAAAAAAAAAAAA"}, "holds a slash"},
		{"a list for a user name with a slash", []string{"ops/carol"}, "holds a slash"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newCredentialsFixture(t)
			stdout, stderr, err := runJitStreams(t, append(append([]string{"credentials"}, tc.args...), "--config", f.caddyfile)...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
			if stdout != "" || strings.Contains(stderr, "changed") {
				t.Errorf("a failed command printed %q, noted %q", stdout, stderr)
			}
			if ids := f.ids(t); !slices.Equal(ids, []string{f.laptop.ID()}) {
				t.Errorf("a failed command left alice with %v", ids)
			}
			checkAudit(t, stderr)
		})
	}
}
