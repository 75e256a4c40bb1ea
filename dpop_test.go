package refresh_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/refreshkit/refresh"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// dpopClient is a client holding a DPoP key.
type dpopClient struct {
	key        ed25519.PrivateKey
	jwk        map[string]any
	thumbprint string
	n          int
}

func newDPoPClient(t *testing.T) *dpopClient {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	pub, err := jwk.Import(priv.Public())
	require.NoError(t, err)
	tp, err := pub.Thumbprint(crypto.SHA256)
	require.NoError(t, err)
	b, err := json.Marshal(pub)
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(b, &m))
	return &dpopClient{key: priv, jwk: m, thumbprint: base64.RawURLEncoding.EncodeToString(tp)}
}

// proof signs a DPoP proof; mod may change header and claims first.
func (c *dpopClient) proof(method, u, accessToken string, iat time.Time, mod ...func(h, claims map[string]any)) string {
	c.n++
	h := map[string]any{"typ": "dpop+jwt", "alg": "EdDSA", "jwk": c.jwk}
	claims := map[string]any{"jti": "jti-" + strings.Repeat("x", c.n%3) + time.Now().Format(time.RFC3339Nano) + string(rune('a'+c.n%26)),
		"htm": method, "htu": u, "iat": iat.Unix()}
	if accessToken != "" {
		sum := sha256.Sum256([]byte(accessToken))
		claims["ath"] = base64.RawURLEncoding.EncodeToString(sum[:])
	}
	for _, m := range mod {
		m(h, claims)
	}
	in := b64json(h) + "." + b64json(claims)
	return in + "." + base64.RawURLEncoding.EncodeToString(ed25519.Sign(c.key, []byte(in)))
}

const tokenURL = "https://auth.example.com/token"

// D1: a refresh token issued with a DPoP proof is bound to that key; a
// refresh with another key or without a proof fails and revokes nothing.
func TestD1_DPoPBoundRefresh(t *testing.T) {
	e := newEnv(t)
	alice, mallory := newDPoPClient(t), newDPoPClient(t)
	proof, err := e.iss.VerifyDPoPProof(alice.proof("POST", tokenURL, "", e.clock.Now()), "POST", tokenURL, "")
	require.NoError(t, err)
	assert.Equal(t, alice.thumbprint, proof.Thumbprint, "the thumbprint is RFC 7638's")

	p := e.issue(t, "alice", refresh.WithDPoP(proof.Thumbprint))
	assert.Equal(t, "DPoP", p.TokenType)
	_, c := decodeJWT(t, p.AccessToken)
	assert.Equal(t, map[string]any{"jkt": alice.thumbprint}, c["cnf"])

	for name, jkt := range map[string]string{"no proof": "", "another key": mallory.thumbprint} {
		_, err := e.iss.Rotate(bg, p.RefreshToken, refresh.WithDPoP(jkt))
		require.ErrorIs(t, err, refresh.ErrInvalidToken, name)
	}
	s := e.session(t, p.SessionID)
	assert.False(t, s.Revoked())
	assert.Equal(t, uint64(0), s.Generation)

	q, err := e.iss.Rotate(bg, p.RefreshToken, refresh.WithDPoP(alice.thumbprint))
	require.NoError(t, err)
	claims, err := e.iss.Verify(bg, q.AccessToken)
	require.NoError(t, err)
	assert.Equal(t, alice.thumbprint, claims.DPoPKey)

	// An unbound session ignores a proof: no silent upgrade, no failure.
	u := e.issue(t, "bob")
	r, err := e.iss.Rotate(bg, u.RefreshToken, refresh.WithDPoP(mallory.thumbprint))
	require.NoError(t, err)
	assert.Equal(t, "Bearer", r.TokenType)
}

