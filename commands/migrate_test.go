package commands

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/caddy-jit/caddy-jit/authority"
	"github.com/caddy-jit/caddy-jit/internal/testkit"
	"github.com/caddy-jit/caddy-jit/state"
	"github.com/caddy-jit/caddy-jit/state/redisstate"
	"github.com/caddy-jit/caddy-jit/stepup"
)

// A site on Caddy's storage moves to Redis: the signing keys and the enrollments come
// along, so no one enrolls again and tokens signed before verify after.
func TestMigrateFromStorageToRedis(t *testing.T) {
	ctx := context.Background()
	r := testkit.StartRedis(t)
	dir := t.TempDir()
	storage := &certmagic.FileStorage{Path: dir}
	before, err := authority.New(ctx, storage, authority.Config{Issuer: "migrate test", MaxFailures: 5, LockoutDuration: time.Minute, Audit: zap.NewNop(), Now: time.Now})
	if err != nil {
		t.Fatal(err)
	}
	uri, err := before.StepUp.Enroll(ctx, "alice", "test")
	if err != nil {
		t.Fatal(err)
	}
	key, err := otp.NewKeyFromURL(uri)
	if err != nil {
		t.Fatal(err)
	}
	// A code spent on storage stays spent on Redis; a failure stays counted.
	code, err := totp.GenerateCode(key.Secret(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := before.StepUp.Check(ctx, "alice", code); err != nil {
		t.Fatalf("Check on storage = %v", err)
	}
	if err := before.StepUp.Check(ctx, "alice", "000000"); err == nil {
		t.Fatal("a wrong code passed")
	}

	config := filepath.Join(t.TempDir(), "Caddyfile")
	caddyfile := "{\n\tstorage file_system \"" + dir + "\"\n\tjit {\n\t\tstore redis {\n\t\t\taddress " + r.Addr + "\n\t\t}\n" +
		"\t\trole ops {\n\t\t\tmax_duration 1h\n\t\t\teligible alice\n\t\t}\n\t}\n}\nhttp://localhost:1 {\n\tjit ops\n}\n"
	if err := os.WriteFile(config, []byte(caddyfile), 0o600); err != nil {
		t.Fatal(err)
	}
	out, _, err := runJitStreams(t, "migrate", "--from", "storage", "--to", "redis", "--config", config)
	if err != nil || !strings.HasPrefix(out, "Copied ") || !strings.Contains(out, "Redis:"+r.Addr) {
		t.Fatalf("migrate printed %q, %v", out, err)
	}

	c := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: []string{r.Addr}})
	t.Cleanup(func() { c.Close() })
	after, err := authority.New(ctx, redisstate.New(c, "jit:", r.Addr), authority.Config{Issuer: "migrate test", MaxFailures: 5, LockoutDuration: time.Minute, Audit: zap.NewNop(), Now: time.Now})
	if err != nil {
		t.Fatal(err)
	}
	if string(after.Keyring.JWKS()) != string(before.Keyring.JWKS()) {
		t.Error("the signing keys on Redis are not the storage's: every session would end")
	}
	if ok, err := after.StepUp.Enrolled(ctx, "alice"); !ok || err != nil {
		t.Errorf("alice is not enrolled on Redis after the migration: %v, %v", ok, err)
	}
	if err := after.StepUp.Check(ctx, "alice", code); !errors.Is(err, stepup.ErrCodeReplayed) {
		t.Errorf("the code spent on storage, on Redis = %v, want %v", err, stepup.ErrCodeReplayed)
	}
	if n, err := c.Get(ctx, "jit:{jit}k:jit/failures/"+state.Name("alice")+".json").Int(); n != 2 || err != nil {
		t.Errorf("alice's failures on Redis = %d, %v; want 2 (one on storage, the replay)", n, err)
	}

	// Again: the target holds state now.
	if _, _, err := runJitStreams(t, "migrate", "--from", "storage", "--to", "redis", "--config", config); err == nil || !strings.Contains(err.Error(), "--overwrite") {
		t.Errorf("a second migration into a target with state = %v, want a refusal naming --overwrite", err)
	}
	if _, _, err := runJitStreams(t, "migrate", "--from", "storage", "--to", "redis", "--config", config, "--overwrite"); err != nil {
		t.Errorf("with --overwrite = %v", err)
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"migrate", "--from", "storage", "--to", "storage", "--config", config}, "nothing to migrate"},
		{[]string{"migrate", "--from", "disk", "--to", "redis", "--config", config}, "must each be storage or redis"},
		{[]string{"migrate", "--from", "storage", "--to", "redis"}, "--config is required"},
	} {
		if _, _, err := runJitStreams(t, tt.args...); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v = %v, want an error saying %q", tt.args, err, tt.want)
		}
	}
}
