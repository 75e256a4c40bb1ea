package refresh

// Access-token verification, the one implementation behind Issuer.Verify
// and Verifier.Verify (and both middlewares): JWS checks, claims, times,
// the cache of verified tokens, and DPoP proofs with their replay cache.

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"time"
)

// keySet is the verification keys in use at one moment.
type keySet struct {
	byKid  map[string]*accessKey
	single *accessKey // the only key, for tokens without kid; nil with several
}

func newKeySet(keys []*accessKey) *keySet {
	ks := &keySet{byKid: make(map[string]*accessKey, len(keys))}
	for _, k := range keys {
		ks.byKid[k.id] = k
	}
	if len(keys) == 1 {
		ks.single = keys[0]
	}
	return ks
}

// resourceServer is what verifying access tokens needs: the Issuer has one
// over its own keys, a Verifier one over keys it is given or fetches.
type resourceServer struct {
	issuer, audience, publicURL string
	leeway                      time.Duration
	maxSize                     int
	now                         func() time.Time
	keys                        atomic.Pointer[keySet]
	vcache                      *verifyCache // nil when disabled
	dpopSeen                    replayCache
	proofs                      ProofRecorder // shared replay detection, or nil
	nonces                      *nonceSource  // DPoP nonces; nil: not required
	// missingKid, if set, is called for a kid not in keys; it may refresh
	// the keys (rate-limited) and reports whether to look again.
	missingKid func(kid string) bool
}

func newResourceServer(issuer, audience, publicURL string, leeway time.Duration, maxSize, cacheSize int, now func() time.Time) *resourceServer {
	rs := &resourceServer{issuer: issuer, audience: audience, publicURL: publicURL, leeway: leeway, maxSize: maxSize, now: now}
	rs.vcache = newVerifyCache(cacheSize)
	rs.dpopSeen.window = dpopMaxAge + dpopMaxFuture + 2*leeway
	rs.dpopSeen.max, rs.dpopSeen.perKey = dpopReplaySize, dpopReplayPerKey
	return rs
}

// setKeys replaces the verification keys. Tokens cached as verified are
// forgotten, so that a key removed from the set stops verifying at once.
func (rs *resourceServer) setKeys(ks *keySet) {
	rs.keys.Store(ks)
	rs.vcache.clear()
}

// key returns the key a token's header selects, or nil.
func (rs *resourceServer) key(kid string, hasKid bool) *accessKey {
	ks := rs.keys.Load()
	if ks == nil {
		if rs.missingKid == nil || !rs.missingKid(kid) {
			return nil
		}
		if ks = rs.keys.Load(); ks == nil {
			return nil
		}
	}
	if !hasKid {
		return ks.single
	}
	if k := ks.byKid[kid]; k != nil {
		return k
	}
	if rs.missingKid != nil && rs.missingKid(kid) {
		if ks = rs.keys.Load(); ks != nil {
			return ks.byKid[kid]
		}
	}
	return nil
}

// verify runs every check on token but the session's, using the cache of
// verified tokens. The Claims returned are the caller's to keep and to
// change: the cache holds its own deep copy and hands out deep copies, so
// that what one request's handler does to its claims (Scope, Audience,
// Extra and what Extra holds) is not what the next request with the token
// sees (TestVuln12_CachedClaimsShared).
func (rs *resourceServer) verify(token string) (*Claims, error) {
	if cached := rs.vcache.get(token); cached != nil {
		// Seen and fully verified before: only time can have changed since.
		if err := rs.checkTimes(cached); err != nil {
			return nil, err
		}
		return cached.clone(), nil
	}
	c, err := rs.verifyAccess(token)
	if err != nil {
		return nil, err
	}
	if rs.vcache != nil {
		rs.vcache.put(token, c.clone())
	}
	return c, nil
}

