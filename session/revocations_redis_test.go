package session

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/caddy-jit/caddy-jit/internal/testkit"
	"github.com/caddy-jit/caddy-jit/state/redisstate"
)

// On Redis a revocation expires by itself, once its session would have ended (and
// the clock-skew margin more), and pruning leaves it to Redis; until then every full
// or incremental read finds it.
func TestRevocationsExpireByThemselvesOnRedis(t *testing.T) {
	ctx := context.Background()
	r := testkit.StartRedis(t)
	c := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: []string{r.Addr}})
	t.Cleanup(func() { c.Close() })
	records := &Records{storage: redisstate.New(c, "jit:", r.Addr)}

	now := time.Now().UTC()
	rev := revocation{SessionID: newSessionID(), User: "alice", Expires: now.Add(time.Hour).Truncate(time.Second), At: now, By: "test"}
	if err := records.revoke(ctx, rev); err != nil {
		t.Fatal(err)
	}
	life, err := c.PTTL(ctx, "jit:{jit}k:"+revocationKey(rev)).Result()
	if want := rev.Expires.Sub(now) + revocationSkew; err != nil || life < want-5*time.Second || life > want {
		t.Errorf("the revocation's TTL on Redis = %s, %v; want about %s", life, err, want)
	}
	if err := records.pruneRevocations(ctx, now.Add(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	for _, since := range []time.Time{{}, now.Add(-time.Minute)} {
		set := NewRevocations()
		if err := records.LoadRevocations(ctx, set, now, since); err != nil || !set.Revoked(rev.SessionID) {
			t.Errorf("a read since %v after pruning finds the revocation: %v, %v; want it found (Redis expires it, not pruning)", since, set.Revoked(rev.SessionID), err)
		}
	}
}
