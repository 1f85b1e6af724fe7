// Package authority composes caddy-jit's domain packages into the one object that the
// Caddy adapter and the `caddy jit` commands drive: the state (keys, verifier,
// revocations, records), the audit writer, the step-up, the sessions and the workflow
// over them, wired together once. It also owns the order of the one job that spans
// them all: pruning the store.
//
// Nothing below imports it; each domain package takes what it needs as arguments.
package authority

import (
	"context"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-jit/caddy-jit/audit"
	"github.com/caddy-jit/caddy-jit/session"
	"github.com/caddy-jit/caddy-jit/state"
	"github.com/caddy-jit/caddy-jit/stepup"
	"github.com/caddy-jit/caddy-jit/workflow"
)

// Authority is the workflow with everything it drives: through it, the sessions
// (End, RevokeByID, RotateKeys…), their state (Records, Verifier, Revocations…), the
// step-up (StepUp) and the audit writer (Audit).
type Authority struct {
	*workflow.Workflow
	store state.Store
}

// Config is what New needs beyond the store.
type Config struct {
	// Issuer goes into the tokens' iss claim and names the TOTP issuer.
	Issuer string
	// MaxFailures wrong codes in a row lock a user for LockoutDuration.
	MaxFailures     int
	LockoutDuration time.Duration
	// RPID is the WebAuthn relying party id of every site's passkeys, for passkeys
	// shared by the sites of one parent domain; empty: each site's own host.
	RPID string
	// CacheSize bounds the verified-token cache (0: session.DefaultCacheSize).
	CacheSize int
	Audit     *zap.Logger
	Now       session.Clock
	// State, when set, is reused instead of loaded: it is how a config reload keeps
	// the caches and the revocation set.
	State *session.State
}

// New wires an authority over the store, loading the state unless cfg carries one.
func New(ctx context.Context, st state.Store, cfg Config) (*Authority, error) {
	loaded := cfg.State
	if loaded == nil {
		var err error
		if loaded, err = session.LoadState(ctx, st, cfg.CacheSize, cfg.Now); err != nil {
			return nil, err
		}
	}
	log := audit.NewWriter(cfg.Audit, loaded.Chain, cfg.Now)
	sessions := session.New(loaded, log, cfg.Issuer, cfg.Now)
	stepUp := stepup.New(st, log, stepup.Config{Issuer: cfg.Issuer, MaxFailures: cfg.MaxFailures, LockoutDuration: cfg.LockoutDuration, Now: cfg.Now})
	name := cfg.Issuer
	if name == "" {
		name = "caddy-jit"
	}
	if _, err := stepup.NewPasskeys(stepUp, stepup.PasskeyConfig{RPID: cfg.RPID, RPDisplayName: name}); err != nil {
		return nil, err
	}
	return &Authority{Workflow: workflow.New(st, sessions, stepUp), store: st}, nil
}

// pruneLock lets one instance of a cluster prune at a time.
const pruneLock = state.Prefix + "prune"

// Prune deletes what the store no longer needs: records of sessions that ended more
// than keep ago and revocations of expired ones, settled requests, expired enrollment
// links and finished lockouts. Each package prunes its own; this is the order, under
// one lock for the cluster.
func (a *Authority) Prune(ctx context.Context, now time.Time, keep time.Duration) error {
	return state.Locked(ctx, a.store, pruneLock, func() error {
		if err := a.State.Prune(ctx, now, keep); err != nil {
			return err
		}
		if err := a.Workflow.Prune(ctx, now); err != nil {
			return err
		}
		return a.StepUp.Prune(ctx, now, keep)
	})
}
