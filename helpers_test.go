package refresh_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net/http"
	"strings"
	"testing"

	"github.com/refreshkit/refresh"
	"github.com/refreshkit/refresh/refreshtest"
	"github.com/stretchr/testify/require"
)

var (
	hsSecret    = []byte("0123456789abcdef0123456789abcdef") // 32 bytes
	macSecret   = []byte("refresh-mac-key-refresh-mac-key-")
	ecKey, _    = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, edKey, _ = ed25519.GenerateKey(rand.Reader)
)

type env struct {
	iss   *refresh.Issuer
	store *refresh.MemoryStore
	clock *refreshtest.Clock
	cfg   refresh.Config
	fx    *refreshtest.Issuer // FailStore, for outages
}

// newEnv returns an Issuer from refreshtest with the HS256 key "hs1" (so
// that tests can forge tokens with hsSecret) and CheckSession off; mod may
// change the configuration first.
func newEnv(t testing.TB, mod ...func(*refresh.Config)) *env {
	t.Helper()
	f := refreshtest.New(t, refreshtest.WithConfig(func(c *refresh.Config) {
		c.Issuer, c.Audience = "https://auth.example.com", "https://api.example.com"
		c.Keys = []refresh.Key{{ID: "hs1", Algorithm: refresh.HS256, Key: hsSecret}}
		c.RefreshKeys = []refresh.RefreshKey{{ID: 1, Secret: macSecret}}
		c.CheckSession = false
		for _, m := range mod {
			m(c)
		}
	}))
	return &env{iss: f.Issuer, store: f.Store, clock: f.Clock, cfg: f.Config, fx: f}
}

func (e *env) issue(t testing.TB, sub string, opts ...refresh.Option) *refresh.Pair {
	t.Helper()
	p, err := e.iss.Issue(context.Background(), sub, opts...)
	require.NoError(t, err)
	return p
}

func (e *env) session(t testing.TB, id string) *refresh.Session {
	t.Helper()
	s, err := e.store.Get(context.Background(), id)
	require.NoError(t, err)
	return s
}

// decodeJWT splits a compact JWS into its decoded header and claims.
func decodeJWT(t testing.TB, tok string) (map[string]any, map[string]any) {
	return decodeJWTWith(t, tok, false)
}

// decodeJWTExact is decodeJWT with numbers as json.Number.
func decodeJWTExact(t testing.TB, tok string) (map[string]any, map[string]any) {
	return decodeJWTWith(t, tok, true)
}

func decodeJWTWith(t testing.TB, tok string, exact bool) (map[string]any, map[string]any) {
	t.Helper()
	parts := strings.Split(tok, ".")
	require.Len(t, parts, 3)
	var out [2]map[string]any
	for i := range out {
		b, err := base64.RawURLEncoding.DecodeString(parts[i])
		require.NoError(t, err)
		d := json.NewDecoder(bytes.NewReader(b))
		if exact {
			d.UseNumber()
		}
		require.NoError(t, d.Decode(&out[i]))
	}
	return out[0], out[1]
}

func b64json(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// forgeHS signs header and claims with HMAC-SHA256 under secret, the way an
// attacker holding secret would.
func forgeHS(header, claims any, secret []byte) string {
	in := b64json(header) + "." + b64json(claims)
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(in))
	return in + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// goodClaims returns claims that Verify accepts at the env's current time.
func (e *env) goodClaims() map[string]any {
	now := e.clock.Now().Unix()
	return map[string]any{
		"iss": e.cfg.Issuer, "sub": "alice", "aud": e.cfg.Audience,
		"exp": now + 3600, "iat": now, "jti": "j1", "client_id": "c", "sid": "s",
	}
}

func goodHeader() map[string]any {
	return map[string]any{"alg": "HS256", "kid": "hs1", "typ": "at+jwt"}
}

func macB64(in string, secret []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(in))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// dpopGet calls GET u with a DPoP-bound access token and a proof, and
// returns the status.
func dpopGet(t *testing.T, u, accessToken, proof string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	req.Header.Set("Authorization", "DPoP "+accessToken)
	req.Header.Set("DPoP", proof)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	return resp.StatusCode
}

// modulusOf returns 2^bits-1: a number of exactly bits bits, which stands
// for an RSA modulus of that length where only the length is checked.
func modulusOf(bits int) *big.Int {
	return new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), uint(bits)), big.NewInt(1))
}
