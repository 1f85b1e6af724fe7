package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/caddy-jit/caddy-jit/policy"
	"github.com/caddy-jit/caddy-jit/session"
)

func init() {
	caddy.RegisterModule(App{})
}

// Defaults of the jit app.
const (
	DefaultIssuer                 = "caddy-jit"
	DefaultIdentity               = "{http.auth.user.id}"
	DefaultMaxFailures            = 5
	DefaultLockoutDuration        = 15 * time.Minute
	DefaultJustificationMinLength = 10
	DefaultSyncInterval           = time.Second
	DefaultMaxStaleness           = 30 * time.Second
	// pruneInterval is how often storage is cleared of what no decision needs.
	pruneInterval = 10 * time.Minute
	// keepEnded is how long a session record stays in storage after the session
	// ended; the audit log keeps its story for good.
	keepEnded = 24 * time.Hour
	// maxDefaultDuration caps the default duration that is derived from max_duration.
	maxDefaultDuration = time.Hour
	// requestSweepInterval is how often overdue approval requests are expired and
	// approved ones that waited for a place under max_active are started.
	requestSweepInterval = 2 * time.Second
	// expiringSweepInterval is how often sessions that end within expiringNotice are
	// looked for, to send the `expiring` notification.
	expiringSweepInterval = 30 * time.Second
	expiringNotice        = 5 * time.Minute
)

// App is the `jit` app: the roles, who is eligible for them, and the settings every
// protected site shares. In the Caddyfile it is the `jit` global option.
type App struct {
	// Issuer is the name authenticator apps show next to the code, and the iss claim
	// of session tokens. Default: "caddy-jit".
	Issuer string `json:"issuer,omitempty"`
	// Identity is the placeholder that holds the base identity, set by whatever
	// authenticates users in front of jit. Default: "{http.auth.user.id}".
	Identity string `json:"identity,omitempty"`
	// Groups is an optional placeholder holding the caller's groups, comma-separated,
	// for `group:NAME` eligibility.
	Groups string `json:"groups,omitempty"`
	// UserNames says how the identity source compares user and group names:
	// "case_sensitive" (default: alice and Alice are two people, as with basic_auth)
	// or "case_insensitive" (ALICE logs in as alice, as with most identity providers
	// behind forward_auth). Names are always compared in Unicode NFC; case_insensitive
	// also folds case (see policy.UserNames).
	UserNames string `json:"user_names,omitempty"`
	// Lockout sets how many wrong codes lock a user out, and for how long.
	Lockout *LockoutConfig `json:"lockout,omitempty"`
	// SyncInterval is how often revocations are read from storage, so that a session
	// ended on another instance is refused here too. Default: 1s.
	SyncInterval caddy.Duration `json:"sync_interval,omitempty"`
	// MaxStaleness is how old the last successful revocation sync may be before the
	// gate stops trusting its revocation set and refuses every session (503), because
	// storage has been unreachable. Default: 30s.
	MaxStaleness caddy.Duration `json:"max_staleness,omitempty"`
	// KeyRotation, when set, makes a new signing key once the newest is this old.
	// Tokens signed by the previous keys stay valid until they expire.
	KeyRotation caddy.Duration `json:"key_rotation,omitempty"`
	// EnrollLinkTTL is how long an enrollment link works when its maker gives no ttl.
	// Default: 24h; at most 30d.
	EnrollLinkTTL caddy.Duration `json:"enroll_link_ttl,omitempty"`
	// Roles maps role names to their rules.
	Roles map[string]*RoleConfig `json:"roles,omitempty"`
	// Notify lists where every role's events go.
	Notify []NotifyConfig `json:"notify,omitempty"`
	// SMTP is the mail server for `notify email`.
	SMTP *SMTPConfig `json:"smtp,omitempty"`
	// Refusals limits repeated refused POSTs of one user under /.jit/ (see
	// refusals.go). Default: a burst of 50, then one every 6s.
	Refusals *RefusalsConfig `json:"refusals,omitempty"`

	roles     map[string]*policy.Role
	authority *session.Authority
	// names is the canonical form of user and group names that UserNames selects.
	names policy.UserNames
	// identityKey is the placeholder's key when Identity is exactly one placeholder.
	identityKey string
	shared      *sharedState
	sharedKey   string
	logger      *zap.Logger
	refusals    *refusalLimit
}

// LockoutConfig is the lockout after repeated wrong codes.
type LockoutConfig struct {
	// MaxFailures wrong codes in a row lock the user. Default: 5.
	MaxFailures int `json:"max_failures,omitempty"`
	// Duration is how long the lockout lasts. Default: 15m.
	Duration caddy.Duration `json:"duration,omitempty"`
}

