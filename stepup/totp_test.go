package stepup

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-jit/caddy-jit/state"
	"github.com/caddyserver/certmagic"
	"github.com/pquerna/otp"
	"github.com/pquerna/otp/hotp"
)

const lockoutDuration = 15 * time.Minute

// TestRFC6238AppendixBSHA1 checks our time-step computation against the SHA1 vectors
// of RFC 6238 Appendix B (8 digits), and matchingStep against their last 6 digits,
// which are the 6-digit codes of the same steps.
func TestRFC6238AppendixBSHA1(t *testing.T) {
	vectors := []struct {
		unix int64
		step int64 // the T column of the RFC's table
		code string
	}{
		{59, 0x1, "94287082"},
		{1111111109, 0x23523EC, "07081804"},
		{1111111111, 0x23523ED, "14050471"},
		{1234567890, 0x273EF07, "89005924"},
		{2000000000, 0x3F940AA, "69279037"},
		{20000000000, 0x27BC86AA, "65353130"},
	}
	for _, v := range vectors {
		at := time.Unix(v.unix, 0)
		step := at.Unix() / totpPeriod
		if step != v.step {
			t.Errorf("t=%d: step = %#x, want %#x", v.unix, step, v.step)
		}
		code8, err := hotp.GenerateCodeCustom(rfcSecret, uint64(step), hotp.ValidateOpts{Digits: otp.DigitsEight, Algorithm: otp.AlgorithmSHA1})
		if err != nil {
			t.Fatal(err)
		}
		if code8 != v.code {
			t.Errorf("t=%d: 8-digit code = %s, want %s", v.unix, code8, v.code)
		}
		code6 := v.code[2:]
		if got, ok := matchingStep(rfcSecret, code6, at); !ok || got != v.step {
			t.Errorf("t=%d: matchingStep(%s) = %#x, %v; want %#x, true", v.unix, code6, got, ok, v.step)
		}
		if _, ok := matchingStep(rfcSecret, v.code, at); ok {
			t.Errorf("t=%d: the 8-digit code %s was accepted where 6 digits are expected", v.unix, v.code)
		}
	}
}

func TestMatchingStepWindow(t *testing.T) {
	// Times at the start, middle and last second of a step.
	for _, at := range []time.Time{epoch, epoch.Add(15 * time.Second), epoch.Add(29*time.Second + 999*time.Millisecond)} {
		current := at.Unix() / totpPeriod
		seen := map[string]int64{}
		for offset := int64(-3); offset <= 3; offset++ {
			step := current + offset
			code, err := hotp.GenerateCodeCustom(rfcSecret, uint64(step), hotp.ValidateOpts{Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1})
			if err != nil {
				t.Fatal(err)
			}
			if prev, dup := seen[code]; dup {
				t.Fatalf("steps %d and %d share the code %s; pick another time", prev, step, code)
			}
			seen[code] = step
			got, ok := matchingStep(rfcSecret, code, at)
			wantOK := offset >= -totpSkew && offset <= totpSkew
			if ok != wantOK || (ok && got != step) {
				t.Errorf("at %s, code of step %+d: matchingStep = %d, %v; want %d, %v", at.Format(time.TimeOnly), offset, got, ok, step, wantOK)
			}
		}
	}
}

func TestMatchingStepRefusesMalformedCodes(t *testing.T) {
	at := time.Unix(59, 0)
	right := "287082" // RFC 6238, t=59, last 6 digits
	if _, ok := matchingStep(rfcSecret, right, at); !ok {
		t.Fatalf("the right code %s was refused", right)
	}
	for _, code := range []string{"", "28708", "2870820", "94287082", " 287082", "287082 ", "28708２", "abcdef", "287 82"} {
		if _, ok := matchingStep(rfcSecret, code, at); ok {
			t.Errorf("matchingStep(%q) accepted", code)
		}
	}
	if _, ok := matchingStep("not base32!", right, at); ok {
		t.Error("a corrupt secret accepted a code")
	}
}

// oathtoolPath finds the independent oathtool CLI. When CI is unset its absence skips
// the test; when CI is set (CI=true) it is an error.
func oathtoolPath(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("oathtool")
	if err != nil {
		if _, ci := os.LookupEnv("CI"); !ci {
			t.Skip("oathtool is not installed (apt-get install oathtool); required when CI is set")
		}
		t.Fatalf("oathtool is required in CI: %v", err)
	}
	return path
}

func oathtool(t *testing.T, path string, args ...string) string {
	t.Helper()
	cmd := exec.Command(path, args...)
	cmd.Env = append(os.Environ(), "TZ=UTC", "LC_ALL=C")
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("oathtool %v: %v: %s", args, err, ee.Stderr)
		}
		t.Fatalf("oathtool %v: %v", args, err)
	}
	return strings.TrimSpace(string(out))
}

func TestOathtoolAgrees(t *testing.T) {
	path := oathtoolPath(t)
	ctx := context.Background()

	// A secret made by our own enrollment, as an operator's authenticator app sees it.
	enrolled, err := testAuthenticator(newStorage(t), "caddy-jit test", newFakeClock(epoch).Now).newSecret(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}

	// The RFC's 8-digit vectors, computed by oathtool.
	for at, want := range map[string]string{
		"1970-01-01 00:00:59 UTC": "94287082",
		"2005-03-18 01:58:29 UTC": "07081804",
		"2009-02-13 23:31:30 UTC": "89005924",
		"2033-05-18 03:33:20 UTC": "69279037",
	} {
		if got := oathtool(t, path, "--totp", "-b", "-d", "8", "--now", at, rfcSecret); got != want {
			t.Errorf("oathtool at %s = %s, want the RFC's %s", at, got, want)
		}
	}

	times := []string{
		"2026-01-01 00:00:00 UTC",
		"2026-01-01 00:00:29 UTC",
		"2026-01-01 00:00:30 UTC",
		"2026-07-15 13:37:42 UTC",
		"2009-02-13 23:31:30 UTC",
		"2033-05-18 03:33:20 UTC",
	}
	for _, secret := range []string{rfcSecret, enrolled.Secret()} {
		for _, ts := range times {
			at, err := time.Parse("2006-01-02 15:04:05 MST", ts)
			if err != nil {
				t.Fatal(err)
			}
			code := oathtool(t, path, "--totp", "-b", "--now", ts, secret)
			if want := codeAt(t, secret, at); code != want {
				t.Errorf("secret %s… at %s: oathtool %s, pquerna %s", secret[:4], ts, code, want)
			}
			if step, ok := matchingStep(secret, code, at); !ok || step != at.Unix()/totpPeriod {
				t.Errorf("secret %s… at %s: matchingStep(oathtool's %s) = %d, %v; want %d, true", secret[:4], ts, code, step, ok, at.Unix()/totpPeriod)
			}

			// End to end: the authenticator accepts oathtool's code once.
			st := newStorage(t)
			enrollSecret(t, st, "alice", secret)
			a := testAuthenticator(st, "test", newFakeClock(at).Now)
			if err := a.Check(ctx, "alice", code); err != nil {
				t.Errorf("secret %s… at %s: Check(oathtool's code) = %v", secret[:4], ts, err)
			}
			if err := a.Check(ctx, "alice", code); !errors.Is(err, ErrCodeReplayed) {
				t.Errorf("secret %s… at %s: second Check(oathtool's code) = %v, want %v", secret[:4], ts, err, ErrCodeReplayed)
			}
		}
	}
}

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
