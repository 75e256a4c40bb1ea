package refresh

import (
	"context"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strconv"
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
	dpopMaxRSABits = 4096
	dpopMaxRSAExp  = 1<<32 - 1
)

// The replay cache's bounds (see replayCache). Only proofs that came with a
// request already authenticated by a refresh token's MAC or an access
// token's signature, and made with the key that token is bound to, are ever
// recorded, so an unauthenticated flood adds nothing to it.
const (
	dpopReplaySize   = 1 << 20 // proofs remembered at once, all keys
	dpopReplayPerKey = 1 << 14 // proofs remembered at once for one key
)

// DPoPProof is a verified DPoP proof.
//
// A DPoPProof made by VerifyDPoPProof is single-use once it is consumed:
// given with WithDPoPProof to Issue, Rotate or Revoke, or checked by the
// middleware, its jti is recorded and any later use of the same proof with
// the same key is refused as a replay. A DPoPProof built by hand is refused
// by those calls. It is a plain value, safe to read from several goroutines.
type DPoPProof struct {
	Thumbprint string    // RFC 7638 SHA-256 thumbprint of the proof's key, base64url
	ID         string    // jti
	IssuedAt   time.Time // iat
	Nonce      string    // nonce, "" if the proof has none (see Config.DPoPNonceLifetime)
	verified   bool
	renewNonce bool // its nonce is of the previous slot: send the current one
}

// sameURL reports whether two URLs name the same resource, ignoring query
// and fragment (RFC 9449 §4.3, item 9), after the normalizations it asks
// servers to apply (RFC 3986 §6.2.2 and §6.2.3): the case of scheme and
// host, the scheme's default port, an empty path as "/", and
// percent-encoding (the case of its hex digits; unreserved characters
// encoded or not). Encoded reserved characters stay distinct: /a%2Fb is
// not /a/b. A URL with user information never matches.
func sameURL(a, b string) bool {
	na, ok1 := normURL(a)
	nb, ok2 := normURL(b)
	return ok1 && ok2 && na == nb
}

// normURL returns scheme://host/path of s, normalized as sameURL says.
func normURL(s string) (string, bool) {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || u.User != nil {
		return "", false
	}
	scheme, host := strings.ToLower(u.Scheme), strings.ToLower(u.Host)
	switch {
	case scheme == "https" && strings.HasSuffix(host, ":443"):
		host = strings.TrimSuffix(host, ":443")
	case scheme == "http" && strings.HasSuffix(host, ":80"):
		host = strings.TrimSuffix(host, ":80")
	}
	p := u.EscapedPath()
	if p == "" {
		p = "/"
	}
	var b strings.Builder
	b.Grow(len(scheme) + 3 + len(host) + len(p))
	b.WriteString(scheme)
	b.WriteString("://")
	b.WriteString(host)
	for i := 0; i < len(p); i++ {
		if p[i] != '%' || i+2 >= len(p) {
			b.WriteByte(p[i])
			continue
		}
		v, err := strconv.ParseUint(p[i+1:i+3], 16, 8)
		if err != nil {
			return "", false
		}
		if c := byte(v); 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~' {
			b.WriteByte(c) // unreserved: encoding it changes nothing
		} else {
			b.WriteString(strings.ToUpper(p[i : i+3]))
		}
		i += 2
	}
	return b.String(), true
}

// replayCache remembers the proofs (key thumbprint, jti) consumed within
// the lifetime of a proof, in two generations that age out together. An
// entry is a 16-byte hash, so a full cache holds dpopReplaySize entries of
// well under 64 bytes each; a key may hold at most dpopReplayPerKey of them,
// so that one client flooding with its own authenticated requests cannot
// lock out the others. When a bound is reached new proofs are refused
// (never forgotten early), so no replay is ever accepted.
type replayCache struct {
	window    time.Duration // how long a proof can be valid; set once
	max       int           // dpopReplaySize unless a test lowers it; set once
	perKey    int           // dpopReplayPerKey unless a test lowers it; set once
	mu        sync.Mutex    // guards the fields below
	cur, prev replayGen
	since     time.Time // when cur began
}

