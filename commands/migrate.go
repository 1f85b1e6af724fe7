package commands

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"time"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/caddy-jit/caddy-jit/caddymodule"
	"github.com/caddy-jit/caddy-jit/state"
)

func init() {
	addJitSubcommand(migrateCommand)
}

func migrateCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "migrate --from storage|redis --to redis|storage --config <path> [--adapter <name>] [--overwrite]",
		Short: "Copies caddy-jit's state between Caddy's storage and Redis",
		Long: `
Copies everything caddy-jit keeps (signing keys, TOTP enrollments, passkeys,
lockouts, session records, revocations, approval requests, enrollment links,
recorded bodies, audit chain heads) from one backend to the other, so that a
site can move to Redis (or back) without its users enrolling again or losing
their sessions. The config names both: its storage (the global storage option,
else Caddy's default) and its ` + "`jit { store redis { … } }`" + `.

Run it, then load the config that uses the new backend. What changes between
the copy and the reload (an activation, a revocation) is not carried over: run
it when the site is quiet, and revoke again anything revoked meanwhile.

The target must hold no caddy-jit state yet, unless --overwrite: then the
copied records replace the ones of the same name there.`,
		Example: `  $ caddy jit migrate --from storage --to redis --config /etc/caddy/Caddyfile`,
		Args:    cobra.NoArgs,
		RunE:    runWithStreams(cmdMigrate),
	}
	cmd.Flags().StringP("from", "", "", "The backend to copy from: storage or redis")
	cmd.Flags().StringP("to", "", "", "The backend to copy to: redis or storage")
	cmd.Flags().StringP("config", "c", "", "The config that names both backends")
	cmd.Flags().StringP("adapter", "", "", "Name of config adapter to apply")
	cmd.Flags().BoolP("overwrite", "", false, "Copy into a target that holds caddy-jit state already")
	return cmd
}

// cmdMigrate runs `caddy jit migrate`.
func cmdMigrate(stdout, _ io.Writer, fl caddycmd.Flags) (int, error) {
	from, to := fl.String("from"), fl.String("to")
	backends := map[string]bool{"storage": true, "redis": true}
	switch {
	case !backends[from] || !backends[to]:
		return caddy.ExitCodeFailedStartup, fmt.Errorf("--from and --to must each be storage or redis, got %q and %q", from, to)
	case from == to:
		return caddy.ExitCodeFailedStartup, fmt.Errorf("--from and --to are both %s: nothing to migrate", from)
	}
	cfg, configFile, err := flaggedConfig(fl)
	if err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	if cfg == nil {
		return caddy.ExitCodeFailedStartup, errors.New("--config is required: the config names the storage and the Redis to copy between")
	}
	app, err := loadApp(cfg, configFile, "there is no caddy-jit state to migrate")
	if err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	if app.Store == nil || app.Store.Redis == nil {
		return caddy.ExitCodeFailedStartup, fmt.Errorf("%s has no `store redis { … }` in its jit option: add it, then migrate", configFile)
	}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	storage, err := configuredStorage(ctx, cfg)
	if err != nil {
		return caddy.ExitCodeFailedStartup, fmt.Errorf("opening the storage of %s: %v", configFile, err)
	}
	redisStore, redisName, closeRedis, err := app.OpenStore(ctx, storage, "")
	if err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	defer closeRedis()
	ends := map[string]state.Store{"storage": storage, "redis": redisStore}
	names := map[string]string{"storage": caddymodule.StorageName(storage), "redis": redisName}
	n, err := Migrate(ctx, ends[from], ends[to], fl.Bool("overwrite"))
	if err != nil {
		return caddy.ExitCodeFailedStartup, fmt.Errorf("migrating from %s to %s: %w", names[from], names[to], err)
	}
	_, err = fmt.Fprintf(stdout, "Copied %d records of caddy-jit from %s to %s. Now load the config that uses %s.\n", n, names[from], names[to], to)
	return caddy.ExitCodeSuccess, err
}

// ErrTargetNotEmpty refuses a migration into a store that holds caddy-jit state.
var ErrTargetNotEmpty = errors.New("the target holds caddy-jit state already (it has signing keys): migrate with --overwrite to replace what it holds")

// Migrate copies every record under state.Prefix from src to dst, and returns how
// many. A dst with caddy-jit state is refused unless overwrite.
func Migrate(ctx context.Context, src, dst state.Store, overwrite bool) (int, error) {
	if !overwrite {
		if _, err := dst.List(ctx, state.Prefix+"keys", false); err == nil || dst.Exists(ctx, state.Prefix+"keys") {
			return 0, ErrTargetNotEmpty
		}
	}
	keys, err := src.List(ctx, state.Prefix[:len(state.Prefix)-1], true)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, errors.New("the source holds no caddy-jit state")
	}
	if err != nil {
		return 0, fmt.Errorf("listing the source: %w", err)
	}
	n := 0
	for _, key := range keys {
		value, err := src.Load(ctx, key)
		if err != nil {
			// A folder of the listing, or a record deleted since: nothing to copy.
			continue
		}
		// A failure count or a spent TOTP step moves in the target's own form.
		counted, err := state.CopyCounted(ctx, dst, key, value, time.Now())
		if !counted && err == nil {
			err = dst.Store(ctx, key, value)
		}
		if err != nil {
			return n, fmt.Errorf("writing %s to the target: %w", key, err)
		}
		n++
	}
	return n, nil
}
