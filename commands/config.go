package commands

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/caddyserver/certmagic"

	"github.com/caddy-jit/caddy-jit/caddymodule"
	"github.com/caddy-jit/caddy-jit/state"
)

// The config that --config names, read as Caddy's own commands read it, and what the
// commands take from it: its storage, and its jit app through caddymodule.LoadApp.

// readConfig loads configFile, adapted with adapter (the file's own when empty), and
// returns its JSON and the config it holds.
func readConfig(configFile, adapter string) ([]byte, *caddy.Config, error) {
	raw, _, _, err := caddycmd.LoadConfig(configFile, adapter)
	if err != nil {
		return nil, nil, fmt.Errorf("loading %s: %v", configFile, err)
	}
	var cfg caddy.Config
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return nil, nil, fmt.Errorf("reading the config in %s: %v", configFile, err)
	}
	return raw, &cfg, nil
}

// flaggedConfig reads the config that --config and --adapter name, for the commands
// that need no running Caddy; nil without --config.
func flaggedConfig(fl caddycmd.Flags) (*caddy.Config, string, error) {
	configFile, adapter := fl.String("config"), fl.String("adapter")
	if configFile == "" {
		if adapter != "" {
			return nil, "", errors.New("--adapter needs --config")
		}
		return nil, "", nil
	}
	_, cfg, err := readConfig(configFile, adapter)
	if err != nil {
		return nil, "", err
	}
	return cfg, configFile, nil
}

// loadApp reads the jit app of cfg, loaded from configFile, with caddymodule.LoadApp.
// noApp says what a config without one means to the command.
func loadApp(cfg *caddy.Config, configFile, noApp string) (*caddymodule.App, error) {
	app, err := caddymodule.LoadApp(cfg)
	if errors.Is(err, caddymodule.ErrNoApp) {
		return nil, fmt.Errorf("%s has no jit app (global `jit` option): %s", configFile, noApp)
	}
	if err != nil {
		return nil, fmt.Errorf("in %s: %v", configFile, err)
	}
	return app, nil
}

// configuredStore opens the state of cfg's jit app (app may be nil): its Redis store,
// or the config's Caddy storage. It names the store, and closes it when ctx ends.
func configuredStore(ctx caddy.Context, cfg *caddy.Config, app *caddymodule.App) (state.Store, string, error) {
	storage, err := configuredStorage(ctx, cfg)
	if err != nil {
		return nil, "", err
	}
	if app == nil {
		return storage, caddymodule.StorageName(storage), nil
	}
	st, name, closer, err := app.OpenStore(ctx, storage, caddymodule.StorageName(storage))
	if err != nil {
		return nil, "", err
	}
	ctx.OnCancel(func() { _ = closer() })
	return st, name, nil
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
