package stepup

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-jit/caddy-jit/state"
	"github.com/caddyserver/certmagic"
	"github.com/pquerna/otp"
)

type totpFixture struct {
	st    *certmagic.FileStorage
	clock *fakeClock
	a     *Authenticator
}

func newTOTPFixture(t *testing.T) *totpFixture {
	t.Helper()
	st := newStorage(t)
	clock := newFakeClock(epoch.Add(10 * time.Second))
	enrollSecret(t, st, "alice", rfcSecret)
	return &totpFixture{st: st, clock: clock, a: testAuthenticator(st, "test", clock.Now)}
}

func (f *totpFixture) check(t *testing.T, code string) error {
	t.Helper()
	return f.a.Check(context.Background(), "alice", code)
}

func (f *totpFixture) right(t *testing.T) string { return codeAt(t, rfcSecret, f.clock.Now()) }
func (f *totpFixture) wrong(t *testing.T) string { return wrongCodeAt(t, rfcSecret, f.clock.Now()) }

func (f *totpFixture) lastStep(t *testing.T) int64 {
	t.Helper()
	var e enrollment
	if _, err := state.LoadJSON(context.Background(), f.st, enrollmentKey("alice"), &e); err != nil {
		t.Fatal(err)
	}
	return lastStep(t, f.st, e)
}

func (f *totpFixture) storedLockout(t *testing.T) (lockoutView, bool) {
	t.Helper()
	return storedLockout(t, f.st, "alice")
}

func wantLocked(t *testing.T, err error, until time.Time) {
	t.Helper()
	var locked *LockedOutError
	if !errors.As(err, &locked) {
		t.Fatalf("err = %v, want *LockedOutError", err)
	}
	if !locked.Until.Equal(until) {
		t.Fatalf("locked until %v, want %v", locked.Until, until)
	}
	if err.Error() != "locked_out" {
		t.Fatalf("Error() = %q, want locked_out", err.Error())
	}
}

func TestCheckAcceptsACodeOnceAndOnlyLaterSteps(t *testing.T) {
	f := newTOTPFixture(t)
	now := f.clock.Now()
	step := now.Unix() / totpPeriod
	current, next, previous := f.right(t), codeAt(t, rfcSecret, now.Add(30*time.Second)), codeAt(t, rfcSecret, now.Add(-30*time.Second))

	steps := []struct {
		name     string
		advance  time.Duration
		code     string
		want     error
		wantLast int64
	}{
		{"current step accepted", 0, current, nil, step},
		{"same code again", 0, current, ErrCodeReplayed, step},
		{"previous step's code, earlier than the last accepted", 0, previous, ErrCodeReplayed, step},
		{"next step's code is later: accepted", 0, next, nil, step + 1},
		{"current step's code is now earlier than the last accepted", 0, current, ErrCodeReplayed, step + 1},
		{"in the next step, its code is still used", 30 * time.Second, next, ErrCodeReplayed, step + 1},
		{"two steps on, the new code is accepted", 30 * time.Second, codeAt(t, rfcSecret, now.Add(60*time.Second)), nil, step + 2},
	}
	for _, s := range steps {
		f.clock.Add(s.advance)
		err := f.check(t, s.code)
		if !errors.Is(err, s.want) || (s.want == nil && err != nil) {
			t.Fatalf("%s: Check = %v, want %v", s.name, err, s.want)
		}
		if got := f.lastStep(t); got != s.wantLast {
			t.Fatalf("%s: stored last step = %d, want %d", s.name, got, s.wantLast)
		}
	}

	// A restart (a new Authenticator over the same storage) remembers the last step.
	again := testAuthenticator(&certmagic.FileStorage{Path: f.st.Path}, "test", f.clock.Now)
	if err := again.Check(context.Background(), "alice", codeAt(t, rfcSecret, now.Add(60*time.Second))); !errors.Is(err, ErrCodeReplayed) {
		t.Fatalf("after a restart, a used code: Check = %v, want %v", err, ErrCodeReplayed)
	}
}

