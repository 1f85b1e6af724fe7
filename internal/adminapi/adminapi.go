// Package adminapi owns the JSON of caddy-jit's admin API routes (/jit/… on Caddy's
// admin endpoint): what the routes in package caddymodule answer, what the `caddy jit`
// commands read, and what those commands answer themselves when they work on storage
// directly. One definition keeps the two ends of the wire from drifting apart. It
// holds types and no behaviour beyond filling them in.
package adminapi

import (
	"time"

	"github.com/caddy-jit/caddy-jit/session"
	"github.com/caddy-jit/caddy-jit/stepup"
)

// Enrollment is the answer to POST /jit/enrollments/{user}. The URI holds the
// secret: it is shown to the operator once and never logged.
type Enrollment struct {
	User       string `json:"user"`
	OTPAuthURI string `json:"otpauth_uri"`
}

// EnrollLink is the answer to POST /jit/enrollments/{user}?link=1. The path holds the
// link's token: it goes to the user alone and is never logged.
type EnrollLink struct {
	User     string `json:"user"`
	LinkPath string `json:"link_path"`
	// Expires is RFC 3339, UTC.
	Expires string `json:"expires"`
}

// NewEnrollLink is the answer for a link to linkPath that works until expires.
func NewEnrollLink(user, linkPath string, expires time.Time) *EnrollLink {
	return &EnrollLink{User: user, LinkPath: linkPath, Expires: expires.UTC().Format(time.RFC3339)}
}

// Session is a session as the admin API and the commands show it.
type Session struct {
	*session.Record
	Revoked bool `json:"revoked"`
}

// SessionList is the answer to GET /jit/sessions and to revocations.
type SessionList struct {
	Sessions []Session `json:"sessions"`
	// Applied says, for a revocation on a store that announces (Redis), how many of
	// the live instances refused the sessions before the answer.
	Applied *Applied `json:"applied,omitempty"`
}

// Applied counts the instances that apply a revocation: every live one, this one
// included, and those that confirmed it within the wait; Missing names the others
// (they apply it at their next sync).
type Applied struct {
	Instances int      `json:"instances"`
	Confirmed int      `json:"confirmed"`
	Missing   []string `json:"missing,omitempty"`
	Error     string   `json:"error,omitempty"`
}

// ListSessions shows recs as the admin API does: a session is revoked when it ended
// or the revocation set holds it.
func ListSessions(revocations *session.Revocations, recs []*session.Record) SessionList {
	out := SessionList{Sessions: make([]Session, 0, len(recs))}
	for _, rec := range recs {
		out.Sessions = append(out.Sessions, Session{Record: rec, Revoked: !rec.Ended.IsZero() || revocations.Revoked(rec.ID)})
	}
	return out
}

// KeyRotation is the answer to POST /jit/keys/rotate: the new key's id and the ids
// of the keys in use, oldest first.
type KeyRotation struct {
	KeyID string   `json:"kid"`
	Keys  []string `json:"keys"`
}

// Passkey is one of a user's passkeys as GET /jit/credentials/{user} lists it: what
// describes it, never its public key.
type Passkey struct {
	// ID is the credential id in base64url: what DELETE /jit/credentials/{user}/{id}
	// takes.
	ID   string `json:"id"`
	Name string `json:"name"`
	// AAGUID names the authenticator's make and model; empty when it gives none.
	AAGUID  string    `json:"aaguid"`
	RPID    string    `json:"rp_id"`
	Created time.Time `json:"created"`
	// LastUsed is null for a passkey never used to step up.
	LastUsed *time.Time `json:"last_used"`
	// Synced: the authenticator says the passkey may be backed up, so it can leave
	// the device, as a synced passkey does.
	Synced bool `json:"synced"`
}

// NewPasskey shows pk as the admin API does, times in UTC.
func NewPasskey(pk stepup.Passkey) Passkey {
	out := Passkey{ID: pk.ID, Name: pk.Name, AAGUID: pk.AAGUID, RPID: pk.RPID, Created: pk.Created.UTC(), Synced: pk.Synced}
	if !pk.LastUsed.IsZero() {
		used := pk.LastUsed.UTC()
		out.LastUsed = &used
	}
	return out
}

// ListPasskeys is the answer to GET /jit/credentials/{user}: a JSON array, [] for a
// user with none.
func ListPasskeys(pks []stepup.Passkey) []Passkey {
	out := make([]Passkey, 0, len(pks))
	for _, pk := range pks {
		out = append(out, NewPasskey(pk))
	}
	return out
}

// PasskeyRemoval is the answer to DELETE /jit/credentials/{user}/{id}: the passkey
// removed and what the user has left to step up with. With no passkey left and no
// TOTP authenticator, they cannot register a new passkey themselves (that takes a
// TOTP code): they need an enrollment link.
type PasskeyRemoval struct {
	User         string  `json:"user"`
	Removed      Passkey `json:"removed"`
	Remaining    int     `json:"remaining"`
	TOTPEnrolled bool    `json:"totp_enrolled"`
}
