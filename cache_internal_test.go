package refresh

import (
	"fmt"
	"sync"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func (c *genCache[K, V]) len() int {
	n := 0
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.RLock()
		n += len(sh.cur) + len(sh.prev)
		sh.mu.RUnlock()
	}
	return n
}

// The locks that different cores take on every request sit on cache lines
// of their own: a change to these structs that breaks the padding fails
// here rather than silently in a profile.
func TestCacheLinePadding(t *testing.T) {
	assert.EqualValues(t, cacheLine, unsafe.Sizeof(genShard[string, *Claims]{}))
	assert.EqualValues(t, cacheLine, unsafe.Sizeof(genShard[[sessionIDLen]byte, *frozenSession]{}))
	assert.EqualValues(t, cacheLine, unsafe.Sizeof(memShard{}))
	var m MemoryStore
	assert.Zero(t, (uintptr(unsafe.Pointer(&m.shards[1]))-uintptr(unsafe.Pointer(&m.shards[0])))%cacheLine)
}

func TestGenCacheBounds(t *testing.T) {
	byLen := func(s string) uint { return uint(len(s)) }
	for _, tc := range []struct{ size, shards, half int }{
		{-1, 1, 1}, {0, 1, 1}, {2, 1, 1}, {3, 1, 1}, {127, 1, 63}, {128, 2, 32},
		{256, 4, 32}, {4096, 64, 32}, {8192, 64, 64}, {1 << 16, 64, 512},
	} {
		c := newGenCache[string, int](tc.size, byLen)
		assert.Equal(t, tc.shards, len(c.shards), "size %d", tc.size)
		assert.Equal(t, tc.half, c.half, "size %d", tc.size)
		for i := range 3 * max(tc.size, 2) {
			c.put(fmt.Sprint(i), i)
		}
		assert.LessOrEqual(t, c.len(), max(tc.size, 2), "size %d", tc.size)
		v, ok := c.get(fmt.Sprint(3*max(tc.size, 2) - 1))
		assert.True(t, ok, "size %d: the newest entry is kept", tc.size)
		assert.Equal(t, 3*max(tc.size, 2)-1, v)
	}
}

// A small cache is one shard with exactly the two-generation order it had
// before sharding: an entry survives half the size of insertions.
func TestGenCacheGenerations(t *testing.T) {
	c := newGenCache[string, int](4, func(string) uint { return 0 })
	has := func(k string) bool { _, ok := c.get(k); return ok }
	c.put("a", 1)
	c.put("b", 2)
	c.put("b", 3) // an overwrite is not an insertion
	c.put("c", 4) // a, b become the previous generation
	assert.True(t, has("a") && has("b") && has("c"))
	v, _ := c.get("b")
	assert.Equal(t, 3, v)
	c.put("d", 5)
	c.put("e", 6) // c, d previous; a, b gone
	assert.False(t, has("a") || has("b"))
	assert.True(t, has("c") && has("d") && has("e"))
	c.clear()
	assert.False(t, has("c") || has("d") || has("e"))
	assert.Zero(t, c.len())

	var disabled *genCache[string, int]
	disabled.put("a", 1)
	disabled.clear()
	_, ok := disabled.get("a")
	assert.False(t, ok)
}

// Many goroutines reading and writing overlapping keys (run with -race):
// every hit returns the value stored for that key.
func TestGenCacheConcurrent(t *testing.T) {
	c := newGenCache[[sessionIDLen]byte, int](512, func(k [sessionIDLen]byte) uint { return uint(k[0]) })
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 5000 {
				var k [sessionIDLen]byte
				k[0], k[1] = byte(i), byte(i>>8)
				if (i+g)%3 == 0 {
					c.put(k, i)
				} else if v, ok := c.get(k); ok && v != i {
					t.Errorf("key %d holds %d", i, v)
					return
				}
			}
		}()
	}
	wg.Wait()
	require.LessOrEqual(t, c.len(), 512)
}
