package stepup

import (
	"context"
	"crypto/sha256"
	"encoding/base32"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/caddy-jit/caddy-jit/audit"
	"github.com/caddy-jit/caddy-jit/state"
	"github.com/pquerna/otp"
	"go.uber.org/zap/zaptest/observer"
)

// createLink makes a link for user and notes its token as a secret for the log scan.
func (f *authorityFixture) createLink(t *testing.T, user string, ttl time.Duration) (string, time.Time) {
	t.Helper()
	return f.issueLink(t, EnrollLinkRequest{User: user, TTL: ttl, By: "ops"})
}

func (f *authorityFixture) issueLink(t *testing.T, req EnrollLinkRequest) (string, time.Time) {
	t.Helper()
	token, expires, err := f.a.IssueEnrollmentLink(context.Background(), req)
	if err != nil {
		t.Fatalf("IssueEnrollmentLink(%+v) = %v", req, err)
	}
	f.used = append(f.used, token)
	return token, expires
}

// pending opens a link as user and returns the opening's pending secret.
func (f *authorityFixture) pending(t *testing.T, token, user string) *PendingEnrollment {
	t.Helper()
	p, err := f.a.OpenEnrollmentLink(context.Background(), token, user, "192.0.2.7")
	if err != nil {
		t.Fatalf("OpenEnrollmentLink as %s = %v", user, err)
	}
	f.used = append(f.used, p.Secret, p.URI, p.Browser)
	f.used = append(f.used, secretForms(t, p.Secret)...)
	return p
}

// confirmation is the POST of the page of opening p, with code (and current, a code of
// the current authenticator).
func confirmation(token string, p *PendingEnrollment, code, current string) EnrollConfirmation {
	return EnrollConfirmation{Token: token, User: p.User, Browser: p.Browser, Opening: p.Opening, Code: code, CurrentCode: current, ClientIP: "192.0.2.7"}
}

// confirmNow confirms p's page with its code now, and alice's current code when the
// link needs one.
func (f *authorityFixture) confirmNow(t *testing.T, token string, p *PendingEnrollment, current string) error {
	t.Helper()
	code := codeAt(t, p.Secret, f.clock.Now())
	f.used = append(f.used, code, current)
	return f.a.ConfirmEnrollment(context.Background(), confirmation(token, p, code, current))
}

// storedEnrollment reads a user's enrollment as stored.
func storedEnrollment(t *testing.T, f *authorityFixture, user string) (enrollment, bool) {
	t.Helper()
	var e enrollment
	found, err := state.LoadJSON(context.Background(), f.st, enrollmentKey(user), &e)
	if err != nil {
		t.Fatal(err)
	}
	if found {
		e.LastStep = lastStep(t, f.st, e)
	}
	return e, found
}

func wantLinkError(t *testing.T, err, want error, at time.Time) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("error = %v, want %v", err, want)
	}
	if at.IsZero() {
		return
	}
	var le *EnrollLinkError
	if !errors.As(err, &le) || !le.At.Equal(at) {
		t.Fatalf("error = %#v, want an *EnrollLinkError at %s", err, at)
	}
	if !strings.Contains(err.Error(), at.UTC().Format(time.RFC3339)) {
		t.Errorf("error text %q does not say when (%s)", err, at.UTC().Format(time.RFC3339))
	}
}

// ownFields is an event's fields without the chain's and without its name.
func ownFields(e observer.LoggedEntry) map[string]any {
	m := fieldsOf(e)
	delete(m, "event")
	return m
}

// linkEvents are the audit events of enrollment, in order, as name and own fields.
type linkEvent struct {
	Event  string
	Fields map[string]any
}

func linkEvents(f *authorityFixture) []linkEvent {
	var got []linkEvent
	for _, e := range f.logs.All() {
		if name, _ := e.ContextMap()["event"].(string); strings.HasPrefix(name, "enroll") {
			got = append(got, linkEvent{name, ownFields(e)})
		}
	}
	return got
}

