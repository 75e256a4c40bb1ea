package refresh

// The cache of verified access tokens used by Issuer.Verify.

import (
	"hash/maphash"
	"strings"
)

// verifyCache remembers the claims of access tokens that passed every check
// of verifyAccess, keyed by their signature and compared in full, so that a
// token seen again costs a map lookup instead of a signature check. It
// holds at most its configured size in a genCache. A nil *verifyCache is a
// disabled cache.
type verifyCache struct {
	m *genCache[string, *cachedToken]
}

type cachedToken struct {
	token  string
	claims *Claims
}

func newVerifyCache(size int) *verifyCache {
	if size < 0 {
		return nil
	}
	seed := maphash.MakeSeed()
	return &verifyCache{m: newGenCache[string, *cachedToken](size, func(sig string) uint { return uint(maphash.String(seed, sig)) })}
}

func sigSegment(token string) string { return token[strings.LastIndexByte(token, '.')+1:] }

func (vc *verifyCache) get(token string) *Claims {
	if vc == nil {
		return nil
	}
	e, _ := vc.m.get(sigSegment(token))
	if e == nil || e.token != token {
		return nil
	}
	return e.claims
}

func (vc *verifyCache) put(token string, c *Claims) {
	if vc == nil {
		return
	}
	vc.m.put(sigSegment(token), &cachedToken{token: token, claims: c})
}

// clear forgets every entry.
func (vc *verifyCache) clear() {
	if vc == nil {
		return
	}
	vc.m.clear()
}