type replayGen struct {
	seen   map[[16]byte]struct{}
	perKey map[string]int // entries per key thumbprint
}

type replayVerdict int

const (
	replayNew replayVerdict = iota
	replaySeen
	replayFull
)

// add records the proof jti of the key thumbprint.
func (c *replayCache) add(thumbprint, jti string, now time.Time) replayVerdict {
	h := sha256.New()
	h.Write([]byte(thumbprint))
	h.Write([]byte{0})
	h.Write([]byte(jti))
	var id [16]byte
	copy(id[:], h.Sum(nil))

	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cur.seen == nil || now.Sub(c.since) > c.window || now.Before(c.since) {
		c.prev = c.cur
		c.cur = replayGen{seen: make(map[[16]byte]struct{}), perKey: make(map[string]int)}
		c.since = now
	}
	if _, ok := c.cur.seen[id]; ok {
		return replaySeen
	}
	if _, ok := c.prev.seen[id]; ok {
		return replaySeen
	}
	if len(c.cur.seen)+len(c.prev.seen) >= c.max || c.cur.perKey[thumbprint]+c.prev.perKey[thumbprint] >= c.perKey {
		return replayFull
	}
	c.cur.seen[id] = struct{}{}
	c.cur.perKey[thumbprint]++
	return replayNew
}

// dpopAlgorithms are the proof algorithms VerifyDPoPProof accepts: the
// asymmetric ones (a proof's key is public, so HMAC cannot prove anything).
var dpopAlgorithms = []Algorithm{ES256, EdDSA, RS256, PS256}

// dpopAlgs is dpopAlgorithms for the algs parameter of a DPoP challenge.
var dpopAlgs = func() string {
	var s []string
	for _, a := range dpopAlgorithms {
		s = append(s, string(a))
	}
	return strings.Join(s, " ")
}()

// VerifyDPoPProof checks a DPoP proof JWT (RFC 9449 §4.3) sent with a
// request of the given method to the given URL (query and fragment are
// ignored). accessToken is the access token the proof accompanies, checked
// against the proof's ath claim, or "" at the token endpoint. It refuses,
// with an error wrapping ErrInvalidToken: anything but a compact JWS with
// typ "dpop+jwt"; a symmetric or unknown alg, or one that does not fit the
// embedded key; a jwk header that is missing, malformed or private; a bad
// signature; htm or htu that do not match the request; an iat more than a
// minute old or in the future; a missing or wrong ath; an RSA key under 2048
// or over 4096 bits or with an exponent over 2^32-1. With
// Config.DPoPNonceLifetime it also refuses a proof without a current
// nonce, with an error that wraps ErrUseDPoPNonce too: answer it with the
// nonce of Handlers.DPoPNonce, and the client retries with it.
//
// VerifyDPoPProof does not record the proof: anyone can make a valid proof
// with a key of their own, so remembering proofs before the request is
// otherwise authenticated would let an unauthenticated client fill the
// replay cache. Pass the proof to Issue, Rotate or Revoke with
// WithDPoPProof, which consume it once the request has proved the session
// (see DPoPProof). It is safe for concurrent use.
func (iss *Issuer) VerifyDPoPProof(proof, method, requestURL, accessToken string) (*DPoPProof, error) {
	return iss.rs.verifyDPoPProof(proof, method, requestURL, accessToken)
}

// RequestURL is the URL a DPoP proof for r must name in htu: Config.PublicURL
// (scheme and host as clients see them, behind proxies) or, without it,
// the scheme of the connection and the Host header; then r's path.
func (iss *Issuer) RequestURL(r *http.Request) string { return iss.rs.requestURL(r) }

