// Package stepup owns the proof a user gives, beyond their password, before a session
// starts: TOTP codes (RFC 6238) that are never accepted twice, the per-user lockout after
// repeated wrong codes, enrollment of the secret by an operator or through a one-time
// enrollment link, passkeys (WebAuthn, see passkey.go: registration, step-up with user
// verification required, listing and removal; failures count towards the same lockout as
// wrong codes), and the audit events and metrics of all of it. Passkeys exist at the
// library level only so far: no page, Caddyfile option or command uses them yet.
//
// All of its state is in the store (package state), so a new browser, a restart or
// another instance resets nothing. It never serves HTTP and never reads the clock
// itself.
package stepup
