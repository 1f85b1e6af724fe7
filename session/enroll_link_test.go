package session

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
	"sync"
	"testing"
	"time"

	"github.com/pquerna/otp"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// createLink makes a link for user and notes its token as a secret for the log scan.
func (f *authorityFixture) createLink(t *testing.T, user string, ttl time.Duration) (string, time.Time) {
	t.Helper()
	token, expires, err := f.a.CreateEnrollmentLink(context.Background(), user, ttl, "ops")
	if err != nil {
		t.Fatalf("CreateEnrollmentLink(%s) = %v", user, err)
	}
	f.used = append(f.used, token)
	return token, expires
}

// pending opens a link as user and returns its pending secret.
func (f *authorityFixture) pending(t *testing.T, token, user string) *PendingEnrollment {
	t.Helper()
	p, err := f.a.EnrollmentLink(context.Background(), token, user)
	if err != nil {
		t.Fatalf("EnrollmentLink as %s = %v", user, err)
	}
	f.used = append(f.used, p.Secret, p.URI)
	f.used = append(f.used, secretForms(t, p.Secret)...)
	return p
}

// storedEnrollment reads a user's enrollment as stored.
func storedEnrollment(t *testing.T, f *authorityFixture, user string) (enrollment, bool) {
	t.Helper()
	var e enrollment
	found, err := loadJSON(context.Background(), f.st, enrollmentKey(user), &e)
	if err != nil {
		t.Fatal(err)
	}
	return e, found
}

// activationWith is the fixture's activation with another code.
func (f *authorityFixture) activationWith(t *testing.T, code string) Activation {
	t.Helper()
	act := f.activation(t)
	act.Code = code
	f.used = append(f.used, code)
	return act
}

func wantActivationReason(t *testing.T, f *authorityFixture, act Activation, want string) {
	t.Helper()
	_, _, err := f.a.Activate(context.Background(), act)
	var refused *ActivationError
	if !errors.As(err, &refused) || refused.Reason != want {
		t.Fatalf("Activate = %v, want the reason %s", err, want)
	}
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
	other, _ := f.createLink(t, "alice", time.Hour)
	if other == token {
		t.Fatal("two links got the same token")
	}

	keys, err := f.st.List(ctx, "jit/enroll-links", false)
	if err != nil || len(keys) != 2 {
		t.Fatalf("jit/enroll-links holds %v (%v), want 2 links", keys, err)
	}
	sum := sha256.Sum256([]byte(token))
	key := "jit/enroll-links/" + hex.EncodeToString(sum[:]) + ".json"
	stored, err := f.st.Load(ctx, key)
	if err != nil {
		t.Fatalf("the link is not stored under the SHA-256 of its token: %v (keys %v)", err, keys)
	}
	for _, k := range keys {
		data, _ := f.st.Load(ctx, k)
		for _, tok := range []string{token, other} {
			if strings.Contains(k, tok) || strings.Contains(string(data), tok) {
				t.Errorf("storage holds a token itself at %s", k)
			}
		}
	}

	// The pending secret is new, not active, and the link names its user.
	p := f.pending(t, token, "alice")
	if p.Secret == f.secret || !strings.Contains(string(stored), p.Secret) {
		t.Fatalf("pending secret %q: want a new secret, kept with the link", p.Secret)
	}
	key2, err := otp.NewKeyFromURL(p.URI)
	if err != nil || key2.Secret() != p.Secret || key2.AccountName() != "alice" || key2.Issuer() != "caddy-jit test" || key2.Period() != 30 {
		t.Fatalf("pending URI %q: %v", p.URI, err)
	}
	if rawSecret, err := base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(p.Secret); err != nil || len(rawSecret) != 20 {
		t.Errorf("pending secret: want 160 bits (%d bytes, %v)", len(rawSecret), err)
	}
	if !p.Expires.Equal(expires) || p.User != "alice" {
		t.Errorf("pending = %+v", p)
	}
	if e, _ := storedEnrollment(t, f, "alice"); e.Secret != f.secret {
		t.Error("creating or opening a link changed the enrollment")
	}
	for _, ttl := range []time.Duration{0, -time.Hour} {
		if err := createLinkErr(f, "alice", ttl); err == nil {
			t.Errorf("a link with a ttl of %s was made", ttl)
		}
	}
}

// ownFields is an event's fields without the chain's and without its name.
func ownFields(e observer.LoggedEntry) map[string]any {
	m := fieldsOf(e)
	delete(m, "event")
	return m
}

// createLinkErr is CreateEnrollmentLink's error alone.
func createLinkErr(f *authorityFixture, user string, ttl time.Duration) error {
	_, _, err := f.a.CreateEnrollmentLink(context.Background(), user, ttl, "ops")
	return err
}

