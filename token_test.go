package refresh_test

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jws"
	"github.com/refreshkit/refresh"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func allAlgorithms(t *testing.T) map[refresh.Algorithm]refresh.Key {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	return map[refresh.Algorithm]refresh.Key{
		refresh.HS256: {Algorithm: refresh.HS256, Key: hsSecret},
		refresh.HS384: {Algorithm: refresh.HS384, Key: []byte(strings.Repeat("k", 48))},
		refresh.HS512: {Algorithm: refresh.HS512, Key: []byte(strings.Repeat("k", 64))},
		refresh.RS256: {Algorithm: refresh.RS256, Key: rsaKey},
		refresh.PS256: {Algorithm: refresh.PS256, Key: rsaKey},
		refresh.ES256: {Algorithm: refresh.ES256, Key: ecKey},
		refresh.EdDSA: {Algorithm: refresh.EdDSA, Key: edKey},
	}
}

// A1, A2: every algorithm mints RFC 9068 tokens that our Verify and jwx's
// own high-level verifier accept.
func TestA1A2_AccessTokenProfile(t *testing.T) {
	for alg, key := range allAlgorithms(t) {
		t.Run(string(alg), func(t *testing.T) {
			e := newEnv(t, func(c *refresh.Config) { c.Keys = []refresh.Key{key} })
			p := e.issue(t, "alice", refresh.WithScope("read"), refresh.WithClientID("web"),
				refresh.WithClaims(map[string]any{"roles": []string{"admin"}}))
			h, c := decodeJWT(t, p.AccessToken)
			assert.Equal(t, "at+jwt", h["typ"])
			assert.Equal(t, string(alg), h["alg"])
			assert.NotEmpty(t, h["kid"])
			assert.Len(t, h, 3, "no other header members")
			for _, name := range []string{"iss", "sub", "aud", "exp", "iat", "jti", "client_id", "sid", "scope", "roles"} {
				assert.Contains(t, c, name)
			}
			assert.Equal(t, float64(e.clock.Now().Add(15*time.Minute).Unix()), c["exp"])

			claims, err := e.iss.Verify(bg, p.AccessToken)
			require.NoError(t, err)
			assert.Equal(t, "alice", claims.Subject)
			assert.Equal(t, p.SessionID, claims.SessionID)
			assert.True(t, claims.HasRole("admin"))
			assert.True(t, claims.HasScope("read"))

			// Interoperability: jwx's own verifier accepts it.
			jalg, ok := jwa.LookupSignatureAlgorithm(string(alg))
			require.True(t, ok)
			var vk any = key.Key
			switch k := key.Key.(type) {
			case *rsa.PrivateKey:
				vk = &k.PublicKey
			case *ecdsa.PrivateKey:
				vk = &k.PublicKey
			case ed25519.PrivateKey:
				vk = k.Public()
			}
			_, err = jws.Verify([]byte(p.AccessToken), jws.WithKey(jalg, vk))
			require.NoError(t, err)
		})
	}
}

func TestA2_UniqueJTI(t *testing.T) {
	e := newEnv(t)
	seen := map[string]bool{}
	p := e.issue(t, "alice")
	for i := 0; i < 1000; i++ {
		var err error
		if i%2 == 0 {
			p, err = e.iss.Rotate(bg, p.RefreshToken)
			require.NoError(t, err)
		}
		_, c := decodeJWT(t, p.AccessToken)
		jti := c["jti"].(string)
		if i%2 == 0 {
			require.False(t, seen[jti], "duplicate jti")
		}
		seen[jti] = true
	}
}

