package refresh_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/refreshkit/refresh"
	"github.com/refreshkit/refresh/refreshtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// jwksServer serves whatever handler is current, counting requests: the
// auth service as a resource server sees it.
type jwksServer struct {
	*httptest.Server
	h       atomic.Pointer[http.Handler]
	fetches atomic.Int64
	delay   atomic.Int64 // nanoseconds each answer waits
}

func newJWKSServer(t *testing.T, iss *refresh.Issuer) *jwksServer {
	s := &jwksServer{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.fetches.Add(1)
		time.Sleep(time.Duration(s.delay.Load()))
		(*s.h.Load()).ServeHTTP(w, r)
	}))
	t.Cleanup(s.Close)
	s.serve(iss)
	return s
}

// serve publishes iss's JWKS, or answers 503 when iss is nil (the auth
// service down).
func (s *jwksServer) serve(iss *refresh.Issuer) {
	var h http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "down", http.StatusServiceUnavailable)
	})
	if iss != nil {
		h = refresh.NewHandlers(iss, refresh.HandlerConfig{}).JWKSHandler()
	}
	s.h.Store(&h)
}

func edKeyPair(t *testing.T, id string) refresh.Key {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	return refresh.Key{ID: id, Algorithm: refresh.EdDSA, Key: priv}
}

// authIssuer is the auth service: an Issuer signing with keys[0], on clock.
func authIssuer(t *testing.T, clock *refreshtest.Clock, store refresh.Store, keys ...refresh.Key) *refresh.Issuer {
	iss, err := refresh.NewIssuer(refresh.Config{
		Issuer: "https://auth.example.com", Audience: "https://api.example.com",
		Keys: keys, RefreshKeys: []refresh.RefreshKey{{ID: 1, Secret: macSecret}},
		Store: store, Now: clock.Now,
	})
	require.NoError(t, err)
	return iss
}

func newVerifier(t *testing.T, clock *refreshtest.Clock, mod func(*refresh.VerifierConfig)) *refresh.Verifier {
	cfg := refresh.VerifierConfig{
		Issuer: "https://auth.example.com", Audience: "https://api.example.com",
		Now: clock.Now, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	mod(&cfg)
	v, err := refresh.NewVerifier(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = v.Close() })
	return v
}

// resourceAPI is a resource server: the Verifier's middleware in front of
// handlers that echo the subject, one guarded by a scope.
func resourceAPI(t *testing.T, v *refresh.Verifier) *httptest.Server {
	mw := v.Middleware()
	me := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, _ := refresh.ClaimsFromContext(r.Context())
		_, _ = io.WriteString(w, c.Subject)
	})
	mux := http.NewServeMux()
	mux.Handle("/me", mw(me))
	mux.Handle("/write", mw(refresh.RequireScope("write")(me)))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

// The Issuer's whole attack suite, against a Verifier with the same keys:
// one implementation, so the same refusals, through Verify and over HTTP.
func TestVerifierAttackSuite(t *testing.T) {
	e := newEnv(t, func(c *refresh.Config) {
		c.Keys = append(c.Keys, refresh.Key{ID: "ec1", Algorithm: refresh.ES256, Key: &ecKey.PublicKey})
	})
	v := newVerifier(t, e.clock, func(c *refresh.VerifierConfig) {
		c.Keys = []refresh.Key{{ID: "hs1", Algorithm: refresh.HS256, Key: hsSecret}, {ID: "ec1", Algorithm: refresh.ES256, Key: &ecKey.PublicKey}}
	})
	srv := resourceAPI(t, v)
	for name, tok := range attackTokens(t, e) {
		t.Run(name, func(t *testing.T) {
			_, err := v.Verify(bg, tok)
			require.ErrorIs(t, err, refresh.ErrInvalidToken)
			resp := get(t, srv.URL+"/me", bearer(tok))
			if strings.ContainsAny(tok, "{}\" =") {
				require.Equal(t, 400, resp.StatusCode)
				return
			}
			require.Equal(t, 401, resp.StatusCode)
			require.Contains(t, resp.Header.Get("WWW-Authenticate"), `error="invalid_token"`)
		})
	}
	good := forgeHS(goodHeader(), e.goodClaims(), hsSecret)
	_, err := v.Verify(bg, good)
	require.NoError(t, err)
	p := e.issue(t, "alice", refresh.WithScope("read"))
	resp := get(t, srv.URL+"/me", bearer(p.AccessToken))
	require.Equal(t, 200, resp.StatusCode)
	resp = get(t, srv.URL+"/write", bearer(p.AccessToken))
	require.Equal(t, 403, resp.StatusCode, "RequireScope works behind the Verifier's middleware")
	require.Contains(t, resp.Header.Get("WWW-Authenticate"), `error="insufficient_scope"`)
	e.clock.Advance(time.Hour)
	_, err = v.Verify(bg, p.AccessToken)
	require.ErrorIs(t, err, refresh.ErrExpired)
}

// VerifierConfig.VerifyCacheSize is honoured: the default keeps every
// token verified here, a negative size none, a size of 2 at most two. (And a
// Verifier with static keys is Ready from the start.)
func TestVerifierCacheSize(t *testing.T) {
	e := newEnv(t)
	for size, holds := range map[int]int{0: 3, -1: 0, 2: 2} {
		v := newVerifier(t, e.clock, func(c *refresh.VerifierConfig) {
			c.Keys = []refresh.Key{{ID: "hs1", Algorithm: refresh.HS256, Key: hsSecret}}
			c.VerifyCacheSize = size
		})
		require.True(t, v.Ready(), "static keys: ready at once")
		for _, sub := range []string{"alice", "bob", "carol"} {
			c, err := v.Verify(bg, e.issue(t, sub).AccessToken)
			require.NoError(t, err)
			assert.Equal(t, sub, c.Subject)
		}
		assert.Equal(t, holds, refresh.VerifyCacheLen(v), "VerifyCacheSize %d", size)
	}
}

