package browsertest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"
	"github.com/golang-jwt/jwt/v5"
	"github.com/lestrrat-go/jwx/v3/jwk"
	jwxjwt "github.com/lestrrat-go/jwx/v3/jwt"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestGoJWTLibraries: the Go resource servers most services run verify the
// demo's access tokens with nothing of ours: go-jose reads the published
// JWKS, and both golang-jwt and go-jose's own JWT package verify the token
// with the key it names (kid), the algorithm pinned, issuer, audience and
// expiry checked; golang-jwt with keyfunc (which fetches the JWKS URL
// itself, the usual pairing) and jwx (its own JWKS parser, the key's alg
// and kid required) do the same from the published set alone. One demo per
// signing algorithm it can be given: Ed25519 (its default), P-256 and RSA
// from PEM, RSA-PSS from a JWK.
func TestGoJWTLibraries(t *testing.T) {
	dir := t.TempDir()
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	pemFile := func(name string, key any) string {
		der, err := x509.MarshalPKCS8PrivateKey(key)
		require.NoError(t, err)
		path := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600))
		return path
	}
	pss, err := json.Marshal(jose.JSONWebKey{Key: rsaKey, Algorithm: "PS256", Use: "sig"})
	require.NoError(t, err)
	pssFile := filepath.Join(dir, "pss.jwk")
	require.NoError(t, os.WriteFile(pssFile, pss, 0o600))

	for _, c := range []struct {
		alg  string
		args []string
	}{
		{"EdDSA", nil},
		{"ES256", []string{"-key", pemFile("ec.pem", ecKey)}},
		{"RS256", []string{"-key", pemFile("rsa.pem", rsaKey)}},
		{"PS256", []string{"-key", pssFile}},
	} {
		t.Run(c.alg, func(t *testing.T) {
			d := startDemo(t, c.args...)
			token := loginToken(t, d.base)
			raw := fetchJWKSBytes(t, d.base)
			var set jose.JSONWebKeySet
			require.NoError(t, json.Unmarshal(raw, &set), "%s", raw)
			keyFor := func(kid string) any {
				keys := set.Key(kid)
				require.Len(t, keys, 1, "the JWKS has exactly one key with kid %q", kid)
				assert.True(t, keys[0].IsPublic(), "the JWKS publishes public keys only")
				assert.Equal(t, c.alg, keys[0].Algorithm)
				return keys[0].Key
			}

			// golang-jwt v5.
			parsed, err := jwt.Parse(token, func(tok *jwt.Token) (any, error) {
				kid, _ := tok.Header["kid"].(string)
				return keyFor(kid), nil
			},
				jwt.WithValidMethods([]string{c.alg}), jwt.WithIssuer(d.base),
				jwt.WithAudience("refresh-demo"), jwt.WithExpirationRequired(), jwt.WithIssuedAt())
			require.NoError(t, err, "golang-jwt")
			assert.Equal(t, "at+jwt", parsed.Header["typ"], "RFC 9068 §2.1")
			claims := parsed.Claims.(jwt.MapClaims)
			assert.Equal(t, "alice", claims["sub"])
			for _, name := range []string{"jti", "client_id", "sid", "scope"} {
				assert.NotEmpty(t, claims[name], name)
			}

			// go-jose's JWT package.
			jws, err := josejwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.SignatureAlgorithm(c.alg)})
			require.NoError(t, err, "go-jose")
			require.Len(t, jws.Headers, 1)
			var std josejwt.Claims
			require.NoError(t, jws.Claims(keyFor(jws.Headers[0].KeyID), &std), "go-jose signature")
			require.NoError(t, std.ValidateWithLeeway(josejwt.Expected{
				Issuer: d.base, AnyAudience: josejwt.Audience{"refresh-demo"}, Time: time.Now(),
			}, 0))
			assert.Equal(t, "alice", std.Subject)

			// golang-jwt with keyfunc, which fetches the JWKS URL itself.
			kf, err := keyfunc.NewDefaultCtx(t.Context(), []string{d.base + "/.well-known/jwks.json"})
			require.NoError(t, err, "keyfunc")
			_, err = jwt.Parse(token, kf.Keyfunc, jwt.WithValidMethods([]string{c.alg}),
				jwt.WithIssuer(d.base), jwt.WithAudience("refresh-demo"), jwt.WithExpirationRequired())
			require.NoError(t, err, "golang-jwt with keyfunc")

			// jwx v3 from the published set: kid and the key's alg required.
			jset, err := jwk.Parse(raw)
			require.NoError(t, err, "jwx: JWKS")
			jtok, err := jwxjwt.Parse([]byte(token), jwxjwt.WithKeySet(jset),
				jwxjwt.WithIssuer(d.base), jwxjwt.WithAudience("refresh-demo"), jwxjwt.WithValidate(true))
			require.NoError(t, err, "jwx")
			sub, _ := jtok.Subject()
			assert.Equal(t, "alice", sub)

			// None accepts the token under another algorithm, or altered.
			other := map[string]string{"EdDSA": "ES256", "ES256": "EdDSA", "RS256": "PS256", "PS256": "RS256"}[c.alg]
			_, err = jwt.Parse(token, func(tok *jwt.Token) (any, error) { return keyFor(tok.Header["kid"].(string)), nil },
				jwt.WithValidMethods([]string{other}))
			assert.Error(t, err)
			_, err = jwt.Parse(token, kf.Keyfunc, jwt.WithValidMethods([]string{other}))
			assert.Error(t, err, "keyfunc")
			altered := []byte(token) // the signature's next-to-last character, all of whose bits count
			if altered[len(altered)-2] == 'A' {
				altered[len(altered)-2] = 'B'
			} else {
				altered[len(altered)-2] = 'A'
			}
			_, err = jwxjwt.Parse(altered, jwxjwt.WithKeySet(jset))
			assert.Error(t, err, "jwx: altered signature")
			_, err = jwt.Parse(string(altered), kf.Keyfunc, jwt.WithValidMethods([]string{c.alg}))
			assert.Error(t, err, "keyfunc: altered signature")
		})
	}
}

// loginToken signs alice in to the demo and returns the access token.
func loginToken(t *testing.T, base string) string {
	t.Helper()
	resp, err := http.PostForm(base+"/login", url.Values{"username": {"alice"}, "password": {"wonderland"}})
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var pair struct {
		AccessToken string `json:"access_token"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&pair))
	require.NotEmpty(t, pair.AccessToken)
	return pair.AccessToken
}

// fetchJWKSBytes reads the demo's published key set.
func fetchJWKSBytes(t *testing.T, base string) []byte {
	t.Helper()
	resp, err := http.Get(base + "/.well-known/jwks.json")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return body
}