// RoleConfig is one role.
type RoleConfig struct {
	// MaxDuration is the longest session an activation may ask for. Required.
	MaxDuration caddy.Duration `json:"max_duration,omitempty"`
	// DefaultDuration is preselected on the activation page. Default: max_duration,
	// at most 1h.
	DefaultDuration caddy.Duration `json:"default_duration,omitempty"`
	// Justification sets whether a justification is required and its minimum length.
	// Default: required, at least 10 characters.
	Justification *JustificationConfig `json:"justification,omitempty"`
	// Ticket is a regular expression a ticket reference must match in full; when set,
	// a ticket reference is required.
	Ticket string `json:"ticket,omitempty"`
	// Eligible lists who may activate the role, and when.
	Eligible []EligibleConfig `json:"eligible,omitempty"`
	// Approval, when set, makes activations wait for approvers.
	Approval *ApprovalConfig `json:"approval,omitempty"`
	// BreakGlass lets an eligible user skip approval and allowed hours in an
	// emergency, with a justification; every approver and notify target is alerted.
	BreakGlass bool `json:"break_glass,omitempty"`
	// MaxTotal bounds a session with its extensions, from its start. Sessions can be
	// extended only when it is longer than max_duration.
	MaxTotal caddy.Duration `json:"max_total,omitempty"`
	// ExtendWithoutApproval lets a role with approval have its sessions extended by
	// their holder alone, with a code. Default: extensions need approval too.
	ExtendWithoutApproval bool `json:"extend_without_approval,omitempty"`
	// AllowedHours are when the role may be activated: `DAYS HH:MM-HH:MM [TIME_ZONE]`
	// each. Default: any time.
	AllowedHours []string `json:"allowed_hours,omitempty"`
	// MaxActive is how many sessions of the role may be active at once. Default: no
	// limit.
	MaxActive int `json:"max_active,omitempty"`
	// Notify lists where this role's events go, beside the global targets.
	Notify []NotifyConfig `json:"notify,omitempty"`
	// RecordBodies, when positive, keeps up to that many bytes of the body of every
	// mutating request (POST, PUT, PATCH, DELETE) made under the role's sessions, in
	// storage, for session review. Every such request's size and SHA-256 are in its
	// access event either way.
	RecordBodies int64 `json:"record_bodies,omitempty"`
}

// JustificationConfig is the justification rule of a role.
type JustificationConfig struct {
	// Optional makes the justification optional.
	Optional bool `json:"optional,omitempty"`
	// MinLength is the minimum length, in characters, of a required justification.
	// Default: 10.
	MinLength int `json:"min_length,omitempty"`
}