func TestNewVerifierRefusesBadConfig(t *testing.T) {
	k := []refresh.Key{{ID: "hs1", Algorithm: refresh.HS256, Key: hsSecret}}
	for name, c := range map[string]refresh.VerifierConfig{
		"no issuer":               {Audience: "a", Keys: k},
		"no keys":                 {Issuer: "i", Audience: "a"},
		"keys and url":            {Issuer: "i", Audience: "a", Keys: k, JWKSURL: "https://x/jwks"},
		"http to a host":          {Issuer: "i", Audience: "a", JWKSURL: "http://auth.example.com/jwks"},
		"http to a LAN IP":        {Issuer: "i", Audience: "a", JWKSURL: "http://10.0.0.1/jwks"},
		"ftp":                     {Issuer: "i", Audience: "a", JWKSURL: "ftp://auth.example.com/jwks"},
		"relative":                {Issuer: "i", Audience: "a", JWKSURL: "/jwks"},
		"no host":                 {Issuer: "i", Audience: "a", JWKSURL: "https:///jwks"},
		"opaque":                  {Issuer: "i", Audience: "a", JWKSURL: "https:jwks"},
		"introspection http":      {Issuer: "i", Audience: "a", Keys: k, Introspection: &refresh.IntrospectionConfig{URL: "http://auth.example.com/introspect", ClientID: "c", ClientSecret: "s"}},
		"introspection no id":     {Issuer: "i", Audience: "a", Keys: k, Introspection: &refresh.IntrospectionConfig{URL: "https://auth.example.com/introspect"}},
		"introspection no secret": {Issuer: "i", Audience: "a", Keys: k, Introspection: &refresh.IntrospectionConfig{URL: "https://auth.example.com/introspect", ClientID: "c"}},
		"introspection no client": {Issuer: "i", Audience: "a", Keys: k, Introspection: &refresh.IntrospectionConfig{URL: "https://auth.example.com/introspect", ClientSecret: "s"}},
		"short HMAC secret":       {Issuer: "i", Audience: "a", Keys: []refresh.Key{{Algorithm: refresh.HS256, Key: []byte("short")}}},
	} {
		_, err := refresh.NewVerifier(c)
		assert.Error(t, err, name)
	}
	// MaxTokenSize below 256 bytes is refused, 256 taken.
	_, err := refresh.NewVerifier(refresh.VerifierConfig{Issuer: "i", Audience: "a", Keys: k, MaxTokenSize: 255})
	assert.ErrorContains(t, err, "MaxTokenSize")
	v, err := refresh.NewVerifier(refresh.VerifierConfig{Issuer: "i", Audience: "a", Keys: k, MaxTokenSize: 256})
	require.NoError(t, err)
	require.NoError(t, v.Close())
	// An RSA verification key of 2047 bits is refused, of 2048 taken.
	rsaOf := func(bits int) []refresh.Key {
		return []refresh.Key{{ID: "rs", Algorithm: refresh.RS256, Key: &rsa.PublicKey{N: modulusOf(bits), E: 65537}}}
	}
	_, err = refresh.NewVerifier(refresh.VerifierConfig{Issuer: "i", Audience: "a", Keys: rsaOf(2047)})
	assert.ErrorContains(t, err, "2048 bits")
	v, err = refresh.NewVerifier(refresh.VerifierConfig{Issuer: "i", Audience: "a", Keys: rsaOf(2048)})
	require.NoError(t, err)
	require.NoError(t, v.Close())
}

// Key rotation end to end: the auth service adds a key and signs with it;
// the resource server accepts the new tokens without a restart (one fetch
// for the unknown kid) and the old ones until they expire; once the old key
// leaves the set, its tokens stop verifying at the next fetch.
func TestVerifierJWKSKeyRotation(t *testing.T) {
	clock := refreshtest.NewClock(time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC))
	store := refresh.NewMemoryStore(refresh.WithStoreClock(clock.Now))
	defer store.Close()
	k1, k2 := edKeyPair(t, "2026-11"), edKeyPair(t, "2026-12")
	old := authIssuer(t, clock, store, k1)
	jwks := newJWKSServer(t, old)
	v := newVerifier(t, clock, func(c *refresh.VerifierConfig) { c.JWKSURL = jwks.URL })
	require.True(t, v.Ready())
	require.EqualValues(t, 1, jwks.fetches.Load(), "one fetch at start")
	srv := resourceAPI(t, v)

	p1, err := old.Issue(bg, "alice")
	require.NoError(t, err)
	require.Equal(t, 200, get(t, srv.URL+"/me", bearer(p1.AccessToken)).StatusCode)

	// Rotation: the new key signs, the old one is still published.
	rotated := authIssuer(t, clock, store, k2, k1)
	jwks.serve(rotated)
	p2, err := rotated.Issue(bg, "bob")
	require.NoError(t, err)
	// Many requests with the new kid at once, while the (slow) fetch runs:
	// all wait for it and pass; one fetch in all.
	jwks.delay.Store(int64(100 * time.Millisecond))
	var wg sync.WaitGroup
	codes := make(chan int, 40)
	for range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest("GET", srv.URL+"/me", nil)
			req.Header.Set("Authorization", "Bearer "+p2.AccessToken)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				codes <- 0
				return
			}
			resp.Body.Close()
			codes <- resp.StatusCode
		}()
	}
	wg.Wait()
	close(codes)
	for c := range codes {
		require.Equal(t, 200, c, "a token from the new key, without a restart, also while the fetch runs")
	}
	jwks.delay.Store(0)
	require.EqualValues(t, 2, jwks.fetches.Load(), "the unknown kid cost one fetch")
	require.Equal(t, 200, get(t, srv.URL+"/me", bearer(p1.AccessToken)).StatusCode, "old tokens until they expire")

	// The old key is withdrawn. After the refetch interval, the next
	// unknown kid (here a made-up one) fetches again, and k1 is gone.
	jwks.serve(authIssuer(t, clock, store, k2))
	clock.Advance(time.Minute)
	_, err = v.Verify(bg, forgeEd(t, "no-such-kid", map[string]any{"sub": "x"}))
	require.ErrorIs(t, err, refresh.ErrInvalidToken)
	require.EqualValues(t, 3, jwks.fetches.Load())
	_, err = v.Verify(bg, p1.AccessToken)
	require.ErrorIs(t, err, refresh.ErrInvalidToken, "a key that left the set stops verifying, cached tokens included")
	require.Equal(t, 401, get(t, srv.URL+"/me", bearer(p1.AccessToken)).StatusCode)
}

// forgeEd signs claims with a fresh Ed25519 key under kid: a token from a
// key the resource server has never seen.
func forgeEd(t *testing.T, kid string, claims map[string]any) string {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	in := b64json(map[string]any{"alg": "EdDSA", "kid": kid, "typ": "at+jwt"}) + "." + b64json(claims)
	return in + "." + b64raw(ed25519.Sign(priv, []byte(in)))
}

// A flood of tokens with made-up kids is not a flood of fetches: at most one
// per JWKSRefetchInterval, however many arrive, concurrently or not.
func TestVerifierKidFloodIsBounded(t *testing.T) {
	clock := refreshtest.NewClock(time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC))
	iss := authIssuer(t, clock, refresh.NewMemoryStore(), edKeyPair(t, "k1"))
	jwks := newJWKSServer(t, iss)
	v := newVerifier(t, clock, func(c *refresh.VerifierConfig) { c.JWKSURL = jwks.URL; c.JWKSRefetchInterval = 30 * time.Second })
	srv := resourceAPI(t, v)
	const flood = 500
	done := make(chan int, flood)
	for i := 0; i < flood; i++ {
		go func() {
			tok := forgeEd(t, fmt.Sprintf("kid-%d", i), map[string]any{"sub": "x"})
			req, _ := http.NewRequest("GET", srv.URL+"/me", nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				done <- 0
				return
			}
			resp.Body.Close()
			done <- resp.StatusCode
		}()
	}
	for i := 0; i < flood; i++ {
		assert.Equal(t, 401, <-done)
	}
	assert.EqualValues(t, 2, jwks.fetches.Load(), "the start, and one fetch for %d unknown kids", flood)
	clock.Advance(30*time.Second - time.Nanosecond)
	_, _ = v.Verify(bg, forgeEd(t, "another", map[string]any{"sub": "x"}))
	assert.EqualValues(t, 2, jwks.fetches.Load(), "1ns before the interval: no fetch")
	clock.Advance(time.Nanosecond)
	_, _ = v.Verify(bg, forgeEd(t, "another", map[string]any{"sub": "x"}))
	assert.EqualValues(t, 3, jwks.fetches.Load(), "at the interval: one more")
}

