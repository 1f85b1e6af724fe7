package caddymodule

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/redis/go-redis/v9"

	"github.com/caddy-jit/caddy-jit/state"
	"github.com/caddy-jit/caddy-jit/state/redisstate"
)

// Where caddy-jit keeps its state: Caddy's configured storage (the default, nothing
// to install) or Redis (`store redis { … }` in the global jit option).

// StoreConfig chooses the state backend; nil is Caddy's storage.
type StoreConfig struct {
	Redis *RedisConfig `json:"redis,omitempty"`
}

// RedisConfig is a Redis (or Valkey) server, a Sentinel-watched primary, or a Cluster.
type RedisConfig struct {
	// Addresses are host:port of the server, or of several Cluster nodes.
	Addresses []string `json:"addresses,omitempty"`
	// SentinelMaster, when set, names the primary that the Sentinels at Sentinels
	// watch; caddy-jit follows it through failovers.
	SentinelMaster string   `json:"sentinel_master,omitempty"`
	Sentinels      []string `json:"sentinels,omitempty"`
	// Username and Password authenticate (Redis ACL); placeholders such as
	// {env.JIT_REDIS_PASSWORD} are expanded when the config loads.
	Username string `json:"username,omitempty"`
	Password string `json:"password,omitempty"`
	// DB is the database number (not for a Cluster).
	DB int `json:"db,omitempty"`
	// TLS connects over TLS; CA, when set, is a PEM file of the CA to trust instead of
	// the system's.
	TLS *RedisTLSConfig `json:"tls,omitempty"`
	// KeyPrefix starts every key. Default: jit:
	KeyPrefix string `json:"key_prefix,omitempty"`
}

// RedisTLSConfig turns TLS on.
type RedisTLSConfig struct {
	CA string `json:"ca,omitempty"`
}

// DefaultRedisKeyPrefix starts caddy-jit's keys in Redis.
const DefaultRedisKeyPrefix = "jit:"

// redisDialTimeout bounds connecting and the first answer at load time.
const redisDialTimeout = 5 * time.Second

var validKeyPrefix = regexp.MustCompile(`^[A-Za-z0-9:_.-]{1,64}$`)

// parseStore reads `store redis { … }`.
func parseStore(d *caddyfile.Dispenser) (*StoreConfig, error) {
	if !d.NextArg() {
		return nil, d.Err("store needs a backend: store redis { address HOST:PORT … }")
	}
	if d.Val() != "redis" {
		return nil, d.Errf("unknown store %q: the only one besides Caddy's storage (the default) is redis", d.Val())
	}
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	rc := &RedisConfig{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "address":
			rc.Addresses = append(rc.Addresses, d.RemainingArgs()...)
			if len(rc.Addresses) == 0 {
				return nil, d.Err("address needs HOST:PORT (several for a Redis Cluster)")
			}
		case "sentinel":
			args := d.RemainingArgs()
			if len(args) < 2 {
				return nil, d.Err("sentinel needs the primary's name and at least one Sentinel: sentinel MASTER HOST:PORT…")
			}
			rc.SentinelMaster, rc.Sentinels = args[0], args[1:]
		case "username":
			if err := oneArg(d, &rc.Username); err != nil {
				return nil, err
			}
		case "password":
			if err := oneArg(d, &rc.Password); err != nil {
				return nil, err
			}
		case "db":
			var n string
			if err := oneArg(d, &n); err != nil {
				return nil, err
			}
			if _, err := fmt.Sscanf(n, "%d", &rc.DB); err != nil || rc.DB < 0 || fmt.Sprint(rc.DB) != n {
				return nil, d.Errf("db %q: want a database number such as 0", n)
			}
		case "tls":
			rc.TLS = &RedisTLSConfig{}
			if d.NextArg() {
				return nil, d.ArgErr()
			}
			for inner := d.Nesting(); d.NextBlock(inner); {
				if d.Val() != "ca" {
					return nil, d.Errf("unrecognized tls setting %q: expected ca FILE", d.Val())
				}
				if err := oneArg(d, &rc.TLS.CA); err != nil {
					return nil, err
				}
			}
		case "key_prefix":
			if err := oneArg(d, &rc.KeyPrefix); err != nil {
				return nil, err
			}
		default:
			return nil, d.Errf("unrecognized redis setting %q: expected address, sentinel, username, password, db, tls or key_prefix", d.Val())
		}
	}
	if err := rc.check(); err != nil {
		return nil, d.Err("store redis: " + err.Error())
	}
	return &StoreConfig{Redis: rc}, nil
}

