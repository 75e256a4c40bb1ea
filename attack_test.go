package refresh_test

import (
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"encoding/pem"
	"math/big"
	"net/http"
	"strings"
	"testing"

	"github.com/refreshkit/refresh"
	"github.com/stretchr/testify/require"
)

// attackTokens returns forged or malformed access tokens, each of which must
// be refused. The issuer signs with HS256 ("hs1") and verifies an ES256 key
// ("ec1") too, so that algorithm confusion with a public key is possible.
func attackTokens(t *testing.T, e *env) map[string]string {
	pubDER, err := x509.MarshalPKIXPublicKey(&ecKey.PublicKey)
	require.NoError(t, err)
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	claims := func(mod func(map[string]any)) map[string]any {
		c := e.goodClaims()
		if mod != nil {
			mod(c)
		}
		return c
	}
	hdr := func(mod func(map[string]any)) map[string]any {
		h := goodHeader()
		if mod != nil {
			mod(h)
		}
		return h
	}
	good := forgeHS(goodHeader(), e.goodClaims(), hsSecret)
	parts := strings.Split(good, ".")
	// Flip the unused low bits of the last base64 character of the
	// signature: same bytes for a lenient decoder, non-canonical text.
	sig := parts[2]
	last := strings.IndexByte("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", sig[len(sig)-1])
	trailing := sig[:len(sig)-1] + string("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[last|1])

	out := map[string]string{}
	for _, alg := range []string{"none", "None", "NONE"} {
		out["alg "+alg] = b64json(hdr(func(h map[string]any) { h["alg"] = alg })) + "." + b64json(claims(nil)) + "."
	}
	for name, secret := range map[string][]byte{"PEM": pubPEM, "DER": pubDER, "JWKS": e.iss.JWKS()} {
		out["HS256 with EC public key as "+name] = forgeHS(hdr(func(h map[string]any) { h["kid"] = "ec1" }), claims(nil), secret)
	}
	out["alg differs from key"] = forgeHS(hdr(func(h map[string]any) { h["alg"] = "HS512" }), claims(nil), hsSecret)
	for _, kid := range []string{"unknown", "", "../../../dev/null", "1' OR '1'='1"} {
		out["kid "+kid] = forgeHS(hdr(func(h map[string]any) { h["kid"] = kid }), claims(nil), hsSecret)
	}
	attacker := []byte("attacker-chosen-secret-32-bytes!")
	for _, h := range []string{"jku", "x5u", "jwk", "x5c"} {
		out[h+" with attacker key"] = forgeHS(hdr(func(m map[string]any) {
			m[h] = "https://evil.example/" + base64.RawURLEncoding.EncodeToString(attacker)
		}), claims(nil), attacker)
	}
	for _, typ := range []any{"JWT", nil, "at+jwt+x", 5} {
		out["typ "+strings.TrimSpace(strings.ReplaceAll(string(mustJSON(typ)), `"`, ""))] = forgeHS(hdr(func(h map[string]any) { h["typ"] = typ }), claims(nil), hsSecret)
	}
	out["crit"] = forgeHS(hdr(func(h map[string]any) { h["crit"] = []string{"b64"}; h["b64"] = false }), claims(nil), hsSecret)
	out["nested JWS"] = forgeRaw(goodHeader(), `"`+good+`"`, hsSecret)
	out["JSON serialization"] = `{"protected":"` + parts[0] + `","payload":"` + parts[1] + `","signature":"` + parts[2] + `"}`
	out["duplicate claim"] = forgeRaw(goodHeader(), strings.Replace(string(mustJSON(e.goodClaims())), `{`, `{"sub":"admin",`, 1), hsSecret)
	for name, v := range map[string]any{"string": "9999999999", "negative": -5, "overflow": overflow{}, "huge": 1e19, "object": map[string]int{}} {
		for _, claim := range []string{"exp", "nbf", "iat"} {
			out[claim+" as "+name] = forgeRaw(goodHeader(), strings.Replace(string(mustJSON(e.goodClaims())), `{`, `{"`+claim+`":`+jsonNumber(v)+`,`, 1), hsSecret)
		}
	}
	out["aud without ours (array)"] = forgeHS(goodHeader(), claims(func(c map[string]any) { c["aud"] = []string{"x"} }), hsSecret)
	out["aud without ours (string)"] = forgeHS(goodHeader(), claims(func(c map[string]any) { c["aud"] = "x" }), hsSecret)
	out["padding"] = parts[0] + "=." + parts[1] + "." + parts[2]
	out["non-canonical trailing bits"] = parts[0] + "." + parts[1] + "." + trailing
	out["1 MB"] = strings.Repeat("A", 1<<20)
	out["refresh token as bearer"] = e.issue(t, "alice").RefreshToken
	// ECDSA edge cases against the genuine ES256 token (which verifies, see
	// TestAttackSuite): the all-zero "psychic" signature (CVE-2022-21449),
	// r = s = the group order, a DER-encoded signature (JWS wants r||s), and
	// r||s a byte short or long.
	es := signES256(t, e.goodClaims())
	esIn := es[:strings.LastIndexByte(es, '.')]
	rs, err := base64.RawURLEncoding.DecodeString(es[len(esIn)+1:])
	require.NoError(t, err)
	n := ecKey.Curve.Params().N.FillBytes(make([]byte, 32))
	r, s := new(big.Int).SetBytes(rs[:32]), new(big.Int).SetBytes(rs[32:])
	der, err := asn1.Marshal(struct{ R, S *big.Int }{r, s})
	require.NoError(t, err)
	for name, sig := range map[string][]byte{
		"psychic signature (r = s = 0)": make([]byte, 64),
		"r = s = n":                     append(append([]byte{}, n...), n...),
		"DER signature":                 der,
		"signature a byte short":        rs[:63],
		"signature a byte long":         append(append([]byte{}, rs...), 0),
	} {
		out["ES256 "+name] = esIn + "." + base64.RawURLEncoding.EncodeToString(sig)
	}
	return out
}

// signES256 signs claims as the ES256 key "ec1" would: a genuine token.
func signES256(t *testing.T, claims map[string]any) string {
	return es256(t, ecKey, "ec1", b64json(claims))
}

type overflow struct{}

// jsonNumber renders v as JSON; overflow{} becomes a number no float64 holds.
func jsonNumber(v any) string {
	if _, ok := v.(overflow); ok {
		return "1e400"
	}
	return string(mustJSON(v))
}

// The attack suite, through Verify and through the middleware over HTTP.
func TestAttackSuite(t *testing.T) {
	e := newEnv(t, func(c *refresh.Config) {
		c.Keys = append(c.Keys, refresh.Key{ID: "ec1", Algorithm: refresh.ES256, Key: &ecKey.PublicKey})
	})
	srv := e.api()
	defer srv.Close()
	attacks := attackTokens(t, e)
	require.NotEmpty(t, attacks)
	for name, tok := range attacks {
		t.Run(name, func(t *testing.T) {
			_, err := e.iss.Verify(bg, tok)
			require.ErrorIs(t, err, refresh.ErrInvalidToken)
			resp := get(t, srv.URL+"/me", bearer(tok))
			if strings.ContainsAny(tok, "{}\" =") {
				require.Equal(t, 400, resp.StatusCode, "not a b64token: invalid_request")
				return
			}
			require.Equal(t, 401, resp.StatusCode)
			require.Contains(t, resp.Header.Get("WWW-Authenticate"), `error="invalid_token"`)
		})
	}
	// The control: an honest token built the same way passes both.
	good := forgeHS(goodHeader(), e.goodClaims(), hsSecret)
	_, err := e.iss.Verify(bg, good)
	require.NoError(t, err)
	require.Equal(t, 200, get(t, srv.URL+"/me", bearer(good)).StatusCode)
	// The ES256 edge cases are refused for their signatures alone: the
	// genuine ES256 token with the same header and claims is accepted.
	require.Equal(t, 200, get(t, srv.URL+"/me", bearer(signES256(t, e.goodClaims()))).StatusCode)
}

// An ES256 token is refused when its signature is valid for another key.
func TestSignatureFromOtherKey(t *testing.T) {
	other, err := ecdsa.GenerateKey(ecKey.Curve, strings.NewReader(strings.Repeat("x", 200)))
	require.NoError(t, err)
	mint := newEnv(t, func(c *refresh.Config) { c.Keys = []refresh.Key{{ID: "ec1", Algorithm: refresh.ES256, Key: other}} })
	verify := newEnv(t, func(c *refresh.Config) { c.Keys = []refresh.Key{{ID: "ec1", Algorithm: refresh.ES256, Key: ecKey}} })
	verify.refused(t, mint.issue(t, "alice").AccessToken, "signed by another key with the same kid")
}

// A leaked signing key mints access tokens for anyone until it leaves
// Config.Keys; at every instance configured without it its tokens are
// refused at once, genuine ones it signed included (SECURITY.md, signing
// key leak), over HTTP through the middleware: the thief's forged admin
// token and a genuine token of the leaked key pass an instance that still
// holds the key, and are 401 invalid_token at one that has dropped it,
// where the new key's tokens pass.
func TestSigningKeyRemovalRefusesItsTokens(t *testing.T) {
	leaked := refresh.Key{ID: "k1", Algorithm: refresh.HS256, Key: []byte("leaked-signing-key-leaked-signing")}
	fresh := refresh.Key{ID: "k2", Algorithm: refresh.HS256, Key: []byte("fresh-signing-key-fresh-signing-")}
	before := newEnv(t, func(c *refresh.Config) { c.Keys = []refresh.Key{leaked} })
	during := newEnv(t, func(c *refresh.Config) { c.Keys = []refresh.Key{fresh, leaked} })
	after := newEnv(t, func(c *refresh.Config) { c.Keys = []refresh.Key{fresh} })

	genuine := before.issue(t, "alice").AccessToken
	claims := before.goodClaims()
	claims["sub"], claims["role"] = "mallory", "admin"
	forged := forgeHS(map[string]any{"alg": "HS256", "kid": "k1", "typ": "at+jwt"}, claims, leaked.Key.([]byte))
	renewed := after.issue(t, "alice").AccessToken

	status := func(e *env, path, tok string) int {
		srv := e.api()
		defer srv.Close()
		resp := get(t, srv.URL+path, map[string][]string{"Authorization": {"Bearer " + tok}})
		defer resp.Body.Close()
		if resp.StatusCode == http.StatusUnauthorized {
			require.Contains(t, resp.Header.Get("WWW-Authenticate"), `error="invalid_token"`)
		}
		return resp.StatusCode
	}
	require.Equal(t, 200, status(during, "/admin", forged), "the leaked key still verifies while configured")
	require.Equal(t, 200, status(during, "/me", genuine))
	require.Equal(t, 200, status(during, "/me", renewed))
	require.Equal(t, 401, status(after, "/admin", forged), "the thief's token once the key is gone")
	require.Equal(t, 401, status(after, "/me", genuine), "a genuine token of the removed key")
	require.Equal(t, 200, status(after, "/me", renewed), "the new key's tokens")
}
