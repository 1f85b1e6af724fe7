// Package session owns the life of an elevated session once the workflow has said yes:
// the signing keys and the tokens made with them, the verified-token cache and the
// revocation set, the requests in flight (so an end cuts them off), the records kept
// in the store, the recorded request bodies, and starting, extending and ending
// sessions (Sessions), each end audited and stored so that every instance refuses it.
//
// Whether a session may start (policy, step-up, approval) is not its question: package
// workflow decides and drives it. It never serves HTTP and never reads the clock
// itself: every type takes a Clock, so expiry is tested without sleeping.
package session

import "time"

// Clock tells the time. Production code passes time.Now; tests pass a fake.
type Clock = func() time.Time