func TestEnrollLinkConfirm(t *testing.T) {
	f := newAuthorityFixture(t)
	ctx := context.Background()
	token, _ := f.createLink(t, "alice", 24*time.Hour)
	f.logs.TakeAll()

	// Only alice may open her link.
	if _, err := f.a.EnrollmentLink(ctx, token, "bob"); !errors.Is(err, ErrEnrollLinkNotYours) {
		t.Fatalf("EnrollmentLink as bob = %v, want ErrEnrollLinkNotYours", err)
	}
	if err := f.a.ConfirmEnrollment(ctx, token, "bob", "123456"); !errors.Is(err, ErrEnrollLinkNotYours) {
		t.Fatalf("ConfirmEnrollment as bob = %v, want ErrEnrollLinkNotYours", err)
	}
	if _, found := storedEnrollment(t, f, "bob"); found {
		t.Fatal("bob got enrolled by alice's link")
	}
	p := f.pending(t, token, "alice")

	// Until confirmed, the old secret works and the pending one does not.
	wantActivationReason(t, f, f.activationWith(t, codeAt(t, p.Secret, f.clock.Now())), "totp_invalid")
	f.activate(t, f.activation(t))
	f.clock.Add(30 * time.Second)

	// A wrong code enrolls nothing and counts towards the lockout.
	wrong := wrongCodeAt(t, p.Secret, f.clock.Now())
	f.used = append(f.used, wrong)
	if err := f.a.ConfirmEnrollment(ctx, token, "alice", wrong); !errors.Is(err, ErrCodeInvalid) {
		t.Fatalf("ConfirmEnrollment with a wrong code = %v, want ErrCodeInvalid", err)
	}
	if l, _ := storedLockout(t, f.st, "alice"); l.Failures != 1 {
		t.Errorf("after a wrong confirmation code the lockout counts %d failures, want 1", l.Failures)
	}
	if e, _ := storedEnrollment(t, f, "alice"); e.Secret != f.secret {
		t.Fatal("a wrong code replaced the enrollment")
	}

	// The right code makes the pending secret the enrollment, spent up to its step.
	code := codeAt(t, p.Secret, f.clock.Now())
	f.used = append(f.used, code)
	if err := f.a.ConfirmEnrollment(ctx, token, "alice", code); err != nil {
		t.Fatalf("ConfirmEnrollment = %v", err)
	}
	e, _ := storedEnrollment(t, f, "alice")
	if e.Secret != p.Secret || e.LastStep != f.clock.Now().Unix()/30 {
		t.Fatalf("enrollment after confirmation: secret changed %v, last step %d, want %d", e.Secret != f.secret, e.LastStep, f.clock.Now().Unix()/30)
	}
	if _, found := storedLockout(t, f.st, "alice"); found {
		t.Error("a confirmation left the failures counted")
	}

	// The confirming code never activates; the next one does; the old secret is gone.
	wantActivationReason(t, f, f.activationWith(t, code), "totp_replayed")
	f.clock.Add(30 * time.Second)
	wantActivationReason(t, f, f.activationWith(t, codeAt(t, f.secret, f.clock.Now())), "totp_invalid")
	f.activate(t, f.activationWith(t, codeAt(t, p.Secret, f.clock.Now())))

	// The link is spent, and says since when.
	usedAt := f.clock.Now().Add(-30 * time.Second)
	f.clock.Add(30 * time.Second)
	err := f.a.ConfirmEnrollment(ctx, token, "alice", codeAt(t, p.Secret, f.clock.Now()))
	wantLinkError(t, err, ErrEnrollLinkUsed, usedAt)
	_, err = f.a.EnrollmentLink(ctx, token, "alice")
	wantLinkError(t, err, ErrEnrollLinkUsed, usedAt)
	if e2, _ := storedEnrollment(t, f, "alice"); e2.LastStep != e.LastStep+1 {
		t.Errorf("a refused confirmation touched the enrollment: last step %d", e2.LastStep)
	}
	stored, _ := f.st.Load(ctx, enrollLinkKey(enrollLinkHash(token)))
	if strings.Contains(string(stored), p.Secret) {
		t.Error("a used link still holds the secret")
	}

	// The audit trail.
	type ev struct {
		Event  string
		Fields map[string]any
	}
	var got []ev
	for _, e := range f.logs.All() {
		if name, _ := e.ContextMap()["event"].(string); strings.HasPrefix(name, "enroll") {
			got = append(got, ev{name, ownFields(e)})
		}
	}
	notYours := map[string]any{"user": "bob", "reason": "enroll_link_not_yours", "link_user": "alice"}
	used := map[string]any{"user": "alice", "reason": "enroll_link_used"}
	want := []ev{
		{"enroll_link_failed", notYours},
		{"enroll_link_failed", notYours},
		{"enroll_link_failed", map[string]any{"user": "alice", "reason": "totp_invalid"}},
		{"enrolled", map[string]any{"user": "alice", "by": "enrollment link", "replaced": true, "via": "link"}},
		{"enroll_link_failed", used},
		{"enroll_link_failed", used},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("audit events:\n%v\nwant:\n%v", got, want)
	}
	f.assertNoSecretsLogged(t)
}