func TestJWKS(t *testing.T) {
	keys := allAlgorithms(t)
	e := newEnv(t, func(c *refresh.Config) {
		c.Keys = []refresh.Key{keys[refresh.EdDSA], keys[refresh.ES256], keys[refresh.RS256], keys[refresh.HS256]}
	})
	var set struct {
		Keys []map[string]any `json:"keys"`
	}
	require.NoError(t, json.Unmarshal(e.iss.JWKS(), &set))
	require.Len(t, set.Keys, 3, "HMAC secrets never appear")
	for _, k := range set.Keys {
		for _, private := range []string{"d", "p", "q", "dp", "dq", "qi", "k"} {
			assert.NotContains(t, k, private)
		}
		assert.NotEmpty(t, k["kid"])
		assert.NotEmpty(t, k["alg"])
		assert.Equal(t, "sig", k["use"])
	}
	// The JWKS keys round-trip through ParseJWK and verify our tokens.
	p := e.issue(t, "alice")
	b, err := json.Marshal(set.Keys[0])
	require.NoError(t, err)
	pub, err := refresh.ParseJWK(b)
	require.NoError(t, err)
	verifier := newEnv(t, func(c *refresh.Config) { c.Keys = []refresh.Key{keys[refresh.HS256], pub} })
	_, err = verifier.iss.Verify(bg, p.AccessToken)
	require.NoError(t, err)
}

func TestParseJWK(t *testing.T) {
	k, err := refresh.ParseJWK([]byte(`{"kty":"oct","kid":"k1","alg":"HS384","k":"` +
		base64.RawURLEncoding.EncodeToString([]byte(strings.Repeat("s", 48))) + `"}`))
	require.NoError(t, err)
	assert.Equal(t, refresh.HS384, k.Algorithm)
	assert.Equal(t, "k1", k.ID)
	_, err = refresh.ParseJWK([]byte(`{"kty":"oct","k":"c2hvcnQ"}`))
	require.ErrorContains(t, err, "under the 32 bytes")
	_, err = refresh.ParseJWK([]byte(`{"kty":"RSA"`))
	require.Error(t, err)
}

// verifyErr verifies tok and requires it to fail with ErrInvalidToken.
func (e *env) refused(t *testing.T, tok, why string) {
	t.Helper()
	_, err := e.iss.Verify(bg, tok)
	require.ErrorIs(t, err, refresh.ErrInvalidToken, why)
}

// V1: alg none, in any case, with or without a signature.
func TestV1_AlgNone(t *testing.T) {
	e := newEnv(t)
	for _, alg := range []string{"none", "None", "NONE", "nOnE"} {
		h := map[string]any{"alg": alg, "kid": "hs1", "typ": "at+jwt"}
		unsigned := b64json(h) + "." + b64json(e.goodClaims()) + "."
		e.refused(t, unsigned, alg)
		e.refused(t, forgeHS(h, e.goodClaims(), hsSecret), alg+" with a MAC")
	}
	e.refused(t, forgeHS(map[string]any{"kid": "hs1", "typ": "at+jwt"}, e.goodClaims(), hsSecret), "missing alg")
	// The control: the same construction with the right header passes.
	_, err := e.iss.Verify(bg, forgeHS(goodHeader(), e.goodClaims(), hsSecret))
	require.NoError(t, err)
}

// V2: an HS256 token MACed with the public key as the secret.
func TestV2_AlgorithmConfusion(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	for name, key := range map[string]refresh.Key{
		"RS256": {ID: "k", Algorithm: refresh.RS256, Key: rsaKey},
		"ES256": {ID: "k", Algorithm: refresh.ES256, Key: ecKey},
		"EdDSA": {ID: "k", Algorithm: refresh.EdDSA, Key: edKey},
	} {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, func(c *refresh.Config) { c.Keys = []refresh.Key{key} })
			var pub any
			switch k := key.Key.(type) {
			case *rsa.PrivateKey:
				pub = &k.PublicKey
			case *ecdsa.PrivateKey:
				pub = &k.PublicKey
			case ed25519.PrivateKey:
				pub = k.Public()
			}
			der, err := x509.MarshalPKIXPublicKey(pub)
			require.NoError(t, err)
			pemBytes := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
			for form, secret := range map[string][]byte{"PEM": pemBytes, "DER": der, "JWKS": e.iss.JWKS()} {
				h := map[string]any{"alg": "HS256", "kid": "k", "typ": "at+jwt"}
				e.refused(t, forgeHS(h, e.goodClaims(), secret), form)
			}
		})
	}
}

