package commands

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/caddy-jit/caddy-jit/authority"
	"github.com/caddy-jit/caddy-jit/caddymodule"
	"github.com/caddy-jit/caddy-jit/internal/adminapi"
	"github.com/caddy-jit/caddy-jit/session"
	"github.com/caddy-jit/caddy-jit/stepup"
)

// offlineControl works on the storage of a config whose admin API is off, with the
// same authority.Authority methods the admin API runs. Running instances learn of its
// changes on their next sync with storage, as they learn of another instance's.
type offlineControl struct {
	ctx        caddy.Context
	cancel     context.CancelFunc
	authority  *authority.Authority
	configFile string
	storage    string
	// app is the config's jit app, as caddymodule.LoadApp reads it: user arguments
	// are put in its canonical form, links last its enroll_link_ttl, and how long a
	// revocation of an unrecorded id lasts follows from its roles.
	app    *caddymodule.App
	stderr io.Writer
}

// openOffline builds the storage and the jit app of cfg, loaded from configFile,
// into an authority whose audit events go to stderr as JSON lines under the audit
// logger's name, for operators to capture.
func openOffline(cfg *caddy.Config, configFile string, stderr io.Writer) (*offlineControl, error) {
	app, err := loadApp(cfg, configFile, "the admin API is off, and there is nothing of caddy-jit to manage")
	if err != nil {
		return nil, err
	}

	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	storage, name, err := configuredStore(ctx, cfg, app)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("the admin API is off in %s, and its storage cannot be opened: %v", configFile, err)
	}
	c := &offlineControl{
		ctx:        ctx,
		cancel:     cancel,
		configFile: configFile,
		storage:    name,
		app:        app,
		stderr:     stderr,
	}
	c.authority, err = authority.New(ctx, storage, app.AuthorityConfig(offlineAuditLogger(stderr), now))
	if err != nil {
		cancel()
		return nil, fmt.Errorf("the admin API is off in %s; loading caddy-jit's state from its storage %s failed: %v", configFile, c.storage, err)
	}
	return c, nil
}

// offlineAuditLogger writes audit events as JSON lines to w, under the name the
// handler's audit logger has, so that they read as the running instance's do.
func offlineAuditLogger(w io.Writer) *zap.Logger {
	core := zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.Lock(zapcore.AddSync(w)), zap.InfoLevel)
	return zap.New(core).Named(string(caddymodule.Handler{}.CaddyModule().ID) + ".audit")
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
		c.configFile, c.storage, time.Duration(c.app.SyncInterval))
}

// fail puts an error of the storage in context.
func (c *offlineControl) fail(doing string, err error) error {
	return fmt.Errorf("%s in %s (the admin API is off in %s): %v", doing, c.storage, c.configFile, err)
}

func (c *offlineControl) sessions(f session.Filter) ([]byte, error) {
	if f.User != "" {
		var err error
		if f.User, err = c.app.CanonicalUser(f.User); err != nil {
			return nil, err
		}
	}
	recs, err := c.authority.Records.Active(c.ctx, f, now())
	if err != nil {
		return nil, c.fail("listing sessions", err)
	}
	raw, err := json.Marshal(adminapi.ListSessions(c.authority.Revocations, recs))
	if err != nil {
		return nil, err
	}
	c.noteRead()
	return raw, nil
}

func (c *offlineControl) revokeSession(id, by, reason string) (adminapi.SessionList, error) {
	if err := session.CheckSessionID(id); err != nil {
		return adminapi.SessionList{}, err
	}
	// An id with no stored session is revoked all the same, as the admin API does.
	rec, err := c.authority.RevokeByID(c.ctx, id, c.by(by), reason, session.UnrecordedRevocationKeep(c.app.PolicyRoles()))
	if err != nil {
		return adminapi.SessionList{}, c.fail("revoking the session", err)
	}
	if !rec.Ended.IsZero() {
		c.noteChange()
	}
	return adminapi.ListSessions(c.authority.Revocations, []*session.Record{rec}), nil
}

func (c *offlineControl) revokeUser(user, by, reason string) (adminapi.SessionList, error) {
	var err error
	if user, err = c.app.CanonicalUser(user); err != nil {
		return adminapi.SessionList{}, err
	}
	ended, err := c.authority.EndUser(c.ctx, user, c.by(by), reason)
	if err != nil {
		return adminapi.SessionList{}, c.fail("revoking sessions", err)
	}
	if len(ended) > 0 {
		c.noteChange()
	}
	return adminapi.ListSessions(c.authority.Revocations, ended), nil
}

func (c *offlineControl) unlock(user, by, reason string) error {
	var err error
	if user, err = c.app.CanonicalUser(user); err != nil {
		return err
	}
	if err := c.authority.StepUp.Unlock(c.ctx, user, c.by(by), reason); err != nil {
		return c.fail("clearing the lockout", err)
	}
	c.noteChange()
	return nil
}

func (c *offlineControl) rotateKeys(by string) (adminapi.KeyRotation, error) {
	id, err := c.authority.RotateKeys(c.ctx, c.by(by))
	if err != nil {
		return adminapi.KeyRotation{}, c.fail("rotating the signing key", err)
	}
	c.noteChange()
	return adminapi.KeyRotation{KeyID: id, Keys: c.authority.Keyring.KeyIDs()}, nil
}

func (c *offlineControl) enroll(user, by string) (*adminapi.Enrollment, error) {
	var err error
	if user, err = c.app.CanonicalUser(user); err != nil {
		return nil, err
	}
	uri, err := c.authority.StepUp.Enroll(c.ctx, user, c.by(by))
	if err != nil {
		return nil, c.fail("enrolling "+user, err)
	}
	c.noteChange()
	return &adminapi.Enrollment{User: user, OTPAuthURI: uri}, nil
}

// enrollLink makes a link on the storage directly, cancelling the user's earlier one.
func (c *offlineControl) enrollLink(user, by string, ttl time.Duration, replace bool) (*adminapi.EnrollLink, error) {
	var err error
	if user, err = c.app.CanonicalUser(user); err != nil {
		return nil, err
	}
	ttl, err = c.app.EnrollLinkLifetime(ttl)
	if err != nil {
		return nil, err
	}
	token, expires, err := c.authority.StepUp.IssueEnrollmentLink(c.ctx, stepup.EnrollLinkRequest{User: user, TTL: ttl, By: c.by(by), Replace: replace})
	if err != nil {
		return nil, c.fail("making an enrollment link for "+user, err)
	}
	// Running instances read links from storage when they are opened: no sync needed.
	fmt.Fprintf(c.stderr, "The admin API is off in %s: stored the link in %s directly; every instance that shares it serves the link at once.\n",
		c.configFile, c.storage)
	return adminapi.NewEnrollLink(user, caddymodule.EnrollLinkPath(token), expires), nil
}

func (c *offlineControl) close() { c.cancel() }
