package refresh_test

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/refreshkit/refresh"
	"github.com/refreshkit/refresh/refreshtest"
)

func benchKeys() map[string]refresh.Key {
	return map[string]refresh.Key{
		"HS256": {ID: "k", Algorithm: refresh.HS256, Key: hsSecret},
		"ES256": {ID: "k", Algorithm: refresh.ES256, Key: ecKey},
		"EdDSA": {ID: "k", Algorithm: refresh.EdDSA, Key: edKey},
	}
}

func BenchmarkIssue(b *testing.B) {
	for name, key := range benchKeys() {
		b.Run(name, func(b *testing.B) {
			e := newBenchEnv(b, func(c *refresh.Config) { c.Keys = []refresh.Key{key} })
			b.ReportAllocs()
			for b.Loop() {
				if _, err := e.iss.Issue(bg, "alice", refresh.WithScope("read")); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkRotate measures one refresh: verify the refresh token, advance the
// session in the memory store, mint the successor and a new access token.
func BenchmarkRotate(b *testing.B) {
	for name, key := range benchKeys() {
		b.Run(name, func(b *testing.B) {
			e := newBenchEnv(b, func(c *refresh.Config) { c.Keys = []refresh.Key{key} })
			p := e.issue(b, "alice", refresh.WithScope("read"))
			tok := p.RefreshToken
			b.ReportAllocs()
			for b.Loop() {
				p, err := e.iss.Rotate(bg, tok)
				if err != nil {
					b.Fatal(err)
				}
				tok = p.RefreshToken
			}
		})
	}
}

// BenchmarkRotateParallel rotates independent sessions from every P.
func BenchmarkRotateParallel(b *testing.B) {
	e := newBenchEnv(b)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		tok := e.issue(b, "alice").RefreshToken
		for pb.Next() {
			p, err := e.iss.Rotate(bg, tok)
			if err != nil {
				b.Error(err)
				return
			}
			tok = p.RefreshToken
		}
	})
}

func BenchmarkVerify(b *testing.B) {
	for name, key := range benchKeys() {
		b.Run(name, func(b *testing.B) {
			e := newBenchEnv(b, func(c *refresh.Config) { c.Keys = []refresh.Key{key} })
			tok := e.issue(b, "alice", refresh.WithScope("read")).AccessToken
			b.ReportAllocs()
			for b.Loop() {
				if _, err := e.iss.Verify(bg, tok); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkVerifyParallel verifies a token seen before (the cache's path,
// what a busy resource server does most) from every P, each its own user's
// token; compare ns/op with BenchmarkVerify/HS256 for the speed-up.
func BenchmarkVerifyParallel(b *testing.B) {
	e := newBenchEnv(b)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		tok := e.issue(b, "alice").AccessToken
		for pb.Next() {
			if _, err := e.iss.Verify(bg, tok); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// The floor: the raw primitives each operation needs at least once.
func BenchmarkPrimitive(b *testing.B) {
	msg := make([]byte, 300)
	_, _ = rand.Read(msg)
	b.Run("HMAC-SHA256-300B", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			m := hmac.New(sha256.New, hsSecret)
			m.Write(msg)
			m.Sum(nil)
		}
	})
	sig := ed25519.Sign(edKey, msg)
	b.Run("Ed25519-Sign", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			ed25519.Sign(edKey, msg)
		}
	})
	b.Run("Ed25519-Verify", func(b *testing.B) {
		b.ReportAllocs()
		pub := edKey.Public().(ed25519.PublicKey)
		for b.Loop() {
			ed25519.Verify(pub, msg, sig)
		}
	})
	h := sha256.Sum256(msg)
	esig, _ := ecdsa.SignASN1(rand.Reader, ecKey, h[:])
	b.Run("ECDSA-P256-Sign", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, _ = ecdsa.SignASN1(rand.Reader, ecKey, h[:])
		}
	})
	b.Run("ECDSA-P256-Verify", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			ecdsa.VerifyASN1(&ecKey.PublicKey, h[:], esig)
		}
	})
}

// BenchmarkWorstCase compares what an unauthenticated attacker can make one
// request cost with what a valid request costs (issue 9, item 7): the
// largest header Verify parses before the signature check against a valid
// EdDSA token (verify cache off), and a DPoP proof with the largest RSA key
// and exponent allowed against an ES256 proof. BENCHMARKS.md has the ratios.
func BenchmarkWorstCase(b *testing.B) {
	e := newBenchEnv(b, func(c *refresh.Config) {
		c.Keys = []refresh.Key{{ID: "k", Algorithm: refresh.EdDSA, Key: edKey}}
		c.VerifyCacheSize = -1
	})
	valid := e.issue(b, "alice").AccessToken
	// 31 members of ~190 bytes: the most members a header may hold, in a
	// token just under the 8 KiB size limit.
	h := map[string]any{"alg": "EdDSA", "kid": "k", "typ": "at+jwt"}
	for i := range 28 {
		h[fmt.Sprintf("x%02d", i)] = strings.Repeat("a", 180)
	}
	worst := b64json(h) + "." + b64json(e.goodClaims()) + "." + strings.Repeat("A", 86)
	if _, err := e.iss.Verify(bg, worst); err == nil || !strings.Contains(err.Error(), "bad signature") || len(worst) > refresh.DefaultMaxTokenSize {
		b.Fatalf("the forged token (%d bytes) must reach the signature check: %v", len(worst), err)
	}
	b.Run("Verify/valid-EdDSA", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := e.iss.Verify(bg, valid); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Verify/largest-header", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, _ = e.iss.Verify(bg, worst)
		}
	})

	const u = "https://api.example.com/me"
	ec := newBenchDPoPKey(b)
	p1, _ := rand.Prime(rand.Reader, 2048)
	p2, _ := rand.Prime(rand.Reader, 2048)
	big4096 := &rsa.PublicKey{N: new(big.Int).Mul(p1, p2), E: 1<<32 - 1}
	k, err := jwk.Import(big4096)
	if err != nil {
		b.Fatal(err)
	}
	hd := map[string]any{"typ": "dpop+jwt", "alg": "RS256", "jwk": k}
	cl := map[string]any{"jti": "x", "htm": "GET", "htu": u, "iat": e.clock.Now().Unix()}
	sig := make([]byte, 512)
	sig[0], sig[511] = 1, 1
	rsaProof := b64json(hd) + "." + b64json(cl) + "." + base64.RawURLEncoding.EncodeToString(sig)
	if _, err := e.iss.VerifyDPoPProof(rsaProof, "GET", u, ""); err == nil || !strings.Contains(err.Error(), "bad signature") {
		b.Fatalf("the RSA proof must reach the signature check: %v", err)
	}
	b.Run("DPoP/valid-ES256", func(b *testing.B) {
		proof := ec.proof(u, e.clock.Now())
		b.ReportAllocs()
		for b.Loop() {
			if _, err := e.iss.VerifyDPoPProof(proof, "GET", u, ""); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("DPoP/largest-RSA", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, _ = e.iss.VerifyDPoPProof(rsaProof, "GET", u, "")
		}
	})
}

type benchDPoPKey struct {
	key *ecdsa.PrivateKey
	jwk jwk.Key
}

func newBenchDPoPKey(b *testing.B) *benchDPoPKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	pub, err := jwk.Import(&k.PublicKey)
	if err != nil {
		b.Fatal(err)
	}
	return &benchDPoPKey{key: k, jwk: pub}
}

// proof is an ES256 DPoP proof (raw r||s signature, RFC 7518 §3.4).
func (k *benchDPoPKey) proof(u string, iat time.Time) string {
	in := b64json(map[string]any{"typ": "dpop+jwt", "alg": "ES256", "jwk": k.jwk}) + "." +
		b64json(map[string]any{"jti": "j", "htm": "GET", "htu": u, "iat": iat.Unix()})
	sum := sha256.Sum256([]byte(in))
	r, s, err := ecdsa.Sign(rand.Reader, k.key, sum[:])
	if err != nil {
		panic(err)
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return in + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// newBenchEnv is newEnv without the test kit's event recording and manual
// clock: an Issuer as a service runs it (time.Now, no hooks), so that
// benchmarks measure the library, not the fixture.
func newBenchEnv(b testing.TB, mod ...func(*refresh.Config)) *env {
	b.Helper()
	st := refresh.NewMemoryStore(refresh.WithSweepInterval(0))
	b.Cleanup(func() { _ = st.Close() })
	cfg := refresh.Config{
		Issuer:      "https://auth.example.com",
		Audience:    "https://api.example.com",
		Keys:        []refresh.Key{{ID: "hs1", Algorithm: refresh.HS256, Key: hsSecret}},
		RefreshKeys: []refresh.RefreshKey{{ID: 1, Secret: macSecret}},
		Store:       st,
		Now:         time.Now,
	}
	for _, m := range mod {
		m(&cfg)
	}
	iss, err := refresh.NewIssuer(cfg)
	if err != nil {
		b.Fatal(err)
	}
	return &env{iss: iss, store: st, clock: refreshtest.NewClock(time.Now()), cfg: cfg}
}
