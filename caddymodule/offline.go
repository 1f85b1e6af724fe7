package caddymodule

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/caddy-jit/caddy-jit/policy"
	"github.com/caddy-jit/caddy-jit/session"
)

// offlineControl works on the storage of a config whose admin API is off, with the
// same session.Authority methods the admin API runs. Running instances learn of its
// changes on their next sync with storage, as they learn of another instance's.
type offlineControl struct {
	ctx          caddy.Context
	cancel       context.CancelFunc
	authority    *session.Authority
	configFile   string
	storage      string
	syncInterval time.Duration
	// linkTTL is the config's enroll_link_ttl.
	linkTTL time.Duration
	// names is the config's user_names: user arguments are put in its canonical form.
	names policy.UserNames
	// roles are the config's roles: how long a revocation of an unrecorded id lasts
	// follows from them.
	roles  map[string]*policy.Role
	stderr io.Writer
}

// openOffline builds the storage and the jit settings of cfg, loaded from
// configFile, into an authority whose audit events go to stderr as JSON lines under
// the audit logger's name, for operators to capture.
func openOffline(cfg *caddy.Config, configFile string, stderr io.Writer) (*offlineControl, error) {
	raw, ok := cfg.AppsRaw["jit"]
	if !ok {
		return nil, fmt.Errorf("the admin API is off in %s, and it has no jit app (global `jit` option): there is nothing of caddy-jit to manage", configFile)
	}
	var app App
	if err := json.Unmarshal(raw, &app); err != nil {
		return nil, fmt.Errorf("reading the jit app in %s: %v", configFile, err)
	}
	app.setDefaults()
	names, err := parseUserNames(app.UserNames)
	if err != nil {
		return nil, fmt.Errorf("reading the jit app in %s: %v", configFile, err)
	}
	roles, err := buildRoles(app.Roles)
	if err != nil {
		return nil, fmt.Errorf("reading the jit app in %s: %v", configFile, err)
	}

	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	storage, err := configuredStorage(ctx, cfg)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("the admin API is off in %s, and its storage cannot be opened: %v", configFile, err)
	}
	c := &offlineControl{
		ctx:          ctx,
		cancel:       cancel,
		configFile:   configFile,
		storage:      sharedStateKey(storage),
		syncInterval: time.Duration(app.SyncInterval),
		linkTTL:      time.Duration(app.EnrollLinkTTL),
		names:        names,
		roles:        roles,
		stderr:       stderr,
	}
	c.authority, err = session.NewAuthority(ctx, storage, session.Config{
		Issuer:          app.Issuer,
		MaxFailures:     app.Lockout.MaxFailures,
		LockoutDuration: time.Duration(app.Lockout.Duration),
		Audit:           offlineAuditLogger(stderr),
		Now:             now,
	})
	if err != nil {
		cancel()
		return nil, fmt.Errorf("the admin API is off in %s; loading caddy-jit's state from its storage %s failed: %v", configFile, c.storage, err)
	}
	return c, nil
}

// configuredStorage builds the storage module of cfg, as Caddy's storage commands
// do, or Caddy's default storage when cfg names none.
func configuredStorage(ctx caddy.Context, cfg *caddy.Config) (certmagic.Storage, error) {
	if cfg.StorageRaw == nil {
		return caddy.DefaultStorage, nil
	}
	val, err := ctx.LoadModule(cfg, "StorageRaw")
	if err != nil {
		return nil, fmt.Errorf("loading the storage module: %v", err)
	}
	converter, ok := val.(caddy.StorageConverter)
	if !ok {
		return nil, fmt.Errorf("the storage module %T is not a storage", val)
	}
	return converter.CertMagicStorage()
}

// offlineAuditLogger writes audit events as JSON lines to w, under the name the
// handler's audit logger has, so that they read as the running instance's do.
func offlineAuditLogger(w io.Writer) *zap.Logger {
	core := zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.Lock(zapcore.AddSync(w)), zap.InfoLevel)
	return zap.New(core).Named(string(Handler{}.CaddyModule().ID) + ".audit")
}

// by says in the audit log who changed storage directly, and how.
func (c *offlineControl) by(login string) string {
	if login == "" {
		return "caddy jit on storage (admin API off)"
	}
	return login + " via caddy jit on storage (admin API off)"
}