// The resource server starts while the auth service is down, says so, and
// answers 503 (not 401: the client's token is not at fault) until the JWKS
// can be fetched; then it verifies.
func TestVerifierStartsWhileJWKSDown(t *testing.T) {
	clock := refreshtest.NewClock(time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC))
	iss := authIssuer(t, clock, refresh.NewMemoryStore(), edKeyPair(t, "k1"))
	jwks := newJWKSServer(t, nil)
	logged := &logBuffer{}
	v, err := refresh.NewVerifier(refresh.VerifierConfig{
		Issuer: "https://auth.example.com", Audience: "https://api.example.com", JWKSURL: jwks.URL,
		Now: clock.Now, Logger: slog.New(slog.NewTextHandler(logged, nil)),
		HTTPClient: &http.Client{Timeout: 2 * time.Second},
	})
	require.NoError(t, err, "starts anyway")
	defer v.Close()
	assert.False(t, v.Ready())
	assert.Contains(t, logged.String(), "JWKS not available yet")
	srv := resourceAPI(t, v)
	p, err := iss.Issue(bg, "alice")
	require.NoError(t, err)
	_, err = v.Verify(bg, p.AccessToken)
	require.ErrorIs(t, err, refresh.ErrKeysUnavailable)
	assert.False(t, refresh.IsClientError(err))
	assert.Equal(t, 503, get(t, srv.URL+"/me", bearer(p.AccessToken)).StatusCode)

	jwks.serve(iss)
	clock.Advance(time.Minute)
	_, err = v.Verify(bg, p.AccessToken)
	require.NoError(t, err, "verifies once the JWKS answers")
	assert.True(t, v.Ready())
}

// logBuffer collects log output from several goroutines.
type logBuffer struct {
	mu sync.Mutex // guards b
	b  strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// A JWKS that carries a symmetric key: the classic way to make a resource
// server accept HS256 tokens signed with a published "key". Ignored; and an
// RSA key without alg is ignored too (RS256 or PS256 would be a guess).
func TestVerifierIgnoresSymmetricJWK(t *testing.T) {
	secret := []byte("published-secret-of-32-bytes-ok!")
	set := fmt.Sprintf(`{"keys":[{"kty":"oct","kid":"sym","k":%q}]}`, b64raw(secret))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, set) }))
	defer srv.Close()
	clock := refreshtest.NewClock(time.Now())
	v := newVerifier(t, clock, func(c *refresh.VerifierConfig) { c.JWKSURL = srv.URL })
	claims := map[string]any{"iss": "https://auth.example.com", "aud": "https://api.example.com", "sub": "admin",
		"exp": clock.Now().Unix() + 600, "iat": clock.Now().Unix(), "jti": "j"}
	tok := forgeHS(map[string]any{"alg": "HS256", "kid": "sym", "typ": "at+jwt"}, claims, secret)
	_, err := v.Verify(bg, tok)
	require.ErrorIs(t, err, refresh.ErrInvalidToken, "a symmetric key from a JWKS must never verify")
}

// introspectionEnv is an auth service with the introspection endpoint
// (client "rs" with secret "rs-secret" may introspect; "web" and "mobile"
// are clients of sessions).
func introspectionEnv(t *testing.T, mod ...func(*refresh.Config)) (*env, *httptest.Server) {
	e := newEnv(t, append([]func(*refresh.Config){func(c *refresh.Config) { c.Keys = []refresh.Key{{ID: "ed1", Algorithm: refresh.EdDSA, Key: edKey}} }}, mod...)...)
	secrets := map[string]string{"rs": "rs-secret", "mobile": "mobile-secret"}
	h := refresh.NewHandlers(e.iss, refresh.HandlerConfig{ClientAuth: func(_ context.Context, c refresh.ClientCredentials) error {
		if want, ok := secrets[c.ID]; ok && c.Secret == want {
			return nil
		}
		if _, ok := secrets[c.ID]; !ok && c.Method == refresh.ClientAuthNone {
			return nil // public clients may use the token endpoint
		}
		if c.ID == "pub" && c.Secret == "" {
			return nil // a lenient ClientAuth: "no secret" means public, whatever the method
		}
		return refresh.ErrInvalidClient
	}})
	mux := http.NewServeMux()
	mux.Handle("/introspect", h.IntrospectionHandler())
	mux.Handle("/.well-known/jwks.json", h.JWKSHandler())
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return e, srv
}

// An access token is inactive from its session's absolute end on, also
// while Leeway still accepts its exp (which never passes the end): active
// a nanosecond before, inactive at the end. Once Sweep has removed the
// session it is inactive too, not a store fault.
func TestIntrospectionAtSessionEnd(t *testing.T) {
	const ttl = time.Hour
	e, srv := introspectionEnv(t, func(c *refresh.Config) { c.SessionTTL, c.IdleTTL, c.Leeway = ttl, ttl, time.Minute })
	p := e.issue(t, "alice")
	end := e.clock.Now().Add(ttl)
	e.clock.Set(end.Add(-10 * time.Minute))
	q, err := e.iss.Rotate(bg, p.RefreshToken)
	require.NoError(t, err)
	active := func() any {
		t.Helper()
		r := postForm(t, nil, srv.URL+"/introspect", url.Values{"token": {q.AccessToken}, "client_id": {"rs"}, "client_secret": {"rs-secret"}}, nil)
		require.Equal(t, 200, r.status, r.raw)
		return r.body["active"]
	}
	e.clock.Set(end.Add(-time.Nanosecond))
	assert.Equal(t, true, active(), "a nanosecond before the session's end")
	e.clock.Set(end)
	_, err = e.iss.Verify(bg, q.AccessToken)
	require.NoError(t, err, "Leeway still accepts the token itself")
	assert.Equal(t, false, active(), "at the session's end")
	e.clock.Set(end.Add(30 * time.Second))
	n, err := e.iss.Sweep(bg, 1)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	assert.Equal(t, false, active(), "its session swept")
}