func TestVerifyDPoPProof(t *testing.T) {
	e := newEnv(t, func(c *refresh.Config) { c.Leeway = 0 })
	c := newDPoPClient(t)
	now := e.clock.Now()
	ok := func(p string, at string) {
		t.Helper()
		_, err := e.iss.VerifyDPoPProof(p, "GET", "https://api.example.com/me?x=1", at)
		require.NoError(t, err)
	}
	bad := func(why, p, at string) {
		t.Helper()
		_, err := e.iss.VerifyDPoPProof(p, "GET", "https://api.example.com/me", at)
		require.ErrorIs(t, err, refresh.ErrInvalidToken, why)
	}
	u := "https://API.example.com/me#frag"
	ok(c.proof("GET", u, "tok", now), "tok")
	// Verification alone records nothing: the same proof verifies again
	// (replay is refused where a proof is consumed; see TestDPoPReplay).
	replay := c.proof("GET", u, "tok", now)
	ok(replay, "tok")
	ok(replay, "tok")

	// iat: one minute old is the limit, five seconds ahead too.
	ok(c.proof("GET", u, "", now.Add(-time.Minute)), "")
	bad("iat too old", c.proof("GET", u, "", now.Add(-time.Minute-time.Second)), "")
	ok(c.proof("GET", u, "", now.Add(5*time.Second)), "")
	bad("iat in the future", c.proof("GET", u, "", now.Add(6*time.Second)), "")
	// Leeway widens both edges by itself, no more.
	lenient := newEnv(t, func(c *refresh.Config) { c.Leeway = 10 * time.Second })
	within := func(iat time.Time) bool {
		_, err := lenient.iss.VerifyDPoPProof(c.proof("GET", u, "", iat), "GET", "https://api.example.com/me", "")
		return err == nil
	}
	at := lenient.clock.Now()
	assert.True(t, within(at.Add(-time.Minute-10*time.Second)), "a minute and the leeway old")
	assert.False(t, within(at.Add(-time.Minute-11*time.Second)), "a second more")
	assert.True(t, within(at.Add(15*time.Second)), "five seconds and the leeway ahead")
	assert.False(t, within(at.Add(16*time.Second)), "a second more")
	// A DPoPProof the application made itself, not VerifyDPoPProof's,
	// binds nothing and consumes nothing.
	made := &refresh.DPoPProof{Thumbprint: c.thumbprint, ID: "made-up", IssuedAt: now}
	_, err := e.iss.Issue(bg, "alice", refresh.WithDPoPProof(made))
	require.ErrorIs(t, err, refresh.ErrInvalidToken, "Issue with a hand-made proof")
	bound := e.issue(t, "alice", refresh.WithDPoP(c.thumbprint))
	_, err = e.iss.Rotate(bg, bound.RefreshToken, refresh.WithDPoPProof(made))
	require.ErrorIs(t, err, refresh.ErrInvalidToken, "Rotate with a hand-made proof")
	assert.Zero(t, e.session(t, bound.SessionID).Generation)

	// htu after RFC 3986 normalization (RFC 9449 §4.3): default port,
	// percent-encoded unreserved characters.
	ok(c.proof("GET", "https://api.example.com:443/%6De", "", now), "")
	bad("encoded slash", c.proof("GET", "https://api.example.com/m%2Fe", "", now), "")
	bad("wrong method", c.proof("POST", u, "", now), "")
	bad("wrong path", c.proof("GET", "https://api.example.com/admin", "", now), "")
	bad("wrong host", c.proof("GET", "https://evil.example.com/me", "", now), "")
	bad("wrong scheme", c.proof("GET", "http://api.example.com/me", "", now), "")
	bad("missing ath", c.proof("GET", u, "", now), "tok")
	bad("ath of another token", c.proof("GET", u, "other", now), "tok")
	bad("typ JWT", c.proof("GET", u, "", now, func(h, _ map[string]any) { h["typ"] = "JWT" }), "")
	bad("alg none", c.proof("GET", u, "", now, func(h, _ map[string]any) { h["alg"] = "none" }), "")
	bad("alg HS256", c.proof("GET", u, "", now, func(h, _ map[string]any) { h["alg"] = "HS256" }), "")
	bad("alg ES256 for an Ed25519 key", c.proof("GET", u, "", now, func(h, _ map[string]any) { h["alg"] = "ES256" }), "")
	bad("no jwk", c.proof("GET", u, "", now, func(h, _ map[string]any) { delete(h, "jwk") }), "")
	bad("another key's jwk", c.proof("GET", u, "", now, func(h, _ map[string]any) { h["jwk"] = newDPoPClient(t).jwk }), "")
	priv, err := jwk.Import(c.key)
	require.NoError(t, err)
	privJSON, _ := json.Marshal(priv)
	var privMap map[string]any
	_ = json.Unmarshal(privJSON, &privMap)
	bad("private jwk", c.proof("GET", u, "", now, func(h, _ map[string]any) { h["jwk"] = privMap }), "")
	bad("no jti", c.proof("GET", u, "", now, func(_, cl map[string]any) { delete(cl, "jti") }), "")
	bad("no iat", c.proof("GET", u, "", now, func(_, cl map[string]any) { delete(cl, "iat") }), "")
	bad("crit", c.proof("GET", u, "", now, func(h, _ map[string]any) { h["crit"] = []string{"x"} }), "")
	// A JWK as WebCrypto's exportKey writes it (ext, key_ops) is a JWK.
	ok(c.proof("GET", u, "", now, func(h, _ map[string]any) {
		k := maps.Clone(c.jwk)
		k["ext"], k["key_ops"] = true, []string{"verify"}
		h["jwk"] = k
	}), "")
	p := c.proof("GET", u, "", now)
	bad("tampered", p[:len(p)-3]+"AAA", "")
	// ES256 with the all-zero "psychic" signature (CVE-2022-21449) and with
	// r = s = n; the same proof genuinely signed by the key is accepted.
	ecPub, err := jwk.Import(&ecKey.PublicKey)
	require.NoError(t, err)
	ecJSON, _ := json.Marshal(ecPub)
	var ecMap map[string]any
	require.NoError(t, json.Unmarshal(ecJSON, &ecMap))
	esIn := b64json(map[string]any{"typ": "dpop+jwt", "alg": "ES256", "jwk": ecMap}) + "." +
		b64json(map[string]any{"jti": "es-" + now.Format(time.RFC3339Nano), "htm": "GET", "htu": u, "iat": now.Unix()})
	digest := sha256.Sum256([]byte(esIn))
	r, sg, err := ecdsa.Sign(rand.Reader, ecKey, digest[:])
	require.NoError(t, err)
	order := ecKey.Curve.Params().N.FillBytes(make([]byte, 32))
	bad("ES256 psychic signature", esIn+"."+base64.RawURLEncoding.EncodeToString(make([]byte, 64)), "")
	bad("ES256 r = s = n", esIn+"."+base64.RawURLEncoding.EncodeToString(append(append([]byte{}, order...), order...)), "")
	ok(esIn+"."+base64.RawURLEncoding.EncodeToString(append(r.FillBytes(make([]byte, 32)), sg.FillBytes(make([]byte, 32))...)), "")
	bad("garbage", "not.a.proof", "")
	bad("huge", strings.Repeat("A", 5000), "")
	// The length bound (4 KiB, checked before anything is decoded) at its
	// byte: a genuine proof padded to exactly 4096 bytes verifies, one
	// byte more is refused as too long.
	ok(proofOfLength(t, c, u, now, 4096), "")
	long := proofOfLength(t, c, u, now, 4097)
	_, err = e.iss.VerifyDPoPProof(long, "GET", "https://api.example.com/me", "")
	require.ErrorIs(t, err, refresh.ErrInvalidToken)
	assert.ErrorContains(t, err, "too long")
}