func TestEnrollLinkTokenAndStorage(t *testing.T) {
	f := newAuthorityFixture(t)
	ctx := context.Background()
	token, expires := f.createLink(t, "alice", 24*time.Hour)
	if want := f.clock.Now().Add(24 * time.Hour); !expires.Equal(want) {
		t.Errorf("expires = %s, want %s", expires, want)
	}
	raw, err := base64.RawURLEncoding.Strict().DecodeString(token)
	if err != nil || len(raw) != 32 || len(token) != 43 {
		t.Fatalf("token %q: want 32 bytes of unpadded base64url (%d bytes, %v)", token, len(raw), err)
	}
	sum := sha256.Sum256([]byte(token))
	key := "jit/enroll-links/" + hex.EncodeToString(sum[:]) + ".json"
	if stored, err := f.st.Load(ctx, key); err != nil || strings.Contains(string(stored), `"secret"`) {
		t.Fatalf("the link is not stored under the SHA-256 of its token, or holds a secret before any opening: %s %v", stored, err)
	}

	// An opening makes a new pending secret, kept with the link with the hash of the
	// browser's value, never the value itself.
	p := f.pending(t, token, "alice")
	stored, _ := f.st.Load(ctx, key)
	if p.Secret == f.secret || !strings.Contains(string(stored), p.Secret) {
		t.Fatalf("pending secret %q: want a new secret, kept with the link", p.Secret)
	}
	if !wellFormedEnrollToken(p.Browser) || strings.Contains(string(stored), p.Browser) || !strings.Contains(string(stored), enrollLinkHash(p.Browser)) {
		t.Errorf("the browser value %q: want 32 random bytes, of which storage holds the hash only", p.Browser)
	}
	key2, err := otp.NewKeyFromURL(p.URI)
	if err != nil || key2.Secret() != p.Secret || key2.AccountName() != "alice" || key2.Issuer() != "caddy-jit test" || key2.Period() != 30 {
		t.Fatalf("pending URI %q: %v", p.URI, err)
	}
	if rawSecret, err := base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(p.Secret); err != nil || len(rawSecret) != 20 {
		t.Errorf("pending secret: want 160 bits (%d bytes, %v)", len(rawSecret), err)
	}
	if !p.Expires.Equal(expires) || p.User != "alice" || !p.Enrolled || !p.NeedsCurrentCode || p.Opening == "" {
		t.Errorf("pending = %+v", p.EnrollLinkInfo)
	}
	// Every opening is new: another secret, another binding, another page.
	q := f.pending(t, token, "alice")
	if q.Secret == p.Secret || q.Browser == p.Browser || q.Opening == p.Opening {
		t.Fatal("a second opening showed the first one's secret, binding or page")
	}
	if stored, _ := f.st.Load(ctx, key); strings.Contains(string(stored), p.Secret) {
		t.Error("a second opening kept the first one's secret")
	}
	if e, _ := storedEnrollment(t, f, "alice"); e.Secret != f.secret {
		t.Error("creating or opening a link changed the enrollment")
	}
	for _, ttl := range []time.Duration{0, -time.Hour} {
		if _, _, err := f.a.CreateEnrollmentLink(ctx, "alice", ttl, "ops"); err == nil {
			t.Errorf("a link with a ttl of %s was made", ttl)
		}
	}
	f.assertNoSecretsLogged(t)
}