// RFC 7662 over real HTTP, with a client written from the RFC: a POST of
// token, HTTP Basic, a JSON answer with "active".
func TestIntrospectionHandler(t *testing.T) {
	e, srv := introspectionEnv(t)
	signedIn := e.clock.Now().Add(-time.Hour)
	p := e.issue(t, "alice", refresh.WithScope("read", "write"), refresh.WithClientID("web"),
		refresh.WithAuthTime(signedIn), refresh.WithClaims(map[string]any{"acr": "mfa"}))
	ask := func(tok string, header map[string]string, extra url.Values) reply {
		form := url.Values{"token": {tok}}
		for k, v := range extra {
			form[k] = v
		}
		return postForm(t, nil, srv.URL+"/introspect", form, header)
	}
	basic := func(id, secret string) map[string]string {
		req, _ := http.NewRequest("POST", "/", nil)
		req.SetBasicAuth(id, secret)
		return map[string]string{"Authorization": req.Header.Get("Authorization")}
	}
	rs := basic("rs", "rs-secret")

	// Client authentication is required, with a secret.
	for name, r := range map[string]reply{
		"no credentials":                          ask(p.AccessToken, nil, nil),
		"bare client_id":                          ask(p.AccessToken, nil, url.Values{"client_id": {"rs"}}),
		"wrong secret":                            ask(p.AccessToken, basic("rs", "guess"), nil),
		"public client":                           ask(p.AccessToken, basic("web", ""), nil),
		"empty Basic secret, lenient ClientAuth":  ask(p.AccessToken, basic("pub", ""), nil),
		"empty client_secret, lenient ClientAuth": ask(p.AccessToken, nil, url.Values{"client_id": {"pub"}, "client_secret": {""}}),
		"bearer, not a client":                    ask(p.AccessToken, map[string]string{"Authorization": "Bearer " + p.AccessToken}, nil),
	} {
		assert.Equal(t, 401, r.status, name)
		assert.Equal(t, "invalid_client", r.body["error"], name)
		assert.NotContains(t, r.raw, "active", name)
	}
	require.Equal(t, 401, ask(p.AccessToken, nil, url.Values{"client_id": {"rs"}}).status)
	assert.Contains(t, ask(p.AccessToken, nil, nil).header.Get("WWW-Authenticate"), "Basic")
	// client_secret_post works as well as Basic.
	r := ask(p.AccessToken, nil, url.Values{"client_id": {"rs"}, "client_secret": {"rs-secret"}})
	require.Equal(t, 200, r.status, r.raw)
	require.Equal(t, true, r.body["active"])

	r = ask(p.AccessToken, rs, url.Values{"token_type_hint": {"access_token"}})
	require.Equal(t, 200, r.status)
	assert.Equal(t, "no-store", r.header.Get("Cache-Control"))
	assert.Equal(t, true, r.body["active"])
	assert.Equal(t, "read write", r.body["scope"])
	assert.Equal(t, "web", r.body["client_id"])
	assert.Equal(t, "alice", r.body["sub"])
	assert.Equal(t, "Bearer", r.body["token_type"])
	assert.Equal(t, e.cfg.Issuer, r.body["iss"])
	assert.EqualValues(t, p.AccessExpiresAt.Unix(), r.body["exp"])
	assert.NotEmpty(t, r.body["jti"])
	assert.EqualValues(t, signedIn.Unix(), r.body["auth_time"], "step-up rules need it (RFC 9470)")
	assert.Equal(t, "mfa", r.body["acr"])

	inactive := func(name, tok string, header map[string]string) {
		t.Helper()
		r := ask(tok, header, nil)
		require.Equal(t, 200, r.status, name)
		assert.JSONEq(t, `{"active":false}`, r.raw, name)
	}
	inactive("malformed", "not-a-token", rs)
	inactive("forged", forgeEd(t, "ed1", map[string]any{"sub": "admin"}), rs)
	inactive("refresh token of another client's session", p.RefreshToken, rs)
	inactive("a made-up refresh token", "rt_"+b64raw(make([]byte, 35)), rs)

	// Refresh tokens: active only to their own client, only while current.
	m := e.issue(t, "bob", refresh.WithClientID("mobile"))
	mob := basic("mobile", "mobile-secret")
	r = ask(m.RefreshToken, mob, nil)
	assert.Equal(t, true, r.body["active"], r.raw)
	assert.Equal(t, "refresh_token", r.body["token_type"])
	assert.Equal(t, "bob", r.body["sub"])
	assert.EqualValues(t, e.clock.Now().Unix(), r.body["auth_time"])
	assert.NotContains(t, r.body, "acr", "none was set")
	next, err := e.iss.Rotate(bg, m.RefreshToken, refresh.WithClientID("mobile"))
	require.NoError(t, err)
	inactive("a spent refresh token", m.RefreshToken, mob)
	assert.Equal(t, true, ask(next.RefreshToken, mob, nil).body["active"])

	// Revocation shows at once, and expiry.
	require.NoError(t, e.iss.RevokeSession(bg, p.SessionID))
	inactive("revoked session's access token", p.AccessToken, rs)
	q := e.issue(t, "carol")
	e.clock.Set(q.AccessExpiresAt)
	inactive("expired access token", q.AccessToken, rs)

	// Malformed requests: the usual answers.
	assert.Equal(t, 400, ask("", rs, nil).status)
	resp := get(t, srv.URL+"/introspect", nil)
	assert.Equal(t, 405, resp.StatusCode)
}

