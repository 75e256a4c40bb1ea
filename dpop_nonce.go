package refresh

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"time"
)

// DPoP nonces (RFC 9449 §8, §9) bound how long a proof made in advance
// (by script injected into a browser app, say) stays usable: with
// Config.DPoPNonceLifetime set, a proof must carry a nonce the server
// handed out recently. They are stateless and shared: a nonce names a time
// slot of half the lifetime and carries a MAC of it under a key derived
// from the refresh MAC keys, so every instance with the same RefreshKeys
// mints and accepts the same nonces without a store:
//
//	nonce = base64url( slot (8, big endian) | HMAC-SHA256(Kn, nonceDomain | slot)[:16] )
//	Kn    = HMAC-SHA256(K, "refreshkit/dpop-nonce-key")
//
// A nonce is accepted in its own slot and the next one: for at least half
// the lifetime after it was minted and at most the whole lifetime.
const (
	nonceDomain = "refreshkit/dpop-nonce\x00"
	nonceMACLen = 16
	nonceLen    = 8 + nonceMACLen
)

// nonceSource mints and checks DPoP nonces; a nil *nonceSource is off.
type nonceSource struct {
	slot time.Duration // half the lifetime
	keys [][]byte      // derived from each refresh key; the first mints
	now  func() time.Time
}

func newNonceSource(lifetime time.Duration, secrets [][]byte, now func() time.Time) *nonceSource {
	ns := &nonceSource{slot: lifetime / 2, now: now}
	for _, secret := range secrets {
		m := hmac.New(sha256.New, secret)
		m.Write([]byte("refreshkit/dpop-nonce-key"))
		ns.keys = append(ns.keys, m.Sum(nil))
	}
	return ns
}

func (ns *nonceSource) slotAt(t time.Time) uint64 { return uint64(t.UnixNano()) / uint64(ns.slot) }

func (ns *nonceSource) mac(key []byte, slot uint64) []byte {
	m := hmac.New(sha256.New, key)
	var b [len(nonceDomain) + 8]byte
	copy(b[:], nonceDomain)
	binary.BigEndian.PutUint64(b[len(nonceDomain):], slot)
	m.Write(b[:])
	return m.Sum(nil)[:nonceMACLen]
}

// current returns the nonce of the current slot, or "" when nonces are off.
func (ns *nonceSource) current() string {
	if ns == nil {
		return ""
	}
	slot := ns.slotAt(ns.now())
	var raw [nonceLen]byte
	binary.BigEndian.PutUint64(raw[:], slot)
	copy(raw[8:], ns.mac(ns.keys[0], slot))
	return b64.EncodeToString(raw[:])
}

// check refuses a proof whose nonce is missing, malformed, forged or from
// a slot before the previous one, with an error wrapping both
// ErrUseDPoPNonce and ErrInvalidToken. A nonce of the previous slot is
// accepted and marks the proof (renewNonce), so that a successful answer
// can hand out the current one before the client's stops working.
func (ns *nonceSource) check(p *DPoPProof) error {
	if ns == nil {
		return nil
	}
	refuse := func(reason string) error {
		return fmt.Errorf("%w: %w", ErrUseDPoPNonce, tokenErr(ErrInvalidToken, "DPoP proof: "+reason))
	}
	if p.Nonce == "" {
		return refuse("no nonce")
	}
	var raw [nonceLen]byte
	if !decodeB64Exact(raw[:], p.Nonce) {
		return refuse("malformed nonce")
	}
	slot, cur := binary.BigEndian.Uint64(raw[:8]), ns.slotAt(ns.now())
	if slot != cur && slot+1 != cur {
		return refuse("stale nonce")
	}
	for _, k := range ns.keys {
		if hmac.Equal(ns.mac(k, slot), raw[8:]) {
			p.renewNonce = slot != cur
			return nil
		}
	}
	return refuse("forged nonce")
}