// The attack of issue 12: someone who knows alice's password opens her link before she
// does. Her own opening discards what they saw; their page cannot confirm; the secret
// they saw never checks.
func TestEnrollLinkAttackerOpensFirst(t *testing.T) {
	f := newAuthorityFixture(t)
	ctx := context.Background()
	token, _ := f.issueLink(t, EnrollLinkRequest{User: "bob", TTL: time.Hour, By: "ops"})
	attacker := f.pending(t, token, "bob")
	victim := f.pending(t, token, "bob")
	if attacker.Secret == victim.Secret {
		t.Fatal("both openings show the same secret")
	}
	for name, c := range map[string]EnrollConfirmation{
		"the attacker's page":                          confirmation(token, attacker, codeAt(t, attacker.Secret, f.clock.Now()), ""),
		"the attacker's browser on the victim's page":  {Token: token, User: "bob", Browser: attacker.Browser, Opening: victim.Opening, Code: codeAt(t, victim.Secret, f.clock.Now())},
		"no browser value, the victim's page":          {Token: token, User: "bob", Opening: victim.Opening, Code: codeAt(t, victim.Secret, f.clock.Now())},
		"the victim's browser, the attacker's secret":  {Token: token, User: "bob", Browser: victim.Browser, Opening: victim.Opening, Code: codeAt(t, attacker.Secret, f.clock.Now())},
		"a malformed browser value, the victim's page": {Token: token, User: "bob", Browser: victim.Browser + "A", Opening: victim.Opening, Code: codeAt(t, victim.Secret, f.clock.Now())},
	} {
		if err := f.a.ConfirmEnrollment(ctx, c); err == nil {
			t.Fatalf("%s confirmed", name)
		}
		if _, found := storedEnrollment(t, f, "bob"); found {
			t.Fatalf("%s enrolled bob", name)
		}
	}
	// The victim's page still confirms; the attacker's secret never checks.
	if err := f.confirmNow(t, token, victim, ""); err != nil {
		t.Fatalf("the victim's confirmation = %v", err)
	}
	f.clock.Add(30 * time.Second)
	if err := f.a.Check(ctx, "bob", codeAt(t, attacker.Secret, f.clock.Now())); !errors.Is(err, ErrCodeInvalid) {
		t.Errorf("the attacker's secret checks: %v", err)
	}
	reasons := map[string]int{}
	for _, e := range events(f.logs, audit.EventEnrollLinkFailed) {
		reasons[fmt.Sprint(ownFields(e)["reason"])]++
	}
	if want := map[string]int{"enroll_link_other_browser": 4, "totp_invalid": 1}; !reflect.DeepEqual(reasons, want) {
		t.Errorf("refusals %v, want %v", reasons, want)
	}
	opened := events(f.logs, audit.EventEnrollLinkOpened)
	if len(opened) != 2 || ownFields(opened[0])["superseded"] != false || ownFields(opened[1])["superseded"] != true {
		t.Errorf("enroll_link_opened events %v: want two, the second superseding the first", opened)
	}
	f.assertNoSecretsLogged(t)
}

// Refusals of a browser or a page, before any code is looked at: they count towards
// no lockout and leave the latest opening confirmable.
func TestEnrollLinkBindingRefusals(t *testing.T) {
	for _, tt := range []struct {
		name string
		edit func(c *EnrollConfirmation, older *PendingEnrollment)
		want error
	}{
		{"no browser value", func(c *EnrollConfirmation, _ *PendingEnrollment) { c.Browser = "" }, ErrEnrollLinkOtherBrowser},
		{"a forged browser value", func(c *EnrollConfirmation, _ *PendingEnrollment) {
			c.Browser = base64.RawURLEncoding.EncodeToString(make([]byte, 32))
		}, ErrEnrollLinkOtherBrowser},
		{"an oversize browser value", func(c *EnrollConfirmation, _ *PendingEnrollment) { c.Browser = strings.Repeat("A", 4096) }, ErrEnrollLinkOtherBrowser},
		{"the earlier opening's browser", func(c *EnrollConfirmation, older *PendingEnrollment) { c.Browser = older.Browser }, ErrEnrollLinkOtherBrowser},
		{"no page", func(c *EnrollConfirmation, _ *PendingEnrollment) { c.Opening = "" }, ErrEnrollLinkReopened},
		{"the earlier opening's page", func(c *EnrollConfirmation, older *PendingEnrollment) { c.Opening = older.Opening }, ErrEnrollLinkReopened},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newAuthorityFixture(t)
			token, _ := f.issueLink(t, EnrollLinkRequest{User: "carol", TTL: time.Hour, By: "ops"})
			older := f.pending(t, token, "carol")
			p := f.pending(t, token, "carol")
			c := confirmation(token, p, codeAt(t, p.Secret, f.clock.Now()), "")
			tt.edit(&c, older)
			if err := f.a.ConfirmEnrollment(context.Background(), c); !errors.Is(err, tt.want) {
				t.Fatalf("ConfirmEnrollment = %v, want %v", err, tt.want)
			}
			if _, found := storedLockout(t, f.st, "carol"); found {
				t.Error("the refusal counted towards the lockout")
			}
			evs := events(f.logs, audit.EventEnrollLinkFailed)
			if len(evs) != 1 || ownFields(evs[0])["reason"] != tt.want.Error() || ownFields(evs[0])["link"] != LinkID(token) {
				t.Errorf("enroll_link_failed events %v, want one with reason %s and the link's id", evs, tt.want)
			}
			if err := f.confirmNow(t, token, p, ""); err != nil {
				t.Errorf("the latest opening after the refusal: %v", err)
			}
			f.assertNoSecretsLogged(t)
		})
	}
}