// TestIntrospectionConveysDPoPBinding: a resource server that introspects
// tokens instead of reading them learns that one is DPoP-bound, and to
// which key, only from the answer's cnf.jkt (RFC 9449 §6.2). The answer
// said token_type DPoP and nothing more, so a resource server written from
// the RFCs saw no binding to enforce and let a thief use a stolen DPoP-bound
// access token as a bearer token, or with a proof from his own key. The
// resource server here is such a one: it introspects every request and,
// where the answer names a key, requires the DPoP scheme and a proof from
// that key.
func TestIntrospectionConveysDPoPBinding(t *testing.T) {
	e, as := introspectionEnv(t)
	introspect := func(tok string) reply {
		return postForm(t, nil, as.URL+"/introspect", url.Values{"token": {tok}}, basic("rs", "rs-secret"))
	}
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		scheme, tok, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		ans := introspect(tok)
		if ans.status != 200 || ans.body["active"] != true {
			http.Error(w, "inactive", http.StatusUnauthorized)
			return
		}
		if cnf, bound := ans.body["cnf"].(map[string]any); bound {
			proof, err := e.iss.VerifyDPoPProof(r.Header.Get("DPoP"), r.Method, "http://"+r.Host+r.URL.Path, tok)
			if !strings.EqualFold(scheme, "DPoP") || err != nil || proof.Thumbprint != cnf["jkt"] {
				http.Error(w, "not the key the token is bound to", http.StatusUnauthorized)
				return
			}
		}
		_, _ = io.WriteString(w, "hello "+ans.body["sub"].(string))
	}))
	t.Cleanup(api.Close)
	call := func(scheme, tok, proof string) int {
		req, err := http.NewRequest("GET", api.URL+"/me", nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", scheme+" "+tok)
		if proof != "" {
			req.Header.Set("DPoP", proof)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}

	alice, mallory := newDPoPClient(t), newDPoPClient(t)
	p := e.issue(t, "alice", refresh.WithDPoP(alice.thumbprint), refresh.WithClientID("mobile"))
	r := introspect(p.AccessToken)
	require.Equal(t, true, r.body["active"], r.raw)
	assert.Equal(t, "DPoP", r.body["token_type"])
	assert.Equal(t, map[string]any{"jkt": alice.thumbprint}, r.body["cnf"], "RFC 9449 §6.2")

	now := e.clock.Now()
	assert.Equal(t, 200, call("DPoP", p.AccessToken, alice.proof("GET", api.URL+"/me", p.AccessToken, now)), "alice, with her key")
	assert.Equal(t, 401, call("Bearer", p.AccessToken, ""), "the thief, the stolen token as a bearer token")
	assert.Equal(t, 401, call("DPoP", p.AccessToken, mallory.proof("GET", api.URL+"/me", p.AccessToken, now)), "the thief, with his own key")

	// The refresh token's answer, to its own client, names the key too.
	r = postForm(t, nil, as.URL+"/introspect", url.Values{"token": {p.RefreshToken}}, basic("mobile", "mobile-secret"))
	require.Equal(t, true, r.body["active"], r.raw)
	assert.Equal(t, map[string]any{"jkt": alice.thumbprint}, r.body["cnf"])

	// An unbound session's tokens carry no cnf and work as bearer tokens.
	b := e.issue(t, "bob", refresh.WithClientID("mobile"))
	r = introspect(b.AccessToken)
	require.Equal(t, true, r.body["active"], r.raw)
	assert.NotContains(t, r.body, "cnf")
	assert.Equal(t, "Bearer", r.body["token_type"])
	assert.Equal(t, 200, call("Bearer", b.AccessToken, ""))
	r = postForm(t, nil, as.URL+"/introspect", url.Values{"token": {b.RefreshToken}}, basic("mobile", "mobile-secret"))
	assert.NotContains(t, r.body, "cnf")
}

// Without ClientAuth nobody may introspect.
func TestIntrospectionNeedsClientAuth(t *testing.T) {
	e := newEnv(t)
	srv := httptest.NewServer(refresh.NewHandlers(e.iss, refresh.HandlerConfig{}).IntrospectionHandler())
	defer srv.Close()
	p := e.issue(t, "alice")
	r := postForm(t, nil, srv.URL, url.Values{"token": {p.AccessToken}, "client_id": {"x"}, "client_secret": {"y"}}, nil)
	assert.Equal(t, 401, r.status)
}

// A resource server with introspection refuses a revoked session's tokens
// within CacheTTL, measured on the injected clock one nanosecond either
// side; without introspection it would accept them until they expire.
func TestVerifierIntrospectionRevocation(t *testing.T) {
	e, auth := introspectionEnv(t)
	const ttl = 5 * time.Second
	v := newVerifier(t, e.clock, func(c *refresh.VerifierConfig) {
		c.JWKSURL = auth.URL + "/.well-known/jwks.json"
		c.Introspection = &refresh.IntrospectionConfig{URL: auth.URL + "/introspect", ClientID: "rs", ClientSecret: "rs-secret", CacheTTL: ttl}
	})
	plain := newVerifier(t, e.clock, func(c *refresh.VerifierConfig) {
		c.Keys = []refresh.Key{{ID: "ed1", Algorithm: refresh.EdDSA, Key: edKey.Public()}}
	})
	srv := resourceAPI(t, v)
	p := e.issue(t, "alice")
	require.Equal(t, 200, get(t, srv.URL+"/me", bearer(p.AccessToken)).StatusCode)
	revokedAt := e.clock.Now()
	require.NoError(t, e.iss.RevokeSession(bg, p.SessionID))

	e.clock.Set(revokedAt.Add(ttl - time.Nanosecond))
	_, err := v.Verify(bg, p.AccessToken)
	require.NoError(t, err, "the cached answer, 1ns before CacheTTL")
	e.clock.Set(revokedAt.Add(ttl))
	_, err = v.Verify(bg, p.AccessToken)
	require.ErrorIs(t, err, refresh.ErrRevoked, "asked again at CacheTTL: inactive")
	resp := get(t, srv.URL+"/me", bearer(p.AccessToken))
	require.Equal(t, 401, resp.StatusCode)
	require.Contains(t, resp.Header.Get("WWW-Authenticate"), `error="invalid_token"`)
	_, err = plain.Verify(bg, p.AccessToken)
	require.NoError(t, err, "without introspection the token lives until it expires")

	// The introspection endpoint down: 503, never a 200 on a stale guess.
	auth.Close()
	q := e.issue(t, "bob")
	_, err = v.Verify(bg, q.AccessToken)
	require.ErrorIs(t, err, refresh.ErrKeysUnavailable)
	assert.Equal(t, 503, get(t, srv.URL+"/me", bearer(q.AccessToken)).StatusCode)
}

// The Verifier's cache of introspection answers is bounded (10,000 tokens,
// lowered to 2 here): the answer that would pass the bound starts it over.
func TestVerifierIntrospectionCacheBound(t *testing.T) {
	e, auth := introspectionEnv(t)
	v := newVerifier(t, e.clock, func(c *refresh.VerifierConfig) {
		c.Keys = []refresh.Key{{ID: "ed1", Algorithm: refresh.EdDSA, Key: edKey.Public()}}
		c.Introspection = &refresh.IntrospectionConfig{URL: auth.URL + "/introspect", ClientID: "rs", ClientSecret: "rs-secret", CacheTTL: time.Minute}
	})
	refresh.SetIntrospectionCacheMax(v, 2)
	for i, want := range []int{1, 2, 1, 2} {
		_, err := v.Verify(bg, e.issue(t, "alice").AccessToken)
		require.NoError(t, err)
		assert.Equal(t, want, refresh.IntrospectionCacheLen(v), "after token %d", i+1)
	}
}

// An introspection endpoint answering anything but 200 with a boolean
// "active" is an outage (ErrKeysUnavailable: 503), never a pass and never
// a panic; its answer is not cached.
func TestVerifierIntrospectionMalformed(t *testing.T) {
	e := newEnv(t, func(c *refresh.Config) { c.Keys = []refresh.Key{{ID: "ed1", Algorithm: refresh.EdDSA, Key: edKey}} })
	var status atomic.Int32
	var body atomic.Value
	auth := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(int(status.Load()))
		_, _ = io.WriteString(w, body.Load().(string))
	}))
	defer auth.Close()
	v := newVerifier(t, e.clock, func(c *refresh.VerifierConfig) {
		c.Keys = []refresh.Key{{ID: "ed1", Algorithm: refresh.EdDSA, Key: edKey.Public()}}
		c.Introspection = &refresh.IntrospectionConfig{URL: auth.URL, ClientID: "rs", ClientSecret: "rs-secret", CacheTTL: time.Minute}
	})
	tok := e.issue(t, "alice").AccessToken
	for _, answer := range []struct {
		status int
		body   string
	}{
		{200, `{}`}, {200, `{"active":null}`}, {200, `{"active":"true"}`}, {200, `{"active":1}`},
		{200, ``}, {200, `[true]`}, {200, strings.Repeat(" ", 1<<16) + `{"active":true}`},
		{500, `{"active":true}`}, {401, `{"active":true}`}, {302, `{"active":true}`},
	} {
		status.Store(int32(answer.status))
		body.Store(answer.body)
		_, err := v.Verify(bg, tok)
		require.ErrorIs(t, err, refresh.ErrKeysUnavailable, "%d %.40q", answer.status, answer.body)
	}
	status.Store(200)
	body.Store(`{"active":true}`)
	_, err := v.Verify(bg, tok)
	require.NoError(t, err, "none of those was cached")
}

// An auth service that takes the introspection request and never answers
// (a hung process, a load balancer black-holing the connection) costs a
// request to the resource server at most the Verifier's timeout, then 503:
// also with an application's client that has none of its own (Go's zero
// client), which used to leave the request waiting for as long as its
// own client would. Waits out the 10 seconds, in parallel with the rest.
func TestVerifierHungIntrospection(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *refresh.Config) { c.Keys = []refresh.Key{{ID: "ed1", Algorithm: refresh.EdDSA, Key: edKey}} })
	release := make(chan struct{})
	var asked atomic.Int32
	auth := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked.Add(1)
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer auth.Close()
	defer close(release)
	v := newVerifier(t, e.clock, func(c *refresh.VerifierConfig) {
		c.Keys = []refresh.Key{{ID: "ed1", Algorithm: refresh.EdDSA, Key: edKey.Public()}}
		c.Introspection = &refresh.IntrospectionConfig{URL: auth.URL, ClientID: "rs", ClientSecret: "rs-secret"}
		c.HTTPClient = &http.Client{}
	})
	srv := resourceAPI(t, v)
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/me", nil)
	req.Header.Set("Authorization", "Bearer "+e.issue(t, "alice").AccessToken)
	// The caller's own patience, far past the Verifier's: only a guard
	// against the test hanging.
	resp, err := (&http.Client{Timeout: time.Minute}).Do(req)
	require.NoError(t, err, "the resource server did not answer within a minute")
	defer resp.Body.Close()
	require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	require.EqualValues(t, 1, asked.Load())
}

