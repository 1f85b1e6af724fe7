package integration

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/caddy-jit/caddy-jit/internal/testkit"
)

// A user with nothing enrolled registers a first passkey with the enrollment link an
// operator sent, from the browser that opened it, and activates a passkey-only role
// with it. A second browser that knows only the password gets nothing from the link.
func TestPasskeyByEnrollmentLink(t *testing.T) {
	e := newEnv(t, envOptions{
		JitOptions: `		role ops {
			max_duration 1h
			justification required 10
			eligible dave
			step_up webauthn
		}`,
		Sites: []siteSpec{{Auth: true, Jit: "\tjit ops"}},
	})
	site := e.site(0)
	link := e.enrollLink("dave", "")
	key := testkit.NewSoftKey(t, site)

	dave := e.browser("dave")
	page := dave.get(site + link.LinkPath)
	if page.StatusCode != http.StatusOK || !strings.Contains(page.Body, "Or use a passkey instead") {
		t.Fatalf("the link's page offers no passkey to dave, who has nothing enrolled: %s", page)
	}
	fields := formFields(t, page.Body, "/.jit/enroll?passkey=1")
	csrf, token := fields.Get("csrf"), fields.Get("token")
	begin := func(b *browser, form url.Values) (int, passkeyOptionsAnswer) {
		t.Helper()
		endpoint := "/.jit/passkey"
		if form.Get("token") != "" {
			endpoint = "/.jit/enroll/passkey" // where the link's binding cookie goes
		}
		r := b.postForm(site+endpoint, form)
		var answer passkeyOptionsAnswer
		if err := json.Unmarshal([]byte(r.Body), &answer); err != nil {
			t.Fatalf("POST /.jit/passkey answered %s: %v", r, err)
		}
		return r.StatusCode, answer
	}
	register := url.Values{"csrf": {csrf}, "kind": {"register"}, "form": {"register"}, "token": {token}}

	// The thief has the password and the link, not the browser that opened it.
	thief := e.browser("dave")
	if status, answer := begin(thief, register); status != http.StatusConflict || !strings.Contains(answer.Error, "another browser") {
		t.Fatalf("a second browser began a registration with the link: %d %+v", status, answer)
	}

	status, answer := begin(dave, register)
	if status != http.StatusOK || answer.Ceremony == "" {
		t.Fatalf("dave's registration: %d %+v", status, answer)
	}
	created := key.Create(answer.Options)
	// The thief cannot finish dave's ceremony either: the link's binding is dave's.
	stolen := url.Values{"csrf": {csrf}, "token": {token}, "name": {"thief"}, "passkey_ceremony": {answer.Ceremony}, "passkey_response": {string(created)}}
	if r := thief.postForm(site+"/.jit/enroll?passkey=1", stolen); r.StatusCode != http.StatusConflict {
		t.Fatalf("the second browser finished dave's registration: %s", r)
	}
	finish := url.Values{"csrf": {csrf}, "token": {token}, "name": {"dave's key"}, "passkey_ceremony": {answer.Ceremony}, "passkey_response": {string(created)}}
	if r := dave.postForm(site+"/.jit/enroll?passkey=1", finish); r.StatusCode != http.StatusOK || !strings.Contains(r.Body, "Your passkey is registered") {
		t.Fatalf("finishing dave's registration: %s", r)
	}
	e.waitEvent(match{"event": "enrolled", "user": "dave", "method": "passkey", "via": "link", "credential_id": key.ID()})
	if r := dave.get(site + link.LinkPath); r.StatusCode != http.StatusGone {
		t.Errorf("the used link opened again: %s, want 410", r)
	}

	// dave activates the passkey-only role with it and reaches the console.
	form := dave.activationForm(site, "ops", "/admin/x")
	status, answer = begin(dave, url.Values{"csrf": {form.Get("csrf")}, "kind": {"login"}, "form": {"activate:ops"}})
	if status != http.StatusOK {
		t.Fatalf("dave's passkey step-up: %d %+v", status, answer)
	}
	form.Set("justification", "restart the stuck queue")
	form.Set("passkey_ceremony", answer.Ceremony)
	form.Set("passkey_response", string(key.Get(answer.Options)))
	r := dave.postForm(site+"/.jit/activate", form)
	if r.StatusCode != http.StatusSeeOther || setCookie(r, cookieName) == nil {
		t.Fatalf("activating ops with the passkey: %s", r)
	}
	if r := dave.get(site + "/admin/x"); r.StatusCode != http.StatusOK || e.up.last(t).Header.Get("X-Jit-Role") != "ops" {
		t.Fatalf("the console after the activation: %s", r)
	}
	e.waitEvent(match{"event": "activation_succeeded", "user": "dave", "role": "ops"})
}

// passkeyOptionsAnswer is POST /.jit/passkey's answer.
type passkeyOptionsAnswer struct {
	Ceremony string          `json:"ceremony"`
	Options  json.RawMessage `json:"options"`
	Error    string          `json:"error"`
}
