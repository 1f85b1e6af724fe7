package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/caddy-jit/caddy-jit/audit"
	"github.com/caddy-jit/caddy-jit/authority"
	"github.com/caddy-jit/caddy-jit/policy"
	"github.com/caddy-jit/caddy-jit/session"
	"github.com/caddy-jit/caddy-jit/state"
)

// sharedStates holds the state that outlives a config: keyed by storage, so that a
// reload keeps caches and revocations while a change of storage starts afresh.
var sharedStates = caddy.NewUsagePool()

// StorageName names a storage: by its String method (certmagic's file storage says
// "FileStorage:/var/lib/caddy"), else by its type. The app keys the state it keeps
// across reloads by it, and messages name the storage by it.
func StorageName(st certmagic.Storage) string {
	if s, ok := st.(fmt.Stringer); ok {
		return s.String()
	}
	return fmt.Sprintf("%T", st)
}

// sharedState is the session state plus the loop that keeps it in sync with storage,
// and the writer that stores recorded request bodies off the request path.
type sharedState struct {
	state   *session.State
	storage state.Store
	// closeStore closes the store's connections (Redis) when the state goes.
	closeStore func() error
	settings   atomic.Pointer[syncSettings]
	cancel     context.CancelFunc
	done       chan struct{}
	// wake interrupts the loop's wait, so that a reload's new interval applies now.
	wake chan struct{}
	// announced carries the store's announcements of revocations (Redis pub/sub), the
	// ids of the sessions revoked: each makes the loop read revocations at once. nil
	// for a store without them.
	announced <-chan string
	// instance is Caddy's instance id, which names this instance to the others.
	instance string
	// acks are the other instances' words that they applied revocations (applied.go).
	acks acks
	// dispatcher delivers notifications, across reloads.
	dispatcher *dispatcher
	// sessionsChanged asks the loop to recount the active sessions at its next turn.
	sessionsChanged atomic.Bool
	// bodies writes recorded request bodies to storage off the request path; a reload
	// keeps it, so nothing queued is lost, and the last config to let go drains it.
	bodies *session.BodyWriter
	// auditKey signs the audit chain's checkpoints; witness sends them off the host,
	// for the newest config's witness URL.
	auditKey   *audit.AuditKey
	witnessMu  sync.Mutex
	witness    *audit.Witness
	witnessURL string
	// live: what this instance served under sessions before its last clean stop,
	// taken back at the first Start (live_counts.go).
	live liveCounts
}

// witnessFor returns the witness of url ("" for none), keeping the one it has when
// the url did not change, so that a reload loses no checkpoint it is retrying.
func (s *sharedState) witnessFor(url string, logger *zap.Logger) *audit.Witness {
	s.witnessMu.Lock()
	defer s.witnessMu.Unlock()
	if url == s.witnessURL {
		return s.witness
	}
	if old := s.witness; old != nil {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), witnessDrainTimeout)
			defer cancel()
			_ = old.Stop(ctx)
		}()
	}
	s.witness, s.witnessURL = nil, url
	if url != "" {
		s.witness = audit.NewWitness(url, nil, logger.Named("witness"))
	}
	return s.witness
}

func (s *sharedState) wakeUp() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// syncSettings come from the newest config that uses the state.
type syncSettings struct {
	interval     time.Duration
	maxStaleness time.Duration
	keyRotation  time.Duration
	authority    *authority.Authority
	role         func(name string) *policy.Role
}

func newSharedState(st state.Store, logger *zap.Logger) (*sharedState, error) {
	ctx, cancel := context.WithCancel(context.Background())
	loaded, err := session.LoadState(ctx, st, session.DefaultCacheSize, now)
	if err != nil {
		cancel()
		return nil, err
	}
	instance, err := caddy.InstanceID()
	if err != nil {
		cancel()
		return nil, fmt.Errorf("reading Caddy's instance id, which names this instance's audit chain: %w", err)
	}
	if loaded.Chain, err = audit.LoadChain(ctx, st, instance.String()); err != nil {
		cancel()
		return nil, fmt.Errorf("loading the audit chain head: %w", err)
	}
	auditKey, err := audit.LoadAuditKey(ctx, st, now())
	if err != nil {
		cancel()
		return nil, fmt.Errorf("loading the audit key that signs checkpoints: %w", err)
	}
	s := &sharedState{state: loaded, storage: st, cancel: cancel, done: make(chan struct{}), wake: make(chan struct{}, 1),
		dispatcher: newDispatcher(logger.Named("notify")), instance: instance.String(), auditKey: auditKey}
	s.settings.Store(&syncSettings{interval: DefaultSyncInterval})
	loaded.Live.OnEnd = s.sessionEnded(logger)
	s.live.resumedSeq = loaded.Chain.Head().Seq
	s.bodies = session.StartBodyWriter(loaded.Records, session.BodyWriterConfig{
		Dropped: countBodyDropped, Report: s.reportBodyDrop(logger), Now: now})
	if a, ok := st.(state.Announcer); ok {
		s.announced = a.Listen(ctx, state.TopicRevocations)
		s.listenApplied(ctx, a)
		// Present from the start: a revocation made from now on waits for this
		// instance, which listens already.
		if err := s.renewPresence(ctx, DefaultSyncInterval, now()); err != nil {
			logger.Warn("recording this instance's presence; revocations made elsewhere do not wait for it until the next sync", zap.Error(err))
		}
	}
	go s.syncLoop(ctx, logger)
	return s, nil
}