// V3: the header alg must equal the selected key's algorithm.
func TestV3_AlgMustMatchKey(t *testing.T) {
	e := newEnv(t, func(c *refresh.Config) {
		c.Keys = []refresh.Key{{ID: "hs1", Algorithm: refresh.HS256, Key: hsSecret}}
	})
	for _, alg := range []string{"HS384", "HS512", "hs256", "RS256", "ES256"} {
		h := map[string]any{"alg": alg, "kid": "hs1", "typ": "at+jwt"}
		e.refused(t, forgeHS(h, e.goodClaims(), hsSecret), alg)
	}
}

// V4: typ must be at+jwt or application/at+jwt, case-insensitive.
func TestV4_Typ(t *testing.T) {
	e := newEnv(t)
	for _, typ := range []string{"at+jwt", "AT+JWT", "application/at+jwt", "Application/AT+JWT"} {
		h := map[string]any{"alg": "HS256", "kid": "hs1", "typ": typ}
		_, err := e.iss.Verify(bg, forgeHS(h, e.goodClaims(), hsSecret))
		require.NoError(t, err, typ)
	}
	for _, typ := range []any{"JWT", "jwt", "", "at+jwt ", "application/jwt", 1, nil} {
		h := map[string]any{"alg": "HS256", "kid": "hs1", "typ": typ}
		e.refused(t, forgeHS(h, e.goodClaims(), hsSecret), "typ")
	}
	e.refused(t, forgeHS(map[string]any{"alg": "HS256", "kid": "hs1"}, e.goodClaims(), hsSecret), "missing typ")
}

// V5: iss exact; aud must contain ours, as string or array.
func TestV5_IssuerAndAudience(t *testing.T) {
	e := newEnv(t)
	ok := func(mod func(map[string]any)) {
		t.Helper()
		c := e.goodClaims()
		mod(c)
		_, err := e.iss.Verify(bg, forgeHS(goodHeader(), c, hsSecret))
		require.NoError(t, err)
	}
	bad := func(why string, mod func(map[string]any)) {
		t.Helper()
		c := e.goodClaims()
		mod(c)
		e.refused(t, forgeHS(goodHeader(), c, hsSecret), why)
	}
	ok(func(c map[string]any) { c["aud"] = []string{"other", e.cfg.Audience} })
	bad("wrong iss", func(c map[string]any) { c["iss"] = "https://evil.example.com" })
	bad("iss with a trailing slash", func(c map[string]any) { c["iss"] = e.cfg.Issuer + "/" })
	bad("missing iss", func(c map[string]any) { delete(c, "iss") })
	bad("wrong aud", func(c map[string]any) { c["aud"] = "https://other.example.com" })
	bad("aud array without ours", func(c map[string]any) { c["aud"] = []string{"a", "b"} })
	bad("missing aud", func(c map[string]any) { delete(c, "aud") })
	bad("aud as number", func(c map[string]any) { c["aud"] = 5 })
	bad("missing sub", func(c map[string]any) { delete(c, "sub") })
	bad("missing jti", func(c map[string]any) { delete(c, "jti") })
	bad("missing iat", func(c map[string]any) { delete(c, "iat") })
}

// V6: exp and nbf, one nanosecond either side, with and without leeway.
func TestV6_Expiry(t *testing.T) {
	for _, leeway := range []time.Duration{0, 30 * time.Second} {
		e := newEnv(t, func(c *refresh.Config) { c.Leeway = leeway })
		p := e.issue(t, "alice")
		end := p.AccessExpiresAt.Add(leeway)
		e.clock.Set(end.Add(-time.Nanosecond))
		_, err := e.iss.Verify(bg, p.AccessToken)
		require.NoError(t, err, "leeway %v, 1ns before the end", leeway)
		e.clock.Set(end)
		_, err = e.iss.Verify(bg, p.AccessToken)
		require.ErrorIs(t, err, refresh.ErrExpired, "leeway %v, at the end", leeway)
		e.clock.Set(end.Add(time.Nanosecond))
		_, err = e.iss.Verify(bg, p.AccessToken)
		require.ErrorIs(t, err, refresh.ErrExpired)

		// nbf in the future.
		e.clock.Set(time.Unix(2000000000, 0))
		c := e.goodClaims()
		nbf := e.clock.Now().Add(time.Minute)
		c["nbf"] = nbf.Unix()
		tok := forgeHS(goodHeader(), c, hsSecret)
		e.clock.Set(nbf.Add(-leeway - time.Nanosecond))
		e.refused(t, tok, "nbf 1ns in the future")
		e.clock.Set(nbf.Add(-leeway))
		_, err = e.iss.Verify(bg, tok)
		require.NoError(t, err, "at nbf")
	}
	e := newEnv(t)
	c := e.goodClaims()
	delete(c, "exp")
	e.refused(t, forgeHS(goodHeader(), c, hsSecret), "missing exp")
	for _, exp := range []any{"2000000000", -1, 1e300, "", true, []int{1}} {
		c := e.goodClaims()
		c["exp"] = exp
		_, err := e.iss.Verify(bg, forgeHS(goodHeader(), c, hsSecret))
		require.Error(t, err, "exp %v", exp)
	}
}

