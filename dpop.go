package refresh

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwk"
)

// DPoP (RFC 9449) binds a session to a key the client holds: a stolen
// refresh token, or a stolen access token of that session, is useless
// without the private key.
//
// At login, verify the proof the client sent (Handlers.DPoPThumbprint does it
// for a request) and pass WithDPoP(thumbprint) to Issue. From then on every
// refresh must come with a proof signed by the same key, the access tokens
// carry cnf.jkt and token_type "DPoP", and the middleware requires a proof
// bound to each access token it admits.

const (
	// dpopMaxAge bounds how old (by its iat) a proof may be; a little
	// future skew is allowed too. Proofs are single-use within the window.
	dpopMaxAge     = time.Minute
	dpopMaxFuture  = 5 * time.Second
	dpopMaxJTI     = 256
	dpopMaxProof   = 4 << 10
	dpopReplaySize = 1 << 20
)

// DPoPProof is a verified DPoP proof.
type DPoPProof struct {
	Thumbprint string    // RFC 7638 SHA-256 thumbprint of the proof's key, base64url
	ID         string    // jti
	IssuedAt   time.Time // iat
}

// VerifyDPoPProof checks a DPoP proof JWT (RFC 9449 §4.3) sent with a
// request of the given method to the given URL (query and fragment are
// ignored). accessToken is the access token the proof accompanies, checked
// against the proof's ath claim, or "" at the token endpoint. It refuses,
// with an error wrapping ErrInvalidToken: anything but a compact JWS with
// typ "dpop+jwt"; a symmetric or unknown alg, or one that does not fit the
// embedded key; a jwk header that is missing, malformed or private; a bad
// signature; htm or htu that do not match the request; an iat more than a
// minute old or in the future; a jti seen before within that minute (per
// Issuer); a missing or wrong ath.
//
// VerifyDPoPProof is safe for concurrent use.
func (iss *Issuer) VerifyDPoPProof(proof, method, requestURL, accessToken string) (*DPoPProof, error) {
	bad := func(reason string) (*DPoPProof, error) {
		return nil, tokenErr(ErrInvalidToken, "DPoP proof: "+reason)
	}
	if len(proof) > dpopMaxProof {
		return bad("too long")
	}
	hdrB64, rest, ok := strings.Cut(proof, ".")
	payB64, sigB64, ok2 := strings.Cut(rest, ".")
	if !ok || !ok2 || strings.IndexByte(sigB64, '.') >= 0 {
		return bad("not a JWS compact serialization")
	}
	hdrJSON, err1 := b64.Strict().DecodeString(hdrB64)
	payload, err2 := b64.Strict().DecodeString(payB64)
	sig, err3 := b64.Strict().DecodeString(sigB64)
	if err1 != nil || err2 != nil || err3 != nil {
		return bad("not base64url")
	}
	var typ, alg string
	var jwkJSON json.RawMessage
	err := walkObject(hdrJSON, func(name []byte, v json.RawMessage) (err error) {
		switch string(name) {
		case "typ":
			typ, err = stringValue(v)
		case "alg":
			alg, err = stringValue(v)
		case "jwk":
			jwkJSON = v
		case "crit":
			err = errors.New("crit")
		}
		return err
	})
	if err != nil {
		return bad("bad header")
	}
	if !strings.EqualFold(typ, "dpop+jwt") {
		return bad("typ is not dpop+jwt")
	}
	switch Algorithm(alg) {
	case ES256, EdDSA, RS256, PS256:
	default:
		return bad("alg not allowed")
	}
	key, err := jwk.ParseKey(jwkJSON)
	if err != nil {
		return bad("bad jwk")
	}
	if private, err := jwk.IsPrivateKey(key); err != nil || private {
		return bad("jwk holds a private key")
	}
	var raw any
	if err := jwk.Export(key, &raw); err != nil {
		return bad("bad jwk")
	}
	ak, err := compileKey(Key{Algorithm: Algorithm(alg), Key: raw})
	if err != nil || ak.hmac || ak.sign != nil {
		return bad("alg does not fit the jwk")
	}
	if !ak.verifySig(proof[:len(hdrB64)+1+len(payB64)], sig) {
		return bad("bad signature")
	}

	var htm, htu, jti, ath string
	var iat time.Time
	var hasIat, hasAth bool
	err = walkObject(payload, func(name []byte, v json.RawMessage) (err error) {
		switch string(name) {
		case "htm":
			htm, err = stringValue(v)
		case "htu":
			htu, err = stringValue(v)
		case "jti":
			jti, err = stringValue(v)
		case "ath":
			ath, err = stringValue(v)
			hasAth = true
		case "iat":
			iat, err = numericDate(v)
			hasIat = true
		}
		return err
	})
	switch {
	case err != nil:
		return bad("bad claims")
	case jti == "" || len(jti) > dpopMaxJTI || !hasIat:
		return bad("missing jti or iat")
	case htm != method:
		return bad("htm does not match the request")
	case !sameURL(htu, requestURL):
		return bad("htu does not match the request")
	}
	now := iss.now()
	if iat.Before(now.Add(-dpopMaxAge-iss.cfg.Leeway)) || iat.After(now.Add(dpopMaxFuture+iss.cfg.Leeway)) {
		return bad("iat out of range")
	}
	if accessToken != "" {
		sum := sha256.Sum256([]byte(accessToken))
		if !hasAth || ath != b64.EncodeToString(sum[:]) {
			return bad("ath does not match the access token")
		}
	}
	if !iss.dpopSeen.add(ak.id+" "+jti, now) {
		return bad("replayed")
	}
	return &DPoPProof{Thumbprint: ak.id, ID: jti, IssuedAt: iat}, nil
}

// sameURL compares scheme, host and path, ignoring query and fragment and
// the case of scheme and host (RFC 9449 §4.3, item 9).
func sameURL(a, b string) bool {
	ua, err1 := url.Parse(a)
	ub, err2 := url.Parse(b)
	if err1 != nil || err2 != nil || ua.Host == "" {
		return false
	}
	return strings.EqualFold(ua.Scheme, ub.Scheme) && strings.EqualFold(ua.Host, ub.Host) &&
		ua.EscapedPath() == ub.EscapedPath() && ua.User == nil
}

// RequestURL is the URL a DPoP proof for r must name in htu: Config.PublicURL
// (scheme and host as clients see them, behind proxies) or, without it,
// the scheme of the connection and the Host header; then r's path.
func (iss *Issuer) RequestURL(r *http.Request) string {
	base := iss.cfg.PublicURL
	if base == "" {
		scheme := "http"
		if r.TLS != nil {
			scheme = "https"
		}
		base = scheme + "://" + r.Host
	}
	return strings.TrimRight(base, "/") + r.URL.EscapedPath()
}

// replayCache remembers (key, jti) pairs for the lifetime of a proof, in two
// generations that age out together, bounded in size.
type replayCache struct {
	window    time.Duration // how long a proof can be valid; set once
	mu        sync.Mutex    // guards the fields below
	cur, prev map[string]struct{}
	since     time.Time // when cur began
}

// add records id and reports whether it is new. When the cache is full, new
// proofs are refused rather than risk accepting a replay.
func (c *replayCache) add(id string, now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cur == nil || now.Sub(c.since) > c.window || now.Before(c.since) {
		c.prev, c.cur, c.since = c.cur, make(map[string]struct{}), now
	}
	if _, ok := c.cur[id]; ok {
		return false
	}
	if _, ok := c.prev[id]; ok {
		return false
	}
	if len(c.cur)+len(c.prev) >= dpopReplaySize {
		return false
	}
	c.cur[id] = struct{}{}
	return true
}
