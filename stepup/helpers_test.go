package stepup

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/pquerna/otp"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/caddy-jit/caddy-jit/audit"
	"github.com/caddy-jit/caddy-jit/internal/testkit"
	"github.com/caddy-jit/caddy-jit/state"
)

// The helpers every domain package's tests share, under the names these tests use.
type fakeClock = testkit.Clock

var (
	newFakeClock = testkit.NewClock
	epoch        = testkit.Epoch
	newStorage   = testkit.Storage
	codeAt       = testkit.CodeAt
	wrongCodeAt  = testkit.WrongCodeAt
	events       = testkit.Events
	fieldsOf     = testkit.Fields
	secretForms  = testkit.SecretForms
)

const rfcSecret = testkit.RFCSecret

// authorityFixture is a step-up over a fresh store, with alice enrolled by an operator.
// Its "activation" is the step-up's part of one: checking alice's code.
type authorityFixture struct {
	st     state.Store
	clock  *fakeClock
	logs   *observer.ObservedLogs
	a      *Authenticator
	secret string
	uri    string
	// used collects every code, token and secret seen, for the scan of the audit log.
	used []string
}

func newAuthorityFixture(t *testing.T) *authorityFixture {
	t.Helper()
	f := &authorityFixture{st: newStorage(t), clock: newFakeClock(epoch.Add(10 * time.Second))}
	core, logs := observer.New(zap.InfoLevel)
	f.logs = logs
	f.a = New(f.st, audit.NewWriter(zap.New(core), nil, f.clock.Now), Config{
		Issuer: "caddy-jit test", MaxFailures: 5, LockoutDuration: lockoutDuration, Now: f.clock.Now,
	})
	var err error
	if f.uri, err = f.a.Enroll(context.Background(), "alice", "admin"); err != nil {
		t.Fatal(err)
	}
	key, err := otp.NewKeyFromURL(f.uri)
	if err != nil {
		t.Fatal(err)
	}
	f.secret = key.Secret()
	f.used = append(f.used, f.secret, f.uri)
	return f
}

// activation is alice's current code, which an activation would carry.
func (f *authorityFixture) activation(t *testing.T) string {
	t.Helper()
	code := codeAt(t, f.secret, f.clock.Now())
	f.used = append(f.used, code)
	return code
}

// activationWith is an activation with another code.
func (f *authorityFixture) activationWith(t *testing.T, code string) string {
	f.used = append(f.used, code)
	return code
}

// activate passes alice's step-up with code, as an activation that succeeds does.
func (f *authorityFixture) activate(t *testing.T, code string) {
	t.Helper()
	if err := f.a.Check(context.Background(), "alice", code); err != nil {
		t.Fatalf("Check(alice) = %v, want the code accepted", err)
	}
}

// wantActivationReason checks that alice's step-up refuses code for the reason an
// activation would give.
func wantActivationReason(t *testing.T, f *authorityFixture, code, want string) {
	t.Helper()
	err := f.a.Check(context.Background(), "alice", code)
	var locked *LockedOutError
	got := ""
	switch {
	case errors.As(err, &locked):
		got = locked.Error()
	case err != nil:
		got = err.Error()
	}
	if got != want {
		t.Fatalf("Check = %v, want the reason %s", err, want)
	}
}

// assertNoSecretsLogged fails if any audit entry mentions a code, a token or the secret.
func (f *authorityFixture) assertNoSecretsLogged(t *testing.T) {
	t.Helper()
	testkit.AssertNoSecretsLogged(t, f.logs, f.secret, f.used)
}

// enrollSecret stores an enrollment with a known secret, as Enroll would.
func enrollSecret(t *testing.T, st state.Store, user, secret string) {
	t.Helper()
	if err := state.StoreJSON(context.Background(), st, enrollmentKey(user), enrollment{User: user, Secret: secret, Created: epoch}); err != nil {
		t.Fatal(err)
	}
}

// lockoutView is a user's lockout as the tests look at it: the failures counted (in
// the store's counter, past its life none) and the lockout record.
type lockoutView struct {
	Failures     int64
	FirstFailure time.Time
	LockedUntil  time.Time
}

// storedCount reads a number that state.Atomic keeps under the lock, as file storage
// has it; one past its life is none.
func storedCount(t *testing.T, st state.Store, key string, now time.Time) (n int64, expires time.Time) {
	t.Helper()
	var c struct {
		N       int64     `json:"n"`
		Expires time.Time `json:"expires"`
	}
	if _, err := state.LoadJSON(context.Background(), st, key, &c); err != nil {
		t.Fatal(err)
	}
	if !now.Before(c.Expires) {
		return 0, time.Time{}
	}
	return c.N, c.Expires
}

// storedLockout reads a user's failures and lockout as stored; found says whether
// either is there.
func storedLockout(t *testing.T, st state.Store, user string) (lockoutView, bool) {
	t.Helper()
	var l lockout
	found, err := state.LoadJSON(context.Background(), st, lockoutKey(user), &l)
	if err != nil {
		t.Fatal(err)
	}
	v := lockoutView{LockedUntil: l.LockedUntil}
	if st.Exists(context.Background(), failuresKey(user)) {
		found = true
		var expires time.Time
		// Read whatever its life: the tests look at what the last failure counted.
		v.Failures, expires = storedCount(t, st, failuresKey(user), time.Time{})
		if !expires.IsZero() {
			v.FirstFailure = expires.Add(-lockoutDuration)
		}
	}
	return v, found
}

// lastStep is the latest step accepted of e: its confirmation's or a spent one's.
func lastStep(t *testing.T, st state.Store, e enrollment) int64 {
	t.Helper()
	n, _ := storedCount(t, st, stepKey(e), time.Time{})
	return max(n, e.LastStep)
}

// wrongCode is a code the step-up refuses for alice now.
func (f *authorityFixture) wrongCode(t *testing.T) string {
	code := wrongCodeAt(t, f.secret, f.clock.Now())
	f.used = append(f.used, code)
	return code
}

// testAuthenticator is a step-up that locks after 5 wrong codes, auditing nowhere.
func testAuthenticator(st state.Store, issuer string, now func() time.Time) *Authenticator {
	return New(st, audit.NewWriter(zap.NewNop(), nil, now), Config{Issuer: issuer, MaxFailures: 5, LockoutDuration: lockoutDuration, Now: now})
}