// verifyAccess does every check of Verify but the session check.
func (rs *resourceServer) verifyAccess(token string) (*Claims, error) {
	if len(token) > rs.maxSize {
		return nil, tokenErr(ErrInvalidToken, "token too long")
	}
	if strings.HasPrefix(token, refreshPrefix) {
		return nil, tokenErr(ErrInvalidToken, "refresh token used as access token")
	}
	hdrB64, rest, ok := strings.Cut(token, ".")
	if !ok {
		return nil, tokenErr(ErrInvalidToken, "not a JWS compact serialization")
	}
	payB64, sigB64, ok := strings.Cut(rest, ".")
	if !ok || strings.IndexByte(sigB64, '.') >= 0 {
		return nil, tokenErr(ErrInvalidToken, "not a JWS compact serialization")
	}
	hdrJSON, err := decodeB64(hdrB64)
	if err != nil {
		return nil, tokenErr(ErrInvalidToken, "header is not base64url")
	}
	var alg, kid, typ string
	var hasKid, hasTyp, hasAlg bool
	err = walkObjectMax(hdrJSON, maxHeaderMembers, func(name []byte, v json.RawMessage) (err error) {
		switch string(name) {
		case "alg":
			alg, err = stringValue(v)
			hasAlg = true
		case "kid":
			kid, err = stringValue(v)
			hasKid = true
		case "typ":
			typ, err = stringValue(v)
			hasTyp = true
		case "crit":
			err = errors.New("crit")
		}
		return err
	})
	if err != nil {
		return nil, tokenErr(ErrInvalidToken, "bad header")
	}
	if !hasAlg || strings.EqualFold(alg, "none") {
		return nil, tokenErr(ErrInvalidToken, "alg none or missing")
	}
	k := rs.key(kid, hasKid)
	if k == nil {
		return nil, tokenErr(ErrInvalidToken, "unknown or missing kid")
	}
	if Algorithm(alg) != k.alg {
		return nil, tokenErr(ErrInvalidToken, "alg does not match the key")
	}
	if !hasTyp || !(strings.EqualFold(typ, "at+jwt") || strings.EqualFold(typ, "application/at+jwt")) {
		return nil, tokenErr(ErrInvalidToken, "typ is not at+jwt")
	}
	sig, err := decodeB64(sigB64)
	if err != nil {
		return nil, tokenErr(ErrInvalidToken, "signature is not base64url")
	}
	signed := token[:len(hdrB64)+1+len(payB64)]
	if !k.verifySig(signed, sig) {
		return nil, tokenErr(ErrInvalidToken, "bad signature")
	}
	payload, err := decodeB64(payB64)
	if err != nil {
		return nil, tokenErr(ErrInvalidToken, "payload is not base64url")
	}
	return rs.parseClaims(payload)
}

func (rs *resourceServer) parseClaims(payload []byte) (*Claims, error) {
	c := &Claims{}
	var hasExp, hasIat bool
	err := walkObject(payload, func(name []byte, v json.RawMessage) (err error) {
		switch string(name) {
		case "iss":
			c.Issuer, err = stringValue(v)
		case "sub":
			c.Subject, err = stringValue(v)
		case "jti":
			c.ID, err = stringValue(v)
		case "client_id":
			c.ClientID, err = stringValue(v)
		case "sid":
			c.SessionID, err = stringValue(v)
		case "scope":
			var s string
			s, err = stringValue(v)
			c.Scope = strings.Fields(s)
		case "aud":
			c.Audience, err = audienceValue(v)
		case "exp":
			c.ExpiresAt, err = numericDate(v)
			hasExp = true
		case "iat":
			c.IssuedAt, err = numericDate(v)
			hasIat = true
		case "nbf":
			c.NotBefore, err = numericDate(v)
		case "auth_time":
			c.AuthTime, err = numericDate(v)
		case "cnf":
			err = walkObject(v, func(name []byte, v json.RawMessage) (err error) {
				if string(name) == "jkt" {
					c.DPoPKey, err = stringValue(v)
				}
				return err
			})
		default:
			if c.Extra == nil {
				c.Extra = make(map[string]any)
			}
			var x any
			x, err = decodeJSON(v)
			c.Extra[string(name)] = x
		}
		return err
	})
	if err != nil {
		return nil, tokenErr(ErrInvalidToken, "bad claims")
	}
	switch {
	case c.Issuer != rs.issuer:
		return nil, tokenErr(ErrInvalidToken, "wrong issuer")
	case !slices.Contains(c.Audience, rs.audience):
		return nil, tokenErr(ErrInvalidToken, "wrong audience")
	case c.Subject == "" || c.ID == "" || !hasIat:
		return nil, tokenErr(ErrInvalidToken, "missing sub, jti or iat")
	case !hasExp:
		return nil, tokenErr(ErrInvalidToken, "missing exp")
	}
	if err := rs.checkTimes(c); err != nil {
		return nil, err
	}
	return c, nil
}

// checkTimes applies exp and nbf, with the leeway, at the current time.
func (rs *resourceServer) checkTimes(c *Claims) error {
	now := rs.now()
	if !now.Before(c.ExpiresAt.Add(rs.leeway)) {
		return tokenErr(ErrExpired, "access token expired")
	}
	if !c.NotBefore.IsZero() && now.Add(rs.leeway).Before(c.NotBefore) {
		return tokenErr(ErrInvalidToken, "token not valid yet")
	}
	return nil
}
