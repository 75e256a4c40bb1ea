package refresh

// The cache of verified access tokens used by Issuer.Verify.

import (
	"strings"
	"sync"
)

// verifyCache remembers the claims of access tokens that passed every check
// of verifyAccess, keyed by their signature and compared in full, so that a
// token seen again costs a map lookup instead of a signature check. It
// holds at most max entries in two generations: when the current one is
// full it becomes the previous one and the oldest generation is dropped.
// A nil *verifyCache is a disabled cache.
type verifyCache struct {
	max       int
	mu        sync.RWMutex // guards cur and prev
	cur, prev map[string]*cachedToken
}

type cachedToken struct {
	token  string
	claims *Claims
}

func newVerifyCache(size int) *verifyCache {
	if size < 0 {
		return nil
	}
	if size < 2 {
		size = 2
	}
	return &verifyCache{max: size, cur: make(map[string]*cachedToken)}
}

func sigSegment(token string) string { return token[strings.LastIndexByte(token, '.')+1:] }

func (vc *verifyCache) get(token string) *Claims {
	if vc == nil {
		return nil
	}
	key := sigSegment(token)
	vc.mu.RLock()
	e := vc.cur[key]
	if e == nil {
		e = vc.prev[key]
	}
	vc.mu.RUnlock()
	if e == nil || e.token != token {
		return nil
	}
	return e.claims
}

func (vc *verifyCache) put(token string, c *Claims) {
	if vc == nil {
		return
	}
	vc.mu.Lock()
	defer vc.mu.Unlock()
	if len(vc.cur) >= vc.max/2 {
		vc.prev, vc.cur = vc.cur, make(map[string]*cachedToken, vc.max/2)
	}
	vc.cur[sigSegment(token)] = &cachedToken{token: token, claims: c}
}

// clear forgets every entry.
func (vc *verifyCache) clear() {
	if vc == nil {
		return
	}
	vc.mu.Lock()
	defer vc.mu.Unlock()
	vc.cur, vc.prev = make(map[string]*cachedToken), nil
}
