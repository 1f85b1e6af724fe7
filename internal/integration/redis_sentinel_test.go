package integration

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/caddy-jit/caddy-jit/internal/testkit"
)

// A Sentinel failover under a running instance (issue 15): the primary dies, Sentinel
// promotes its replica, and the instance follows the new primary. A revocation that
// was acknowledged before the primary died is not lost (it was acknowledged only once
// the replica had it), so the revoked session stays refused; the others work on, and
// new activations write to the new primary.
func TestRedisSentinelFailoverLosesNoAcknowledgedRevocation(t *testing.T) {
	ctx := context.Background()
	primary := testkit.StartRedis(t)
	replica := testkit.StartRedis(t, "replicaof "+strings.Replace(primary.Addr, ":", " ", 1))
	waitReplicaOnline(t, primary)
	sentinel := testkit.StartSentinel(t, "jitprimary", primary)

	e := newEnv(t, envOptions{JitOptions: "\t\tsync_interval 1s\n\t\tstore redis {\n\t\t\tsentinel jitprimary " + sentinel.Addr + "\n\t\t}"})
	site := e.site(0)
	alice, bob := e.enroll("alice"), e.enroll("bob")
	ba, bb := e.browser("alice"), e.browser("bob")
	revoked := ba.mustActivate(site, roleAdmin, adminURI, alice, nil)
	kept := bb.mustActivate(site, roleAdmin, adminURI, bob, nil)
	e.revoke(sessionID(t, revoked)) // acknowledged: the replica has the revocation
	wantRefused(t, e, ba, "alice", revoked, "the revoked session before the failover")

	primary.Stop()
	killed := time.Now()
	sc := redis.NewSentinelClient(&redis.Options{Addr: sentinel.Addr})
	t.Cleanup(func() { sc.Close() })
	if !pollUntil(30*time.Second, func() bool {
		addr, err := sc.GetMasterAddrByName(ctx, "jitprimary").Result()
		return err == nil && len(addr) == 2 && addr[0]+":"+addr[1] == replica.Addr
	}) {
		t.Fatalf("Sentinel did not promote the replica within 30s of the primary's death")
	}
	t.Logf("Sentinel promoted the replica %s after the primary died", time.Since(killed).Round(time.Millisecond))

	// The instance follows the new primary: the acknowledged revocation holds, the other
	// session works, and a new activation is written to the new primary.
	if !pollUntil(10*time.Second, func() bool { return useToken(bb, site, "bob", kept).StatusCode == http.StatusOK }) {
		t.Fatal("bob's session is refused 10s after the failover")
	}
	for range 5 {
		wantRefused(t, e, ba, "alice", revoked, "the session revoked before the failover, after it")
		time.Sleep(300 * time.Millisecond)
	}
	bobAgain := e.enroll("bob") // a new secret for bob: a new code and a new session, on the new primary
	fresh := bb.mustActivate(site, roleAdmin, adminURI, bobAgain, nil)
	wantAdmitted(t, e, bb, "bob", fresh, sessionID(t, fresh), "an activation after the failover")
	onNew := redis.NewClient(&redis.Options{Addr: replica.Addr})
	t.Cleanup(func() { onNew.Close() })
	if role, err := onNew.Do(ctx, "ROLE").Slice(); err != nil || len(role) == 0 || role[0] != "master" {
		t.Errorf("the old replica's role after the failover: %v, %v", role, err)
	}
}

// waitReplicaOnline waits until primary has a replica past its first sync.
func waitReplicaOnline(t *testing.T, primary *testkit.Redis) {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: primary.Addr})
	defer c.Close()
	if !pollUntil(15*time.Second, func() bool {
		info, err := c.Info(context.Background(), "replication").Result()
		return err == nil && strings.Contains(info, "state=online")
	}) {
		t.Fatal("the replica did not come online within 15s")
	}
}
