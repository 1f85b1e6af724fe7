package caddymodule

import (
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/caddy-jit/caddy-jit/authority"
	"github.com/caddy-jit/caddy-jit/policy"
	"github.com/caddy-jit/caddy-jit/state"
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
	// RPID is the WebAuthn relying party id of passkeys: a domain that every
	// protected site's host is or ends in, so that one passkey works on all of them
	// (e.g. example.com for grafana.example.com and jenkins.example.com). Default:
	// each site's own host, so a passkey works on the site it was registered at.
	RPID string `json:"rp_id,omitempty"`
	// Store is where the state lives: Caddy's storage (default) or Redis.
	Store *StoreConfig `json:"store,omitempty"`
	// Roles maps role names to their rules.
	Roles map[string]*RoleConfig `json:"roles,omitempty"`
	// Notify lists where every role's events go.
	Notify []NotifyConfig `json:"notify,omitempty"`
	// SMTP is the mail server for `notify email`.
	SMTP *SMTPConfig `json:"smtp,omitempty"`
	// Refusals limits repeated refused POSTs of one user under /.jit/ (see
	// refusals.go). Default: a burst of 50, then one every 6s.
	Refusals *RefusalsConfig `json:"refusals,omitempty"`
	// Audit is where the audit events go and how they are made to prove themselves
	// (audit_config.go).
	Audit *AuditConfig `json:"audit,omitempty"`

	roles     map[string]*policy.Role
	authority *authority.Authority
	// names is the canonical form of user and group names that UserNames selects.
	names policy.UserNames
	// identityKey is the placeholder's key when Identity is exactly one placeholder.
	identityKey string
	shared      *sharedState
	sharedKey   string
	logger      *zap.Logger
	refusals    *refusalLimit
	// auditOut is the batched audit output (nil: through Caddy's logging), auditLog
	// the logger otherwise, and auditErrors hears of failed writes to either.
	auditOut    io.Writer
	auditLog    *zap.Logger
	auditErrors *auditErrorSink
	// start holds requests until Start has set up the audit trail (startup.go); nil
	// in an app not provisioned.
	start *startGate
	// run is what the app takes over when it starts (takeover.go); nil in an app
	// not provisioned.
	run *appRun
}

// LockoutConfig is the lockout after repeated wrong codes.
type LockoutConfig struct {
	// MaxFailures wrong codes in a row lock the user. Default: 5.
	MaxFailures int `json:"max_failures,omitempty"`
	// Duration is how long the lockout lasts. Default: 15m.
	Duration caddy.Duration `json:"duration,omitempty"`
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
	a.start = newStartGate()
	if err := a.build(); err != nil {
		return err
	}

	repl := caddy.NewReplacer()
	var storage state.Store = ctx.Storage()
	a.sharedKey = StorageName(ctx.Storage())
	if a.Store != nil && a.Store.Redis != nil {
		a.sharedKey = a.Store.poolKey(repl)
	}
	val, _, err := sharedStates.LoadOrNew(a.sharedKey, func() (caddy.Destructor, error) {
		closer := func() error { return nil }
		if a.Store != nil && a.Store.Redis != nil {
			var err error
			if storage, closer, err = a.Store.open(ctx, repl); err != nil {
				return nil, err
			}
		}
		s, err := newSharedState(storage, a.logger)
		if err != nil {
			_ = closer()
			return nil, err
		}
		s.closeStore = closer
		return s, nil
	})
	if err != nil {
		return fmt.Errorf("loading caddy-jit state from %s: %w", a.sharedKey, err)
	}
	a.shared = val.(*sharedState)
	storage = a.shared.storage
	if a.refusals, err = provisionRefusals(a.Refusals); err != nil {
		return err
	}
	a.auditErrors = &auditErrorSink{logger: a.logger}
	a.auditLog = ctx.Logger(Handler{}).Named("audit").WithOptions(zap.ErrorOutput(a.auditErrors))
	if a.auditOut, err = a.provisionAuditOutput(ctx); err != nil {
		return err
	}
	cfg := a.AuthorityConfig(a.auditLog, now)
	cfg.State = a.shared.state
	a.authority, err = authority.New(ctx, storage, cfg)
	if err != nil {
		return err
	}
	if err := registerMetrics(ctx.GetMetricsRegistry(), a.shared.state); err != nil {
		return fmt.Errorf("registering caddy-jit's metrics: %w", err)
	}
	a.authority.Metrics = authorityMetrics{}
	a.authority.StepUp.Metrics = authorityMetrics{}
	shared := a.shared
	a.authority.SessionsChanged = func() { shared.sessionsChanged.Store(true) }
	if notifier := a.buildNotifier(a.shared.dispatcher); notifier.targets() > 0 {
		a.authority.Notifier = notifier
	}
	// Applied at Start (takeover.go): a config that fails to load leaves the running
	// one's settings in force.
	a.run = &appRun{settings: &syncSettings{
		interval:     time.Duration(a.SyncInterval),
		maxStaleness: time.Duration(a.MaxStaleness),
		keyRotation:  time.Duration(a.KeyRotation),
		authority:    a.authority,
		role:         a.roleOf,
	}}
	return nil
}

