// Package redisstate is caddy-jit's state on Redis (or Valkey): a state.Store over one
// Redis server, a Sentinel-watched primary or a Cluster, through go-redis's
// UniversalClient. Several Caddy instances that share it are one cluster.
//
// Every key lives under the configured prefix and one hash tag ({jit}), so that the
// scripts that move a record and its folder index together touch one hash slot: in a
// Redis Cluster, caddy-jit's keys sit on one shard. Folders are Redis sets that index
// their children, so a listing reads one set instead of scanning the keyspace. Locks
// are keys set with NX and an expiry that their holder renews, released only by the
// holder (a script compares its token).
package redisstate

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/caddy-jit/caddy-jit/internal/random"
	"github.com/caddy-jit/caddy-jit/state"
)

const (
	// hashTag keeps every key in one hash slot (see the package doc).
	hashTag = "{jit}"
	// lockTTL is how long a lock outlives a holder that stopped renewing it (a
	// crashed instance); the holder renews it every lockTTL/3.
	lockTTL = 30 * time.Second
	// lockPoll is how often a waiting Lock tries again.
	lockPoll = 25 * time.Millisecond
)

// Store is a state.Store on Redis.
type Store struct {
	client redis.UniversalClient
	prefix string
	name   string

	mu    sync.Mutex
	locks map[string]*heldLock
}

type heldLock struct {
	token string
	stop  context.CancelFunc
}

// New makes a Store over client, under prefix (e.g. "jit:"); name says which Redis
// it is in messages (e.g. "redis://10.0.0.5:6379/0"). It does not connect: Ping does.
func New(client redis.UniversalClient, prefix, name string) *Store {
	return &Store{client: client, prefix: prefix + hashTag, name: name, locks: map[string]*heldLock{}}
}

// String names the store, as caddy-jit's messages and its state's pool key do.
func (s *Store) String() string { return "Redis:" + s.name }

// Ping checks that Redis answers and accepts the credentials.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.client.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis at %s: %w", s.name, err)
	}
	return nil
}

// Close closes the connections.
func (s *Store) Close() error { return s.client.Close() }

func (s *Store) key(k string) string     { return s.prefix + "k:" + k }
func (s *Store) folder(f string) string  { return s.prefix + "d:" + f }
func (s *Store) lockKey(n string) string { return s.prefix + "l:" + n }

// clean is the key as certmagic's stores see it: no leading or trailing slash.
func clean(k string) string { return strings.Trim(k, "/") }

// Load returns the value at key; a missing key is an error that wraps fs.ErrNotExist.
func (s *Store) Load(ctx context.Context, key string) ([]byte, error) {
	v, err := s.client.Get(ctx, s.key(clean(key))).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("%s: %w", key, fs.ErrNotExist)
	}
	return v, err
}

// storeScript sets a key and adds it, and each folder above it, to its parent's index.
// KEYS[1] is the value's key; ARGV[1] the value, ARGV[2] the key's path, ARGV[3] the
// prefix of folder indexes; ARGV[4], when given, the key's lifetime in milliseconds.
var storeScript = redis.NewScript(setLua + indexLua)

// setLua sets KEYS[1] to ARGV[1], for ARGV[4] ms when that is given.
const setLua = `
if ARGV[4] then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[4]) else redis.call('SET', KEYS[1], ARGV[1]) end
`

// indexLua adds ARGV[2] to its folder's index, and each folder above it to its
// parent's (ARGV[3] is the prefix of folder indexes).
const indexLua = `
local child = ARGV[2]
while true do
	local slash = string.find(child, '/[^/]*$')
	local parent = ''
	if slash then parent = string.sub(child, 1, slash - 1) end
	redis.call('SADD', ARGV[3] .. parent, child)
	if parent == '' then break end
	child = parent
end
return 1`

// Store writes value at key.
func (s *Store) Store(ctx context.Context, key string, value []byte) error {
	k := clean(key)
	if k == "" {
		return errors.New("redis store: an empty key")
	}
	return storeScript.Run(ctx, s.client, []string{s.key(k)}, storeArgs(value, k, s.folder(""), 0)...).Err()
}