// EligibleConfig is one grant of eligibility.
type EligibleConfig struct {
	// Subjects are user names, or group names prefixed with "group:".
	Subjects []string `json:"subjects"`
	// From is when the eligibility starts: a date (YYYY-MM-DD, the start of that day
	// in UTC) or an RFC 3339 time. Default: always.
	From string `json:"from,omitempty"`
	// Until is when the eligibility ends: a date (YYYY-MM-DD, the end of that day in
	// UTC) or an RFC 3339 time. Default: never.
	Until string `json:"until,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "jit",
		New: func() caddy.Module { return new(App) },
	}
}

// Provision fills in defaults, builds the policy and attaches the shared state.
func (a *App) Provision(ctx caddy.Context) error {
	a.logger = ctx.Logger()
	a.setDefaults()
	if err := a.canonicalizeNames(); err != nil {
		return err
	}
	roles, err := buildRoles(a.Roles)
	if err != nil {
		return err
	}
	a.roles = roles
	a.identityKey = singlePlaceholder(a.Identity)
	if err := a.Validate(); err != nil {
		return err
	}

	storage := ctx.Storage()
	a.sharedKey = sharedStateKey(storage)
	val, _, err := sharedStates.LoadOrNew(a.sharedKey, func() (caddy.Destructor, error) {
		return newSharedState(storage, a.logger)
	})
	if err != nil {
		return fmt.Errorf("loading caddy-jit state from storage: %w", err)
	}
	a.shared = val.(*sharedState)
	if a.refusals, err = provisionRefusals(a.Refusals); err != nil {
		return err
	}
	a.authority, err = session.NewAuthority(ctx, storage, session.Config{
		Issuer:          a.Issuer,
		MaxFailures:     a.Lockout.MaxFailures,
		LockoutDuration: time.Duration(a.Lockout.Duration),
		Audit:           ctx.Logger(Handler{}).Named("audit").WithOptions(zap.ErrorOutput(&auditErrorSink{logger: a.logger})),
		Now:             now,
		State:           a.shared.state,
	})
	if err != nil {
		return err
	}
	if err := registerMetrics(ctx.GetMetricsRegistry(), a.shared.state); err != nil {
		return fmt.Errorf("registering caddy-jit's metrics: %w", err)
	}
	a.authority.Metrics = authorityMetrics{}
	shared := a.shared
	a.authority.SessionsChanged = func() { shared.sessionsChanged.Store(true) }
	if notifier := a.buildNotifier(a.shared.dispatcher); notifier.targets() > 0 {
		a.authority.Notifier = notifier
	}
	a.shared.settings.Store(&syncSettings{
		interval:     time.Duration(a.SyncInterval),
		maxStaleness: time.Duration(a.MaxStaleness),
		keyRotation:  time.Duration(a.KeyRotation),
		authority:    a.authority,
		role:         a.roleOf,
	})
	a.shared.wakeUp()
	return nil
}

// setDefaults fills in every setting left out; the offline CLI shares it.
func (a *App) setDefaults() {
	if a.Issuer == "" {
		a.Issuer = DefaultIssuer
	}
	if a.Identity == "" {
		a.Identity = DefaultIdentity
	}
	if a.Lockout == nil {
		a.Lockout = &LockoutConfig{}
	}
	if a.Lockout.MaxFailures == 0 {
		a.Lockout.MaxFailures = DefaultMaxFailures
	}
	if a.Lockout.Duration == 0 {
		a.Lockout.Duration = caddy.Duration(DefaultLockoutDuration)
	}
	if a.SyncInterval == 0 {
		a.SyncInterval = caddy.Duration(DefaultSyncInterval)
	}
	if a.MaxStaleness == 0 {
		a.MaxStaleness = caddy.Duration(DefaultMaxStaleness)
	}
	if a.EnrollLinkTTL == 0 {
		a.EnrollLinkTTL = caddy.Duration(DefaultEnrollLinkTTL)
	}
}

// Validate checks the settings that Provision does not derive.
func (a *App) Validate() error {
	if a.Lockout.MaxFailures < 1 {
		return fmt.Errorf("jit: lockout max_failures must be at least 1, got %d", a.Lockout.MaxFailures)
	}
	if a.Lockout.Duration < 0 {
		return errors.New("jit: lockout duration must be positive")
	}
	if a.SyncInterval < 0 || a.MaxStaleness < 0 || a.KeyRotation < 0 {
		return errors.New("jit: sync_interval, max_staleness and key_rotation must be positive")
	}
	if a.MaxStaleness <= a.SyncInterval {
		return fmt.Errorf("jit: max_staleness (%s) must be longer than sync_interval (%s)", time.Duration(a.MaxStaleness), time.Duration(a.SyncInterval))
	}
	if err := checkEnrollLinkTTL(time.Duration(a.EnrollLinkTTL)); err != nil {
		return fmt.Errorf("jit: enroll_link_ttl: %w", err)
	}
	if err := a.validateNotify(); err != nil {
		return fmt.Errorf("jit: %w", err)
	}
	return nil
}

// Start makes the app the one the admin API and CLI talk to.
func (a *App) Start() error {
	currentApp.Store(a)
	return nil
}

// Stop lets go of the admin API, unless a newer config already took it over.
func (a *App) Stop() error {
	currentApp.CompareAndSwap(a, nil)
	return nil
}

// Cleanup releases the shared state; the last config to let go of it stops its sync.
func (a *App) Cleanup() error {
	// Both are released even when one fails: neither may keep the other alive.
	err := a.refusals.release()
	if a.sharedKey != "" {
		_, serr := sharedStates.Delete(a.sharedKey)
		err = errors.Join(err, serr)
	}
	return err
}

// role returns a role by name.
func (a *App) role(name string) (*policy.Role, bool) {
	r, ok := a.roles[name]
	return r, ok
}

// roleNames lists the declared roles in order.
func (a *App) roleNames() []string {
	names := make([]string, 0, len(a.roles))
	for name := range a.roles {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// currentApp is the running jit app, for the admin API, which Caddy provisions apart
// from the apps.
var currentApp atomic.Pointer[App]

// now is the clock; tests replace it.
var now = time.Now

func buildRoles(configs map[string]*RoleConfig) (map[string]*policy.Role, error) {
	roles := make(map[string]*policy.Role, len(configs))
	for name, rc := range configs {
		r, err := rc.build(name)
		if err != nil {
			return nil, fmt.Errorf("jit: role %s: %w", name, err)
		}
		roles[name] = r
	}
	return roles, nil
}

// roleOf is a role as configured now, or nil: the lookup the sweeps and pages need.
func (a *App) roleOf(name string) *policy.Role {
	r, _ := a.role(name)
	return r
}

// singlePlaceholder returns KEY when s is exactly "{KEY}", else "".
func singlePlaceholder(s string) string {
	if len(s) > 2 && s[0] == '{' && s[len(s)-1] == '}' && !strings.ContainsAny(s[1:len(s)-1], "{}") {
		return s[1 : len(s)-1]
	}
	return ""
}

// validRoleName keeps role names to what reads well in URLs, cookies and logs.
var validRoleName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

func (rc *RoleConfig) build(name string) (*policy.Role, error) {
	if !validRoleName.MatchString(name) {
		return nil, errors.New("a role name has 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit")
	}
	if rc.MaxDuration <= 0 {
		return nil, errors.New("max_duration is required and must be positive, e.g. max_duration 1h")
	}
	r := &policy.Role{
		Name:                   name,
		MaxDuration:            time.Duration(rc.MaxDuration),
		DefaultDuration:        time.Duration(rc.DefaultDuration),
		JustificationMinLength: DefaultJustificationMinLength,
	}
	if r.DefaultDuration == 0 {
		r.DefaultDuration = min(r.MaxDuration, maxDefaultDuration)
	}
	if r.DefaultDuration < 0 || r.DefaultDuration > r.MaxDuration {
		return nil, fmt.Errorf("default_duration %s must be positive and at most max_duration %s", r.DefaultDuration, r.MaxDuration)
	}
	if j := rc.Justification; j != nil {
		switch {
		case j.Optional:
			r.JustificationMinLength = 0
		case j.MinLength < 0 || j.MinLength > policy.MaxJustificationLength:
			return nil, fmt.Errorf("justification min_length must be between 1 and %d", policy.MaxJustificationLength)
		case j.MinLength > 0:
			r.JustificationMinLength = j.MinLength
		}
	}
	if rc.Ticket != "" {
		re, err := compileTicket(rc.Ticket)
		if err != nil {
			return nil, err
		}
		r.Ticket, r.TicketFormat = re, rc.Ticket
	}
	if len(rc.Eligible) == 0 {
		return nil, errors.New("no one is eligible: add at least one `eligible SUBJECT…` line")
	}
	for _, ec := range rc.Eligible {
		e, err := ec.build()
		if err != nil {
			return nil, err
		}
		r.Eligibility = append(r.Eligibility, e)
	}
	if err := rc.buildWorkflow(r); err != nil {
		return nil, err
	}
	return r, nil
}

// compileTicket compiles a ticket pattern so that it must match the whole reference.
func compileTicket(pattern string) (*regexp.Regexp, error) {
	if _, err := regexp.Compile(pattern); err != nil {
		return nil, fmt.Errorf("ticket pattern %q is not a valid regular expression: %v", pattern, err)
	}
	return regexp.MustCompile(`^(?:` + pattern + `)$`), nil
}

func (ec EligibleConfig) build() (policy.Eligibility, error) {
	e := policy.Eligibility{Subjects: ec.Subjects}
	if len(ec.Subjects) == 0 {
		return e, errors.New("an eligible line names no subject: list user names or group:NAME")
	}
	for _, s := range ec.Subjects {
		if err := checkSubject(s); err != nil {
			return e, err
		}
	}
	var err error
	if ec.From != "" {
		if e.From, err = parseDate(ec.From, false); err != nil {
			return e, fmt.Errorf("eligible from: %w", err)
		}
	}
	if ec.Until != "" {
		if e.Until, err = parseDate(ec.Until, true); err != nil {
			return e, fmt.Errorf("eligible until: %w", err)
		}
	}
	if !e.From.IsZero() && !e.Until.IsZero() && !e.From.Before(e.Until) {
		return e, fmt.Errorf("eligible from %s is not before until %s", ec.From, ec.Until)
	}
	return e, nil
}

func checkSubject(s string) error {
	name := strings.TrimPrefix(s, policy.GroupPrefix)
	if name == "" || len(s) > maxUserLength || strings.ContainsFunc(s, isControl) {
		return fmt.Errorf("eligible subject %q is not a user name or group:NAME", s)
	}
	return nil
}

// parseDate reads a date or an RFC 3339 time. A plain date as the end of a window
// means the end of that day, so `until 2026-12-31` includes the 31st.
func parseDate(s string, endOfDay bool) (time.Time, error) {
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		if endOfDay {
			t = t.AddDate(0, 0, 1)
		}
		return t, nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is neither a date (2026-12-31) nor an RFC 3339 time (2026-12-31T18:00:00Z)", s)
	}
	return t, nil
}

// sharedStates holds the state that outlives a config: keyed by storage, so that a
// reload keeps caches and revocations while a change of storage starts afresh.
var sharedStates = caddy.NewUsagePool()

func sharedStateKey(st certmagic.Storage) string {
	if s, ok := st.(fmt.Stringer); ok {
		return s.String()
	}
	return fmt.Sprintf("%T", st)
}

// sharedState is the session state plus the loop that keeps it in sync with storage.
type sharedState struct {
	state    *session.State
	storage  certmagic.Storage
	settings atomic.Pointer[syncSettings]
	cancel   context.CancelFunc
	done     chan struct{}
	// wake interrupts the loop's wait, so that a reload's new interval applies now.
	wake chan struct{}
	// dispatcher delivers notifications, across reloads.
	dispatcher *dispatcher
	// sessionsChanged asks the loop to recount the active sessions at its next turn.
	sessionsChanged atomic.Bool
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
	authority    *session.Authority
	role         func(name string) *policy.Role
}

func newSharedState(st certmagic.Storage, logger *zap.Logger) (*sharedState, error) {
	ctx, cancel := context.WithCancel(context.Background())
	state, err := session.LoadState(ctx, st, session.DefaultCacheSize, now)
	if err != nil {
		cancel()
		return nil, err
	}
	instance, err := caddy.InstanceID()
	if err != nil {
		cancel()
		return nil, fmt.Errorf("reading Caddy's instance id, which names this instance's audit chain: %w", err)
	}
	if state.Chain, err = session.LoadChain(ctx, st, instance.String()); err != nil {
		cancel()
		return nil, fmt.Errorf("loading the audit chain head: %w", err)
	}
	s := &sharedState{state: state, storage: st, cancel: cancel, done: make(chan struct{}), wake: make(chan struct{}, 1),
		dispatcher: newDispatcher(logger.Named("notify"))}
	s.settings.Store(&syncSettings{interval: DefaultSyncInterval})
	go s.syncLoop(ctx, logger)
	return s, nil
}

func (s *sharedState) syncLoop(ctx context.Context, logger *zap.Logger) {
	defer close(s.done)
	var lastPrune, lastRequestSweep, lastExpiringSweep time.Time
	failing := false
	for {
		settings := s.settings.Load()
		timer := time.NewTimer(settings.interval)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-s.wake:
			timer.Stop()
			continue
		case <-timer.C:
		}
		t := now()
		if err := s.state.Chain.Save(ctx, s.storage); err != nil && ctx.Err() == nil {
			logger.Warn("saving the audit chain head; a restart now would continue the chain from an older event", zap.Error(err))
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
		if t.Sub(lastPrune) >= pruneInterval {
			lastPrune = t
			if err := s.state.Prune(ctx, t, keepEnded); err != nil && ctx.Err() == nil {
				logger.Warn("pruning expired records from storage", zap.Error(err))
			}
		}
		if settings.keyRotation > 0 && settings.authority != nil {
			s.rotateIfDue(ctx, t, settings, logger)
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

func (s *sharedState) rotateIfDue(ctx context.Context, t time.Time, settings *syncSettings, logger *zap.Logger) {
	created, err := session.NewestKeyCreated(ctx, s.storage)
	if err != nil || created.IsZero() || t.Sub(created) < settings.keyRotation {
		return
	}
	// Due by an unlocked look; RotateKeysIfOlder decides again under the lock.
	if _, err := settings.authority.RotateKeysIfOlder(ctx, "key_rotation", settings.keyRotation); err != nil && ctx.Err() == nil {
		logger.Error("rotating the signing key", zap.Error(err))
	}
}

// Destruct stops the sync loop when no config uses the state any more.
func (s *sharedState) Destruct() error {
	s.cancel()
	<-s.done
	s.dispatcher.stop()
	// The last events' place in the chain, so that the next start continues it.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return s.state.Chain.Save(ctx, s.storage)
}

// Interface guards.
var (
	_ caddy.App          = (*App)(nil)
	_ caddy.Provisioner  = (*App)(nil)
	_ caddy.Validator    = (*App)(nil)
	_ caddy.CleanerUpper = (*App)(nil)
	_ caddy.Destructor   = (*sharedState)(nil)
)
