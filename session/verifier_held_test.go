package session

import (
	"errors"
	"testing"
	"time"
)

// VerifyHeld answers what a browser holds: a scheduled session's token counts before
// its start, everything else is refused as Verify refuses it.
func TestVerifyHeld(t *testing.T) {
	f := newVerifierFixture(t)
	scheduled := validClaims(vnow)
	scheduled.IssuedAt, scheduled.NotBefore, scheduled.Expiry = vnow.Unix(), vnow.Add(time.Hour).Unix(), vnow.Add(90*time.Minute).Unix()
	revoked := validClaims(vnow)
	revoked.SessionID = "cmV2b2tlZC1zZXNzaW9uLT"
	otherUser := scheduled
	otherUser.Subject = "mallory"
	tests := []struct {
		name   string
		claims Claims
		want   error
	}{
		{"running", validClaims(vnow), nil},
		{"scheduled", scheduled, nil},
		{"scheduled, another user's", otherUser, ErrTokenSubject},
		{"revoked", revoked, ErrTokenRevoked},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := f.newVerifier(t, 16)
			v.revocations.Add(revoked.SessionID, vnow.Add(time.Hour))
			token := f.sign(t, tt.claims)
			c, err := v.VerifyHeld(token, wantAlice(), vnow)
			if !errors.Is(err, tt.want) || (err == nil && c.SessionID != tt.claims.SessionID) {
				t.Fatalf("VerifyHeld: %v, %v; want %v", c, err, tt.want)
			}
			if tt.name == "scheduled" {
				if _, err := v.Verify(token, wantAlice(), vnow); !errors.Is(err, ErrTokenNotYet) {
					t.Errorf("Verify of the scheduled token before its start: %v, want %v (the gate must still refuse it)", err, ErrTokenNotYet)
				}
			}
		})
	}
	if _, err := f.newVerifier(t, 16).VerifyHeld(f.sign(t, scheduled)[:40]+"x", wantAlice(), vnow); err == nil {
		t.Error("a damaged token is held")
	}
}
