package refresh

import "context"

// Hooks for the external tests (package refresh_test) into internals that
// cannot be reached through the API.

// SetDPoPReplayBounds lowers the replay cache's bounds, so that a test can
// reach them with a few hundred proofs instead of a million.
func SetDPoPReplayBounds(iss *Issuer, max, perKey int) {
	iss.rs.dpopSeen.mu.Lock()
	defer iss.rs.dpopSeen.mu.Unlock()
	iss.rs.dpopSeen.max, iss.rs.dpopSeen.perKey = max, perKey
}

// DPoPReplayLen is how many proofs the replay cache holds.
func DPoPReplayLen(iss *Issuer) int {
	iss.rs.dpopSeen.mu.Lock()
	defer iss.rs.dpopSeen.mu.Unlock()
	return len(iss.rs.dpopSeen.cur.seen) + len(iss.rs.dpopSeen.prev.seen)
}

// MintRefresh returns the refresh token of generation gen of session s under
// the minting key, as Rotate would hand it out.
func MintRefresh(iss *Issuer, s *Session, gen uint64) string {
	sid, err := b64.DecodeString(s.ID)
	if err != nil || len(sid) != sessionIDLen {
		panic("MintRefresh: not a session id Issue mints")
	}
	check, b := iss.mintKey.check(sid), binding(s)
	return iss.mintKey.mint(sid, &check, gen, &b)
}

// VerifyCacheLen is how many verified access tokens the cache of an
// *Issuer or a *Verifier holds.
func VerifyCacheLen(x any) int {
	var rs *resourceServer
	switch x := x.(type) {
	case *Issuer:
		rs = x.rs
	case *Verifier:
		rs = x.rs
	}
	if rs.vcache == nil {
		return 0
	}
	n := 0
	for i := range rs.vcache.m.shards {
		sh := &rs.vcache.m.shards[i]
		sh.mu.RLock()
		n += len(sh.cur) + len(sh.prev)
		sh.mu.RUnlock()
	}
	return n
}

// SetSessionCacheMax lowers the bound of CheckSession's cache of session
// answers (65,536), so that a test can reach it.
func SetSessionCacheMax(iss *Issuer, n int) {
	iss.sessCache.mu.Lock()
	defer iss.sessCache.mu.Unlock()
	iss.sessCache.max = n
}

// SessionCacheLen is how many session answers that cache holds.
func SessionCacheLen(iss *Issuer) int {
	iss.sessCache.mu.Lock()
	defer iss.sessCache.mu.Unlock()
	return len(iss.sessCache.m)
}

// SweepProofs runs one of the Verifier's background sweeps of its
// VerifierConfig.Proofs now.
func SweepProofs(v *Verifier) (int, error) { return v.sweepProofs(context.Background()) }

// SetIntrospectionCacheMax lowers the bound of a Verifier's cache of
// introspection answers (10,000), so that a test can reach it.
func SetIntrospectionCacheMax(v *Verifier, n int) {
	v.intro.mu.Lock()
	defer v.intro.mu.Unlock()
	v.intro.max = n
}

// IntrospectionCacheLen is how many answers that cache holds.
func IntrospectionCacheLen(v *Verifier) int {
	v.intro.mu.Lock()
	defer v.intro.mu.Unlock()
	return len(v.intro.cache)
}

// SweepAll runs one round of m's background sweeper, in batches of batch.
func SweepAll(m *MemoryStore, batch int) {
	m.batch = batch
	m.sweepAll()
}

// ProofLen is how many proof records m holds, expired ones included.
func ProofLen(m *MemoryStore) int {
	m.proofs.mu.Lock()
	defer m.proofs.mu.Unlock()
	return len(m.proofs.m)
}

// SubjectIndexLen is how many session ids m's index lists for subject,
// ids of sessions no longer stored included.
func SubjectIndexLen(m *MemoryStore, subject string) int {
	return len(m.subjectIDs(subject))
}

// VerifySignature checks sig, the decoded signature of a token whose
// signing input is signed, with iss's signing key, as Verify does, and
// nothing else.
func VerifySignature(iss *Issuer, signed string, sig []byte) bool {
	return iss.signer.verifySig(signed, sig)
}