// deleteScript deletes a key, or a folder and everything under it, and removes what
// became empty from the indexes above. KEYS[1] is the key's value key; ARGV[1] its
// path, ARGV[2] the prefix of value keys, ARGV[3] that of folder indexes. It returns
// 0 when there was nothing to delete.
var deleteScript = redis.NewScript(`
local function drop(p)
	local n = redis.call('DEL', ARGV[2] .. p)
	local members = redis.call('SMEMBERS', ARGV[3] .. p)
	for _, m in ipairs(members) do n = n + drop(m) end
	if #members > 0 then redis.call('DEL', ARGV[3] .. p); n = n + 1 end
	return n
end
local found = drop(ARGV[1])
local child = ARGV[1]
while true do
	local slash = string.find(child, '/[^/]*$')
	local parent = ''
	if slash then parent = string.sub(child, 1, slash - 1) end
	redis.call('SREM', ARGV[3] .. parent, child)
	if parent == '' or redis.call('SCARD', ARGV[3] .. parent) > 0 then break end
	child = parent
end
return found`)

// Delete deletes key, or the folder key and everything under it; a key that does not
// exist is an error that wraps fs.ErrNotExist.
func (s *Store) Delete(ctx context.Context, key string) error {
	k := clean(key)
	n, err := deleteScript.Run(ctx, s.client, []string{s.key(k)}, k, s.key(""), s.folder("")).Int()
	if err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("%s: %w", key, fs.ErrNotExist)
	}
	return nil
}

// Exists reports whether key holds a value or is a folder.
func (s *Store) Exists(ctx context.Context, key string) bool {
	k := clean(key)
	n, err := s.client.Exists(ctx, s.key(k), s.folder(k)).Result()
	return err == nil && n > 0
}

// listScript returns the members of the folder index KEYS[1] that still exist, and
// drops from it those that expired (a record stored for a time, or a folder whose
// records all expired): expiry needs no pruning job, and the indexes no scan. ARGV[1]
// is the prefix of value keys, ARGV[2] that of folder indexes.
var listScript = redis.NewScript(`
local live = {}
for _, m in ipairs(redis.call('SMEMBERS', KEYS[1])) do
	if redis.call('EXISTS', ARGV[1] .. m, ARGV[2] .. m) > 0 then
		table.insert(live, m)
	else
		redis.call('SREM', KEYS[1], m)
	end
end
return live`)

// List returns the keys and folders right under folder, or, recursive, everything
// under it; a folder that does not exist is an error that wraps fs.ErrNotExist.
func (s *Store) List(ctx context.Context, folder string, recursive bool) ([]string, error) {
	f := clean(folder)
	members, err := listScript.Run(ctx, s.client, []string{s.folder(f)}, s.key(""), s.folder("")).StringSlice()
	if err != nil {
		return nil, err
	}
	if len(members) == 0 {
		return nil, fmt.Errorf("%s: %w", folder, fs.ErrNotExist)
	}
	slices.Sort(members)
	if !recursive {
		return members, nil
	}
	var out []string
	for _, m := range members {
		out = append(out, m)
		below, err := s.List(ctx, m, true)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, below...)
	}
	return out, nil
}

// Lock blocks until this instance holds the lock name, or ctx ends. The lock lasts
// while this Store renews it; a holder that dies frees it after lockTTL.
func (s *Store) Lock(ctx context.Context, name string) error {
	token := random.Token(16)
	for {
		ok, err := s.client.SetNX(ctx, s.lockKey(name), token, lockTTL).Result()
		if err != nil {
			return fmt.Errorf("redis lock %s: %w", name, err)
		}
		if ok {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(lockPoll):
		}
	}
	renewCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	s.mu.Lock()
	s.locks[name] = &heldLock{token: token, stop: stop}
	s.mu.Unlock()
	go s.renew(renewCtx, name, token)
	return nil
}

