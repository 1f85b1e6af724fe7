package caddymodule

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-jit/caddy-jit/internal/testkit"
)

func TestStoreRedisCaddyfile(t *testing.T) {
	site := "\nhttp://example.com {\n\tjit db-admin\n}\n"
	role := "\t\trole db-admin {\n\t\t\tmax_duration 1h\n\t\t\teligible alice\n\t\t}\n"
	global := func(store string) string { return "{\n\tjit {\n" + store + role + "\t}\n}" + site }

	cfg, err := adapt(t, global("\t\tstore redis {\n\t\t\taddress 10.0.0.5:6379\n\t\t\tusername jit\n\t\t\tpassword {env.JIT_REDIS_PASSWORD}\n"+
		"\t\t\tdb 2\n\t\t\ttls {\n\t\t\t\tca /etc/ssl/redis-ca.pem\n\t\t\t}\n\t\t\tkey_prefix prod:jit:\n\t\t}\n"))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := json.Marshal(cfg["apps"].(map[string]any)["jit"].(map[string]any)["store"])
	want := `{"redis":{"addresses":["10.0.0.5:6379"],"db":2,"key_prefix":"prod:jit:","password":"{env.JIT_REDIS_PASSWORD}","tls":{"ca":"/etc/ssl/redis-ca.pem"},"username":"jit"}}`
	if string(got) != want {
		t.Errorf("store:\n got %s\nwant %s", got, want)
	}
	cfg, err = adapt(t, global("\t\tstore redis {\n\t\t\tsentinel mymaster 10.0.0.1:26379 10.0.0.2:26379\n\t\t\ttls\n\t\t}\n"))
	if err != nil {
		t.Fatal(err)
	}
	got, _ = json.Marshal(cfg["apps"].(map[string]any)["jit"].(map[string]any)["store"])
	if want := `{"redis":{"sentinel_master":"mymaster","sentinels":["10.0.0.1:26379","10.0.0.2:26379"],"tls":{}}}`; string(got) != want {
		t.Errorf("sentinel store:\n got %s\nwant %s", got, want)
	}

	for _, tt := range []struct{ name, store, want string }{
		{"no backend", "\t\tstore\n", "store needs a backend"},
		{"another backend", "\t\tstore consul {\n\t\t}\n", `unknown store "consul"`},
		{"no address", "\t\tstore redis {\n\t\t\tdb 1\n\t\t}\n", "no address"},
		{"address and sentinel", "\t\tstore redis {\n\t\t\taddress a:1\n\t\t\tsentinel m b:2\n\t\t}\n", "either address or sentinel"},
		{"an address without a port", "\t\tstore redis {\n\t\t\taddress redis.internal\n\t\t}\n", `address "redis.internal": want HOST:PORT`},
		{"a db that is no number", "\t\tstore redis {\n\t\t\taddress a:1\n\t\t\tdb one\n\t\t}\n", `db "one"`},
		{"a db on a cluster", "\t\tstore redis {\n\t\t\taddress a:1 b:2\n\t\t\tdb 3\n\t\t}\n", "only db 0"},
		{"a bad prefix", "\t\tstore redis {\n\t\t\taddress a:1\n\t\t\tkey_prefix {x}\n\t\t}\n", "key_prefix"},
		{"an unknown setting", "\t\tstore redis {\n\t\t\taddress a:1\n\t\t\tpool 10\n\t\t}\n", `unrecognized redis setting "pool"`},
		{"sentinel without sentinels", "\t\tstore redis {\n\t\t\tsentinel mymaster\n\t\t}\n", "sentinel needs"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := adapt(t, global(tt.store))
			if err == nil || !strings.Contains(err.Error(), "Caddyfile:") || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want one with file and line saying %q", err, tt.want)
			}
		})
	}
}

func TestStoreRedisOpens(t *testing.T) {
	r := testkit.StartRedis(t, "requirepass s3cret")
	t.Setenv("JIT_TEST_REDIS_PASSWORD", "s3cret")
	good := &StoreConfig{Redis: &RedisConfig{Addresses: []string{r.Addr}, Password: "{env.JIT_TEST_REDIS_PASSWORD}"}}
	st, closer, err := good.open(context.Background(), caddy.NewReplacer())
	if err != nil {
		t.Fatalf("open with the right password: %v", err)
	}
	if err := st.Store(context.Background(), "jit/x.json", []byte("{}")); err != nil {
		t.Error(err)
	}
	closer()
	bad := &StoreConfig{Redis: &RedisConfig{Addresses: []string{r.Addr}, Password: "wrong"}}
	if _, _, err := bad.open(context.Background(), caddy.NewReplacer()); err == nil || !strings.Contains(err.Error(), "WRONGPASS") ||
		!strings.Contains(err.Error(), "check the address, the username and password") {
		t.Errorf("open with a wrong password = %v, want a clear refusal", err)
	}
	if good.poolKey(caddy.NewReplacer()) == bad.poolKey(caddy.NewReplacer()) || strings.Contains(good.poolKey(caddy.NewReplacer()), "s3cret") {
		t.Error("the state's pool key must tell passwords apart without holding them")
	}
}