func TestEnrollLinkCreatedEvent(t *testing.T) {
	f := newAuthorityFixture(t)
	_, expires := f.createLink(t, "bob", 2*time.Hour)
	evs := events(f.logs, EventEnrollLinkCreated)
	if len(evs) != 1 {
		t.Fatalf("%d enroll_link_created events, want 1", len(evs))
	}
	want := map[string]any{"user": "bob", "by": "ops", "expires": expires.UTC().Format(time.RFC3339)}
	if got := ownFields(evs[0]); !reflect.DeepEqual(got, want) {
		t.Errorf("enroll_link_created = %v, want %v", got, want)
	}
	f.assertNoSecretsLogged(t)
}

func TestEnrollLinkFirstEnrollment(t *testing.T) {
	f := newAuthorityFixture(t)
	ctx := context.Background()
	token, _ := f.createLink(t, "bob", time.Hour)
	if ok, _ := f.a.Authenticator.Enrolled(ctx, "bob"); ok {
		t.Fatal("a link enrolled bob before confirmation")
	}
	p := f.pending(t, token, "bob")
	code := codeAt(t, p.Secret, f.clock.Now())
	if err := f.a.ConfirmEnrollment(ctx, token, "bob", code); err != nil {
		t.Fatal(err)
	}
	if err := f.a.Authenticator.Check(ctx, "bob", code); !errors.Is(err, ErrCodeReplayed) {
		t.Errorf("the confirming code checked again = %v, want ErrCodeReplayed", err)
	}
	f.clock.Add(30 * time.Second)
	if err := f.a.Authenticator.Check(ctx, "bob", codeAt(t, p.Secret, f.clock.Now())); err != nil {
		t.Errorf("the next code = %v", err)
	}
	evs := events(f.logs, EventEnrolled)
	if got := ownFields(evs[len(evs)-1]); got["replaced"] != false || got["user"] != "bob" || got["via"] != "link" {
		t.Errorf("enrolled = %v, want replaced false", got)
	}
}

func TestEnrollLinkExpiresAndIsPruned(t *testing.T) {
	f := newAuthorityFixture(t)
	ctx := context.Background()
	token, expires := f.createLink(t, "alice", time.Hour)
	p := f.pending(t, token, "alice")

	f.clock.Set(expires.Add(-time.Second))
	if _, err := f.a.EnrollmentLink(ctx, token, "alice"); err != nil {
		t.Fatalf("a second before expiry: %v", err)
	}
	f.clock.Set(expires)
	_, err := f.a.EnrollmentLink(ctx, token, "alice")
	wantLinkError(t, err, ErrEnrollLinkExpired, expires)
	err = f.a.ConfirmEnrollment(ctx, token, "alice", codeAt(t, p.Secret, f.clock.Now()))
	wantLinkError(t, err, ErrEnrollLinkExpired, expires)
	if e, _ := storedEnrollment(t, f, "alice"); e.Secret != f.secret {
		t.Fatal("an expired link changed the enrollment")
	}
	if l, found := storedLockout(t, f.st, "alice"); found && l.Failures > 0 {
		t.Error("an expired link counted towards the lockout")
	}

	// Pruning forgets the secret at once, and the link after keep.
	keep := 24 * time.Hour
	live, _ := f.createLink(t, "alice", 48*time.Hour)
	if err := f.a.Prune(ctx, f.clock.Now(), keep); err != nil {
		t.Fatal(err)
	}
	stored, err := f.st.Load(ctx, enrollLinkKey(enrollLinkHash(token)))
	if err != nil || strings.Contains(string(stored), p.Secret) {
		t.Fatalf("after expiry and a prune: stored %s, %v; want the link without its secret", stored, err)
	}
	_, err = f.a.EnrollmentLink(ctx, token, "alice")
	wantLinkError(t, err, ErrEnrollLinkExpired, expires)

	f.clock.Set(expires.Add(keep + time.Second))
	if err := f.a.Prune(ctx, f.clock.Now(), keep); err != nil {
		t.Fatal(err)
	}
	if _, err := f.a.EnrollmentLink(ctx, token, "alice"); !errors.Is(err, ErrEnrollLinkUnknown) {
		t.Errorf("after keep: %v, want ErrEnrollLinkUnknown", err)
	}
	if _, err := f.a.EnrollmentLink(ctx, live, "alice"); err != nil {
		t.Errorf("the prune took a link that is still valid: %v", err)
	}
	f.assertNoSecretsLogged(t)
}

