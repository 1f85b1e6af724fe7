package workflow

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-jit/caddy-jit/audit"
	"github.com/caddy-jit/caddy-jit/internal/testkit"
	"github.com/caddy-jit/caddy-jit/session"
	"github.com/caddy-jit/caddy-jit/state"
	"github.com/caddy-jit/caddy-jit/stepup"
)

// The helpers every domain package's tests share, under the names these tests use.
type fakeClock = testkit.Clock

var (
	newFakeClock = testkit.NewClock
	epoch        = testkit.Epoch
	newStorage   = testkit.Storage
	codeAt       = testkit.CodeAt
	wrongCodeAt  = testkit.WrongCodeAt
	events       = testkit.Events
	fieldsOf     = testkit.Fields
	secretForms  = testkit.SecretForms
)

const (
	lockoutDuration = 15 * time.Minute
	audience        = "https://console.example"
)

// Authority is what these tests drive: the workflow, with the sessions it embeds (the
// name the tests had when it was session.Authority).
type Authority = Workflow

// Config and NewAuthority wire a workflow as package authority does (which imports this
// package, so its tests cannot use it).
type Config struct {
	Issuer          string
	MaxFailures     int
	LockoutDuration time.Duration
	CacheSize       int
	Audit           *zap.Logger
	Now             session.Clock
	State           *session.State
}

func NewAuthority(ctx context.Context, st state.Store, cfg Config) (*Workflow, error) {
	loaded := cfg.State
	if loaded == nil {
		var err error
		if loaded, err = session.LoadState(ctx, st, cfg.CacheSize, cfg.Now); err != nil {
			return nil, err
		}
	}
	log := audit.NewWriter(cfg.Audit, loaded.Chain, cfg.Now)
	stepUp := stepup.New(st, log, stepup.Config{Issuer: cfg.Issuer, MaxFailures: cfg.MaxFailures, LockoutDuration: cfg.LockoutDuration, Now: cfg.Now})
	return New(st, session.New(loaded, log, cfg.Issuer, cfg.Now), stepUp), nil
}

// sessionFolder and sessionKey are where package session keeps its records: the tests
// that pause or count storage operations name them.
const sessionFolder = state.Prefix + "sessions/"

func sessionKey(user, id string) string { return sessionFolder + state.Name(user) + "/" + id + ".json" }

// claimsOf reads a token's claims without checking them or its signature: for tests
// that look at what a token says, not whether it admits.
func claimsOf(t *testing.T, token string) (session.Claims, error) {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return session.Claims{}, fmt.Errorf("a token of %d parts", len(parts))
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return session.Claims{}, err
	}
	var c session.Claims
	return c, json.Unmarshal(raw, &c)
}