// proofOfLength signs a genuine proof for GET u padded (an unknown header
// member and an unknown claim, both ignored) to exactly n bytes.
func proofOfLength(t *testing.T, c *dpopClient, u string, iat time.Time, n int) string {
	t.Helper()
	base := len(c.proof("GET", u, "", iat, func(h, cl map[string]any) { h["x"], cl["pad"] = "", "" }))
	// Base64 grows by 4/3 of the padding; the header's padding reaches the
	// lengths the payload's alone skips.
	for hp := 0; hp < 3; hp++ {
		for pp := max(0, (n-base)*3/4-4); pp < (n-base)*3/4+4; pp++ {
			p := c.proof("GET", u, "", iat, func(h, cl map[string]any) {
				h["x"], cl["pad"] = strings.Repeat("h", hp), strings.Repeat("p", pp)
			})
			if len(p) == n {
				return p
			}
		}
	}
	t.Fatalf("no padding gives a proof of %d bytes", n)
	return ""
}

// D1 over HTTP: the refresh endpoint binds and checks proofs, and the
// middleware admits a bound access token only with the DPoP scheme and a
// fresh proof from the same key.
func TestD1_DPoPOverHTTP(t *testing.T) {
	e := newEnv(t)
	srv, h := e.server(t, refresh.HandlerConfig{})
	alice, mallory := newDPoPClient(t), newDPoPClient(t)

	// Bind at login the way an application would.
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/login", nil)
	req.Host = strings.TrimPrefix(srv.URL, "http://")
	req.Header.Set("DPoP", alice.proof("POST", srv.URL+"/login", "", e.clock.Now()))
	proof, err := h.DPoPProof(req)
	require.NoError(t, err)
	require.Equal(t, alice.thumbprint, proof.Thumbprint)
	p := e.issue(t, "alice", refresh.WithDPoPProof(proof))
	_, err = e.iss.Issue(bg, "alice", refresh.WithDPoPProof(proof))
	require.ErrorIs(t, err, refresh.ErrInvalidToken, "a login proof is single-use too")

	refreshWith := func(c *dpopClient, tok string) reply {
		hdr := map[string]string{}
		if c != nil {
			hdr["DPoP"] = c.proof("POST", srv.URL+"/token", "", e.clock.Now())
		}
		return postForm(t, nil, srv.URL+"/token", refreshForm(tok), hdr)
	}
	r := refreshWith(nil, p.RefreshToken)
	assert.Equal(t, "invalid_grant", r.body["error"], "no proof")
	r = refreshWith(mallory, p.RefreshToken)
	assert.Equal(t, "invalid_grant", r.body["error"], "another key")
	r = postForm(t, nil, srv.URL+"/token", refreshForm(p.RefreshToken), map[string]string{"DPoP": "garbage"})
	assert.Equal(t, 400, r.status)
	assert.Equal(t, "invalid_dpop_proof", r.body["error"])
	r = refreshWith(alice, p.RefreshToken)
	require.Equal(t, 200, r.status, r.raw)
	assert.Equal(t, "DPoP", r.body["token_type"])
	at := r.body["access_token"].(string)

	call := func(scheme string, c *dpopClient, method string, mod ...func(h, claims map[string]any)) *http.Response {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/me", nil)
		req.Header.Set("Authorization", scheme+" "+at)
		if c != nil {
			req.Header.Set("DPoP", c.proof(method, srv.URL+"/me", at, e.clock.Now(), mod...))
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		return resp
	}
	assert.Equal(t, 200, call("DPoP", alice, "GET").StatusCode)
	resp := call("Bearer", nil, "GET")
	assert.Equal(t, 401, resp.StatusCode, "a bound token used as a bearer token")
	assert.True(t, strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "DPoP "), resp.Header.Get("WWW-Authenticate"))
	// With a good proof beside it too: a DPoP-bound token travels under
	// the DPoP scheme only (RFC 9449 §7.1).
	resp = call("Bearer", alice, "GET")
	assert.Equal(t, 401, resp.StatusCode, "a bound token as a bearer token, with a proof")
	assert.Contains(t, resp.Header.Get("WWW-Authenticate"), `error="invalid_token"`)
	assert.Equal(t, 401, call("DPoP", nil, "GET").StatusCode, "no proof")
	assert.Equal(t, 401, call("DPoP", mallory, "GET").StatusCode, "another key")
	assert.Equal(t, 401, call("DPoP", alice, "POST").StatusCode, "proof for another method")
	assert.Equal(t, 401, call("DPoP", alice, "GET", func(_, cl map[string]any) { delete(cl, "ath") }).StatusCode, "no ath")

	// An unbound token is not admitted with the DPoP scheme.
	plain := e.issue(t, "bob")
	req, _ = http.NewRequest(http.MethodGet, srv.URL+"/me", nil)
	req.Header.Set("Authorization", "DPoP "+plain.AccessToken)
	req.Header.Set("DPoP", alice.proof("GET", srv.URL+"/me", plain.AccessToken, e.clock.Now()))
	resp, err = http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, 401, resp.StatusCode)
}

