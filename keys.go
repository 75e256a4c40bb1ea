package refresh

// Key handling: the algorithms, Key and how keys are read (ParseJWK,
// ParseKeyPEM), checked and prepared (compileKey), how a prepared key checks
// a signature, and the JWKS document. Signing access tokens is in token.go,
// verifying them in verify.go.

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
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
	"slices"
	"sync"

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

// compileKeys compiles keys, refusing duplicate ids.
func compileKeys(keys []Key) ([]*accessKey, error) {
	out := make([]*accessKey, 0, len(keys))
	seen := make(map[string]bool, len(keys))
	for _, k := range keys {
		ak, err := compileKey(k)
		if err != nil {
			return nil, err
		}
		if seen[ak.id] {
			return nil, fmt.Errorf("refresh: duplicate key id %q", ak.id)
		}
		seen[ak.id] = true
		out = append(out, ak)
	}
	return out, nil
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
	// The HMAC has no WriteString: io.WriteString would copy signed to a
	// new slice. sum is free until Sum, so signed goes through it.
	for s := signed; len(s) > 0; {
		n := copy(m.sum[:], s)
		m.h.Write(m.sum[:n])
		s = s[n:]
	}
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
