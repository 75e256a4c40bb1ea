package refresh_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/refreshkit/refresh"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// api mounts the middleware in front of handlers that echo the claims.
func (e *env) api(opts ...refresh.MiddlewareOption) *httptest.Server {
	mw := e.iss.Middleware(opts...)
	mux := http.NewServeMux()
	me := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, ok := refresh.ClaimsFromContext(r.Context())
		if !ok {
			http.Error(w, "no claims", 500)
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"sub": c.Subject, "sid": c.SessionID})
	})
	mux.Handle("/me", mw(me))
	mux.Handle("/write", mw(refresh.RequireScope("write")(me)))
	mux.Handle("/admin", mw(refresh.RequireRole("admin")(me)))
	mux.Handle("/unguarded-admin", refresh.RequireRole("admin")(me))
	return httptest.NewServer(mux)
}

func get(t *testing.T, url string, header map[string][]string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	require.NoError(t, err)
	for k, vs := range header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func bearer(tok string) map[string][]string {
	return map[string][]string{"Authorization": {"Bearer " + tok}}
}

func TestMiddlewareAdmitsValidToken(t *testing.T) {
	e := newEnv(t)
	srv := e.api()
	defer srv.Close()
	p := e.issue(t, "alice")
	for _, scheme := range []string{"Bearer", "bearer", "BEARER"} {
		resp := get(t, srv.URL+"/me", map[string][]string{"Authorization": {scheme + " " + p.AccessToken}})
		require.Equal(t, 200, resp.StatusCode, scheme)
		var body map[string]string
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
		assert.Equal(t, "alice", body["sub"])
		assert.Equal(t, p.SessionID, body["sid"])
	}
}

// B1, B2: only the Authorization header counts; no credentials is a bare
// challenge.
func TestB1B2_NoCredentials(t *testing.T) {
	e := newEnv(t)
	srv := e.api(refresh.WithRealm("demo"))
	defer srv.Close()
	p := e.issue(t, "alice")
	for name, tc := range map[string]struct {
		url    string
		header map[string][]string
	}{
		"nothing":            {"/me", nil},
		"query access_token": {"/me?access_token=" + p.AccessToken, nil},
		"basic scheme":       {"/me", map[string][]string{"Authorization": {"Basic YWxpY2U6cGFzcw=="}}},
	} {
		t.Run(name, func(t *testing.T) {
			resp := get(t, srv.URL+tc.url, tc.header)
			assert.Equal(t, 401, resp.StatusCode)
			assert.Equal(t, `Bearer realm="demo"`, resp.Header.Get("WWW-Authenticate"))
		})
	}
}

// Every V item on the wire: 401 invalid_token, no detail in the body.
func TestMiddlewareInvalidTokens(t *testing.T) {
	e := newEnv(t, func(c *refresh.Config) { c.CheckSession = true })
	srv := e.api()
	defer srv.Close()
	p := e.issue(t, "alice")
	revoked := e.issue(t, "alice")
	require.NoError(t, e.iss.Revoke(bg, revoked.RefreshToken))
	expired := e.issue(t, "alice")
	none := b64json(map[string]any{"alg": "none", "typ": "at+jwt"}) + "." + b64json(e.goodClaims()) + "."
	cases := map[string]string{
		"tampered":      p.AccessToken[:len(p.AccessToken)-2] + "AA",
		"alg none":      none,
		"wrong typ":     forgeHS(map[string]any{"alg": "HS256", "kid": "hs1", "typ": "JWT"}, e.goodClaims(), hsSecret),
		"refresh token": p.RefreshToken,
		"revoked":       revoked.AccessToken,
		"too long":      strings.Repeat("a", 9000),
	}
	e.clock.Advance(15 * time.Minute)
	cases["expired"] = expired.AccessToken
	for name, tok := range cases {
		t.Run(name, func(t *testing.T) {
			resp := get(t, srv.URL+"/me", bearer(tok))
			require.Equal(t, 401, resp.StatusCode)
			assert.Equal(t, `Bearer realm="api", error="invalid_token"`, resp.Header.Get("WWW-Authenticate"))
			var body map[string]any
			require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
			assert.Equal(t, map[string]any{"error": "invalid_token"}, body, "no internal detail on the wire")
		})
	}
}

// B4: malformed Authorization headers are 400 invalid_request.
func TestB4_MalformedHeader(t *testing.T) {
	e := newEnv(t)
	srv := e.api()
	defer srv.Close()
	p := e.issue(t, "alice")
	for name, h := range map[string][]string{
		"two tokens":    {"Bearer " + p.AccessToken + " " + p.AccessToken},
		"two headers":   {"Bearer " + p.AccessToken, "Bearer " + p.AccessToken},
		"empty token":   {"Bearer "},
		"scheme only":   {"Bearer"},
		"bad character": {"Bearer abc$def"},
		"quote":         {`Bearer "abc"`},
		"inner =":       {"Bearer ab=c"},
	} {
		t.Run(name, func(t *testing.T) {
			resp := get(t, srv.URL+"/me", map[string][]string{"Authorization": h})
			assert.Equal(t, 400, resp.StatusCode)
			assert.Contains(t, resp.Header.Get("WWW-Authenticate"), `error="invalid_request"`)
		})
	}
	// What RFC 6750's b64token allows is well formed, trailing '='s and
	// the characters base64url does not use included: no such token is
	// ours, so 401 invalid_token, not 400.
	for _, tok := range []string{"abc=", "abc==", "a~b+c/d.e", "A"} {
		resp := get(t, srv.URL+"/me", bearer(tok))
		assert.Equal(t, 401, resp.StatusCode, tok)
		assert.Contains(t, resp.Header.Get("WWW-Authenticate"), `error="invalid_token"`, tok)
	}
}

// B3: insufficient scope or role is 403 insufficient_scope.
func TestB3_ScopeAndRoleGuards(t *testing.T) {
	e := newEnv(t)
	srv := e.api()
	defer srv.Close()
	reader := e.issue(t, "bob", refresh.WithScope("read"), refresh.WithClaims(map[string]any{"roles": []string{"user"}}))
	admin := e.issue(t, "alice", refresh.WithScope("read", "write"), refresh.WithClaims(map[string]any{"roles": []string{"admin"}}))

	resp := get(t, srv.URL+"/write", bearer(reader.AccessToken))
	assert.Equal(t, 403, resp.StatusCode)
	assert.Equal(t, `Bearer realm="api", error="insufficient_scope", scope="write"`, resp.Header.Get("WWW-Authenticate"))
	resp = get(t, srv.URL+"/admin", bearer(reader.AccessToken))
	assert.Equal(t, 403, resp.StatusCode)
	assert.Contains(t, resp.Header.Get("WWW-Authenticate"), `error="insufficient_scope"`)

	assert.Equal(t, 200, get(t, srv.URL+"/write", bearer(admin.AccessToken)).StatusCode)
	assert.Equal(t, 200, get(t, srv.URL+"/admin", bearer(admin.AccessToken)).StatusCode)
	// A guard without the middleware in front refuses rather than admits.
	assert.Equal(t, 401, get(t, srv.URL+"/unguarded-admin", bearer(admin.AccessToken)).StatusCode)
}

func TestMiddlewareErrorHook(t *testing.T) {
	e := newEnv(t)
	var got *refresh.BearerError
	srv := e.api(refresh.WithErrorHandler(func(w http.ResponseWriter, r *http.Request, err *refresh.BearerError) {
		got = err
		w.WriteHeader(418)
	}))
	defer srv.Close()
	resp := get(t, srv.URL+"/me", bearer("abc.def.ghi"))
	assert.Equal(t, 418, resp.StatusCode)
	require.NotNil(t, got)
	assert.Equal(t, 401, got.Status)
	assert.True(t, errors.Is(got, refresh.ErrInvalidToken))
	reader := e.issue(t, "bob")
	assert.Equal(t, 418, get(t, srv.URL+"/write", bearer(reader.AccessToken)).StatusCode, "guards use the hook")
	assert.Equal(t, 403, got.Status)
}

// A failing session store is 503, not 401 and not 500.
func TestMiddlewareStoreDown(t *testing.T) {
	e := newEnv(t, func(c *refresh.Config) { c.CheckSession = true })
	p := e.issue(t, "alice")
	down := newEnv(t, func(c *refresh.Config) {
		c.CheckSession = true
		c.Store = failingStore{errors.New("dial tcp: connection refused")}
	})
	srv := down.api()
	defer srv.Close()
	resp := get(t, srv.URL+"/me", bearer(p.AccessToken))
	assert.Equal(t, 503, resp.StatusCode)
	var body map[string]any
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
	assert.Equal(t, map[string]any{"error": "temporarily_unavailable"}, body)
}
