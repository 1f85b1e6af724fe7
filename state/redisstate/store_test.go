package redisstate

import (
	"context"
	"fmt"
	"strings"
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

// An announcement on one handle reaches a listener on another at once, with its
// message, and every one after it in order.
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
		if err := state.Announce(ctx, a, state.TopicRevocations, "first"); err != nil {
			t.Fatal(err)
		}
		select {
		case m := <-heard:
			if m != "first" {
				t.Fatalf("heard %q, want first", m)
			}
			heardIt = true
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			t.Fatal("no announcement heard within 5s")
		}
	}
	time.Sleep(200 * time.Millisecond) // the retries' copies arrive, and are dropped
	for len(heard) > 0 {
		<-heard
	}
	for i := range 100 {
		if err := state.Announce(ctx, a, state.TopicRevocations, fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 100 {
		select {
		case m := <-heard:
			if m != fmt.Sprint(i) {
				t.Fatalf("announcement %d heard as %q: want every one, in order", i, m)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("announcement %d not heard within 5s", i)
		}
	}
	select {
	case m := <-other:
		t.Errorf("a listener of another topic heard %q", m)
	case <-time.After(100 * time.Millisecond):
	}
}

// A durable write returns once the replica has it; without replicas it is a write.
func TestDurableWritesWaitForAReplica(t *testing.T) {
	ctx := context.Background()
	primary := testkit.StartRedis(t)
	replica := testkit.StartRedis(t, "replicaof "+strings.Replace(primary.Addr, ":", " ", 1))
	client := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: []string{primary.Addr}})
	t.Cleanup(func() { client.Close() })
	st := New(client, "jit:", primary.Addr)
	onReplica := redis.NewClient(&redis.Options{Addr: replica.Addr})
	t.Cleanup(func() { onReplica.Close() })

	// The replica attaches in the background.
	deadline := time.Now().Add(10 * time.Second)
	for n, _ := st.replicas(ctx); n < 1; n, _ = st.replicas(ctx) {
		if time.Now().After(deadline) {
			t.Fatal("the replica did not attach within 10s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	for i := range 20 {
		key := fmt.Sprintf("jit/revocations/1/s%d.json", i)
		if err := st.StoreDurable(ctx, key, []byte("{}"), 0); err != nil {
			t.Fatalf("StoreDurable with a replica: %v", err)
		}
		// Acknowledged means the replica has it now, not eventually.
		if v, err := onReplica.Get(ctx, st.key(key)).Result(); err != nil || v != "{}" {
			t.Fatalf("right after StoreDurable of %s, the replica has %q, %v", key, v, err)
		}
	}
	if got, err := st.List(ctx, "jit/revocations/1", false); err != nil || len(got) != 20 {
		t.Errorf("the durable writes are not indexed: %d keys, %v", len(got), err)
	}
	// A replica that hangs acknowledges nothing: the write is refused as not durable
	// (a plain write would have been acknowledged by the primary alone).
	replica.Freeze()
	err := st.StoreDurable(ctx, "jit/revocations/1/hung.json", []byte("{}"), time.Minute)
	replica.Thaw()
	if err == nil || !strings.Contains(err.Error(), "no replica acknowledged") {
		t.Errorf("StoreDurable while the replica hangs = %v, want a refusal", err)
	}
	if err := st.StoreDurable(ctx, "jit/revocations/1/after.json", []byte("{}"), time.Minute); err != nil {
		t.Errorf("StoreDurable once the replica is back = %v", err)
	}

	// A primary without replicas: nothing to wait for.
	alone := testkit.StartRedis(t)
	c2 := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: []string{alone.Addr}})
	t.Cleanup(func() { c2.Close() })
	start := time.Now()
	if err := New(c2, "jit:", alone.Addr).StoreDurable(ctx, "jit/x.json", []byte("{}"), 0); err != nil || time.Since(start) > replicaWait {
		t.Errorf("StoreDurable without replicas = %v after %s", err, time.Since(start))
	}
}
