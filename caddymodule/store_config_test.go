package caddymodule

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

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

// An ACL user over TLS with a private CA, against a real redis-server.
func TestStoreRedisTLSAndACL(t *testing.T) {
	dir := t.TempDir()
	ca, cert, key := testCertificates(t, dir)
	tlsPort := testkit.FreePort(t)
	testkit.StartRedis(t, "tls-port "+strconv.Itoa(tlsPort), "tls-cert-file "+cert, "tls-key-file "+key,
		"tls-ca-cert-file "+ca, "tls-auth-clients no", "user default off", "user jit on >jit-pw ~jit:* &jit:* +@all")
	addr := "127.0.0.1:" + strconv.Itoa(tlsPort)
	open := func(rc RedisConfig) error {
		st, closer, err := (&StoreConfig{Redis: &rc}).open(context.Background(), caddy.NewReplacer())
		if err != nil {
			return err
		}
		defer closer()
		return st.Store(context.Background(), "jit/tls-check.json", []byte("{}"))
	}
	if err := open(RedisConfig{Addresses: []string{addr}, Username: "jit", Password: "jit-pw", TLS: &RedisTLSConfig{CA: ca}}); err != nil {
		t.Fatalf("the ACL user over TLS with the private CA: %v", err)
	}
	for _, tt := range []struct {
		name string
		rc   RedisConfig
		want string
	}{
		{"a wrong password", RedisConfig{Addresses: []string{addr}, Username: "jit", Password: "nope", TLS: &RedisTLSConfig{CA: ca}}, "WRONGPASS"},
		{"the default user, switched off", RedisConfig{Addresses: []string{addr}, TLS: &RedisTLSConfig{CA: ca}}, "jit store redis"},
		{"without the private CA", RedisConfig{Addresses: []string{addr}, Username: "jit", Password: "jit-pw", TLS: &RedisTLSConfig{}}, "certificate"},
		{"without tls", RedisConfig{Addresses: []string{addr}, Username: "jit", Password: "jit-pw"}, "jit store redis"},
		{"a CA file that is not one", RedisConfig{Addresses: []string{addr}, TLS: &RedisTLSConfig{CA: key + ".missing"}}, "reading the tls ca file"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := open(tt.rc); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("open = %v, want an error saying %q", err, tt.want)
			}
		})
	}
}

// testCertificates writes a CA and a certificate for 127.0.0.1 it signed, as PEM files.
func testCertificates(t *testing.T, dir string) (ca, cert, key string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "caddy-jit test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	srvKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	srvTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, caCert, &srvKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(srvKey)
	write := func(name, kind string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	return write("ca.pem", "CERTIFICATE", caDER), write("redis.pem", "CERTIFICATE", srvDER), write("redis-key.pem", "EC PRIVATE KEY", keyDER)
}
