package integration

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"time"
)

// ---------------------------------------------------------------------------
// What storage holds: the passkeys a user registered and the ceremonies begun.

// storedPasskeys is the user's passkey record as stored, byte for byte (nil when the
// user has none): a refusal must leave it as it was.
func (e *env) storedPasskeys(user string) []byte {
	e.t.Helper()
	raw, err := os.ReadFile(filepath.Join(e.data.StorageDir, "jit", "passkeys", base64.RawURLEncoding.EncodeToString([]byte(user))+".json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		e.t.Fatal(err)
	}
	return raw
}

// signCount is the stored signature counter of the user's passkey id.
func (e *env) signCount(user, id string) uint32 {
	e.t.Helper()
	var rec struct {
		Passkeys []struct {
			Credential struct {
				ID            []byte `json:"id"`
				Authenticator struct {
					SignCount uint32 `json:"signCount"`
				} `json:"authenticator"`
			} `json:"credential"`
		} `json:"passkeys"`
	}
	if err := json.Unmarshal(e.storedPasskeys(user), &rec); err != nil {
		e.t.Fatalf("the stored passkeys of %s: %v", user, err)
	}
	for _, p := range rec.Passkeys {
		if base64.RawURLEncoding.EncodeToString(p.Credential.ID) == id {
			return p.Credential.Authenticator.SignCount
		}
	}
	e.t.Fatalf("%s has no stored passkey %s", user, id)
	return 0
}

// ceremonyFile is where storage keeps the ceremony id (under its user's name).
func (e *env) ceremonyFile(id string) string {
	e.t.Helper()
	files, err := filepath.Glob(filepath.Join(e.data.StorageDir, "jit", "passkey-challenges", "*-"+id+".json"))
	if err != nil || len(files) != 1 {
		e.t.Fatalf("the stored ceremony %s: %d files, %v", id, len(files), err)
	}
	return files[0]
}

// ceremonies counts the begun ceremonies storage holds.
func (e *env) ceremonies() int {
	e.t.Helper()
	files, err := filepath.Glob(filepath.Join(e.data.StorageDir, "jit", "passkey-challenges", "*.json"))
	if err != nil {
		e.t.Fatal(err)
	}
	return len(files)
}

// ceremonyExpiry is when the stored ceremony id lapses.
func (e *env) ceremonyExpiry(id string) time.Time {
	e.t.Helper()
	raw, err := os.ReadFile(e.ceremonyFile(id))
	if err != nil {
		e.t.Fatalf("the stored ceremony: %v", err)
	}
	var c struct {
		Expires time.Time `json:"expires"`
	}
	if err := json.Unmarshal(raw, &c); err != nil {
		e.t.Fatalf("the stored ceremony: %v", err)
	}
	return c.Expires
}

// ageCeremony moves the stored ceremony's expiry back by d, as if d had passed since
// it began: the Caddy under test runs on the real clock, and a test does not wait two
// minutes. Nothing else of the ceremony changes. Caddy prunes lapsed ceremonies at its
// first sync tick and then every 10 minutes, so a test ages a ceremony only once
// startAfterFirstPrune saw that first prune over: the ceremony is then still there
// when the test sends it, and the refusal says "expired", not "unknown".
func (e *env) ageCeremony(id string, d time.Duration) {
	e.t.Helper()
	if e.firstPruneSeen != e.starts {
		e.t.Fatal("ageCeremony: Caddy's first prune may still delete the aged ceremony; start the env with startAfterFirstPrune")
	}
	path := e.ceremonyFile(id)
	raw, err := os.ReadFile(path)
	if err != nil {
		e.t.Fatalf("the stored ceremony: %v", err)
	}
	var c map[string]json.RawMessage
	if err := json.Unmarshal(raw, &c); err != nil {
		e.t.Fatalf("the stored ceremony: %v", err)
	}
	var expires time.Time
	if err := json.Unmarshal(c["expires"], &expires); err != nil {
		e.t.Fatalf("the stored ceremony's expiry: %v", err)
	}
	c["expires"], _ = json.Marshal(expires.Add(-d))
	out, _ := json.Marshal(c)
	if err := os.WriteFile(path, out, 0o600); err != nil {
		e.t.Fatal(err)
	}
}

// startAfterFirstPrune starts the env's Caddy with a lapsed ceremony in storage and
// returns once Caddy's first prune deleted it.
func (e *env) startAfterFirstPrune() {
	e.t.Helper()
	marker := filepath.Join(e.data.StorageDir, "jit", "passkey-challenges", "cHJ1bmUtbWFya2Vy-lapsed.json")
	if err := os.MkdirAll(filepath.Dir(marker), 0o700); err != nil {
		e.t.Fatal(err)
	}
	lapsed := `{"user":"prune-marker","expires":"2000-01-01T00:00:00Z"}`
	if err := os.WriteFile(marker, []byte(lapsed), 0o600); err != nil {
		e.t.Fatal(err)
	}
	e.start()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(marker); errors.Is(err, os.ErrNotExist) {
			e.firstPruneSeen = e.starts
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("Caddy's first prune did not delete the lapsed ceremony %s within 30 s", marker)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ---------------------------------------------------------------------------
// Audit events, counted: a refusal must add its event, not find an earlier one.

// countEvents counts the audit events that match.
func (e *env) countEvents(m match) int { return len(e.events(m)) }

// waitMoreEvents waits up to 3 s until more than before audit events match, and fails
// the test if none came.
func (e *env) waitMoreEvents(m match, before int) {
	e.t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for e.countEvents(m) <= before {
		if time.Now().After(deadline) {
			e.t.Errorf("no new audit event matches %v (still %d)", map[string]string(m), before)
			return
		}
		time.Sleep(25 * time.Millisecond)
	}
}