// V7: unknown or missing kid; jku, x5u, jwk and x5c are never used.
func TestV7_KeyIDAndKeyHeaders(t *testing.T) {
	e := newEnv(t, func(c *refresh.Config) {
		c.Keys = append(c.Keys, refresh.Key{ID: "hs2", Algorithm: refresh.HS256, Key: []byte(strings.Repeat("x", 32))})
	})
	for _, kid := range []any{"nope", "", "../../etc/passwd", "' OR 1=1 --", 7} {
		h := map[string]any{"alg": "HS256", "kid": kid, "typ": "at+jwt"}
		e.refused(t, forgeHS(h, e.goodClaims(), hsSecret), "kid")
	}
	e.refused(t, forgeHS(map[string]any{"alg": "HS256", "typ": "at+jwt"}, e.goodClaims(), hsSecret), "no kid with two keys")

	// URLs in jku and x5u are never fetched.
	var fetched atomic.Int32
	keySrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fetched.Add(1) }))
	defer keySrv.Close()
	for _, hdr := range []string{"jku", "x5u"} {
		h := goodHeader()
		h[hdr] = keySrv.URL + "/keys.json"
		e.refused(t, forgeHS(h, e.goodClaims(), []byte("attacker-secret-attacker-secret-")), hdr+" URL")
		_, err := e.iss.Verify(bg, forgeHS(h, e.goodClaims(), hsSecret))
		require.NoError(t, err)
	}
	assert.Zero(t, fetched.Load(), "a key URL from a token header was fetched")

	// An attacker's own key offered in every key-carrying header.
	attacker := []byte("attacker-secret-attacker-secret-")
	for _, hdr := range []string{"jku", "x5u", "jwk", "x5c"} {
		h := goodHeader()
		h[hdr] = map[string]any{"kty": "oct", "k": base64.RawURLEncoding.EncodeToString(attacker)}
		e.refused(t, forgeHS(h, e.goodClaims(), attacker), hdr)
		// And present but harmless on an honest token.
		_, err := e.iss.Verify(bg, forgeHS(h, e.goodClaims(), hsSecret))
		require.NoError(t, err, "%s is ignored", hdr)
	}
	h := goodHeader()
	h["crit"] = []string{"exp"}
	e.refused(t, forgeHS(h, e.goodClaims(), hsSecret), "crit")

	// With a single key, kid may be omitted.
	one := newEnv(t)
	_, err := one.iss.Verify(bg, forgeHS(map[string]any{"alg": "HS256", "typ": "at+jwt"}, one.goodClaims(), hsSecret))
	require.NoError(t, err)
}