func b64raw(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// nextSlot returns nonce with its slot number one higher and its MAC kept.
func nextSlot(nonce string) string {
	raw, _ := base64.RawURLEncoding.DecodeString(nonce)
	raw[7]++
	return b64raw(raw)
}

// A DPoP-bound access token at a resource server: admitted only with the
// DPoP scheme and a fresh proof from the bound key for this request and
// token; a replayed proof and another key's proof are refused.
func TestVerifierDPoP(t *testing.T) {
	e := newEnv(t)
	alice, mallory := newDPoPClient(t), newDPoPClient(t)
	proof, err := e.iss.VerifyDPoPProof(alice.proof("POST", "https://auth.example.com/login", "", e.clock.Now()), "POST", "https://auth.example.com/login", "")
	require.NoError(t, err)
	p := e.issue(t, "alice", refresh.WithDPoPProof(proof))
	require.Equal(t, "DPoP", p.TokenType)
	v := newVerifier(t, e.clock, func(c *refresh.VerifierConfig) {
		c.Keys = []refresh.Key{{ID: "hs1", Algorithm: refresh.HS256, Key: hsSecret}}
	})
	srv := resourceAPI(t, v)
	var lastProof string
	call := func(scheme string, c *dpopClient, dpop string) int {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/me", nil)
		req.Header.Set("Authorization", scheme+" "+p.AccessToken)
		if c != nil {
			dpop = c.proof("GET", srv.URL+"/me", p.AccessToken, e.clock.Now())
		}
		if dpop != "" {
			req.Header.Set("DPoP", dpop)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		if c != nil {
			lastProof = dpop
		}
		return resp.StatusCode
	}
	assert.Equal(t, 401, call("Bearer", nil, ""), "a DPoP-bound token as a bearer token")
	assert.Equal(t, 401, call("DPoP", nil, ""), "no proof")
	assert.Equal(t, 401, call("DPoP", mallory, ""), "another key's proof")
	assert.Equal(t, 200, call("DPoP", alice, ""), "the bound key's proof")
	assert.Equal(t, 401, call("DPoP", nil, lastProof), "the same proof again")
}

// A resource server's own DPoP nonces (RFC 9449 §9): a proof without one,
// or with the auth service's, another deployment's, a forged or an expired
// one, is answered 401 use_dpop_nonce with a fresh nonce and consumes
// nothing; instances sharing DPoPNonceKeys agree, also across a key change;
// a proof whose nonce is about to expire is admitted with the next one.
func TestVerifierDPoPNonce(t *testing.T) {
	e := newEnv(t)
	e.clock.Set(time.Unix(1_800_000_000, 0).Truncate(time.Minute)) // the start of a nonce slot
	alice, mallory := newDPoPClient(t), newDPoPClient(t)
	login, err := e.iss.VerifyDPoPProof(alice.proof("POST", "https://auth.example.com/login", "", e.clock.Now()), "POST", "https://auth.example.com/login", "")
	require.NoError(t, err)
	p := e.issue(t, "alice", refresh.WithDPoPProof(login))
	key1, key2 := make([]byte, 32), make([]byte, 32)
	rand.Read(key1)
	rand.Read(key2)
	withNonceKeys := func(keys ...[]byte) func(*refresh.VerifierConfig) {
		return func(c *refresh.VerifierConfig) {
			c.Keys = []refresh.Key{{ID: "hs1", Algorithm: refresh.HS256, Key: hsSecret}}
			c.DPoPNonceLifetime, c.DPoPNonceKeys = 2*time.Minute, keys
		}
	}
	v := newVerifier(t, e.clock, withNonceKeys(key1))
	srv := resourceAPI(t, v)
	call := func(c *dpopClient, nonce, jti string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/me", nil)
		req.Header.Set("Authorization", "DPoP "+p.AccessToken)
		req.Header.Set("DPoP", c.proof("GET", srv.URL+"/me", p.AccessToken, e.clock.Now(), func(_, cl map[string]any) {
			if nonce != "" {
				cl["nonce"] = nonce
			}
			if jti != "" {
				cl["jti"] = jti
			}
		}))
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == 200 {
			require.Equal(t, "alice", string(body))
		}
		return resp
	}
	refusedForNonce := func(resp *http.Response, msg string) {
		t.Helper()
		require.Equal(t, 401, resp.StatusCode, msg)
		challenge := resp.Header.Get("WWW-Authenticate")
		assert.True(t, strings.HasPrefix(challenge, "DPoP "), msg)
		assert.Contains(t, challenge, `error="use_dpop_nonce"`, msg)
		assert.Equal(t, v.DPoPNonce(), resp.Header.Get("DPoP-Nonce"), msg+": the current nonce comes with the refusal")
	}

	nonce := v.DPoPNonce()
	require.Len(t, nonce, 32)
	refusedForNonce(call(alice, "", "jti-1"), "no nonce")
	resp := call(alice, nonce, "jti-1")
	require.Equal(t, 200, resp.StatusCode, "the refused proof's jti was not consumed")
	assert.Empty(t, resp.Header.Get("DPoP-Nonce"), "a nonce of the current slot needs no renewal")
	assert.Equal(t, 401, call(alice, nonce, "jti-1").StatusCode, "the admitted proof is single-use")

	// Nonces that are not this resource server's, and malformed ones.
	authNonce := refresh.NewHandlers(newEnv(t, func(c *refresh.Config) {
		c.DPoPNonceLifetime, c.Now = 2*time.Minute, e.clock.Now // the auth service's own keys
	}).iss, refresh.HandlerConfig{}).DPoPNonce()
	require.NotEmpty(t, authNonce)
	otherNonce := newVerifier(t, e.clock, withNonceKeys(key2)).DPoPNonce()
	forged := []byte(nonce)
	forged[31] = map[bool]byte{true: 'B', false: 'A'}[forged[31] == 'A']
	for name, bad := range map[string]string{
		"the auth service's nonce": authNonce,
		"another deployment's":     otherNonce,
		"forged":                   string(forged),
		"garbage":                  "not-a-nonce",
		"padded":                   nonce + "=",
		"too short":                nonce[:30],
		"the next slot's number":   nextSlot(nonce),
	} {
		refusedForNonce(call(alice, bad, "jti-"+name), name)
		assert.Equal(t, 200, call(alice, nonce, "jti-"+name).StatusCode, name+": nothing consumed")
	}
	resp = call(mallory, nonce, "")
	require.Equal(t, 401, resp.StatusCode, "another key's proof, with a good nonce")
	assert.Contains(t, resp.Header.Get("WWW-Authenticate"), `error="invalid_token"`)

	// A nonce is good for its own slot and the next: until 1 ns before two
	// slots (the lifetime) after its slot began. Late in its life a request
	// admitted with it carries the next nonce.
	e.clock.Advance(2*time.Minute - time.Nanosecond)
	next := v.DPoPNonce()
	require.NotEqual(t, nonce, next, "a new nonce each slot")
	resp = call(alice, nonce, "")
	require.Equal(t, 200, resp.StatusCode, "1 ns before the end of its second slot")
	assert.Equal(t, next, resp.Header.Get("DPoP-Nonce"), "the next nonce, before the client's expires")
	e.clock.Advance(time.Nanosecond)
	refusedForNonce(call(alice, nonce, ""), "at the end of its second slot")
	assert.Equal(t, 200, call(alice, next, "").StatusCode)

	// Instances with the same keys agree; a key change keeps the old
	// instances' nonces working.
	same := newVerifier(t, e.clock, withNonceKeys(key1))
	assert.Equal(t, v.DPoPNonce(), same.DPoPNonce())
	rotated := newVerifier(t, e.clock, withNonceKeys(key2, key1))
	rotatedSrv := resourceAPI(t, rotated)
	req, _ := http.NewRequest(http.MethodGet, rotatedSrv.URL+"/me", nil)
	req.Header.Set("Authorization", "DPoP "+p.AccessToken)
	req.Header.Set("DPoP", alice.proof("GET", rotatedSrv.URL+"/me", p.AccessToken, e.clock.Now(), func(_, cl map[string]any) { cl["nonce"] = v.DPoPNonce() }))
	resp, err = http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, 200, resp.StatusCode, "the old key's nonce after a key change")
	assert.NotEqual(t, v.DPoPNonce(), rotated.DPoPNonce(), "the new key mints")
	assert.Equal(t, 401, call(alice, rotated.DPoPNonce(), "").StatusCode, "an instance without the new key refuses its nonces")

	// VerifyDPoPProof, for handlers written by hand, asks the same.
	_, err = v.VerifyDPoPProof(alice.proof("GET", srv.URL+"/me", p.AccessToken, e.clock.Now()), "GET", srv.URL+"/me", p.AccessToken)
	require.ErrorIs(t, err, refresh.ErrUseDPoPNonce)
	require.ErrorIs(t, err, refresh.ErrInvalidToken)

	// Without nonces nothing is asked, and no nonce is handed out.
	plain := newVerifier(t, e.clock, func(c *refresh.VerifierConfig) {
		c.Keys = []refresh.Key{{ID: "hs1", Algorithm: refresh.HS256, Key: hsSecret}}
	})
	assert.Empty(t, plain.DPoPNonce())
	_, err = plain.VerifyDPoPProof(alice.proof("GET", srv.URL+"/me", p.AccessToken, e.clock.Now()), "GET", srv.URL+"/me", p.AccessToken)
	require.NoError(t, err)

	for name, mod := range map[string]func(*refresh.VerifierConfig){
		"DPoPNonceLifetime needs DPoPNonceKeys": func(c *refresh.VerifierConfig) { c.DPoPNonceLifetime = time.Minute },
		"without DPoPNonceLifetime":             func(c *refresh.VerifierConfig) { c.DPoPNonceKeys = [][]byte{key1} },
		"at least 32 bytes": func(c *refresh.VerifierConfig) {
			c.DPoPNonceLifetime, c.DPoPNonceKeys = time.Minute, [][]byte{key1, key1[:31]}
		},
		"between 2s and 24h": func(c *refresh.VerifierConfig) {
			c.DPoPNonceLifetime, c.DPoPNonceKeys = time.Second, [][]byte{key1}
		},
		"must not be negative": func(c *refresh.VerifierConfig) { c.ProofSweepInterval = -time.Second },
	} {
		cfg := refresh.VerifierConfig{Issuer: "i", Audience: "a", Keys: []refresh.Key{{ID: "hs1", Algorithm: refresh.HS256, Key: hsSecret}}}
		mod(&cfg)
		_, err := refresh.NewVerifier(cfg)
		require.ErrorContains(t, err, name)
	}
}

// countingRecorder is a ProofRecorder over a MemoryStore that counts its
// sweeps, or fails every call with fault set.
type countingRecorder struct {
	*refresh.MemoryStore
	sweeps, removed atomic.Int64
	fault           error
}

func (c *countingRecorder) RecordProof(ctx context.Context, id string, now, expires time.Time) error {
	if c.fault != nil {
		return c.fault
	}
	return c.MemoryStore.RecordProof(ctx, id, now, expires)
}

func (c *countingRecorder) DeleteExpiredProofs(ctx context.Context, before time.Time, limit int) (int, error) {
	c.sweeps.Add(1)
	n, err := c.MemoryStore.DeleteExpiredProofs(ctx, before, limit)
	c.removed.Add(int64(n))
	return n, err
}

// Resource-server instances behind one URL share DPoP replay detection
// through VerifierConfig.Proofs: a proof accepted by one is refused by the
// other, as an attacker replaying a captured request to a sibling would
// try; without Proofs the sibling accepts it. A failing recorder is 503,
// never a pass; expired records are swept in the background until Close.
func TestVerifierSharedProofs(t *testing.T) {
	e := newEnv(t)
	alice := newDPoPClient(t)
	login, err := e.iss.VerifyDPoPProof(alice.proof("POST", "https://auth.example.com/login", "", e.clock.Now()), "POST", "https://auth.example.com/login", "")
	require.NoError(t, err)
	p := e.issue(t, "alice", refresh.WithDPoPProof(login))
	const public = "https://api.example.com" // both instances' public URL
	instance := func(proofs refresh.ProofRecorder) *httptest.Server {
		v := newVerifier(t, e.clock, func(c *refresh.VerifierConfig) {
			c.Keys = []refresh.Key{{ID: "hs1", Algorithm: refresh.HS256, Key: hsSecret}}
			c.PublicURL, c.Proofs, c.ProofSweepInterval = public, proofs, 5*time.Millisecond
		})
		t.Cleanup(func() { v.Close() })
		return resourceAPI(t, v)
	}
	call := func(srv *httptest.Server, proof string) int { return dpopGet(t, srv.URL+"/me", p.AccessToken, proof) }
	newProof := func() string { return alice.proof("GET", public+"/me", p.AccessToken, e.clock.Now()) }

	shared := &countingRecorder{MemoryStore: refresh.NewMemoryStore(refresh.WithSweepInterval(0))}
	a, b := instance(shared), instance(shared)
	proof := newProof()
	require.Equal(t, 200, call(a, proof))
	assert.Equal(t, 401, call(b, proof), "the same proof replayed to the other instance")
	assert.Equal(t, 401, call(a, proof), "and to the first")
	assert.Equal(t, 200, call(b, newProof()), "a fresh proof is fine at either")

	// Without Proofs each instance remembers only its own.
	c, d := instance(nil), instance(nil)
	proof = newProof()
	require.Equal(t, 200, call(c, proof))
	assert.Equal(t, 200, call(d, proof), "per instance only: what Proofs closes")

	// The recorder down: 503, and nothing admitted.
	down := instance(&countingRecorder{MemoryStore: refresh.NewMemoryStore(), fault: errors.New("redis: connection refused")})
	assert.Equal(t, 503, call(down, newProof()))

	// Expired records are swept in the background (Close, at cleanup, stops
	// it): the two proofs the pair accepted, once the clock passes their
	// expiry, and not before.
	require.Eventually(t, func() bool { return shared.sweeps.Load() > 0 }, 5*time.Second, 5*time.Millisecond)
	assert.Zero(t, shared.removed.Load(), "nothing has expired yet")
	e.clock.Advance(3 * time.Minute)
	require.Eventually(t, func() bool { return shared.removed.Load() == 2 }, 5*time.Second, 5*time.Millisecond)
}

// One sweep of a Verifier's proof records removes every expired one, in
// batches of 1000 (2500 here: three calls), and keeps the live ones.
func TestVerifierProofSweepBatches(t *testing.T) {
	e := newEnv(t)
	rec := &countingRecorder{MemoryStore: refresh.NewMemoryStore(refresh.WithSweepInterval(0))}
	v := newVerifier(t, e.clock, func(c *refresh.VerifierConfig) {
		c.Keys = []refresh.Key{{ID: "hs1", Algorithm: refresh.HS256, Key: hsSecret}}
		c.Proofs, c.ProofSweepInterval = rec, time.Hour // no background sweep during the test
	})
	now := e.clock.Now()
	for i := range 2500 {
		require.NoError(t, rec.MemoryStore.RecordProof(bg, fmt.Sprint("expired-", i), now, now.Add(time.Minute)))
	}
	require.NoError(t, rec.MemoryStore.RecordProof(bg, "live", now, now.Add(time.Hour)))
	e.clock.Advance(time.Minute)
	n, err := refresh.SweepProofs(v)
	require.NoError(t, err)
	assert.Equal(t, 2500, n)
	assert.EqualValues(t, 3, rec.sweeps.Load(), "1000, 1000, then 500: a short batch ends the sweep")
	require.ErrorIs(t, rec.MemoryStore.RecordProof(bg, "live", e.clock.Now(), e.clock.Now().Add(time.Hour)), refresh.ErrProofReplayed, "the live record stays")
}

// newEC returns a fresh P-256 key.
func newEC(t *testing.T) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	return k
}