func (rs *resourceServer) verifyDPoPProof(proof, method, requestURL, accessToken string) (*DPoPProof, error) {
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
	hdrJSON, err1 := decodeB64(hdrB64)
	payload, err2 := decodeB64(payB64)
	sig, err3 := decodeB64(sigB64)
	if err1 != nil || err2 != nil || err3 != nil {
		return bad("not base64url")
	}
	var typ, alg string
	var jwkJSON json.RawMessage
	err := walkObjectMax(hdrJSON, maxHeaderMembers, func(name []byte, v json.RawMessage) (err error) {
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
	if !slices.Contains(dpopAlgorithms, Algorithm(alg)) {
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
	if pub, ok := raw.(*rsa.PublicKey); ok {
		// Bound the work an unauthenticated proof can cause: verification
		// costs grow with the modulus and the exponent.
		if pub.N == nil || pub.N.BitLen() > dpopMaxRSABits || pub.E < 3 || pub.E > dpopMaxRSAExp {
			return bad("RSA key size or exponent out of range")
		}
	}
	ak, err := compileKey(Key{Algorithm: Algorithm(alg), Key: raw})
	if err != nil || ak.hmac || ak.sign != nil {
		return bad("alg does not fit the jwk")
	}
	if !ak.verifySig(proof[:len(hdrB64)+1+len(payB64)], sig) {
		return bad("bad signature")
	}

	var htm, htu, jti, ath, nonce string
	var iat time.Time
	var hasIat, hasAth bool
	err = walkObjectMax(payload, maxHeaderMembers, func(name []byte, v json.RawMessage) (err error) {
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
		case "nonce":
			nonce, err = stringValue(v)
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
	case len(nonce) > dpopMaxJTI:
		return bad("nonce too long")
	case htm != method:
		return bad("htm does not match the request")
	case !sameURL(htu, requestURL):
		return bad("htu does not match the request")
	}
	now := rs.now()
	if iat.Before(now.Add(-dpopMaxAge-rs.leeway)) || iat.After(now.Add(dpopMaxFuture+rs.leeway)) {
		return bad("iat out of range")
	}
	if accessToken != "" {
		sum := sha256.Sum256([]byte(accessToken))
		if !hasAth || ath != b64.EncodeToString(sum[:]) {
			return bad("ath does not match the access token")
		}
	}
	p := &DPoPProof{Thumbprint: ak.id, ID: jti, IssuedAt: iat, Nonce: nonce, verified: true}
	// The nonce last: a proof that fails anything else is answered for
	// that, and a nonce is handed out only for a proof otherwise good.
	if err := rs.nonces.check(p); err != nil {
		return nil, err
	}
	return p, nil
}

// consumeDPoP records a verified proof whose key the request has shown to be
// the session's, refusing one seen before. Call it only once the request is
// authenticated (a refresh token's MAC, an access token's signature, or the
// application's login check before Issue).
//
// The in-process cache answers first (and bounds each key); with a store
// that is a ProofRecorder the proof is then recorded there too, so that a
// replay to another instance is refused. A store failure is a system
// fault, not the client's.
func (rs *resourceServer) consumeDPoP(ctx context.Context, p *DPoPProof) error {
	if p == nil || !p.verified {
		return tokenErr(ErrInvalidToken, "DPoP proof not verified by VerifyDPoPProof")
	}
	now := rs.now()
	switch rs.dpopSeen.add(p.Thumbprint, p.ID, now) {
	case replayNew:
	case replaySeen:
		return tokenErr(ErrInvalidToken, "DPoP proof replayed")
	default:
		return tokenErr(ErrInvalidToken, "too many DPoP proofs for this key; retry shortly")
	}
	if rs.proofs == nil {
		return nil
	}
	err := rs.proofs.RecordProof(ctx, proofRecordID(p), now, now.Add(rs.dpopSeen.window))
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrProofReplayed):
		return tokenErr(ErrInvalidToken, "DPoP proof replayed (seen by another instance)")
	default:
		return storeErr("record proof", err)
	}
}

// proofRecordID names a proof in a ProofRecorder: its key and jti, hashed
// to a fixed 43 characters.
func proofRecordID(p *DPoPProof) string {
	sum := sha256.Sum256([]byte(p.Thumbprint + "\x00" + p.ID))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

func (rs *resourceServer) requestURL(r *http.Request) string {
	base := rs.publicURL
	if base == "" {
		scheme := "http"
		if r.TLS != nil {
			scheme = "https"
		}
		base = scheme + "://" + r.Host
	}
	return strings.TrimRight(base, "/") + r.URL.EscapedPath()
}
