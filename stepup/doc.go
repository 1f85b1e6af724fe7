// Package stepup owns the proof a user gives, beyond their password, before a session
// starts: TOTP codes (RFC 6238) that are never accepted twice, the per-user lockout after
// repeated wrong codes, enrollment of the secret by an operator or through a one-time
// enrollment link, and the audit events and metrics of all of it. Passkeys belong here
// too.
//
// All of its state is in the store (package state), so a new browser, a restart or
// another instance resets nothing. It never serves HTTP and never reads the clock
// itself.
package stepup
