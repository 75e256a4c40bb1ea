package refresh

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"hash"
	"math"
	"slices"
	"sync"
	"time"
)

// Refresh tokens are a MAC chain (see DESIGN.md at the repository root):
//
//	rt_<base64url( version | key id | session id (16) | check (8) | generation (uvarint) | tag (16) )>
//	check = HMAC-SHA256(K[key id], checkDomain | version | key id | session id)[:8]
//	tag   = HMAC-SHA256(K[key id], macDomain | version | key id | session id | generation (8, big endian) | binding)[:16]
//	binding = SHA-256(bindDomain | seed | subject | client | DPoP key | scope | claims | created | expires)
//
// The store holds the session's seed and generation but never a token or a
// hash of one: without K it mints nothing, and K alone mints nothing without
// the seed. The binding (see binding) makes the tag cover every field of the
// session that never changes after Issue, so that whoever can write to the
// store cannot change who a session is for or what its tokens grant: an
// edited row refuses its tokens. The check, which needs only K, lets a
// forged or guessed token be refused before the store is asked anything, so
// that a flood of them costs the store nothing. The token of any generation
// is a pure function of the session and K, which is what lets concurrent or
// retried refreshes within the grace window receive the same successor.
// (Versions 1, before the check, and 2, before the binding, were never
// released and are refused.)
const (
	refreshPrefix  = "rt_"
	refreshVersion = 3
	sessionIDLen   = 16
	seedLen        = 32
	checkLen       = 8
	tagLen         = 16
	macDomain      = "refreshkit/refresh-token\x00"
	checkDomain    = "refreshkit/refresh-check\x00"
	bindDomain     = "refreshkit/refresh-binding\x00"
	// maxRefreshLen is the longest well-formed refresh token: the prefix
	// and the unpadded base64url of the longest body (a 10-byte varint).
	maxRefreshLen = len(refreshPrefix) + ((2+sessionIDLen+checkLen+binary.MaxVarintLen64+tagLen)*8+5)/6
)

type refreshKey struct {
	id   uint8
	pool sync.Pool // of *macState keyed with the secret
}

// macState is an HMAC-SHA256 with its scratch space, pooled so that
// computing a tag allocates nothing.
type macState struct {
	h   hash.Hash
	in  [len(macDomain) + 2 + sessionIDLen + 8 + sha256.Size]byte
	sum [sha256.Size]byte
}

func newRefreshKey(rk RefreshKey) *refreshKey {
	secret := slices.Clone(rk.Secret)
	k := &refreshKey{id: rk.ID}
	k.pool.New = func() any { return &macState{h: hmac.New(sha256.New, secret)} }
	return k
}

// sum is HMAC-SHA256 under k of domain | version | key id | sid, then gen
// (8 bytes, big endian) if it is not nil, then bound if it is not nil.
func (k *refreshKey) sum(domain string, sid []byte, gen *uint64, bound *[sha256.Size]byte) [sha256.Size]byte {
	m := k.pool.Get().(*macState)
	m.h.Reset()
	n := copy(m.in[:], domain)
	m.in[n], m.in[n+1] = refreshVersion, k.id
	n += 2
	n += copy(m.in[n:], sid)
	if gen != nil {
		binary.BigEndian.PutUint64(m.in[n:], *gen)
		n += 8
	}
	if bound != nil {
		n += copy(m.in[n:], bound[:])
	}
	m.h.Write(m.in[:n])
	var out [sha256.Size]byte
	copy(out[:], m.h.Sum(m.sum[:0]))
	k.pool.Put(m)
	return out
}

// tag computes the MAC of the token of generation gen of session sid,
// whose binding is b.
func (k *refreshKey) tag(sid []byte, gen uint64, b *[sha256.Size]byte) [tagLen]byte {
	s := k.sum(macDomain, sid, &gen, b)
	return [tagLen]byte(s[:tagLen])
}

// check computes the session check of session sid's tokens, which proves a
// token came from a holder of k before the store is asked about it.
func (k *refreshKey) check(sid []byte) [checkLen]byte {
	s := k.sum(checkDomain, sid, nil, nil)
	return [checkLen]byte(s[:checkLen])
}

// mint returns the refresh token of generation gen of session sid, whose
// check under k is check and binding b.
func (k *refreshKey) mint(sid []byte, check *[checkLen]byte, gen uint64, b *[sha256.Size]byte) string {
	var raw [2 + sessionIDLen + checkLen + binary.MaxVarintLen64 + tagLen]byte
	raw[0], raw[1] = refreshVersion, k.id
	n := 2 + copy(raw[2:], sid)
	n += copy(raw[n:], check[:])
	n += binary.PutUvarint(raw[n:], gen)
	t := k.tag(sid, gen, b)
	n += copy(raw[n:], t[:])
	var out [maxRefreshLen]byte
	copy(out[:], refreshPrefix)
	b64.Encode(out[len(refreshPrefix):], raw[:n])
	return string(out[:len(refreshPrefix)+b64.EncodedLen(n)])
}