// Replacing a confirmed enrollment through a link needs a code of it, unless the
// operator made the link to replace it; a first enrollment needs none.
func TestEnrollLinkReplaceRule(t *testing.T) {
	for _, tt := range []struct {
		name    string
		replace bool
		user    string
		current func(f *authorityFixture) string
		want    error
		counted bool
	}{
		{"enrolled, no current code", false, "alice", func(*authorityFixture) string { return "" }, ErrCurrentCodeRequired, false},
		{"enrolled, a wrong current code", false, "alice", func(f *authorityFixture) string { return f.wrongCode(t) }, ErrCurrentCodeInvalid, true},
		{"enrolled, a current code already used", false, "alice", func(f *authorityFixture) string {
			f.activate(t, f.activation(t))
			return codeAt(t, f.secret, f.clock.Now())
		}, ErrCurrentCodeReplayed, true},
		{"enrolled, a right current code", false, "alice", func(f *authorityFixture) string { return codeAt(t, f.secret, f.clock.Now()) }, nil, false},
		{"enrolled, a replace link without a code", true, "alice", func(*authorityFixture) string { return "" }, nil, false},
		{"first enrollment without a code", false, "dave", func(*authorityFixture) string { return "" }, nil, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newAuthorityFixture(t)
			token, _ := f.issueLink(t, EnrollLinkRequest{User: tt.user, TTL: time.Hour, By: "ops", Replace: tt.replace})
			p := f.pending(t, token, tt.user)
			if want := tt.user == "alice" && !tt.replace; p.NeedsCurrentCode != want {
				t.Errorf("NeedsCurrentCode = %v, want %v", p.NeedsCurrentCode, want)
			}
			err := f.confirmNow(t, token, p, tt.current(f))
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("ConfirmEnrollment = %v, want %v", err, tt.want)
			}
			e, _ := storedEnrollment(t, f, tt.user)
			if (e.Secret == p.Secret) != (tt.want == nil) {
				t.Errorf("the enrollment is the pending secret: %v, want %v", e.Secret == p.Secret, tt.want == nil)
			}
			if l, _ := storedLockout(t, f.st, tt.user); (l.Failures > 0) != tt.counted {
				t.Errorf("the lockout counts %d failures, want counted %v", l.Failures, tt.counted)
			}
			if tt.want != nil {
				evs := events(f.logs, audit.EventEnrollLinkFailed)
				if len(evs) != 1 || ownFields(evs[0])["reason"] != tt.want.Error() {
					t.Errorf("enroll_link_failed events %v, want one with reason %s", evs, tt.want)
				}
				return
			}
			evs := events(f.logs, audit.EventEnrolled)
			got := ownFields(evs[len(evs)-1])
			want := map[string]any{"user": tt.user, "by": EnrolledByLink, "via": "link", "link": LinkID(token), "client_ip": "192.0.2.7",
				"replaced": tt.user == "alice", "authorized_by": map[bool]string{true: "replace_link", false: "current_code"}[tt.replace]}
			if tt.user != "alice" {
				want["authorized_by"] = "first_enrollment"
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("enrolled = %v, want %v", got, want)
			}
			f.assertNoSecretsLogged(t)
		})
	}
}