// renewScript extends a lock only while its token is the holder's.
var renewScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0`)

func (s *Store) renew(ctx context.Context, name, token string) {
	t := time.NewTicker(lockTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			_ = renewScript.Run(ctx, s.client, []string{s.lockKey(name)}, token, lockTTL.Milliseconds()).Err()
		}
	}
}

// unlockScript deletes a lock only while its token is the holder's: a lock that
// expired and was taken by another instance stays theirs.
var unlockScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`)

// Unlock releases the lock name that this Store holds.
func (s *Store) Unlock(ctx context.Context, name string) error {
	s.mu.Lock()
	held := s.locks[name]
	delete(s.locks, name)
	s.mu.Unlock()
	if held == nil {
		return fmt.Errorf("redis lock %s: not held here", name)
	}
	held.stop()
	return unlockScript.Run(ctx, s.client, []string{s.lockKey(name)}, held.token).Err()
}

func (s *Store) channel(topic string) string { return s.prefix + "c:" + topic }

// Announce publishes message on topic to every instance that listens.
func (s *Store) Announce(ctx context.Context, topic, message string) error {
	return s.client.Publish(ctx, s.channel(topic), message).Err()
}

// Listen subscribes to topic until ctx ends; go-redis resubscribes by itself after a
// lost connection (what was published meanwhile is missed: announcements are hints).
func (s *Store) Listen(ctx context.Context, topic string) <-chan string {
	out := make(chan string, state.ListenBacklog)
	sub := s.client.Subscribe(ctx, s.channel(topic))
	go func() {
		defer sub.Close()
		msgs := sub.Channel()
		for {
			select {
			case <-ctx.Done():
				return
			case m, ok := <-msgs:
				if !ok {
					return
				}
				select {
				case out <- m.Payload:
				default: // too far behind: the listener's interval catches up
				}
			}
		}
	}()
	return out
}

// replicaWait bounds how long a durable write waits for a replica's acknowledgement.
const replicaWait = 2 * time.Second

// StoreDurable writes value at key (for ttl, when positive) and, when the primary has
// replicas, waits until one of them has it (WAIT, on the connection that wrote: the
// write and the WAIT go in one pipeline). Without replicas there is nothing to wait for.
func (s *Store) StoreDurable(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	k := clean(key)
	if k == "" {
		return errors.New("redis store: an empty key")
	}
	replicas, err := s.replicas(ctx)
	if err != nil {
		return err
	}
	args := storeArgs(value, k, s.folder(""), ttl)
	if replicas == 0 {
		return storeScript.Run(ctx, s.client, []string{s.key(k)}, args...).Err()
	}
	if err := storeScript.Load(ctx, s.client).Err(); err != nil {
		return err
	}
	var acked *redis.Cmd
	_, err = s.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		storeScript.EvalSha(ctx, p, []string{s.key(k)}, args...)
		acked = p.Do(ctx, "WAIT", 1, replicaWait.Milliseconds())
		return nil
	})
	if err != nil {
		return err
	}
	if n, err := acked.Int64(); err != nil || n < 1 {
		return fmt.Errorf("redis at %s: no replica acknowledged %s within %s (the primary has it; a failover now could lose it)", s.name, key, replicaWait)
	}
	return nil
}

// storeArgs are storeScript's arguments; a ttl that is not positive keeps the key.
func storeArgs(value []byte, path, folders string, ttl time.Duration) []any {
	if ttl <= 0 {
		return []any{value, path, folders}
	}
	return []any{value, path, folders, ttl.Milliseconds()}
}

// replicas is how many replicas of the primary are online now: connected and past
// their first synchronisation (one still loading the primary's data would make WAIT
// wait for its whole load).
func (s *Store) replicas(ctx context.Context) (int, error) {
	info, err := s.client.Info(ctx, "replication").Result()
	if err != nil {
		return 0, err
	}
	n := 0
	for _, line := range strings.Split(info, "\n") {
		if strings.HasPrefix(line, "slave") && strings.Contains(line, "state=online") {
			n++
		}
	}
	return n, nil
}