// check refuses what cannot work, before anything connects.
func (rc *RedisConfig) check() error {
	switch {
	case len(rc.Addresses) == 0 && rc.SentinelMaster == "":
		return errors.New("no address: add `address HOST:PORT` (or `sentinel MASTER HOST:PORT…`)")
	case len(rc.Addresses) > 0 && rc.SentinelMaster != "":
		return errors.New("give either address or sentinel, not both")
	case rc.KeyPrefix != "" && !validKeyPrefix.MatchString(rc.KeyPrefix):
		return fmt.Errorf("key_prefix %q: use 1 to 64 letters, digits, ':', '_', '.' or '-'", rc.KeyPrefix)
	case rc.DB < 0:
		return errors.New("db must not be negative")
	case len(rc.Addresses) > 1 && rc.DB != 0:
		return errors.New("a Redis Cluster (several addresses) has only db 0")
	}
	for _, list := range [][]string{rc.Addresses, rc.Sentinels} {
		for _, a := range list {
			if !strings.Contains(a, ":") {
				return fmt.Errorf("address %q: want HOST:PORT, e.g. 127.0.0.1:6379", a)
			}
		}
	}
	return nil
}

// poolKey names the state this config's store holds, for the state kept across
// reloads: the same Redis with the same credentials is the same state.
func (sc *StoreConfig) poolKey(repl *caddy.Replacer) string {
	rc := *sc.Redis
	rc.Password = hashed(repl.ReplaceAll(rc.Password, ""))
	raw, _ := json.Marshal(rc)
	return "redis:" + string(raw)
}

func hashed(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:8])
}

// OpenStore opens the state the app's config names for a command that works without
// a running Caddy: its Redis store, or else fallback (the config's Caddy storage). It
// returns the store, its name for messages, and what releases it.
func (a *App) OpenStore(ctx context.Context, fallback state.Store, fallbackName string) (state.Store, string, func() error, error) {
	if a.Store == nil || a.Store.Redis == nil {
		return fallback, fallbackName, func() error { return nil }, nil
	}
	st, closer, err := a.Store.open(ctx, caddy.NewReplacer())
	if err != nil {
		return nil, "", nil, err
	}
	return st, fmt.Sprint(st), closer, nil
}

// open connects to Redis and checks that it answers and takes the credentials, so
// that a wrong address or password fails the config load with a clear message.
func (sc *StoreConfig) open(ctx context.Context, repl *caddy.Replacer) (state.Store, func() error, error) {
	rc := sc.Redis
	opts := &redis.UniversalOptions{
		Addrs:       rc.Addresses,
		MasterName:  rc.SentinelMaster,
		Username:    repl.ReplaceAll(rc.Username, ""),
		Password:    repl.ReplaceAll(rc.Password, ""),
		DB:          rc.DB,
		DialTimeout: redisDialTimeout,
	}
	name := strings.Join(rc.Addresses, ",")
	if rc.SentinelMaster != "" {
		opts.Addrs, name = rc.Sentinels, "sentinel "+rc.SentinelMaster+"@"+strings.Join(rc.Sentinels, ",")
	}
	if rc.TLS != nil {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12}
		if rc.TLS.CA != "" {
			pem, err := os.ReadFile(rc.TLS.CA)
			if err != nil {
				return nil, nil, fmt.Errorf("jit store redis: reading the tls ca file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, nil, fmt.Errorf("jit store redis: %s holds no PEM certificate", rc.TLS.CA)
			}
			cfg.RootCAs = pool
		}
		opts.TLSConfig = cfg
	}
	client := redis.NewUniversalClient(opts)
	prefix := rc.KeyPrefix
	if prefix == "" {
		prefix = DefaultRedisKeyPrefix
	}
	st := redisstate.New(client, prefix, fmt.Sprintf("%s/%d", name, rc.DB))
	pingCtx, cancel := context.WithTimeout(ctx, redisDialTimeout)
	defer cancel()
	if err := st.Ping(pingCtx); err != nil {
		client.Close()
		return nil, nil, fmt.Errorf("jit store redis: %w (check the address, the username and password, and tls)", err)
	}
	return st, st.Close, nil
}