// V8: with session checking, access tokens of revoked sessions stop at once;
// without it they live until exp.
func TestV8_SessionCheck(t *testing.T) {
	e := newEnv(t, func(c *refresh.Config) { c.CheckSession = true; c.SessionCheckTTL = time.Minute })
	p := e.issue(t, "alice")
	_, err := e.iss.Verify(bg, p.AccessToken)
	require.NoError(t, err)
	require.NoError(t, e.iss.Revoke(bg, p.RefreshToken))
	_, err = e.iss.Verify(bg, p.AccessToken)
	require.ErrorIs(t, err, refresh.ErrRevoked)

	// Another instance sharing the store sees it within SessionCheckTTL.
	other := newEnv(t, func(c *refresh.Config) {
		c.Store = e.store
		c.CheckSession = true
		c.SessionCheckTTL = time.Minute
		c.Now = e.clock.Now
	})
	q := e.issue(t, "alice")
	_, err = other.iss.Verify(bg, q.AccessToken)
	require.NoError(t, err)
	require.NoError(t, e.iss.RevokeSession(bg, q.SessionID))
	e.clock.Advance(time.Minute - time.Nanosecond)
	_, err = other.iss.Verify(bg, q.AccessToken)
	require.NoError(t, err, "cached answer within SessionCheckTTL")
	e.clock.Advance(time.Nanosecond)
	_, err = other.iss.Verify(bg, q.AccessToken)
	require.ErrorIs(t, err, refresh.ErrRevoked)

	plain := newEnv(t)
	r := plain.issue(t, "alice")
	require.NoError(t, plain.iss.Revoke(bg, r.RefreshToken))
	_, err = plain.iss.Verify(bg, r.AccessToken)
	require.NoError(t, err, "without CheckSession, access tokens live until exp")
}

// CheckSession's cache of answers is bounded (65,536 sessions, lowered to 3
// here): the answer that would pass the bound starts the cache over, and
// then holds only itself. Memory stays bounded however many sessions'
// tokens arrive.
func TestSessionCacheBound(t *testing.T) {
	e := newEnv(t, func(c *refresh.Config) { c.CheckSession = true; c.SessionCheckTTL = time.Minute })
	refresh.SetSessionCacheMax(e.iss, 3)
	for i, want := range []int{1, 2, 3, 1, 2} {
		_, err := e.iss.Verify(bg, e.issue(t, "alice").AccessToken)
		require.NoError(t, err)
		assert.Equal(t, want, refresh.SessionCacheLen(e.iss), "after the session check of token %d", i+1)
	}
}

// NumericDate at its edges (RFC 7519 §2): 0 (the epoch) and fractions of a
// second are dates; 9999-12-31T23:59:59Z is the last one taken and a
// second later is refused (negatives and strings: the attack suite).
func TestNumericDateEdges(t *testing.T) {
	e := newEnv(t)
	with := func(claim string, v any) string {
		c := e.goodClaims()
		c[claim] = v
		return forgeHS(goodHeader(), c, hsSecret)
	}
	for name, tok := range map[string]string{
		"iat 0":                          with("iat", 0),
		"iat 0.5":                        with("iat", 0.5),
		"nbf 0":                          with("nbf", 0),
		"exp at year 9999's last second": with("exp", 253402300799),
	} {
		_, err := e.iss.Verify(bg, tok)
		require.NoError(t, err, name)
	}
	e.refused(t, with("exp", 253402300800), "exp a second past year 9999")
	e.refused(t, with("iat", 253402300800), "iat a second past year 9999")
}

// V9: token kinds are not interchangeable.
func TestV9_TokenKindsNotInterchangeable(t *testing.T) {
	e := newEnv(t)
	p := e.issue(t, "alice")
	e.refused(t, p.RefreshToken, "refresh token as access token")
	_, err := e.iss.Rotate(bg, p.AccessToken)
	require.ErrorIs(t, err, refresh.ErrInvalidToken)
}

// V10: oversized tokens are refused before parsing.
func TestV10_SizeLimit(t *testing.T) {
	e := newEnv(t, func(c *refresh.Config) { c.MaxTokenSize = 1024 })
	c := e.goodClaims()
	c["pad"] = ""
	tok := forgeHS(goodHeader(), c, hsSecret)
	c["pad"] = strings.Repeat("x", 1024-len(tok)+2)
	tok = forgeHS(goodHeader(), c, hsSecret)
	for len(tok) > 1024 {
		c["pad"] = c["pad"].(string)[1:]
		tok = forgeHS(goodHeader(), c, hsSecret)
	}
	require.Len(t, tok, 1024)
	_, err := e.iss.Verify(bg, tok)
	require.NoError(t, err, "exactly at the limit")
	c["pad"] = c["pad"].(string) + "xxxx"
	tok = forgeHS(goodHeader(), c, hsSecret)
	_, err = e.iss.Verify(bg, tok)
	var te *refresh.TokenError
	require.ErrorAs(t, err, &te)
	assert.Equal(t, "token too long", te.Reason)
	_, err = e.iss.Verify(bg, strings.Repeat("A", 1<<20))
	require.ErrorAs(t, err, &te)
	assert.Equal(t, "token too long", te.Reason)
}

