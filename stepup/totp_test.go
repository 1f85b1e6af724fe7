package stepup

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

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