// ecJWK writes k's public key as a JWK with the extra members given.
func ecJWK(k *ecdsa.PrivateKey, members string) string {
	return fmt.Sprintf(`{"kty":"EC","crv":"P-256","x":%q,"y":%q,%s}`,
		b64raw(k.X.FillBytes(make([]byte, 32))), b64raw(k.Y.FillBytes(make([]byte, 32))), members)
}

// es256 signs the encoded claims with k as an at+jwt with the kid given
// ("-": none).
func es256(t *testing.T, k *ecdsa.PrivateKey, kid, claims string) string {
	h := map[string]any{"alg": "ES256", "typ": "at+jwt", "kid": kid}
	if kid == "-" {
		delete(h, "kid")
	}
	in := b64json(h) + "." + claims
	digest := sha256.Sum256([]byte(in))
	r, s, err := ecdsa.Sign(rand.Reader, k, digest[:])
	require.NoError(t, err)
	return in + "." + b64raw(append(r.FillBytes(make([]byte, 32)), s.FillBytes(make([]byte, 32))...))
}

// resourceClaims encodes claims a Verifier of newVerifier accepts at clock.
func resourceClaims(clock *refreshtest.Clock) string {
	return b64json(map[string]any{"iss": "https://auth.example.com", "aud": "https://api.example.com", "sub": "alice",
		"exp": clock.Now().Unix() + 600, "iat": clock.Now().Unix(), "jti": "j"})
}