// Malformed structures: every one is ErrInvalidToken, none panics.
func TestVerifyMalformed(t *testing.T) {
	e := newEnv(t)
	good := forgeHS(goodHeader(), e.goodClaims(), hsSecret)
	parts := strings.Split(good, ".")
	dupHeader := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","kid":"hs1","typ":"at+jwt","alg":"none"}`))
	dupClaims := `{"iss":"https://auth.example.com","sub":"alice","sub":"admin","aud":"https://api.example.com","exp":9999999999,"iat":1,"jti":"j"}`
	for name, tok := range map[string]string{
		"empty":           "",
		"two parts":       parts[0] + "." + parts[1],
		"four parts":      good + ".x",
		"padded sig":      good + "=",
		"JSON serialized": `{"payload":"` + parts[1] + `","signatures":[]}`,
		"nested JWS":      parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(good)) + "." + parts[2],
		"dup header":      dupHeader + "." + parts[1] + "." + parts[2],
		"dup claims":      forgeRaw(goodHeader(), dupClaims, hsSecret),
		"claims array":    forgeRaw(goodHeader(), `[]`, hsSecret),
		"trailing claims": forgeRaw(goodHeader(), string(mustJSON(e.goodClaims()))+`{}`, hsSecret),
		"header not JSON": base64.RawURLEncoding.EncodeToString([]byte("hello")) + "." + parts[1] + "." + parts[2],
		"std base64":      strings.ReplaceAll(strings.ReplaceAll(good, "-", "+"), "_", "/") + "+/",
		"whitespace":      " " + good,
	} {
		t.Run(name, func(t *testing.T) { e.refused(t, tok, name) })
	}
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

func forgeRaw(header any, claims string, secret []byte) string {
	tok := forgeHS(header, map[string]any{}, secret)
	h := strings.Split(tok, ".")[0]
	in := h + "." + base64.RawURLEncoding.EncodeToString([]byte(claims))
	return in + "." + macB64(in, secret)
}

func TestES256OnlyP256(t *testing.T) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	e := newEnv(t, func(c *refresh.Config) { c.Keys = []refresh.Key{{Algorithm: refresh.ES256, Key: k}} })
	p := e.issue(t, "alice")
	_, err = e.iss.Verify(bg, p.AccessToken)
	require.NoError(t, err)
}

// The verification cache: a hit still checks expiry and the session, and a
// token sharing a cached token's signature but not its bytes is a miss.
func TestVerifyCache(t *testing.T) {
	// What the cache holds once 6 tokens have verified: all of them by
	// default (4096), none when disabled, at most the size asked for.
	holds := map[int]int{0: 6, -1: 0, 2: 2}
	for _, size := range []int{0, -1, 2} {
		e := newEnv(t, func(c *refresh.Config) { c.VerifyCacheSize = size; c.CheckSession = true })
		p := e.issue(t, "alice")
		for i := 0; i < 3; i++ {
			c, err := e.iss.Verify(bg, p.AccessToken)
			require.NoError(t, err)
			c.Subject = "mallory" // a caller's change never reaches the next caller
		}
		c, err := e.iss.Verify(bg, p.AccessToken)
		require.NoError(t, err)
		assert.Equal(t, "alice", c.Subject)

		parts := strings.Split(p.AccessToken, ".")
		_, claims := decodeJWT(t, p.AccessToken)
		claims["sub"] = "admin"
		spliced := parts[0] + "." + b64json(claims) + "." + parts[2]
		e.refused(t, spliced, "another payload with a cached signature")

		// Several tokens cycle through a small cache; all stay correct.
		for i := 0; i < 5; i++ {
			q := e.issue(t, "bob")
			c, err := e.iss.Verify(bg, q.AccessToken)
			require.NoError(t, err)
			assert.Equal(t, "bob", c.Subject)
		}
		assert.Equal(t, holds[size], refresh.VerifyCacheLen(e.iss), "cache size %d", size)

		require.NoError(t, e.iss.RevokeSession(bg, p.SessionID))
		_, err = e.iss.Verify(bg, p.AccessToken)
		require.ErrorIs(t, err, refresh.ErrRevoked, "cache size %d: a hit still checks the session", size)
		q := e.issue(t, "carol")
		_, err = e.iss.Verify(bg, q.AccessToken)
		require.NoError(t, err)
		e.clock.Set(q.AccessExpiresAt)
		_, err = e.iss.Verify(bg, q.AccessToken)
		require.ErrorIs(t, err, refresh.ErrExpired, "cache size %d: a hit still checks expiry", size)
	}
}

