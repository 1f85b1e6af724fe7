package caddymodule

import (
	"sync/atomic"

	"go.uber.org/zap"
)

// Which config's settings are in force. A reload provisions the new config while the
// old one serves, starts the new config's apps one after the other, in no set order,
// and stops the old config once they all started. A config that fails to provision
// never starts; one whose other app fails to start (a port taken, say) is stopped
// again, and the old config serves on. So what configs share — the sync loop's
// settings and authority (which write session_ended, rotate keys, sweep approval
// requests, send notifications), the audit chain's output and checkpoints, and the
// app the admin API talks to — is taken over at Start, not at Provision, and given
// back to the config before when a failed start stops this one.

// currentApp is the running jit app, for the admin API, which Caddy provisions apart
// from the apps.
var currentApp atomic.Pointer[App]

// appRun is what one provisioned app takes over, and what it falls back on.
type appRun struct {
	settings *syncSettings
	// before is the app that was running when this one started, until either stops.
	before  atomic.Pointer[App]
	stopped atomic.Bool
}

// Start makes the app the one whose settings, audit output and admin API are in force.
func (a *App) Start() error {
	a.run.before.Store(currentApp.Swap(a))
	a.takeOver()
	a.start.end(true)
	return nil
}

// takeOver points the shared state at this app: its audit output and checkpoints, then
// its sync settings and authority. In that order, so that audit_started is the first
// event of a process's part of the chain, before any the sync loop writes (a key
// rotation, a session_ended): `caddy jit audit verify` recognises a crash's lost batch
// by the audit_started right after it.
func (a *App) takeOver() {
	a.startAudit(a.auditOut, a.auditLog, a.auditErrors)
	a.shared.settings.Store(a.run.settings)
	a.shared.restoreLive(a.logger)
	a.shared.wakeUp()
}

// Stop lets go of what the app took over. Caddy stops a config after a reload that
// replaced it, at shutdown, and when another app of the same config failed to start:
// then the config that ran before serves on, and takes everything back.
func (a *App) Stop() error {
	a.run.stopped.Store(true)
	if next := currentApp.Load(); next != nil && next != a {
		// Replaced: the newer app no longer has this one to fall back on.
		next.run.before.CompareAndSwap(a, nil)
	}
	before := a.run.before.Swap(nil)
	if before != nil && !before.run.stopped.Load() && currentApp.CompareAndSwap(a, before) {
		before.takeOver()
		a.logger.Warn("this config stopped before the config it was to replace (another app failed to start); that one's settings, audit output and admin API are in force again",
			zap.String("storage", before.sharedKey))
		return nil
	}
	currentApp.CompareAndSwap(a, nil)
	return nil
}