func (s *sharedState) syncLoop(ctx context.Context, logger *zap.Logger) {
	defer close(s.done)
	var lastPrune, lastRequestSweep, lastExpiringSweep time.Time
	failing := false
	// nextTick is when the interval's turn comes; an announcement's turn in between
	// does not move it, so that a storm of revocations cannot starve the jobs below.
	nextTick := time.Now()
	for {
		settings := s.settings.Load()
		if !nextTick.After(time.Now()) {
			nextTick = time.Now().Add(settings.interval)
		}
		timer := time.NewTimer(time.Until(nextTick))
		var announced []string
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-s.wake:
			timer.Stop()
			nextTick = time.Now() // a new interval applies from now
			if s.announced != nil {
				// Present for as long as the new interval needs.
				_ = s.renewPresence(ctx, s.settings.Load().interval, now())
			}
			continue
		case id := <-s.announced:
			// An instance revoked a session: read it now, not at the interval, and
			// nothing else (the jobs below wait for their interval); with it, every
			// revocation announced meanwhile.
			timer.Stop()
			announced = append(announced, id)
			for more := true; more; {
				select {
				case id := <-s.announced:
					announced = append(announced, id)
				default:
					more = false
				}
			}
		case <-timer.C:
		}
		t := now()
		if announced == nil {
			s.state.Chain.Tick(t)
			if err := s.state.Chain.Save(ctx, s.storage); err != nil && ctx.Err() == nil {
				logger.Warn("saving the audit chain head; a restart now would continue the chain from an older event", zap.Error(err))
			}
			if s.announced != nil {
				// A failure is the store's, which the sync below reports once.
				_ = s.renewPresence(ctx, settings.interval, t)
			}
		}
		err := s.state.Sync(ctx, t)
		switch {
		case err != nil && ctx.Err() == nil && !failing:
			failing = true
			logger.Error("reading revocations from storage failed; sessions keep working until max_staleness, then the gate refuses them", zap.Error(err))
		case err == nil && failing:
			failing = false
			logger.Info("reading revocations from storage works again")
		}
		if err != nil {
			// The gate refuses new requests once the revocation set is too old to
			// trust; the ones in flight must end as well.
			if settings.maxStaleness > 0 && t.Sub(s.state.LastSync()) > settings.maxStaleness {
				s.state.Live.EndAll()
			}
			continue
		}
		if announced != nil {
			s.sayApplied(ctx, announced)
			continue
		}
		if settings.authority != nil && t.Sub(lastPrune) >= pruneInterval {
			lastPrune = t
			if err := settings.authority.Prune(ctx, t, keepEnded); err != nil && ctx.Err() == nil {
				logger.Warn("pruning expired records from storage", zap.Error(err))
			}
		}
		if settings.keyRotation > 0 && settings.authority != nil {
			if _, err := settings.authority.RotateKeysIfOlder(ctx, "key_rotation", settings.keyRotation); err != nil && ctx.Err() == nil {
				logger.Error("rotating the signing key", zap.Error(err))
			}
		}
		if settings.authority != nil && t.Sub(lastRequestSweep) >= requestSweepInterval {
			lastRequestSweep = t
			if err := settings.authority.SweepRequests(ctx, settings.role); err != nil && ctx.Err() == nil {
				logger.Warn("settling approval requests", zap.Error(err))
			}
		}
		changed := s.sessionsChanged.Swap(false)
		if settings.authority != nil && t.Sub(lastExpiringSweep) >= expiringSweepInterval {
			lastExpiringSweep = t
			if err := settings.authority.NotifyExpiring(ctx, expiringNotice); err != nil && ctx.Err() == nil {
				logger.Warn("looking for sessions that end soon", zap.Error(err))
			}
			changed = true
		}
		if settings.authority != nil && changed {
			if byRole, err := settings.authority.ActiveByRole(ctx); err == nil {
				setActiveSessions(byRole)
			} else if ctx.Err() == nil {
				logger.Warn("counting active sessions for the metrics", zap.Error(err))
			}
		}
	}
}

// reportBodyDrop audits the first dropped body of a burst through the newest config,
// and tells Caddy's log.
func (s *sharedState) reportBodyDrop(logger *zap.Logger) func(session.BodyDrop) {
	return func(d session.BodyDrop) {
		if a := s.settings.Load().authority; a != nil {
			a.Audit.BodyDropped(d.Reason, d.Count, audit.Holder{User: d.User, Role: d.Role, SessionID: d.SessionID}, d.Key)
		}
		logger.Warn("recorded request bodies were dropped, not stored for session review (see caddy_jit_bodies_dropped_total)",
			zap.String("reason", d.Reason), zap.Int("count", d.Count), zap.String("session_id", d.SessionID),
			zap.String("body_key", d.Key), zap.Error(d.Err))
	}
}

// witnessDrainTimeout bounds how long a stop waits for the witness to take the last
// checkpoints.
const witnessDrainTimeout = 5 * time.Second

// bodyDrainTimeout bounds how long a stop waits for queued bodies to reach storage.
const bodyDrainTimeout = 10 * time.Second

// Destruct stops the sync loop and drains the body writer when no config uses the
// state any more.
func (s *sharedState) Destruct() error {
	s.cancel()
	<-s.done
	s.dispatcher.stop()
	drain, cancelDrain := context.WithTimeout(context.Background(), bodyDrainTimeout)
	err := s.bodies.Stop(drain)
	cancelDrain()
	// The last events written, a checkpoint over them, and their place in the chain
	// saved as a clean stop, so that the next start continues it.
	ctx, cancel := context.WithTimeout(context.Background(), witnessDrainTimeout)
	defer cancel()
	s.leave(ctx)
	s.endStreams()
	err = errors.Join(err, s.state.Chain.Stop(ctx, now()))
	err = errors.Join(err, s.saveLive(ctx))
	if s.closeStore != nil {
		err = errors.Join(err, s.closeStore())
	}
	return err
}