func TestCheckRefusesMalformedCodes(t *testing.T) {
	for _, code := range []string{"", "12345", "1234567", "abcdef", "１２３４５６", "123 456"} {
		t.Run(code, func(t *testing.T) {
			f := newTOTPFixture(t)
			if err := f.check(t, code); !errors.Is(err, ErrCodeInvalid) {
				t.Fatalf("Check(%q) = %v, want %v", code, err, ErrCodeInvalid)
			}
			if l, _ := f.storedLockout(t); l.Failures != 1 {
				t.Fatalf("failures = %d, want 1", l.Failures)
			}
		})
	}
}

func TestCheckNotEnrolled(t *testing.T) {
	f := newTOTPFixture(t)
	if err := f.a.Check(context.Background(), "bob", "123456"); !errors.Is(err, ErrNotEnrolled) {
		t.Fatalf("Check = %v, want %v", err, ErrNotEnrolled)
	}
	if ok, err := f.a.Enrolled(context.Background(), "bob"); ok || err != nil {
		t.Fatalf("Enrolled(bob) = %v, %v", ok, err)
	}
	if ok, err := f.a.Enrolled(context.Background(), "alice"); !ok || err != nil {
		t.Fatalf("Enrolled(alice) = %v, %v", ok, err)
	}
}

func TestLockout(t *testing.T) {
	ctx := context.Background()
	f := newTOTPFixture(t)
	enrollSecret(t, f.st, "bob", rfcSecret)
	start := f.clock.Now()
	until := start.Add(lockoutDuration)

	for i := 1; i <= 4; i++ {
		if err := f.check(t, f.wrong(t)); !errors.Is(err, ErrCodeInvalid) {
			t.Fatalf("wrong code %d: Check = %v, want %v", i, err, ErrCodeInvalid)
		}
		if lu, err := f.a.LockedUntil(ctx, "alice"); err != nil || !lu.IsZero() {
			t.Fatalf("after %d failures LockedUntil = %v, %v; want zero", i, lu, err)
		}
	}
	wantLocked(t, f.check(t, f.wrong(t)), until)
	if lu, err := f.a.LockedUntil(ctx, "alice"); err != nil || !lu.Equal(until) {
		t.Fatalf("LockedUntil = %v, %v; want %v", lu, err, until)
	}

	// The right code is refused, and neither it nor a wrong one extends the lockout.
	wantLocked(t, f.check(t, f.right(t)), until)
	wantLocked(t, f.check(t, f.wrong(t)), until)
	if got := f.lastStep(t); got != 0 {
		t.Fatalf("a code was accepted during the lockout: last step %d", got)
	}

	// Another user is not locked.
	if err := f.a.Check(ctx, "bob", f.right(t)); err != nil {
		t.Fatalf("bob: Check = %v", err)
	}

	// A restart keeps the lockout.
	restarted := testAuthenticator(&certmagic.FileStorage{Path: f.st.Path}, "test", f.clock.Now)
	wantLocked(t, restarted.Check(ctx, "alice", f.right(t)), until)

	// Still locked one nanosecond before the end.
	f.clock.Set(until.Add(-time.Nanosecond))
	wantLocked(t, f.check(t, f.right(t)), until)

	// At the end the right code works and the lockout record is gone.
	f.clock.Set(until)
	if err := f.check(t, f.right(t)); err != nil {
		t.Fatalf("after the lockout: Check = %v", err)
	}
	if _, found := f.storedLockout(t); found {
		t.Fatal("the lockout record survived a successful code")
	}
	if lu, err := f.a.LockedUntil(ctx, "alice"); err != nil || !lu.IsZero() {
		t.Fatalf("LockedUntil after the lockout = %v, %v", lu, err)
	}

	// Counting starts again from zero.
	for i := 1; i <= 4; i++ {
		if err := f.check(t, f.wrong(t)); !errors.Is(err, ErrCodeInvalid) {
			t.Fatalf("after the lockout, wrong code %d: Check = %v, want %v", i, err, ErrCodeInvalid)
		}
	}
	wantLocked(t, f.check(t, f.wrong(t)), until.Add(lockoutDuration))
}