func TestRequestURL(t *testing.T) {
	e := newEnv(t)
	r, _ := http.NewRequest(http.MethodGet, "http://internal:8080/a%20b?q=1", nil)
	r.Host = "api.example.com"
	assert.Equal(t, "http://api.example.com/a%20b", e.iss.RequestURL(r))
	behind := newEnv(t, func(c *refresh.Config) { c.PublicURL = "https://auth.example.com/" })
	assert.Equal(t, "https://auth.example.com/a%20b", behind.iss.RequestURL(r))
}

// Two instances behind one public URL, sharing one store (a
// ProofRecorder): a DPoP proof accepted by one is refused by the other, at
// the resource (middleware) and at the token endpoint; and a store that
// cannot record proofs is a 503, not a pass and not the client's fault.
func TestDPoPReplayAcrossInstances(t *testing.T) {
	const public = "https://api.example.com"
	e := newEnv(t, func(c *refresh.Config) { c.PublicURL = public })
	cfgB := e.cfg
	b, err := refresh.NewIssuer(cfgB)
	require.NoError(t, err)
	alice := newDPoPClient(t)
	login, err := e.iss.VerifyDPoPProof(alice.proof("POST", public+"/login", "", e.clock.Now()), "POST", public+"/login", "")
	require.NoError(t, err)
	p := e.issue(t, "alice", refresh.WithDPoPProof(login))

	serve := func(iss *refresh.Issuer) *httptest.Server {
		h := refresh.NewHandlers(iss, refresh.HandlerConfig{})
		mux := http.NewServeMux()
		mux.Handle("/token", h.RefreshHandler())
		mux.Handle("/me", iss.Middleware()(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})))
		srv := httptest.NewServer(mux)
		t.Cleanup(srv.Close)
		return srv
	}
	srvA, srvB := serve(e.iss), serve(b)
	me := func(srv *httptest.Server, proof string) int { return dpopGet(t, srv.URL+"/me", p.AccessToken, proof) }
	proof := alice.proof("GET", public+"/me", p.AccessToken, e.clock.Now())
	require.Equal(t, 200, me(srvA, proof))
	require.Equal(t, 401, me(srvB, proof), "the same proof at the other instance")
	require.Equal(t, 200, me(srvB, alice.proof("GET", public+"/me", p.AccessToken, e.clock.Now())), "a fresh proof there")

	// The token endpoint: a refresh on A, its proof replayed to B with the
	// new refresh token (which B would accept with a fresh proof).
	tokProof := alice.proof("POST", public+"/token", "", e.clock.Now())
	r := postForm(t, nil, srvA.URL+"/token", refreshForm(p.RefreshToken), map[string]string{"DPoP": tokProof})
	require.Equal(t, 200, r.status, r.raw)
	next := r.body["refresh_token"].(string)
	r = postForm(t, nil, srvB.URL+"/token", refreshForm(next), map[string]string{"DPoP": tokProof})
	assert.Equal(t, "invalid_grant", r.body["error"], "a proof replayed to the other instance")
	r = postForm(t, nil, srvB.URL+"/token", refreshForm(next), map[string]string{"DPoP": alice.proof("POST", public+"/token", "", e.clock.Now())})
	assert.Equal(t, 200, r.status, "the replay revoked nothing: %s", r.raw)
	latest := r.body["refresh_token"].(string)

	// A store that cannot record: 503 at the resource.
	cfgC := e.cfg
	cfgC.Store = failingProofs{e.store}
	c, err := refresh.NewIssuer(cfgC)
	require.NoError(t, err)
	srvC := serve(c)
	assert.Equal(t, 503, me(srvC, alice.proof("GET", public+"/me", p.AccessToken, e.clock.Now())))
	// And at the token endpoint: 503, the session not advanced, the refresh
	// token still good with a fresh proof where proofs can be recorded.
	gen := e.session(t, p.SessionID).Generation
	r = postForm(t, nil, srvC.URL+"/token", refreshForm(latest), map[string]string{"DPoP": alice.proof("POST", public+"/token", "", e.clock.Now())})
	assert.Equal(t, 503, r.status, r.raw)
	assert.Equal(t, "temporarily_unavailable", r.body["error"])
	assert.Equal(t, gen, e.session(t, p.SessionID).Generation)
	r = postForm(t, nil, srvA.URL+"/token", refreshForm(latest), map[string]string{"DPoP": alice.proof("POST", public+"/token", "", e.clock.Now())})
	assert.Equal(t, 200, r.status, r.raw)
}

