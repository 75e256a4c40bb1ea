package refresh

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"hash"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws/jwsbb"
)

// Algorithm is a JWS signature algorithm for access tokens (RFC 7518).
type Algorithm string

// The supported algorithms. "none" is not one of them, and never will be.
const (
	HS256 Algorithm = "HS256" // HMAC SHA-256; secret of at least 32 bytes
	HS384 Algorithm = "HS384" // HMAC SHA-384; secret of at least 48 bytes
	HS512 Algorithm = "HS512" // HMAC SHA-512; secret of at least 64 bytes
	RS256 Algorithm = "RS256" // RSA PKCS#1 v1.5 SHA-256; RSA of at least 2048 bits
	PS256 Algorithm = "PS256" // RSA-PSS SHA-256; RSA of at least 2048 bits
	ES256 Algorithm = "ES256" // ECDSA P-256 SHA-256
	EdDSA Algorithm = "EdDSA" // Ed25519
)

// Key is a key that signs or verifies access tokens. Each key is bound to
// exactly one algorithm (RFC 8725 §3.1): a token whose header names another
// algorithm is refused. NewIssuer copies HMAC secrets; private keys must not
// be modified while an Issuer uses them.
//
// Key.Key holds the key material as a standard-library type:
//   - HS256/HS384/HS512: []byte, at least as long as the hash output;
//   - RS256/PS256: *rsa.PrivateKey, or *rsa.PublicKey to verify only;
//   - ES256: *ecdsa.PrivateKey or *ecdsa.PublicKey on P-256;
//   - EdDSA: ed25519.PrivateKey or ed25519.PublicKey.
//
// Use ParseJWK for keys held as JWK JSON.
type Key struct {
	// ID is the kid header. Empty means derived: the RFC 7638 thumbprint of
	// a public key, or a hash-based id for an HMAC secret.
	ID        string
	Algorithm Algorithm
	Key       any
}

// ParseJWK reads a key from its JWK JSON form (RFC 7517). The kid member
// becomes the key ID. The algorithm is the alg member; without one it is
// EdDSA for an Ed25519 key, ES256 for a P-256 key, RS256 for an RSA key and
// HS256 for a symmetric key.
func ParseJWK(data []byte) (Key, error) {
	k, err := jwk.ParseKey(data)
	if err != nil {
		return Key{}, fmt.Errorf("refresh: parse JWK: %w", err)
	}
	var raw any
	if err := jwk.Export(k, &raw); err != nil {
		return Key{}, fmt.Errorf("refresh: parse JWK: %w", err)
	}
	out := Key{Key: raw}
	out.ID, _ = k.KeyID()
	if a, ok := k.Algorithm(); ok {
		out.Algorithm = Algorithm(a.String())
	} else if out.Algorithm = defaultAlgorithm(raw); out.Algorithm == "" {
		return Key{}, fmt.Errorf("refresh: parse JWK: unsupported key type %T", raw)
	}
	if _, err := compileKey(out); err != nil {
		return Key{}, err
	}
	return out, nil
}

// ParseKeyPEM reads a key from PEM: a PKCS#8 private key ("PRIVATE KEY"), an
// SEC 1 EC private key ("EC PRIVATE KEY"), a PKCS#1 RSA private key ("RSA
// PRIVATE KEY") or a PKIX public key ("PUBLIC KEY", to verify only). The
// algorithm is EdDSA for Ed25519, ES256 for P-256 and RS256 for RSA; set
// Key.Algorithm to PS256 afterwards to use RSA-PSS. The key ID is left
// empty (derived from the key by NewIssuer) for the caller to set.
func ParseKeyPEM(data []byte) (Key, error) {
	block, rest := pem.Decode(data)
	if block == nil {
		return Key{}, errors.New("refresh: parse PEM: no PEM block")
	}
	if len(bytes.TrimSpace(rest)) > 0 {
		return Key{}, errors.New("refresh: parse PEM: more than one PEM block")
	}
	var raw any
	var err error
	switch block.Type {
	case "PRIVATE KEY":
		raw, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		raw, err = x509.ParseECPrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		raw, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case "PUBLIC KEY":
		raw, err = x509.ParsePKIXPublicKey(block.Bytes)
	default:
		return Key{}, fmt.Errorf("refresh: parse PEM: unsupported block type %q", block.Type)
	}
	if err != nil {
		return Key{}, fmt.Errorf("refresh: parse PEM: %w", err)
	}
	k := Key{Key: raw, Algorithm: defaultAlgorithm(raw)}
	if k.Algorithm == "" {
		return Key{}, fmt.Errorf("refresh: parse PEM: unsupported key type %T", raw)
	}
	if _, err := compileKey(k); err != nil {
		return Key{}, err
	}
	return k, nil
}