// build reads the settings as every use of the app needs them: defaults filled in,
// user names in canonical form, the policy's roles built, and everything checked.
// Provision runs it, and LoadApp for the commands that read a config without
// running it.
func (a *App) build() error {
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
	return a.Validate()
}

// AuthorityConfig is what the app's settings make of a session authority: its
// issuer and lockout. The audit logger and the clock are the caller's; Provision adds
// the shared state, and `caddy jit` on storage (admin API off) its own audit logger.
func (a *App) AuthorityConfig(audit *zap.Logger, now func() time.Time) authority.Config {
	return authority.Config{
		Issuer:          a.Issuer,
		RPID:            a.RPID,
		MaxFailures:     a.Lockout.MaxFailures,
		LockoutDuration: time.Duration(a.Lockout.Duration),
		Audit:           audit,
		Now:             now,
	}
}

// setDefaults fills in every setting left out.
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
	if err := CheckEnrollLinkTTL(time.Duration(a.EnrollLinkTTL)); err != nil {
		return fmt.Errorf("jit: enroll_link_ttl: %w", err)
	}
	if a.Store != nil {
		if a.Store.Redis == nil {
			return errors.New("jit: store names no backend: give redis, or leave store out for Caddy's storage")
		}
		if err := a.Store.Redis.check(); err != nil {
			return fmt.Errorf("jit: store redis: %w", err)
		}
	}
	if a.RPID != "" {
		if err := checkRPID(a.RPID); err != nil {
			return fmt.Errorf("jit: rp_id: %w", err)
		}
	}
	if err := a.validateNotify(); err != nil {
		return fmt.Errorf("jit: %w", err)
	}
	return a.Audit.validate()
}

// Cleanup releases the shared state; the last config to let go of it stops its sync.
func (a *App) Cleanup() error {
	a.start.end(false)
	// Both are released even when one fails: neither may keep the other alive.
	err := a.refusals.release()
	// The shared state first: its last user writes the final events and checkpoint
	// to the output, which is released after.
	if a.sharedKey != "" {
		_, serr := sharedStates.Delete(a.sharedKey)
		err = errors.Join(err, serr)
	}
	return errors.Join(err, a.releaseAuditOutput())
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

// now is the clock; tests replace it.
var now = time.Now

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

// Interface guards.
var (
	_ caddy.App          = (*App)(nil)
	_ caddy.Provisioner  = (*App)(nil)
	_ caddy.Validator    = (*App)(nil)
	_ caddy.CleanerUpper = (*App)(nil)
	_ caddy.Destructor   = (*sharedState)(nil)
)
