package refresh

// The bounded, sharded map behind the caches read on every request: the
// verified-token cache of Verify and the frozen sessions of Rotate.

import "sync"

// cacheLine is the unit that keeps two locks written by different cores
// apart: 128 bytes, a pair of 64-byte lines, which x86's adjacent-line
// prefetcher fetches together.
const cacheLine = 128

// maxCacheShards bounds the shards of a genCache; minShardEntries is the
// fewest entries a shard is given, so that a small cache keeps one shard
// (and exactly the eviction order it is configured for).
const (
	maxCacheShards  = 64
	minShardEntries = 64
)

// genCache is a bounded map split into shards, each with its own lock on
// its own cache lines: readers on different cores looking up different
// keys write no shared memory. (One sync.RWMutex for the whole map is such
// a write: every RLock adds to its reader count, so every core contends
// for one cache line on every request; with two cores rotating it cost 4 %
// of CPU, and it grows with the core count.)
//
// Each shard keeps two generations: when the current one holds half the
// shard's share of the size, it becomes the previous one and the older is
// dropped. A nil *genCache is a disabled cache: get misses, put and clear
// do nothing. Safe for concurrent use.
type genCache[K comparable, V any] struct {
	shardOf func(K) uint // spreads keys over shards; any value is reduced
	half    int          // entries per generation per shard
	shards  []genShard[K, V]
}

type genShard[K comparable, V any] struct {
	mu        sync.RWMutex // guards cur and prev
	cur, prev map[K]V
	_         [cacheLine - 40]byte // 24-byte RWMutex + two map pointers
}

// newGenCache returns a cache of at most size entries (at least 2) whose
// keys are spread over shards by shardOf, which must be cheap and should
// be uniform over the keys that matter (keys chosen by an attacker only
// crowd one shard, which evicts sooner).
func newGenCache[K comparable, V any](size int, shardOf func(K) uint) *genCache[K, V] {
	size = max(size, 2)
	n := 1
	for n < maxCacheShards && 2*n*minShardEntries <= size {
		n *= 2
	}
	c := &genCache[K, V]{shardOf: shardOf, half: max(size/n/2, 1), shards: make([]genShard[K, V], n)}
	for i := range c.shards {
		c.shards[i].cur = make(map[K]V)
	}
	return c
}

func (c *genCache[K, V]) shard(k K) *genShard[K, V] {
	return &c.shards[c.shardOf(k)&uint(len(c.shards)-1)]
}

// get returns the value stored for k, if any.
func (c *genCache[K, V]) get(k K) (v V, ok bool) {
	if c == nil {
		return v, false
	}
	sh := c.shard(k)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	if v, ok = sh.cur[k]; ok {
		return v, true
	}
	v, ok = sh.prev[k]
	return v, ok
}

// put stores v for k, starting a new generation in k's shard if the
// current one is full.
func (c *genCache[K, V]) put(k K, v V) {
	if c == nil {
		return
	}
	sh := c.shard(k)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if _, ok := sh.cur[k]; !ok && len(sh.cur) >= c.half {
		sh.prev, sh.cur = sh.cur, make(map[K]V, c.half)
	}
	sh.cur[k] = v
}

// clear forgets every entry.
func (c *genCache[K, V]) clear() {
	if c == nil {
		return
	}
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.Lock()
		sh.cur, sh.prev = make(map[K]V), nil
		sh.mu.Unlock()
	}
}