func pemOf(key any) []byte {
	var der []byte
	var typ string
	var err error
	switch k := key.(type) {
	case ed25519.PublicKey, *ecdsa.PublicKey, *rsa.PublicKey:
		der, err = x509.MarshalPKIXPublicKey(k)
		typ = "PUBLIC KEY"
	default:
		der, err = x509.MarshalPKCS8PrivateKey(k)
		typ = "PRIVATE KEY"
	}
	if err != nil {
		panic(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func TestParseKeyPEM(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	for name, tc := range map[string]struct {
		key any
		alg refresh.Algorithm
	}{
		"Ed25519":        {edKey, refresh.EdDSA},
		"P-256":          {ecKey, refresh.ES256},
		"RSA":            {rsaKey, refresh.RS256},
		"Ed25519 public": {edKey.Public(), refresh.EdDSA},
	} {
		t.Run(name, func(t *testing.T) {
			k, err := refresh.ParseKeyPEM(pemOf(tc.key))
			require.NoError(t, err)
			assert.Equal(t, tc.alg, k.Algorithm)
		})
	}
	ecDER, err := x509.MarshalECPrivateKey(ecKey)
	require.NoError(t, err)
	k, err := refresh.ParseKeyPEM(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: ecDER}))
	require.NoError(t, err)
	assert.Equal(t, refresh.ES256, k.Algorithm)

	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	require.NoError(t, err)
	for name, data := range map[string][]byte{
		"empty":          nil,
		"not PEM":        []byte("hello"),
		"two blocks":     append(pemOf(edKey), pemOf(ecKey)...),
		"certificate":    pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}}),
		"bad DER":        pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1, 2, 3}}),
		"P-384 (no alg)": pemOf(p384),
	} {
		_, err := refresh.ParseKeyPEM(data)
		require.Error(t, err, name)
	}
}

// TestMACAllocations: checking an HS256 token's MAC allocates nothing (the
// keyed HMAC and room for its sum are pooled per key); it once copied the
// signing input to a new slice for the HMAC's Write.
func TestMACAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates; .ci/run runs this without -race")
	}
	e := newEnv(t)
	tok := e.issue(t, "alice", refresh.WithScope("read")).AccessToken
	i := strings.LastIndexByte(tok, '.')
	signed := tok[:i]
	sig, err := base64.RawURLEncoding.DecodeString(tok[i+1:])
	require.NoError(t, err)
	require.True(t, refresh.VerifySignature(e.iss, signed, sig))
	require.False(t, refresh.VerifySignature(e.iss, signed+"x", sig), "a longer signing input")
	require.False(t, refresh.VerifySignature(e.iss, signed[:len(signed)-1], sig), "a shorter one")
	bad := append([]byte(nil), sig...)
	bad[31] ^= 1
	require.False(t, refresh.VerifySignature(e.iss, signed, bad), "a changed MAC")
	allocs := testing.AllocsPerRun(200, func() {
		if !refresh.VerifySignature(e.iss, signed, sig) {
			t.Fatal("refused")
		}
	})
	require.Zero(t, allocs)
}