// A user has one outstanding link: a newer link, or an operator's enrollment, cancels
// the earlier one, even a page of it already open; each cancellation is audited.
func TestEnrollLinkCancellation(t *testing.T) {
	for _, tt := range []struct {
		name   string
		cancel func(t *testing.T, f *authorityFixture)
		reason string
		by     string
		// audited: the cancellation is audited when it happens (not when the link is
		// next used).
		audited bool
	}{
		{"a newer link", func(t *testing.T, f *authorityFixture) { f.createLink(t, "alice", time.Hour) }, CancelNewerLink, "ops", true},
		{"an operator's enrollment", func(t *testing.T, f *authorityFixture) {
			ctx := context.Background()
			if err := f.a.CancelEnrollmentLinks(ctx, "alice", "op", CancelEnrolled); err != nil {
				t.Fatal(err)
			}
			if _, err := f.a.Enroll(ctx, "alice", "op"); err != nil {
				t.Fatal(err)
			}
		}, CancelEnrolled, "op", true},
		{"an enrollment that did not cancel links (an older instance's)", func(t *testing.T, f *authorityFixture) {
			if _, err := f.a.newSecret(context.Background(), "alice"); err != nil {
				t.Fatal(err)
			}
		}, CancelEnrolled, "", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newAuthorityFixture(t)
			ctx := context.Background()
			token, _ := f.createLink(t, "alice", time.Hour)
			p := f.pending(t, token, "alice")
			f.clock.Add(time.Second)
			tt.cancel(t, f)
			cancelledAt := f.clock.Now()
			if n := len(events(f.logs, audit.EventEnrollLinkCancelled)); (n == 1) != tt.audited {
				t.Errorf("%d enroll_link_cancelled events at the cancellation, want audited %v", n, tt.audited)
			}
			f.clock.Add(time.Second)
			before, _ := storedEnrollment(t, f, "alice")
			current := ""
			if before.Secret == f.secret {
				current = codeAt(t, f.secret, f.clock.Now())
			}
			err := f.confirmNow(t, token, p, current)
			wantLinkError(t, err, ErrEnrollLinkCancelled, cancelledAt)
			_, err = f.a.OpenEnrollmentLink(ctx, token, "alice", "")
			wantLinkError(t, err, ErrEnrollLinkCancelled, cancelledAt)
			if after, _ := storedEnrollment(t, f, "alice"); after != before {
				t.Error("a cancelled link changed the enrollment")
			}
			if stored, _ := f.st.Load(ctx, enrollLinkKey(enrollLinkHash(token))); strings.Contains(string(stored), p.Secret) {
				t.Error("a cancelled link still holds its pending secret")
			}
			evs := events(f.logs, audit.EventEnrollLinkCancelled)
			if len(evs) != 1 {
				t.Fatalf("%d enroll_link_cancelled events, want 1", len(evs))
			}
			want := map[string]any{"user": "alice", "link": LinkID(token), "reason": tt.reason, "by": tt.by}
			if got := ownFields(evs[0]); !reflect.DeepEqual(got, want) {
				t.Errorf("enroll_link_cancelled = %v, want %v", got, want)
			}
			f.assertNoSecretsLogged(t)
		})
	}
}

// A link stored before each opening had its own secret is never honoured, and a prune
// forgets its secret.
func TestEnrollLinkLegacyRefused(t *testing.T) {
	f := newAuthorityFixture(t)
	ctx := context.Background()
	token := base64.RawURLEncoding.EncodeToString([]byte("a legacy link token of 32 bytes!"))
	legacy := fmt.Sprintf(`{"user":"alice","secret":"JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP","created":%q,"expires":%q,"by":"ops"}`,
		f.clock.Now().Format(time.RFC3339), f.clock.Now().Add(time.Hour).Format(time.RFC3339))
	if err := f.st.Store(ctx, enrollLinkKey(enrollLinkHash(token)), []byte(legacy)); err != nil {
		t.Fatal(err)
	}
	_, err := f.a.OpenEnrollmentLink(ctx, token, "alice", "")
	wantLinkError(t, err, ErrEnrollLinkCancelled, time.Time{})
	err = f.a.ConfirmEnrollment(ctx, EnrollConfirmation{Token: token, User: "alice", Code: codeAt(t, "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP", f.clock.Now())})
	wantLinkError(t, err, ErrEnrollLinkCancelled, time.Time{})
	if err := f.a.Prune(ctx, f.clock.Now(), time.Hour); err != nil {
		t.Fatal(err)
	}
	if stored, _ := f.st.Load(ctx, enrollLinkKey(enrollLinkHash(token))); strings.Contains(string(stored), "JBSWY3DP") {
		t.Errorf("a prune kept the legacy link's secret: %s", stored)
	}
}
