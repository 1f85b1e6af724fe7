package session

import "github.com/caddy-jit/caddy-jit/state"

// Storage keys. User names and ids are encoded so that no name can climb out of its
// folder or collide with another one.
const (
	keyPrefix        = state.Prefix
	keyringKey       = keyPrefix + "keys/signing.json"
	keyringLock      = keyPrefix + "keys"
	sessionFolder    = keyPrefix + "sessions/"
	ownerFolder      = keyPrefix + "session-owners/"
	revocationFolder = keyPrefix + "revocations/"
)