// failingProofs is a MemoryStore whose proof records are unreachable.
type failingProofs struct{ *refresh.MemoryStore }

func (failingProofs) RecordProof(context.Context, string, time.Time, time.Time) error {
	return errors.New("proof table unreachable")
}

// TestDPoPNonce is RFC 9449 §8/§9 with DPoPNonceLifetime 2 min, over HTTP:
// a proof without a current nonce gets use_dpop_nonce and a fresh nonce,
// at the token endpoint (400) and at the API (401, DPoP challenge) alike,
// and nothing is consumed or changed; the retry with the nonce works; a
// nonce is accepted in its minute and the next, to the nanosecond, and not
// after; a forged or another deployment's nonce is refused; token responses
// carry the next nonce; another instance with the same keys agrees.
func TestDPoPNonce(t *testing.T) {
	e := newEnv(t, func(c *refresh.Config) { c.DPoPNonceLifetime = 2 * time.Minute })
	e.clock.Set(time.Unix(1_800_000_000, 0).Truncate(time.Minute)) // the start of a nonce slot
	srv, h := e.server(t, refresh.HandlerConfig{})
	alice := newDPoPClient(t)
	withNonce := func(n string) func(_, cl map[string]any) {
		return func(_, cl map[string]any) {
			if n != "" {
				cl["nonce"] = n
			}
		}
	}

	// Sign-in: the application's handler meets the nonce through DPoPProof.
	login := func(nonce string) (*refresh.DPoPProof, error) {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/login", nil)
		req.Host = strings.TrimPrefix(srv.URL, "http://")
		req.Header.Set("DPoP", alice.proof("POST", srv.URL+"/login", "", e.clock.Now(), withNonce(nonce)))
		return h.DPoPProof(req)
	}
	_, err := login("")
	require.ErrorIs(t, err, refresh.ErrUseDPoPNonce)
	require.ErrorIs(t, err, refresh.ErrInvalidToken)
	nonce := h.DPoPNonce()
	require.Len(t, nonce, 32)
	proof, err := login(nonce)
	require.NoError(t, err)
	p := e.issue(t, "alice", refresh.WithDPoPProof(proof))

	refreshWith := func(nonce string) reply {
		return postForm(t, nil, srv.URL+"/token", refreshForm(p.RefreshToken),
			map[string]string{"DPoP": alice.proof("POST", srv.URL+"/token", "", e.clock.Now(), withNonce(nonce))})
	}
	r := refreshWith("")
	require.Equal(t, 400, r.status)
	assert.Equal(t, "use_dpop_nonce", r.body["error"])
	assert.Equal(t, nonce, r.header.Get("DPoP-Nonce"))
	assert.Equal(t, uint64(0), e.session(t, p.SessionID).Generation, "refused before anything changed")
	forged := []byte(nonce)
	forged[31] = map[bool]byte{true: 'B', false: 'A'}[forged[31] == 'A']
	for name, bad := range map[string]string{
		"forged":   string(forged),
		"garbage":  "not-a-nonce",
		"too long": strings.Repeat("A", 300),
		"other deployment": refresh.NewHandlers(newEnv(t, func(c *refresh.Config) {
			c.DPoPNonceLifetime = 2 * time.Minute
			c.RefreshKeys = []refresh.RefreshKey{{ID: 1, Secret: []byte("another-refresh-key-of-32-bytes!")}}
			c.Now = e.clock.Now
		}).iss, refresh.HandlerConfig{}).DPoPNonce(),
	} {
		r := refreshWith(bad)
		require.Equal(t, 400, r.status, name)
		assert.Contains(t, []any{"use_dpop_nonce", "invalid_dpop_proof"}, r.body["error"], name)
	}
	// The revocation endpoint asks the same, and revokes nothing meanwhile.
	r = postForm(t, nil, srv.URL+"/revoke", url.Values{"token": {p.RefreshToken}},
		map[string]string{"DPoP": alice.proof("POST", srv.URL+"/revoke", "", e.clock.Now())})
	require.Equal(t, 400, r.status)
	assert.Equal(t, "use_dpop_nonce", r.body["error"])
	assert.Equal(t, nonce, r.header.Get("DPoP-Nonce"))
	assert.False(t, e.session(t, p.SessionID).Revoked())

	r = refreshWith(nonce)
	require.Equal(t, 200, r.status, r.raw)
	assert.Equal(t, nonce, r.header.Get("DPoP-Nonce"), "the token response carries the current nonce")
	p.RefreshToken = r.body["refresh_token"].(string)
	at := r.body["access_token"].(string)

	me := func(nonce string) *http.Response {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/me", nil)
		req.Header.Set("Authorization", "DPoP "+at)
		req.Header.Set("DPoP", alice.proof("GET", srv.URL+"/me", at, e.clock.Now(), withNonce(nonce)))
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		return resp
	}
	resp := me("")
	require.Equal(t, 401, resp.StatusCode)
	assert.Contains(t, resp.Header.Get("WWW-Authenticate"), `error="use_dpop_nonce"`)
	assert.True(t, strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "DPoP "))
	assert.Equal(t, nonce, resp.Header.Get("DPoP-Nonce"))
	resp = me(nonce)
	assert.Equal(t, 200, resp.StatusCode)
	assert.Empty(t, resp.Header.Get("DPoP-Nonce"), "a nonce of the current slot needs no renewal")

	// The nonce of the first minute is good until the end of the second;
	// an answer to a request made with it in the second carries the next.
	e.clock.Advance(2*time.Minute - time.Nanosecond)
	resp = me(nonce)
	assert.Equal(t, 200, resp.StatusCode, "1 ns before the end of its second slot")
	assert.NotEqual(t, nonce, h.DPoPNonce(), "a new nonce each slot")
	assert.Equal(t, h.DPoPNonce(), resp.Header.Get("DPoP-Nonce"))
	e.clock.Advance(time.Nanosecond)
	resp = me(nonce)
	assert.Equal(t, 401, resp.StatusCode, "at the end of its second slot")
	fresh := resp.Header.Get("DPoP-Nonce")
	assert.Equal(t, 200, me(fresh).StatusCode)

	// Issuer.VerifyDPoPProof asks for the nonce too, so a proof for a
	// hand-written handler (and so for Issue, Rotate or Revoke) has one.
	_, err = e.iss.VerifyDPoPProof(alice.proof("POST", srv.URL+"/login", "", e.clock.Now()), "POST", srv.URL+"/login", "")
	require.ErrorIs(t, err, refresh.ErrUseDPoPNonce)
	_, err = e.iss.VerifyDPoPProof(alice.proof("POST", srv.URL+"/login", "", e.clock.Now(), withNonce(fresh)), "POST", srv.URL+"/login", "")
	require.NoError(t, err)

	// Another instance with the same keys accepts this one's nonces.
	other := newEnv(t, func(c *refresh.Config) {
		c.DPoPNonceLifetime, c.Store, c.Now = 2*time.Minute, e.store, e.clock.Now
	})
	assert.Equal(t, fresh, refresh.NewHandlers(other.iss, refresh.HandlerConfig{}).DPoPNonce())

	_, err = refresh.NewIssuer(refresh.Config{Issuer: "i", Audience: "a", Store: refresh.NewMemoryStore(),
		Keys: e.cfg.Keys, RefreshKeys: e.cfg.RefreshKeys, DPoPNonceLifetime: time.Second})
	require.ErrorContains(t, err, "DPoPNonceLifetime")
}