// noteRead and noteChange tell the operator that the command did not go through a
// running Caddy.
func (c *offlineControl) noteRead() {
	fmt.Fprintf(c.stderr, "The admin API is off in %s: read %s directly.\n", c.configFile, c.storage)
}

func (c *offlineControl) noteChange() {
	fmt.Fprintf(c.stderr, "The admin API is off in %s: changed %s directly; running instances apply the change on their next sync (within sync_interval, %s).\n",
		c.configFile, c.storage, c.syncInterval)
}

// fail puts an error of the storage in context.
func (c *offlineControl) fail(doing string, err error) error {
	return fmt.Errorf("%s in %s (the admin API is off in %s): %v", doing, c.storage, c.configFile, err)
}

func (c *offlineControl) sessions(f session.Filter) ([]byte, error) {
	if f.User != "" {
		var err error
		if f.User, err = userArg(c.names, f.User); err != nil {
			return nil, err
		}
	}
	recs, err := c.authority.Records.Active(c.ctx, f, now())
	if err != nil {
		return nil, c.fail("listing sessions", err)
	}
	raw, err := json.Marshal(listed(c.authority, recs))
	if err != nil {
		return nil, err
	}
	c.noteRead()
	return raw, nil
}

func (c *offlineControl) revokeSession(id, by, reason string) (sessionList, error) {
	if err := session.CheckSessionID(id); err != nil {
		return sessionList{}, err
	}
	// An id with no stored session is revoked all the same, as the admin API does.
	rec, err := c.authority.RevokeByID(c.ctx, id, c.by(by), reason, session.UnrecordedRevocationKeep(c.roles))
	if err != nil {
		return sessionList{}, c.fail("revoking the session", err)
	}
	if !rec.Ended.IsZero() {
		c.noteChange()
	}
	return listed(c.authority, []*session.Record{rec}), nil
}

func (c *offlineControl) revokeUser(user, by, reason string) (sessionList, error) {
	var err error
	if user, err = userArg(c.names, user); err != nil {
		return sessionList{}, err
	}
	ended, err := c.authority.EndUser(c.ctx, user, c.by(by), reason)
	if err != nil {
		return sessionList{}, c.fail("revoking sessions", err)
	}
	if len(ended) > 0 {
		c.noteChange()
	}
	return listed(c.authority, ended), nil
}

func (c *offlineControl) unlock(user, by, reason string) error {
	var err error
	if user, err = userArg(c.names, user); err != nil {
		return err
	}
	if err := c.authority.Unlock(c.ctx, user, c.by(by), reason); err != nil {
		return c.fail("clearing the lockout", err)
	}
	c.noteChange()
	return nil
}

func (c *offlineControl) rotateKeys(by string) (keyRotation, error) {
	id, err := c.authority.RotateKeys(c.ctx, c.by(by))
	if err != nil {
		return keyRotation{}, c.fail("rotating the signing key", err)
	}
	c.noteChange()
	return keyRotation{KeyID: id, Keys: c.authority.Keyring.KeyIDs()}, nil
}

func (c *offlineControl) enroll(user, by string) (*enrollmentResponse, error) {
	var err error
	if user, err = userArg(c.names, user); err != nil {
		return nil, err
	}
	uri, err := c.authority.Enroll(c.ctx, user, c.by(by))
	if err != nil {
		return nil, c.fail("enrolling "+user, err)
	}
	c.noteChange()
	return &enrollmentResponse{User: user, OTPAuthURI: uri}, nil
}

// enrollLink makes a link on the storage directly, cancelling the user's earlier one.
func (c *offlineControl) enrollLink(user, by string, ttl time.Duration, replace bool) (*enrollLinkResponse, error) {
	var err error
	if user, err = userArg(c.names, user); err != nil {
		return nil, err
	}
	ttl, err = enrollLinkTTL(ttl, c.linkTTL)
	if err != nil {
		return nil, err
	}
	token, expires, err := c.authority.IssueEnrollmentLink(c.ctx, session.EnrollLinkRequest{User: user, TTL: ttl, By: c.by(by), Replace: replace})
	if err != nil {
		return nil, c.fail("making an enrollment link for "+user, err)
	}
	// Running instances read links from storage when they are opened: no sync needed.
	fmt.Fprintf(c.stderr, "The admin API is off in %s: stored the link in %s directly; every instance that shares it serves the link at once.\n",
		c.configFile, c.storage)
	return newEnrollLinkResponse(user, token, expires), nil
}

func (c *offlineControl) close() { c.cancel() }
