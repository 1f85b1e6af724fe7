package stepup

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-jit/caddy-jit/audit"
	"go.uber.org/zap"
)

func TestEnrollLinkConfirm(t *testing.T) {
	f := newAuthorityFixture(t)
	ctx := context.Background()
	token, _ := f.createLink(t, "alice", 24*time.Hour)
	f.logs.TakeAll()

	// Only alice may open her link.
	if _, err := f.a.OpenEnrollmentLink(ctx, token, "bob", ""); !errors.Is(err, ErrEnrollLinkNotYours) {
		t.Fatalf("OpenEnrollmentLink as bob = %v, want ErrEnrollLinkNotYours", err)
	}
	if err := f.a.ConfirmEnrollment(ctx, EnrollConfirmation{Token: token, User: "bob", Code: "123456"}); !errors.Is(err, ErrEnrollLinkNotYours) {
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
	current := codeAt(t, f.secret, f.clock.Now())
	f.used = append(f.used, current)
	if err := f.a.ConfirmEnrollment(ctx, confirmation(token, p, wrong, current)); !errors.Is(err, ErrCodeInvalid) {
		t.Fatalf("ConfirmEnrollment with a wrong code = %v, want ErrCodeInvalid", err)
	}
	if l, _ := storedLockout(t, f.st, "alice"); l.Failures != 1 {
		t.Errorf("after a wrong confirmation code the lockout counts %d failures, want 1", l.Failures)
	}
	if e, _ := storedEnrollment(t, f, "alice"); e.Secret != f.secret {
		t.Fatal("a wrong code replaced the enrollment")
	}

	// The right codes make the pending secret the enrollment, spent up to its step.
	code := codeAt(t, p.Secret, f.clock.Now())
	f.used = append(f.used, code)
	if err := f.a.ConfirmEnrollment(ctx, confirmation(token, p, code, current)); err != nil {
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
	err := f.a.ConfirmEnrollment(ctx, confirmation(token, p, codeAt(t, p.Secret, f.clock.Now()), ""))
	wantLinkError(t, err, ErrEnrollLinkUsed, usedAt)
	_, err = f.a.OpenEnrollmentLink(ctx, token, "alice", "")
	wantLinkError(t, err, ErrEnrollLinkUsed, usedAt)
	if e2, _ := storedEnrollment(t, f, "alice"); e2.LastStep != e.LastStep+1 {
		t.Errorf("a refused confirmation touched the enrollment: last step %d", e2.LastStep)
	}
	stored, _ := f.st.Load(ctx, enrollLinkKey(enrollLinkHash(token)))
	if strings.Contains(string(stored), p.Secret) {
		t.Error("a used link still holds the secret")
	}

	// The audit trail.
	id := LinkID(token)
	notYours := map[string]any{"user": "bob", "reason": "enroll_link_not_yours", "link_user": "alice", "link": id}
	used := map[string]any{"user": "alice", "reason": "enroll_link_used", "link": id}
	want := []linkEvent{
		{"enroll_link_failed", notYours},
		{"enroll_link_failed", notYours},
		{"enroll_link_opened", map[string]any{"user": "alice", "link": id, "superseded": false, "client_ip": "192.0.2.7"}},
		{"enroll_link_failed", map[string]any{"user": "alice", "reason": "totp_invalid", "link": id, "client_ip": "192.0.2.7"}},
		{"enrolled", map[string]any{"user": "alice", "by": "enrollment link", "replaced": true, "via": "link", "link": id,
			"authorized_by": "current_code", "client_ip": "192.0.2.7"}},
		{"enroll_link_failed", map[string]any{"user": "alice", "reason": "enroll_link_used", "link": id, "client_ip": "192.0.2.7"}},
		{"enroll_link_failed", used},
	}
	if got := linkEvents(f); !reflect.DeepEqual(got, want) {
		t.Errorf("audit events:\n%v\nwant:\n%v", got, want)
	}
	f.assertNoSecretsLogged(t)
}

func TestEnrollLinkCreatedEvent(t *testing.T) {
	f := newAuthorityFixture(t)
	token, expires := f.issueLink(t, EnrollLinkRequest{User: "bob", TTL: 2 * time.Hour, By: "ops", Replace: true})
	evs := events(f.logs, audit.EventEnrollLinkCreated)
	if len(evs) != 1 {
		t.Fatalf("%d enroll_link_created events, want 1", len(evs))
	}
	want := map[string]any{"user": "bob", "by": "ops", "expires": expires.UTC().Format(time.RFC3339), "link": LinkID(token), "replace": true}
	if got := ownFields(evs[0]); !reflect.DeepEqual(got, want) {
		t.Errorf("enroll_link_created = %v, want %v", got, want)
	}
	if id := LinkID(token); len(id) != 16 || strings.Contains(token, id) {
		t.Errorf("LinkID = %q: want 16 hex characters of the hash, not of the token", id)
	}
	f.assertNoSecretsLogged(t)
}

func TestEnrollLinkFirstEnrollment(t *testing.T) {
	f := newAuthorityFixture(t)
	ctx := context.Background()
	token, _ := f.createLink(t, "bob", time.Hour)
	if ok, _ := f.a.Enrolled(ctx, "bob"); ok {
		t.Fatal("a link enrolled bob before confirmation")
	}
	p := f.pending(t, token, "bob")
	if p.Enrolled || p.NeedsCurrentCode {
		t.Errorf("bob is not enrolled: %+v", p.EnrollLinkInfo)
	}
	code := codeAt(t, p.Secret, f.clock.Now())
	if err := f.a.ConfirmEnrollment(ctx, confirmation(token, p, code, "")); err != nil {
		t.Fatal(err)
	}
	if err := f.a.Check(ctx, "bob", code); !errors.Is(err, ErrCodeReplayed) {
		t.Errorf("the confirming code checked again = %v, want ErrCodeReplayed", err)
	}
	f.clock.Add(30 * time.Second)
	if err := f.a.Check(ctx, "bob", codeAt(t, p.Secret, f.clock.Now())); err != nil {
		t.Errorf("the next code = %v", err)
	}
	evs := events(f.logs, audit.EventEnrolled)
	if got := ownFields(evs[len(evs)-1]); got["replaced"] != false || got["user"] != "bob" || got["via"] != "link" || got["authorized_by"] != "first_enrollment" {
		t.Errorf("enrolled = %v, want replaced false", got)
	}
}

func TestEnrollLinkExpiresAndIsPruned(t *testing.T) {
	f := newAuthorityFixture(t)
	ctx := context.Background()
	token, expires := f.createLink(t, "alice", time.Hour)
	f.clock.Set(expires.Add(-time.Second))
	p := f.pending(t, token, "alice")
	f.clock.Set(expires)
	_, err := f.a.OpenEnrollmentLink(ctx, token, "alice", "")
	wantLinkError(t, err, ErrEnrollLinkExpired, expires)
	err = f.confirmNow(t, token, p, codeAt(t, f.secret, f.clock.Now()))
	wantLinkError(t, err, ErrEnrollLinkExpired, expires)
	if e, _ := storedEnrollment(t, f, "alice"); e.Secret != f.secret {
		t.Fatal("an expired link changed the enrollment")
	}
	if l, found := storedLockout(t, f.st, "alice"); found && l.Failures > 0 {
		t.Error("an expired link counted towards the lockout")
	}

	// Pruning forgets the secret at once, and the link after keep.
	keep := 24 * time.Hour
	live, _ := f.issueLink(t, EnrollLinkRequest{User: "bob", TTL: 48 * time.Hour, By: "ops"})
	if err := f.a.Prune(ctx, f.clock.Now(), keep); err != nil {
		t.Fatal(err)
	}
	stored, err := f.st.Load(ctx, enrollLinkKey(enrollLinkHash(token)))
	if err != nil || strings.Contains(string(stored), p.Secret) {
		t.Fatalf("after expiry and a prune: stored %s, %v; want the link without its secret", stored, err)
	}
	_, err = f.a.OpenEnrollmentLink(ctx, token, "alice", "")
	wantLinkError(t, err, ErrEnrollLinkExpired, expires)

	f.clock.Set(expires.Add(keep + time.Second))
	if err := f.a.Prune(ctx, f.clock.Now(), keep); err != nil {
		t.Fatal(err)
	}
	if _, err := f.a.OpenEnrollmentLink(ctx, token, "alice", ""); !errors.Is(err, ErrEnrollLinkUnknown) {
		t.Errorf("after keep: %v, want ErrEnrollLinkUnknown", err)
	}
	if f.st.Exists(ctx, enrollLinkOwnerKey("alice")) {
		t.Error("the prune kept the owner record of a deleted link")
	}
	if _, err := f.a.OpenEnrollmentLink(ctx, live, "bob", ""); err != nil {
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
		if _, err := f.a.OpenEnrollmentLink(ctx, token, "alice", ""); !errors.Is(err, ErrEnrollLinkUnknown) {
			t.Errorf("OpenEnrollmentLink(%q) = %v, want ErrEnrollLinkUnknown", token, err)
		}
		if err := f.a.ConfirmEnrollment(ctx, EnrollConfirmation{Token: token, User: "alice", Code: "123456"}); !errors.Is(err, ErrEnrollLinkUnknown) {
			t.Errorf("ConfirmEnrollment(%q) = %v, want ErrEnrollLinkUnknown", token, err)
		}
	}
	if l, found := storedLockout(t, f.st, "alice"); found && l.Failures > 0 {
		t.Error("unknown links counted towards the lockout")
	}
	if evs := events(f.logs, audit.EventEnrollLinkFailed); len(evs) != 16 || ownFields(evs[0])["reason"] != "enroll_link_unknown" {
		t.Errorf("%d enroll_link_failed events, want 16 with reason enroll_link_unknown", len(evs))
	}
}

func TestEnrollLinkLockout(t *testing.T) {
	f := newAuthorityFixture(t)
	ctx := context.Background()
	token, _ := f.issueLink(t, EnrollLinkRequest{User: "alice", TTL: time.Hour, By: "ops", Replace: true})
	p := f.pending(t, token, "alice")
	wrong := wrongCodeAt(t, p.Secret, f.clock.Now())
	for i := range 4 {
		if err := f.a.ConfirmEnrollment(ctx, confirmation(token, p, wrong, "")); !errors.Is(err, ErrCodeInvalid) {
			t.Fatalf("wrong code %d = %v", i+1, err)
		}
	}
	var locked *LockedOutError
	if err := f.a.ConfirmEnrollment(ctx, confirmation(token, p, wrong, "")); !errors.As(err, &locked) || !locked.Began {
		t.Fatalf("the 5th wrong code = %v, want a lockout that begins", err)
	}
	if evs := events(f.logs, audit.EventLockedOut); len(evs) != 1 {
		t.Errorf("%d locked_out events, want 1", len(evs))
	}
	// Locked: the right code neither confirms nor activates.
	if err := f.confirmNow(t, token, p, ""); !errors.As(err, &locked) || locked.Began {
		t.Fatalf("the right code while locked = %v, want the lockout", err)
	}
	wantActivationReason(t, f, f.activation(t), "locked_out")
	if e, _ := storedEnrollment(t, f, "alice"); e.Secret != f.secret {
		t.Fatal("a locked-out confirmation changed the enrollment")
	}
	// After the lockout the link still works.
	f.clock.Add(lockoutDuration + time.Second)
	if err := f.confirmNow(t, token, p, ""); err != nil {
		t.Fatalf("after the lockout: %v", err)
	}
	reasons := map[string]int{}
	for _, e := range events(f.logs, audit.EventEnrollLinkFailed) {
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
	other := New(f.st, audit.NewWriter(zap.NewNop(), nil, f.clock.Now), Config{Issuer: "caddy-jit test", MaxFailures: 5, LockoutDuration: lockoutDuration, Now: f.clock.Now})
	token, _ := f.issueLink(t, EnrollLinkRequest{User: "bob", TTL: time.Hour, By: "ops"})
	p := f.pending(t, token, "bob")
	codes := []string{codeAt(t, p.Secret, f.clock.Now()), codeAt(t, p.Secret, f.clock.Now().Add(30*time.Second))}
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i, a := range []*Authenticator{f.a, other} {
		wg.Go(func() { errs[i] = a.ConfirmEnrollment(ctx, confirmation(token, p, codes[i], "")) })
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