// refreshClaims is what a well-formed refresh token says; nothing in it is
// trusted until the tag is checked against the session's binding.
type refreshClaims struct {
	key     *refreshKey
	sid     [sessionIDLen]byte
	check   [checkLen]byte
	gen     uint64
	tag     [tagLen]byte
	binding [sha256.Size]byte // of the session, once verifyRefresh has checked the tag
}

// binding is what a session's tags cover besides its id and generation:
// a SHA-256 of its seed and of every field that never changes after Issue
// and decides what its tokens say or require (subject, client, DPoP key,
// scope, claims, sign-in time, absolute end), each written so that no two
// sessions' fields run together. Scope counts as a set and claims by their
// JSON value (appendCanonical), which a store may write differently (a
// jsonb column does). Metadata is left out: it only describes the device,
// and nothing the Issuer decides reads it.
func binding(s *Session) [sha256.Size]byte {
	var buf [512]byte // enough for most sessions, on the stack
	b := buf[:0]
	b = append(b, bindDomain...)
	b = appendBytes(b, s.Seed)
	b = appendBytes(b, s.Subject)
	b = appendBytes(b, s.ClientID)
	b = appendBytes(b, s.DPoPKey)
	// Scope is a set (RFC 6749 §3.3): bound in byte order, so that a store
	// keeping it unordered (a Redis set) does not refuse every token.
	scope := s.Scope
	if !slices.IsSorted(scope) {
		scope = slices.Sorted(slices.Values(scope))
	}
	b = binary.AppendUvarint(b, uint64(len(scope)))
	for _, tok := range scope {
		b = appendBytes(b, tok)
	}
	if len(s.Claims) == 0 {
		b = append(b, '-')
	} else if c, err := appendCanonical(append(b, 'c'), s.Claims); err == nil {
		b = c
	} else {
		b = appendBytes(append(b, '!'), s.Claims) // not JSON: matches only itself
	}
	for _, t := range []time.Time{s.CreatedAt, s.ExpiresAt} {
		b = binary.BigEndian.AppendUint64(b, uint64(t.Unix()))
		b = binary.BigEndian.AppendUint32(b, uint32(t.Nanosecond()))
	}
	return sha256.Sum256(b)
}

func (rc *refreshClaims) sessionID() string { return b64.EncodeToString(rc.sid[:]) }

// checked reports whether the token's session check is right, which needs
// the key and not the store.
func (rc *refreshClaims) checked() bool {
	want := rc.key.check(rc.sid[:])
	return hmac.Equal(want[:], rc.check[:])
}

// parseRefresh checks the form of a refresh token: prefix, length, canonical
// base64url, version, known key id, minimal varint, exact length.
func (iss *Issuer) parseRefresh(tok string) (refreshClaims, error) {
	var rc refreshClaims
	if len(tok) > maxRefreshLen || len(tok) <= len(refreshPrefix) || tok[:len(refreshPrefix)] != refreshPrefix {
		return rc, tokenErr(ErrInvalidToken, "not a refresh token")
	}
	var raw [maxRefreshLen]byte
	n, err := decodeB64Into(raw[:], tok[len(refreshPrefix):])
	if err != nil {
		return rc, tokenErr(ErrInvalidToken, "refresh token is not base64url")
	}
	r := raw[:n]
	if len(r) < 2+sessionIDLen+checkLen+1+tagLen {
		return rc, tokenErr(ErrInvalidToken, "refresh token too short")
	}
	if r[0] != refreshVersion {
		return rc, tokenErr(ErrInvalidToken, "unknown refresh token version")
	}
	if rc.key = iss.macKeys[r[1]]; rc.key == nil {
		return rc, tokenErr(ErrInvalidToken, "unknown refresh key id")
	}
	copy(rc.sid[:], r[2:2+sessionIDLen])
	copy(rc.check[:], r[2+sessionIDLen:])
	r = r[2+sessionIDLen+checkLen:]
	gen, vn := binary.Uvarint(r)
	if vn <= 0 || vn != varintLen(gen) || len(r) != vn+tagLen {
		return rc, tokenErr(ErrInvalidToken, "malformed refresh token")
	}
	if gen == math.MaxUint64 {
		// Its successor's generation would wrap to 0, the generation of
		// the session's first token. No session rotates 2^64 − 1 times:
		// this makes the wrap impossible rather than improbable.
		return rc, tokenErr(ErrInvalidToken, "refresh token generation has no successor")
	}
	rc.gen = gen
	copy(rc.tag[:], r[vn:])
	return rc, nil
}

func varintLen(v uint64) int {
	var b [binary.MaxVarintLen64]byte
	return binary.PutUvarint(b[:], v)
}
