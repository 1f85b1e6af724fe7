package redisstate

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/caddy-jit/caddy-jit/internal/testkit"
	"github.com/caddy-jit/caddy-jit/state"
	"github.com/caddy-jit/caddy-jit/state/storetest"
)

// The Redis store behaves as Caddy's file storage does.
func TestConformance(t *testing.T) {
	r := testkit.StartRedis(t)
	storetest.Conformance(t, func() state.Store {
		c := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: []string{r.Addr}})
		t.Cleanup(func() { c.Close() })
		return New(c, "jit:", r.Addr)
	})
}

// An announcement on one handle reaches a listener on another at once.
func TestAnnouncementsReachEveryListener(t *testing.T) {
	r := testkit.StartRedis(t)
	open := func() *Store {
		c := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: []string{r.Addr}})
		t.Cleanup(func() { c.Close() })
		return New(c, "jit:", r.Addr)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, b := open(), open()
	heard := b.Listen(ctx, state.TopicRevocations)
	other := b.Listen(ctx, "another-topic")
	// The subscription is made in the background: announce until it is heard.
	deadline := time.After(5 * time.Second)
	for heardIt := false; !heardIt; {
		if err := state.Announce(ctx, a, state.TopicRevocations); err != nil {
			t.Fatal(err)
		}
		select {
		case <-heard:
			heardIt = true
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			t.Fatal("no announcement heard within 5s")
		}
	}
	select {
	case <-other:
		t.Error("a listener of another topic heard the announcement")
	case <-time.After(100 * time.Millisecond):
	}
}
