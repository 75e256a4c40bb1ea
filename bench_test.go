package refresh_test

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"testing"

	"github.com/refreshkit/refresh"
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
			e := newEnv(b, func(c *refresh.Config) { c.Keys = []refresh.Key{key} })
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
			e := newEnv(b, func(c *refresh.Config) { c.Keys = []refresh.Key{key} })
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
	e := newEnv(b)
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
			e := newEnv(b, func(c *refresh.Config) { c.Keys = []refresh.Key{key} })
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