func TestEnrollLinkUnknown(t *testing.T) {
	f := newAuthorityFixture(t)
	ctx := context.Background()
	real, _ := f.createLink(t, "alice", time.Hour)
	forged := base64.RawURLEncoding.EncodeToString(make([]byte, 32))
	for _, token := range []string{"", "x", real + "A", real[:42], strings.Repeat("!", 43), "../../../jit/keys/signing", forged, real[:42] + "B"} {
		if _, err := f.a.EnrollmentLink(ctx, token, "alice"); !errors.Is(err, ErrEnrollLinkUnknown) {
			t.Errorf("EnrollmentLink(%q) = %v, want ErrEnrollLinkUnknown", token, err)
		}
		if err := f.a.ConfirmEnrollment(ctx, token, "alice", "123456"); !errors.Is(err, ErrEnrollLinkUnknown) {
			t.Errorf("ConfirmEnrollment(%q) = %v, want ErrEnrollLinkUnknown", token, err)
		}
	}
	if l, found := storedLockout(t, f.st, "alice"); found && l.Failures > 0 {
		t.Error("unknown links counted towards the lockout")
	}
	if evs := events(f.logs, EventEnrollLinkFailed); len(evs) != 16 || ownFields(evs[0])["reason"] != "enroll_link_unknown" {
		t.Errorf("%d enroll_link_failed events, want 16 with reason enroll_link_unknown", len(evs))
	}
}

func TestEnrollLinkLockout(t *testing.T) {
	f := newAuthorityFixture(t)
	ctx := context.Background()
	token, _ := f.createLink(t, "alice", time.Hour)
	p := f.pending(t, token, "alice")
	wrong := wrongCodeAt(t, p.Secret, f.clock.Now())
	for i := range 4 {
		if err := f.a.ConfirmEnrollment(ctx, token, "alice", wrong); !errors.Is(err, ErrCodeInvalid) {
			t.Fatalf("wrong code %d = %v", i+1, err)
		}
	}
	var locked *LockedOutError
	if err := f.a.ConfirmEnrollment(ctx, token, "alice", wrong); !errors.As(err, &locked) || !locked.Began {
		t.Fatalf("the 5th wrong code = %v, want a lockout that begins", err)
	}
	if evs := events(f.logs, EventLockedOut); len(evs) != 1 {
		t.Errorf("%d locked_out events, want 1", len(evs))
	}
	// Locked: the right code neither confirms nor activates.
	code := codeAt(t, p.Secret, f.clock.Now())
	if err := f.a.ConfirmEnrollment(ctx, token, "alice", code); !errors.As(err, &locked) || locked.Began {
		t.Fatalf("the right code while locked = %v, want the lockout", err)
	}
	wantActivationReason(t, f, f.activation(t), "locked_out")
	if e, _ := storedEnrollment(t, f, "alice"); e.Secret != f.secret {
		t.Fatal("a locked-out confirmation changed the enrollment")
	}
	// After the lockout the link still works.
	f.clock.Add(lockoutDuration + time.Second)
	if err := f.a.ConfirmEnrollment(ctx, token, "alice", codeAt(t, p.Secret, f.clock.Now())); err != nil {
		t.Fatalf("after the lockout: %v", err)
	}
	reasons := map[string]int{}
	for _, e := range events(f.logs, EventEnrollLinkFailed) {
		reasons[fmt.Sprint(ownFields(e)["reason"])]++
	}
	if reasons["totp_invalid"] != 4 || reasons["locked_out"] != 2 {
		t.Errorf("enroll_link_failed reasons = %v, want 4 totp_invalid and 2 locked_out", reasons)
	}
	f.assertNoSecretsLogged(t)
}

// Two instances confirming one link at once: exactly one enrolls.
func TestEnrollLinkConfirmedOnce(t *testing.T) {
	f := newAuthorityFixture(t)
	ctx := context.Background()
	other, err := NewAuthority(ctx, f.st, Config{Issuer: "caddy-jit test", MaxFailures: 5, LockoutDuration: lockoutDuration,
		Audit: zap.NewNop(), Now: f.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	token, _ := f.createLink(t, "alice", time.Hour)
	p := f.pending(t, token, "alice")
	codes := []string{codeAt(t, p.Secret, f.clock.Now()), codeAt(t, p.Secret, f.clock.Now().Add(30*time.Second))}
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i, a := range []*Authority{f.a, other} {
		wg.Go(func() { errs[i] = a.ConfirmEnrollment(ctx, token, "alice", codes[i]) })
	}
	wg.Wait()
	ok, used := 0, 0
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case errors.Is(err, ErrEnrollLinkUsed):
			used++
		default:
			t.Errorf("unexpected error %v", err)
		}
	}
	if ok != 1 || used != 1 {
		t.Fatalf("confirmations: %v; want one success and one ErrEnrollLinkUsed", errs)
	}
}