// defaultAlgorithm is the algorithm a key of raw's type gets when nothing
// names one, or "" for an unsupported type.
func defaultAlgorithm(raw any) Algorithm {
	switch raw.(type) {
	case ed25519.PrivateKey, ed25519.PublicKey:
		return EdDSA
	case *ecdsa.PrivateKey, *ecdsa.PublicKey:
		return ES256
	case *rsa.PrivateKey, *rsa.PublicKey:
		return RS256
	case []byte:
		return HS256
	}
	return ""
}

// accessKey is a Key checked and prepared for use.
type accessKey struct {
	id     string
	alg    Algorithm
	sign   any    // private key or secret; nil for a verify-only key
	verify any    // public key or secret
	header string // base64url of the protected header, for signing
	hmac   bool
	macs   *sync.Pool // of *hmacState keyed with the secret, for HS*
	jwk    jwk.Key    // public JWK for the JWKS document; nil for secrets
}

func compileKey(k Key) (*accessKey, error) {
	ak := &accessKey{id: k.ID, alg: k.Algorithm}
	bad := func(format string, args ...any) (*accessKey, error) {
		return nil, fmt.Errorf("refresh: key %q (%s): %s", k.ID, k.Algorithm, fmt.Sprintf(format, args...))
	}
	switch k.Algorithm {
	case HS256, HS384, HS512:
		secret, ok := k.Key.([]byte)
		if !ok {
			return bad("needs a []byte secret, got %T", k.Key)
		}
		min := map[Algorithm]int{HS256: 32, HS384: 48, HS512: 64}[k.Algorithm]
		if len(secret) < min {
			return bad("secret of %d bytes is under the %d bytes required", len(secret), min)
		}
		secret = slices.Clone(secret)
		ak.sign, ak.verify, ak.hmac = secret, secret, true
		h := map[Algorithm]func() hash.Hash{HS256: sha256.New, HS384: sha512.New384, HS512: sha512.New}[k.Algorithm]
		ak.macs = &sync.Pool{New: func() any { return &hmacState{h: hmac.New(h, secret)} }}
		if ak.id == "" {
			sum := sha256.Sum256(append([]byte("refresh/kid\x00"), secret...))
			ak.id = "hs-" + base64.RawURLEncoding.EncodeToString(sum[:9])
		}
	case RS256, PS256:
		switch key := k.Key.(type) {
		case *rsa.PrivateKey:
			ak.sign, ak.verify = key, &key.PublicKey
		case *rsa.PublicKey:
			ak.verify = key
		default:
			return bad("needs an *rsa.PrivateKey or *rsa.PublicKey, got %T", k.Key)
		}
		if n := ak.verify.(*rsa.PublicKey).N; n == nil || n.BitLen() < 2048 {
			return bad("RSA keys must have at least 2048 bits")
		}
	case ES256:
		switch key := k.Key.(type) {
		case *ecdsa.PrivateKey:
			ak.sign, ak.verify = key, &key.PublicKey
		case *ecdsa.PublicKey:
			ak.verify = key
		default:
			return bad("needs an *ecdsa.PrivateKey or *ecdsa.PublicKey, got %T", k.Key)
		}
		if ak.verify.(*ecdsa.PublicKey).Curve != elliptic.P256() {
			return bad("ES256 needs a P-256 key")
		}
	case EdDSA:
		switch key := k.Key.(type) {
		case ed25519.PrivateKey:
			if len(key) != ed25519.PrivateKeySize {
				return bad("bad Ed25519 private key length %d", len(key))
			}
			ak.sign, ak.verify = key, key.Public()
		case ed25519.PublicKey:
			if len(key) != ed25519.PublicKeySize {
				return bad("bad Ed25519 public key length %d", len(key))
			}
			ak.verify = key
		default:
			return bad("needs an ed25519.PrivateKey or ed25519.PublicKey, got %T", k.Key)
		}
	case "":
		return bad("no algorithm: every key must name exactly one")
	default:
		return bad("unsupported algorithm")
	}
	if !ak.hmac {
		pub, err := jwk.Import(ak.verify)
		if err != nil {
			return bad("%v", err)
		}
		if ak.id == "" {
			tp, err := pub.Thumbprint(crypto.SHA256)
			if err != nil {
				return bad("%v", err)
			}
			ak.id = base64.RawURLEncoding.EncodeToString(tp)
		}
		for name, v := range map[string]any{jwk.KeyIDKey: ak.id, jwk.AlgorithmKey: string(ak.alg), jwk.KeyUsageKey: "sig"} {
			if err := pub.Set(name, v); err != nil {
				return bad("%v", err)
			}
		}
		ak.jwk = pub
	}
	hdr := appendString([]byte(`{"alg":`), string(ak.alg))
	hdr = appendString(append(hdr, `,"kid":`...), ak.id)
	hdr = append(hdr, `,"typ":"at+jwt"}`...)
	ak.header = base64.RawURLEncoding.EncodeToString(hdr)
	return ak, nil
}

