// Package session owns the life of an elevated session: the signing keys and the
// tokens made with them, the verified-token cache and the revocation set, TOTP step-up
// with replay prevention and lockout, the records kept in storage, and the audit events
// that tell the story.
//
// It never serves HTTP and never reads the clock itself: every type takes a Clock, so
// expiry, lockout and TOTP time steps are tested without sleeping. Durable state lives
// in a state.Store under the "jit/" prefix, which is how several Caddy instances
// sharing one storage become one cluster.
package session

import "time"

// Clock tells the time. Production code passes time.Now; tests pass a fake.
type Clock func() time.Time