func TestLockoutEndsWithoutASuccess(t *testing.T) {
	f := newTOTPFixture(t)
	for range 5 {
		_ = f.check(t, f.wrong(t))
	}
	f.clock.Add(lockoutDuration)
	// The lockout is over: a wrong code counts as the first of a new series.
	if err := f.check(t, f.wrong(t)); !errors.Is(err, ErrCodeInvalid) {
		t.Fatalf("first wrong code after the lockout: Check = %v, want %v", err, ErrCodeInvalid)
	}
	if l, _ := f.storedLockout(t); l.Failures != 1 || l.LockedUntil.After(f.clock.Now()) {
		t.Fatalf("stored lockout = %+v, want one failure and no lock", l)
	}
}

func TestFailuresAreForgottenAfterTheLockoutDuration(t *testing.T) {
	tests := []struct {
		gap        time.Duration
		wantLocked bool
	}{
		{time.Minute, true},
		{lockoutDuration - time.Nanosecond, true},
		{lockoutDuration, false},
		{lockoutDuration + time.Nanosecond, false},
		{lockoutDuration + time.Second, false},
		{24 * time.Hour, false},
	}
	for _, tt := range tests {
		t.Run(tt.gap.String(), func(t *testing.T) {
			f := newTOTPFixture(t)
			for range 4 {
				if err := f.check(t, f.wrong(t)); !errors.Is(err, ErrCodeInvalid) {
					t.Fatalf("Check = %v", err)
				}
			}
			f.clock.Add(tt.gap)
			err := f.check(t, f.wrong(t))
			if tt.wantLocked {
				wantLocked(t, err, f.clock.Now().Add(lockoutDuration))
				return
			}
			if !errors.Is(err, ErrCodeInvalid) {
				t.Fatalf("fifth wrong code %s later: Check = %v, want %v", tt.gap, err, ErrCodeInvalid)
			}
			if l, _ := f.storedLockout(t); l.Failures != 1 || !l.FirstFailure.Equal(f.clock.Now()) {
				t.Fatalf("stored lockout = %+v, want a new series of one failure", l)
			}
		})
	}
}

func TestSuccessForgetsFailures(t *testing.T) {
	f := newTOTPFixture(t)
	for range 4 {
		_ = f.check(t, f.wrong(t))
	}
	if err := f.check(t, f.right(t)); err != nil {
		t.Fatalf("right code after 4 failures: Check = %v", err)
	}
	if _, found := f.storedLockout(t); found {
		t.Fatal("failures survived a successful code")
	}
	for i := 1; i <= 4; i++ {
		if err := f.check(t, f.wrong(t)); !errors.Is(err, ErrCodeInvalid) {
			t.Fatalf("wrong code %d after a success: Check = %v, want %v", i, err, ErrCodeInvalid)
		}
	}
	wantLocked(t, f.check(t, f.wrong(t)), f.clock.Now().Add(lockoutDuration))
}

func TestReplaysCountTowardsTheLockout(t *testing.T) {
	f := newTOTPFixture(t)
	code := f.right(t)
	if err := f.check(t, code); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 4; i++ {
		if err := f.check(t, code); !errors.Is(err, ErrCodeReplayed) {
			t.Fatalf("replay %d: Check = %v, want %v", i, err, ErrCodeReplayed)
		}
	}
	wantLocked(t, f.check(t, code), f.clock.Now().Add(lockoutDuration))
}

func TestClearLockout(t *testing.T) {
	ctx := context.Background()
	f := newTOTPFixture(t)
	if err := f.a.ClearLockout(ctx, "alice"); err != nil {
		t.Fatalf("ClearLockout without a lockout = %v", err)
	}
	for range 5 {
		_ = f.check(t, f.wrong(t))
	}
	wantLocked(t, f.check(t, f.right(t)), f.clock.Now().Add(lockoutDuration))

	// An operator on another instance clears it.
	other := testAuthenticator(&certmagic.FileStorage{Path: f.st.Path}, "test", f.clock.Now)
	if err := other.ClearLockout(ctx, "alice"); err != nil {
		t.Fatalf("ClearLockout = %v", err)
	}
	if lu, err := f.a.LockedUntil(ctx, "alice"); err != nil || !lu.IsZero() {
		t.Fatalf("LockedUntil after ClearLockout = %v, %v", lu, err)
	}
	if err := f.check(t, f.right(t)); err != nil {
		t.Fatalf("right code after ClearLockout: Check = %v", err)
	}
	// The failures are forgotten too: four wrong codes do not lock.
	for i := 1; i <= 4; i++ {
		if err := f.check(t, f.wrong(t)); !errors.Is(err, ErrCodeInvalid) {
			t.Fatalf("wrong code %d after ClearLockout: Check = %v", i, err)
		}
	}
}