// Claims are the claims of a verified access token (RFC 9068 §2.2).
// Treat a returned Claims as read-only: the slices and the map in it may be
// shared with other calls of Verify for the same token (see
// Config.VerifyCacheSize).
type Claims struct {
	Issuer    string    // iss
	Subject   string    // sub
	Audience  []string  // aud
	ExpiresAt time.Time // exp
	IssuedAt  time.Time // iat
	NotBefore time.Time // nbf; zero when absent
	ID        string    // jti, unique per token
	ClientID  string    // client_id
	SessionID string    // sid: the session (token family) the token belongs to
	Scope     []string  // scope, split on spaces
	// DPoPKey is cnf.jkt: the thumbprint of the DPoP key the token is bound
	// to (RFC 9449 §6.1), or "" for a bearer token.
	DPoPKey string
	// Extra holds the application's own claims, decoded by encoding/json.
	Extra map[string]any
}

// HasScope reports whether the token was granted scope.
func (c *Claims) HasScope(scope string) bool { return slices.Contains(c.Scope, scope) }

// Roles returns the strings of the "roles" claim (an array of strings or a
// single string), or of the "role" claim when there is no "roles".
func (c *Claims) Roles() []string {
	v, ok := c.Extra["roles"]
	if !ok {
		v = c.Extra["role"]
	}
	switch r := v.(type) {
	case string:
		return []string{r}
	case []any:
		out := make([]string, 0, len(r))
		for _, x := range r {
			if s, ok := x.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

// HasRole reports whether role is among Roles.
func (c *Claims) HasRole(role string) bool { return slices.Contains(c.Roles(), role) }

// reservedClaims may not be set by the application: the Issuer writes them.
var reservedClaims = map[string]bool{
	"iss": true, "sub": true, "aud": true, "exp": true, "nbf": true, "iat": true,
	"jti": true, "client_id": true, "sid": true, "scope": true, "cnf": true,
}

// encodeClaims validates application claims and returns them as a JSON
// object, or nil when there are none.
func encodeClaims(m map[string]any) ([]byte, error) {
	if len(m) == 0 {
		return nil, nil
	}
	for name := range m {
		if reservedClaims[name] {
			return nil, fmt.Errorf("refresh: claim %q is reserved and set by the Issuer", name)
		}
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("refresh: claims: %w", err)
	}
	return b, nil
}

var b64 = base64.RawURLEncoding

// accessInput is what one access token says.
type accessInput struct {
	subject, clientID, sessionID string
	scope                        []string
	claims                       []byte // JSON object or nil
	jkt                          string // DPoP key thumbprint, or ""
}

// signAccess mints an access token. The claims JSON is appended directly,
// without reflection; the header is encoded once per key.
func (iss *Issuer) signAccess(in *accessInput, now time.Time) (string, time.Time, error) {
	k := iss.signer
	exp := now.Add(iss.cfg.AccessTTL).Unix()
	var jti [16]byte
	_, _ = rand.Read(jti[:])

	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	p := (*bp)[:0]
	p = append(p, `{"iss":`...)
	p = appendString(p, iss.cfg.Issuer)
	p = appendMember(p, "sub", in.subject)
	p = appendMember(p, "aud", iss.cfg.Audience)
	p = appendIntMember(p, "exp", exp)
	p = appendIntMember(p, "iat", now.Unix())
	p = append(p, `,"jti":"`...)
	p = b64.AppendEncode(p, jti[:])
	p = append(p, '"')
	clientID := in.clientID
	if clientID == "" {
		clientID = iss.cfg.ClientID
	}
	p = appendMember(p, "client_id", clientID)
	p = appendMember(p, "sid", in.sessionID)
	if len(in.scope) > 0 {
		p = append(p, `,"scope":"`...)
		for i, sc := range in.scope {
			if i > 0 {
				p = append(p, ' ')
			}
			p = appendEscaped(p, sc)
		}
		p = append(p, '"')
	}
	if in.jkt != "" {
		p = append(p, `,"cnf":{"jkt":`...)
		p = appendString(p, in.jkt)
		p = append(p, '}')
	}
	if len(in.claims) > 2 { // more than "{}"
		p = append(p, ',')
		p = append(p, in.claims[1:]...) // members and the closing brace
	} else {
		p = append(p, '}')
	}
	// The token is assembled after the payload in the same buffer.
	start := len(p)
	tok := append(p, k.header...)
	tok = append(tok, '.')
	tok = b64.AppendEncode(tok, p[:start])
	signed := tok[start:]
	if k.hmac {
		m := k.macs.Get().(*hmacState)
		m.h.Reset()
		m.h.Write(signed)
		tok = append(tok, '.')
		tok = b64.AppendEncode(tok, m.h.Sum(m.sum[:0]))
		k.macs.Put(m)
	} else {
		sig, err := jwsbb.Sign(k.sign, string(k.alg), signed, nil)
		if err != nil {
			return "", time.Time{}, fmt.Errorf("refresh: sign access token: %w", err)
		}
		tok = append(tok, '.')
		tok = b64.AppendEncode(tok, sig)
	}
	*bp = tok
	return string(tok[start:]), time.Unix(exp, 0).In(now.Location()), nil
}

// bufPool holds scratch buffers for minting access tokens.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// Verify checks an access token and returns its claims. It refuses, with an
// error wrapping ErrInvalidToken (or ErrExpired, ErrRevoked):
//   - tokens longer than Config.MaxTokenSize, before any parsing;
//   - anything but a three-part JWS compact serialization in canonical
//     base64url, and headers or claims with duplicate members;
//   - alg "none" and every algorithm other than the selected key's; an
//     unknown kid, or no kid when several keys exist; any crit header;
//     jku, x5u, jwk and x5c headers are ignored, never fetched;
//   - typ other than "at+jwt" or "application/at+jwt" (case-insensitive);
//   - a bad signature; iss other than Config.Issuer; aud without
//     Config.Audience; missing sub, iat or jti;
//   - missing or passed exp, nbf in the future (both with Config.Leeway);
//   - with Config.CheckSession, a token whose session is revoked, expired or
//     gone (ErrRevoked).
//
// Verify is safe for concurrent use.
func (iss *Issuer) Verify(ctx context.Context, token string) (*Claims, error) {
	var c *Claims
	if cached := iss.vcache.get(token); cached != nil {
		// Seen and fully verified before: only time and session can have
		// changed since.
		if err := iss.checkTimes(cached); err != nil {
			return nil, err
		}
		cp := *cached
		c = &cp
	} else {
		var err error
		if c, err = iss.verifyAccess(token); err != nil {
			return nil, err
		}
		iss.vcache.put(token, c)
		cp := *c
		c = &cp
	}
	if iss.cfg.CheckSession {
		if err := iss.checkSession(ctx, c.SessionID); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// verifyAccess does every check of Verify but the session check.
func (iss *Issuer) verifyAccess(token string) (*Claims, error) {
	if len(token) > iss.cfg.MaxTokenSize {
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
	hdrJSON, err := b64.Strict().DecodeString(hdrB64)
	if err != nil {
		return nil, tokenErr(ErrInvalidToken, "header is not base64url")
	}
	var alg, kid, typ string
	var hasKid, hasTyp, hasAlg bool
	err = walkObject(hdrJSON, func(name []byte, v json.RawMessage) (err error) {
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
	var k *accessKey
	switch {
	case hasKid:
		k = iss.keys[kid]
	case len(iss.keys) == 1:
		k = iss.signer
	}
	if k == nil {
		return nil, tokenErr(ErrInvalidToken, "unknown or missing kid")
	}
	if Algorithm(alg) != k.alg {
		return nil, tokenErr(ErrInvalidToken, "alg does not match the key")
	}
	if !hasTyp || !(strings.EqualFold(typ, "at+jwt") || strings.EqualFold(typ, "application/at+jwt")) {
		return nil, tokenErr(ErrInvalidToken, "typ is not at+jwt")
	}
	sig, err := b64.Strict().DecodeString(sigB64)
	if err != nil {
		return nil, tokenErr(ErrInvalidToken, "signature is not base64url")
	}
	signed := token[:len(hdrB64)+1+len(payB64)]
	if !k.verifySig(signed, sig) {
		return nil, tokenErr(ErrInvalidToken, "bad signature")
	}
	payload, err := b64.Strict().DecodeString(payB64)
	if err != nil {
		return nil, tokenErr(ErrInvalidToken, "payload is not base64url")
	}
	return iss.parseClaims(payload)
}

// verifySig checks a JWS signature over signed with the key.
func (k *accessKey) verifySig(signed string, sig []byte) bool {
	if pub, ok := k.verify.(ed25519.PublicKey); ok {
		// Straight to the primitive: jwsbb's key conversion costs more than
		// the 10% over ed25519.Verify that the benchmarks allow.
		return len(sig) == ed25519.SignatureSize && ed25519.Verify(pub, []byte(signed), sig)
	}
	if !k.hmac {
		return jwsbb.Verify(k.verify, string(k.alg), []byte(signed), sig) == nil
	}
	m := k.macs.Get().(*hmacState)
	m.h.Reset()
	_, _ = io.WriteString(m.h, signed)
	ok := hmac.Equal(m.h.Sum(m.sum[:0]), sig)
	k.macs.Put(m)
	return ok
}

// hmacState is a keyed HMAC with room for its sum, pooled per key so that
// signing and verifying HS* tokens allocate nothing for the MAC.
type hmacState struct {
	h   hash.Hash
	sum [sha512.Size]byte
}

func (iss *Issuer) parseClaims(payload []byte) (*Claims, error) {
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
			err = json.Unmarshal(v, &x)
			c.Extra[string(name)] = x
		}
		return err
	})
	if err != nil {
		return nil, tokenErr(ErrInvalidToken, "bad claims")
	}
	switch {
	case c.Issuer != iss.cfg.Issuer:
		return nil, tokenErr(ErrInvalidToken, "wrong issuer")
	case !slices.Contains(c.Audience, iss.cfg.Audience):
		return nil, tokenErr(ErrInvalidToken, "wrong audience")
	case c.Subject == "" || c.ID == "" || !hasIat:
		return nil, tokenErr(ErrInvalidToken, "missing sub, jti or iat")
	case !hasExp:
		return nil, tokenErr(ErrInvalidToken, "missing exp")
	}
	if err := iss.checkTimes(c); err != nil {
		return nil, err
	}
	return c, nil
}

// checkTimes applies exp and nbf, with the leeway, at the current time.
func (iss *Issuer) checkTimes(c *Claims) error {
	now := iss.now()
	if !now.Before(c.ExpiresAt.Add(iss.cfg.Leeway)) {
		return tokenErr(ErrExpired, "access token expired")
	}
	if !c.NotBefore.IsZero() && now.Add(iss.cfg.Leeway).Before(c.NotBefore) {
		return tokenErr(ErrInvalidToken, "token not valid yet")
	}
	return nil
}

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

func audienceValue(v json.RawMessage) ([]string, error) {
	if len(v) > 0 && v[0] == '"' {
		s, err := stringValue(v)
		return []string{s}, err
	}
	if len(v) == 0 || v[0] != '[' {
		return nil, errors.New("aud is neither string nor array")
	}
	var out []string
	err := json.Unmarshal(v, &out)
	return out, err
}

// maxNumericDate is 9999-12-31T23:59:59Z; later dates are refused.
const maxNumericDate = 253402300799

// numericDate decodes a NumericDate (RFC 7519 §2): a non-negative JSON
// number of seconds, possibly fractional. Strings, negatives and values
// past year 9999 are refused.
func numericDate(v json.RawMessage) (time.Time, error) {
	if len(v) == 0 || v[0] < '0' || v[0] > '9' {
		return time.Time{}, errors.New("NumericDate is not a non-negative number")
	}
	f, err := strconv.ParseFloat(string(v), 64)
	if err != nil || f > maxNumericDate || math.IsNaN(f) {
		return time.Time{}, errors.New("bad NumericDate")
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)), nil
}

// JWKS returns the JSON Web Key Set (RFC 7517 §5) of the public keys of the
// asymmetric keys in Config.Keys, for resource servers that verify access
// tokens themselves. It never contains private members or HMAC secrets. The
// returned slice is a fresh copy.
func (iss *Issuer) JWKS() []byte { return slices.Clone(iss.jwks) }

func buildJWKS(keys []*accessKey) ([]byte, error) {
	set := jwk.NewSet()
	for _, k := range keys {
		if k.jwk != nil {
			if err := set.AddKey(k.jwk); err != nil {
				return nil, err
			}
		}
	}
	return json.Marshal(set)
}