// Which keys a Verifier takes from a JWKS: public signature keys with a
// kid. A key without a kid and one marked for encryption ("use":"enc") are
// not used, whatever a token's header says; the same kind of key with a
// kid is, with "use":"sig" or none, and so is one whose algorithm follows
// from its type (Ed25519, no "alg").
func TestVerifierJWKSKeySelection(t *testing.T) {
	good, plain, noKid, enc := newEC(t), newEC(t), newEC(t), newEC(t)
	set := `{"keys":[` + strings.Join([]string{
		ecJWK(good, `"kid":"good","alg":"ES256","use":"sig"`),
		ecJWK(plain, `"kid":"plain","alg":"ES256"`),
		ecJWK(noKid, `"alg":"ES256","use":"sig"`),
		ecJWK(enc, `"kid":"enc","alg":"ES256","use":"enc"`),
		fmt.Sprintf(`{"kty":"OKP","crv":"Ed25519","kid":"ed","x":%q}`, b64raw(edKey.Public().(ed25519.PublicKey))),
	}, ",") + `]}`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, set) }))
	defer srv.Close()
	clock := refreshtest.NewClock(time.Now())
	v := newVerifier(t, clock, func(c *refresh.VerifierConfig) { c.JWKSURL = srv.URL })
	require.True(t, v.Ready())
	claims := resourceClaims(clock)
	edIn := b64json(map[string]any{"alg": "EdDSA", "kid": "ed", "typ": "at+jwt"}) + "." + claims
	for name, tok := range map[string]string{
		"use sig":          es256(t, good, "good", claims),
		"no use":           es256(t, plain, "plain", claims),
		"EdDSA by its kty": edIn + "." + b64raw(ed25519.Sign(edKey, []byte(edIn))),
	} {
		_, err := v.Verify(bg, tok)
		require.NoError(t, err, name)
	}
	for name, tok := range map[string]string{
		"the kid-less key, no kid":    es256(t, noKid, "-", claims),
		"the kid-less key, empty kid": es256(t, noKid, "", claims),
		"the encryption key":          es256(t, enc, "enc", claims),
		"the encryption key, no kid":  es256(t, enc, "-", claims),
	} {
		_, err := v.Verify(bg, tok)
		require.ErrorIs(t, err, refresh.ErrInvalidToken, name)
	}
}

// A Verifier follows no redirect from its JWKS or introspection URL, with
// its default client or with one of the application's that has no
// CheckRedirect (Go's default would follow ten). A URL answering 3xx
// towards another server (an open redirect on the auth service's host, or
// a downgrade to plain http past the https rule) lends the Verifier none
// of that server's keys or answers: tokens signed with the attacker's key
// are not accepted, and a revoked token is not called active. A client
// whose CheckRedirect allows redirects still never follows one to a URL
// the https rule refuses.
func TestVerifierFollowsNoRedirects(t *testing.T) {
	t.Parallel() // mostly waiting for fetches that fail: 5 s
	attacker := newEC(t)
	evil := http.NewServeMux()
	evil.HandleFunc("/jwks", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, `{"keys":[`+ecJWK(attacker, `"kid":"ec1","alg":"ES256"`)+`]}`)
	})
	evil.HandleFunc("/introspect", func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, `{"active":true}`) })
	evilSrv := httptest.NewServer(evil)
	defer evilSrv.Close()
	var followed atomic.Int32
	redirect := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		followed.Add(1)
		target := evilSrv.URL + r.URL.Path
		if r.URL.Path == "/downgrade" {
			target = "http://attacker.example/jwks"
		}
		http.Redirect(w, r, target, http.StatusTemporaryRedirect) // 307 keeps a POST a POST
	}))
	defer redirect.Close()
	e := newEnv(t, func(c *refresh.Config) { c.Keys = []refresh.Key{{ID: "ed1", Algorithm: refresh.EdDSA, Key: edKey}} })

	for name, client := range map[string]*http.Client{
		"default client":                 nil,
		"a client without CheckRedirect": {Timeout: time.Second},
	} {
		followed.Store(0)
		v := newVerifier(t, e.clock, func(c *refresh.VerifierConfig) { c.JWKSURL, c.HTTPClient = redirect.URL+"/jwks", client })
		assert.False(t, v.Ready(), "%s: no keys from a redirect", name)
		_, err := v.Verify(bg, es256(t, attacker, "ec1", resourceClaims(e.clock)))
		require.ErrorIs(t, err, refresh.ErrKeysUnavailable, "%s: the attacker's key is not taken", name)
		assert.Positive(t, followed.Load(), "%s: the JWKS URL was asked", name)

		in := newVerifier(t, e.clock, func(c *refresh.VerifierConfig) {
			c.Keys = []refresh.Key{{ID: "ed1", Algorithm: refresh.EdDSA, Key: edKey.Public()}}
			c.Introspection = &refresh.IntrospectionConfig{URL: redirect.URL + "/introspect", ClientID: "rs", ClientSecret: "rs-secret"}
			c.HTTPClient = client
		})
		p := e.issue(t, "alice")
		require.NoError(t, e.iss.RevokeSession(bg, p.SessionID))
		srv := resourceAPI(t, in)
		assert.Equal(t, 503, get(t, srv.URL+"/me", bearer(p.AccessToken)).StatusCode, "%s: a redirect is an outage, not an answer", name)
	}

	// The application's client allows every redirect: still none to plain
	// http on another host.
	var asked sync.Map
	lenient := &http.Client{
		Timeout:       time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return nil },
		Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
			asked.Store(r.URL.Host, true)
			if r.URL.Hostname() != "127.0.0.1" {
				return nil, errors.New("no network in this test")
			}
			return http.DefaultTransport.RoundTrip(r)
		}),
	}
	v := newVerifier(t, e.clock, func(c *refresh.VerifierConfig) { c.JWKSURL, c.HTTPClient = redirect.URL+"/downgrade", lenient })
	assert.False(t, v.Ready())
	_, downgraded := asked.Load("attacker.example")
	assert.False(t, downgraded, "a redirect to http://attacker.example was followed")
	_, ok := asked.Load(strings.TrimPrefix(redirect.URL, "http://"))
	assert.True(t, ok, "the JWKS URL itself was asked")
}

// roundTripFunc is an http.RoundTripper.
type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