// TestConcurrentChecksAcceptACodeOnce races the same right code through one instance
// and through a second instance over the same storage.
func TestConcurrentChecksAcceptACodeOnce(t *testing.T) {
	f := newTOTPFixture(t)
	code := f.right(t)
	instances := []*Authenticator{f.a, testAuthenticator(&certmagic.FileStorage{Path: f.st.Path}, "test", f.clock.Now)}
	// At most four replays, so that they do not lock the user out.
	const n = 5
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			errs[i] = instances[i%2].Check(context.Background(), "alice", code)
		})
	}
	close(start)
	wg.Wait()
	accepted := 0
	for i, err := range errs {
		switch {
		case err == nil:
			accepted++
		case !errors.Is(err, ErrCodeReplayed):
			t.Errorf("check %d: %v, want nil or %v", i, err, ErrCodeReplayed)
		}
	}
	if accepted != 1 {
		t.Fatalf("the code was accepted %d times, want once", accepted)
	}
}

func TestEnroll(t *testing.T) {
	ctx := context.Background()
	st := newStorage(t)
	clock := newFakeClock(epoch.Add(10 * time.Second))
	a := testAuthenticator(st, "caddy-jit demo", clock.Now)
	key, err := a.newSecret(ctx, "alice@example.com")
	if err != nil {
		t.Fatal(err)
	}
	if key.Issuer() != "caddy-jit demo" || key.AccountName() != "alice@example.com" || key.Digits() != otp.DigitsSix ||
		key.Algorithm() != otp.AlgorithmSHA1 || key.Period() != 30 || len(key.Secret()) != 32 {
		t.Fatalf("key = %s", key.URL())
	}
	if !strings.HasPrefix(key.URL(), "otpauth://totp/") {
		t.Fatalf("URL = %s", key.URL())
	}
	if err := a.Check(ctx, "alice@example.com", codeAt(t, key.Secret(), clock.Now())); err != nil {
		t.Fatalf("Check with the enrolled secret = %v", err)
	}

	// Enrolling again replaces the secret: the old one's next code is refused.
	again, err := a.newSecret(ctx, "alice@example.com")
	if err != nil {
		t.Fatal(err)
	}
	if again.Secret() == key.Secret() {
		t.Fatal("re-enrollment kept the secret")
	}
	clock.Add(30 * time.Second)
	if err := a.Check(ctx, "alice@example.com", codeAt(t, key.Secret(), clock.Now())); !errors.Is(err, ErrCodeInvalid) {
		t.Fatalf("old secret after re-enrollment: Check = %v, want %v", err, ErrCodeInvalid)
	}
	if err := a.Check(ctx, "alice@example.com", codeAt(t, again.Secret(), clock.Now())); err != nil {
		t.Fatalf("new secret: Check = %v", err)
	}
}
func TestPruneForgetsFinishedLockouts(t *testing.T) {
	f := newAuthorityFixture(t)
	ctx := context.Background()
	for range 5 {
		_ = f.a.Check(ctx, "alice", "000000")
	}
	if !f.st.Exists(ctx, lockoutKey("alice")) {
		t.Fatal("no lockout record after 5 failures")
	}
	if err := f.a.Prune(ctx, f.clock.Now(), time.Hour); err != nil {
		t.Fatal(err)
	}
	if !f.st.Exists(ctx, lockoutKey("alice")) {
		t.Fatal("pruned a lockout that is still running")
	}
	f.clock.Add(lockoutDuration + time.Second)
	if err := f.a.Prune(ctx, f.clock.Now(), time.Hour); err != nil {
		t.Fatal(err)
	}
	if f.st.Exists(ctx, lockoutKey("alice")) {
		t.Error("a finished lockout is still in storage")
	}
}
