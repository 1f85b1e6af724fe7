package redisstate

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"time"

	"github.com/redis/go-redis/v9"
)

// state.Atomic, natively: each operation is one command or one script, so it is
// decided by Redis alone, and what it keeps expires by Redis's own TTL. Numbers
// (Advance, Count) are found by their key only; records kept with StoreFor are listed
// in their folder until they expire (List drops them from the index then).

// advanceScript sets KEYS[1] to ARGV[1] for ARGV[2] ms, if that is more than it holds
// (a value that is no number is none).
var advanceScript = redis.NewScript(`
local current = tonumber(redis.call('GET', KEYS[1]) or '')
if current and current >= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1`)

// Advance sets the number at key to n if n is more than the number there.
func (s *Store) Advance(ctx context.Context, key string, n int64, ttl time.Duration) (bool, error) {
	ok, err := advanceScript.Run(ctx, s.client, []string{s.key(clean(key))}, n, ttl.Milliseconds()).Int()
	return ok == 1, err
}

// countScript counts one at KEYS[1], which lives ARGV[1] ms from its first count (a
// value that is no number counts from zero).
var countScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v and not tonumber(v) then redis.call('DEL', KEYS[1]) end
local n = redis.call('INCR', KEYS[1])
if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n`)

// Count adds one to the counter at key and returns it.
func (s *Store) Count(ctx context.Context, key string, ttl time.Duration) (int64, error) {
	return countScript.Run(ctx, s.client, []string{s.key(clean(key))}, ttl.Milliseconds()).Int64()
}

// StoreFor writes value at key, which Redis deletes after ttl.
func (s *Store) StoreFor(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	k := clean(key)
	if k == "" {
		return errors.New("redis store: an empty key")
	}
	if ttl <= 0 {
		return fmt.Errorf("redis store: %s: a record's lifetime must be positive, not %s", key, ttl)
	}
	return storeScript.Run(ctx, s.client, []string{s.key(k)}, storeArgs(value, k, s.folder(""), ttl)...).Err()
}

// takeScript reads and deletes KEYS[1], and takes ARGV[1] out of its folder's index
// KEYS[2] (a record written by Store is indexed there).
var takeScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if not v then return false end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
return v`)

// Take reads the value at key and deletes it.
func (s *Store) Take(ctx context.Context, key string) ([]byte, error) {
	k := clean(key)
	parent := path.Dir(k)
	if parent == "." {
		parent = ""
	}
	v, err := takeScript.Run(ctx, s.client, []string{s.key(k), s.folder(parent)}, k).Text()
	if errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("%s: %w", key, fs.ErrNotExist)
	}
	if err != nil {
		return nil, err
	}
	return []byte(v), nil
}

// swapScript is storeScript's write, made only if KEYS[1] holds ARGV[6] (ARGV[5] is
// "new": only if it holds nothing; ARGV[4] is unused, as a swapped key is kept).
var swapScript = redis.NewScript(`
local current = redis.call('GET', KEYS[1])
if ARGV[5] == 'new' then
	if current then return 0 end
elseif current ~= ARGV[6] then
	return 0
end
redis.call('SET', KEYS[1], ARGV[1])
` + indexLua)

// Swap writes value at key only if the key holds old (nil: nothing).
func (s *Store) Swap(ctx context.Context, key string, old, value []byte) (bool, error) {
	k := clean(key)
	if k == "" {
		return false, errors.New("redis store: an empty key")
	}
	mode := "old"
	if old == nil {
		mode = "new"
	}
	n, err := swapScript.Run(ctx, s.client, []string{s.key(k)}, value, k, s.folder(""), 0, mode, string(old)).Int()
	return n == 1, err
}
