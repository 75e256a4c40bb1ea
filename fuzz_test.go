package refresh_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"testing"

	"github.com/refreshkit/refresh"
)

// Fuzz targets for every parser of untrusted input. Run one with
//
//	go test -run '^$' -fuzz '^FuzzRefreshToken$' -fuzztime 30s .
//
// scripts/fuzz.sh runs them all briefly (CI does). Regression inputs live in
// testdata/fuzz/<target>.

// FuzzRefreshToken: Rotate and Revoke never panic, refuse everything but the
// genuine token with ErrInvalidToken, and a refused token changes no state.
func FuzzRefreshToken(f *testing.F) {
	e := newEnv(f)
	p := e.issue(f, "alice")
	f.Add(p.RefreshToken)
	f.Add(p.AccessToken)
	f.Add("rt_")
	f.Add("rt_AQEAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
	f.Add(strings.Repeat("rt_", 40))
	before := e.session(f, p.SessionID)
	f.Fuzz(func(t *testing.T, tok string) {
		if tok == p.RefreshToken {
			return
		}
		if _, err := e.iss.Rotate(bg, tok); !errors.Is(err, refresh.ErrInvalidToken) {
			t.Fatalf("Rotate(%q): %v, want ErrInvalidToken", tok, err)
		}
		if err := e.iss.Revoke(bg, tok); !errors.Is(err, refresh.ErrInvalidToken) {
			t.Fatalf("Revoke(%q): %v, want ErrInvalidToken", tok, err)
		}
		if after := e.session(t, p.SessionID); after.Generation != before.Generation || after.Revoked() {
			t.Fatalf("input %q changed the session", tok)
		}
	})
}

// FuzzVerify: Verify never panics; what it refuses is a client error; what it
// accepts carries our issuer and audience.
func FuzzVerify(f *testing.F) {
	e := newEnv(f)
	p := e.issue(f, "alice", refresh.WithScope("read"))
	f.Add(p.AccessToken)
	f.Add(p.RefreshToken)
	f.Add(forgeHS(map[string]any{"alg": "none", "typ": "at+jwt"}, e.goodClaims(), hsSecret))
	f.Add(forgeHS(goodHeader(), e.goodClaims(), hsSecret))
	f.Add("e30.e30.")
	f.Add("..")
	f.Fuzz(func(t *testing.T, tok string) {
		c, err := e.iss.Verify(bg, tok)
		if err != nil {
			if !refresh.IsClientError(err) {
				t.Fatalf("Verify refused %q with a non-client error: %v", tok, err)
			}
			return
		}
		if c.Issuer != e.cfg.Issuer || c.Subject == "" {
			t.Fatalf("accepted claims %+v", c)
		}
	})
}

// FuzzVerifiedClaims: for any claims set signed with the key, a second
// Verify (answered from the cache of verified tokens) returns the same
// claims as the first, and each result is its caller's own: scrambling
// everything in one, down to Extra's nested values, changes neither the
// other nor a third (TestVuln12_CachedClaimsShared).
func FuzzVerifiedClaims(f *testing.F) {
	e := newEnv(f)
	good := e.goodClaims()
	f.Add(mustJSON(good))
	good["scope"], good["roles"] = "read write", []any{"user", map[string]any{"team": []any{"a"}}}
	f.Add(mustJSON(good))
	good["aud"], good["nbf"] = []any{"x", e.cfg.Audience}, good["iat"]
	f.Add(mustJSON(good))
	good["auth_time"], good["acr"] = good["iat"], "mfa"
	f.Add(mustJSON(good))
	hdr := b64json(goodHeader())
	f.Fuzz(func(t *testing.T, payload []byte) {
		in := hdr + "." + base64.RawURLEncoding.EncodeToString(payload)
		tok := in + "." + macB64(in, hsSecret)
		c1, err := e.iss.Verify(bg, tok)
		if err != nil {
			return
		}
		c2, err := e.iss.Verify(bg, tok)
		if err != nil || !reflect.DeepEqual(c1, c2) {
			t.Fatalf("a cached Verify differs: %+v, %v; first %+v", c2, err, c1)
		}
		want := fmt.Sprintf("%#v", c2)
		scramble(c1)
		if got := fmt.Sprintf("%#v", c2); got != want {
			t.Fatalf("changing one result changed another:\n%s\n%s", got, want)
		}
		scramble(c2)
		c3, err := e.iss.Verify(bg, tok)
		if err != nil || fmt.Sprintf("%#v", c3) != want {
			t.Fatalf("changing results changed the cache: %#v, %v\nwant %s", c3, err, want)
		}
	})
}

// scramble overwrites everything c holds that a caller could change in
// place.
func scramble(c *refresh.Claims) {
	for i := range c.Audience {
		c.Audience[i] = "scrambled"
	}
	for i := range c.Scope {
		c.Scope[i] = "scrambled"
	}
	var deep func(v any)
	deep = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			if x == nil {
				return
			}
			for k, e := range x {
				deep(e)
				x[k] = "scrambled"
			}
			x["scrambled"] = true
		case []any:
			for i, e := range x {
				deep(e)
				x[i] = "scrambled"
			}
		}
	}
	deep(c.Extra)
}

// FuzzBearerHeader: any Authorization header gets 200, 400 or 401 from the
// middleware with a challenge, never a panic or a 5xx, and the same answer
// from a middleware without the verified-token cache (whose hits skip the
// syntax scan).
func FuzzBearerHeader(f *testing.F) {
	e := newEnv(f)
	p := e.issue(f, "alice")
	h := e.iss.Middleware()(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	uncached := newEnv(f, func(c *refresh.Config) { c.VerifyCacheSize = -1 })
	h2 := uncached.iss.Middleware()(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	for _, s := range []string{"Bearer " + p.AccessToken, "bearer x", "Bearer", "Basic Zm9vOmJhcg==", "Bearer a b", "Bearer ===", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, header string) {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.Header["Authorization"] = []string{header}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		switch w.Code {
		case 200, 400, 401:
		default:
			t.Fatalf("header %q: status %d", header, w.Code)
		}
		if c := w.Header().Get("WWW-Authenticate"); w.Code != 200 && !strings.HasPrefix(c, "Bearer realm=") && !strings.HasPrefix(c, "DPoP realm=") {
			t.Fatalf("header %q: no challenge", header)
		}
		w2 := httptest.NewRecorder()
		h2.ServeHTTP(w2, r)
		if w2.Code != w.Code || w2.Header().Get("WWW-Authenticate") != w.Header().Get("WWW-Authenticate") {
			t.Fatalf("header %q: %d %q with the cache, %d %q without", header,
				w.Code, w.Header().Get("WWW-Authenticate"), w2.Code, w2.Header().Get("WWW-Authenticate"))
		}
	})
}

var okStatus = map[int]bool{200: true, 400: true, 401: true, 403: true, 405: true, 413: true}

var okCodes = map[string]bool{"": true, "invalid_request": true, "invalid_grant": true, "unsupported_grant_type": true,
	"invalid_scope": true, "invalid_client": true, "invalid_dpop_proof": true}

// fuzzForm sends an arbitrary body with an arbitrary content type to h.
func fuzzForm(t *testing.T, h http.Handler, ctype, body string) {
	r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(body))
	r.Header.Set("Content-Type", ctype)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	checkFuzzAnswer(t, w, fmt.Sprintf("%q %q", ctype, body))
}

// checkFuzzAnswer fails t unless w is a 200 or an RFC 6749 error: an
// expected status and a body of one fixed error code, nothing else.
func checkFuzzAnswer(t *testing.T, w *httptest.ResponseRecorder, what string) {
	t.Helper()
	if !okStatus[w.Code] {
		t.Fatalf("%s: status %d", what, w.Code)
	}
	if w.Code != 200 {
		b := w.Body.String()
		code := ""
		if i := strings.Index(b, `"error":"`); i >= 0 {
			code = b[i+9:]
			code = code[:strings.IndexByte(code, '"')]
		}
		if !okCodes[code] || strings.Count(b, `"`) != 4 {
			t.Fatalf("%s: body %s", what, b)
		}
	}
}

// FuzzRefreshForm: the refresh grant answers every body with an RFC 6749
// status and code, never a 5xx or detail.
func FuzzRefreshForm(f *testing.F) {
	e := newEnv(f)
	p := e.issue(f, "alice", refresh.WithScope("read"))
	h := refresh.NewHandlers(e.iss, refresh.HandlerConfig{MaxBodyBytes: 2048}).RefreshHandler()
	authed := refresh.NewHandlers(e.iss, refresh.HandlerConfig{MaxBodyBytes: 2048, ClientAuth: fuzzClientAuth}).RefreshHandler()
	const ct = "application/x-www-form-urlencoded"
	f.Add(ct, "grant_type=refresh_token&refresh_token="+p.RefreshToken)
	f.Add(ct, "grant_type=refresh_token&refresh_token="+p.RefreshToken+"&scope=read%20write")
	f.Add(ct, "grant_type=password")
	f.Add(ct, "grant_type=refresh_token&grant_type=refresh_token")
	f.Add("application/json", `{"grant_type":"refresh_token"}`)
	f.Add(ct+"; charset=utf-8", "%zz")
	f.Add(ct, "grant_type=refresh_token&refresh_token="+p.RefreshToken[:9]+"%0D%0A"+p.RefreshToken[9:])
	f.Add(ct, "grant_type=refresh_token&client_id=conf&client_secret=s3cret&refresh_token="+p.RefreshToken)
	f.Add(ct, "grant_type=refresh_token&client_id=pub&refresh_token="+p.RefreshToken)
	f.Fuzz(func(t *testing.T, ctype, body string) {
		fuzzForm(t, h, ctype, body)
		fuzzForm(t, authed, ctype, body)
	})
}

// fuzzClientAuth accepts the confidential client "conf" with its secret and
// the public client "pub" without one.
func fuzzClientAuth(_ context.Context, c refresh.ClientCredentials) error {
	if c.ID == "conf" && c.Secret == "s3cret" || c.ID == "pub" && c.Method == refresh.ClientAuthNone {
		return nil
	}
	return refresh.ErrInvalidClient
}

// FuzzCookieMode: cookie mode's endpoints under arbitrary Cookie headers
// and bodies, with the default path (__Host- cookie) and with /auth
// (__Secure- cookie pinned by __Host-refresh_session): never a 5xx or
// detail, and a refresh from a pinned cookie succeeds only when the request
// carried the session cookie of the session it rotated.
func FuzzCookieMode(f *testing.F) {
	e := newEnv(f)
	p := e.issue(f, "alice")
	q := e.issue(f, "mallory")
	type endpoints struct{ refresh, revoke http.Handler }
	var modes []endpoints
	for _, path := range []string{"", "/auth"} {
		h := refresh.NewHandlers(e.iss, refresh.HandlerConfig{MaxBodyBytes: 2048, Cookie: &refresh.CookieConfig{Path: path}})
		modes = append(modes, endpoints{h.RefreshHandler(), h.RevocationHandler()})
	}
	const grant = "grant_type=refresh_token"
	f.Add("__Host-refresh_token="+p.RefreshToken, grant)
	f.Add("__Secure-refresh_token="+p.RefreshToken+"; __Host-refresh_session="+p.SessionID, grant)
	f.Add("__Secure-refresh_token="+q.RefreshToken+"; __Host-refresh_session="+p.SessionID, grant)
	f.Add("__Secure-refresh_token="+q.RefreshToken+"; __Secure-refresh_token="+p.RefreshToken+"; __Host-refresh_session="+p.SessionID, grant)
	f.Add("__Secure-refresh_token="+p.RefreshToken, "")
	f.Add(`__Host-refresh_token="`+p.RefreshToken+`"; ;;=; a=b`, grant+"&refresh_token=")
	f.Fuzz(func(t *testing.T, cookie, body string) {
		for _, m := range modes {
			for _, h := range []http.Handler{m.refresh, m.revoke} {
				r := httptest.NewRequest(http.MethodPost, "/auth/token", strings.NewReader(body))
				r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				r.Header.Set("X-Requested-With", "fuzz")
				r.Header.Set("Cookie", cookie)
				w := httptest.NewRecorder()
				h.ServeHTTP(w, r)
				if checkFuzzAnswer(t, w, fmt.Sprintf("%q %q", cookie, body)); w.Code != 200 {
					continue
				}
				form, _ := url.ParseQuery(body)
				fromBody := form.Get("refresh_token") != "" || form.Get("token") != ""
				for _, c := range w.Result().Cookies() {
					if c.Name == "__Host-refresh_session" && c.Value != "" && !fromBody &&
						!strings.Contains(cookie, "__Host-refresh_session="+c.Value) {
						t.Fatalf("%q %q: rotated session %s from a pinned cookie without its session cookie", cookie, body, c.Value)
					}
				}
			}
		}
	})
}

// FuzzRevocationForm: the revocation endpoint likewise.
func FuzzRevocationForm(f *testing.F) {
	e := newEnv(f)
	p := e.issue(f, "alice")
	h := refresh.NewHandlers(e.iss, refresh.HandlerConfig{MaxBodyBytes: 2048}).RevocationHandler()
	const ct = "application/x-www-form-urlencoded"
	f.Add(ct, "token="+p.RefreshToken+"&token_type_hint=refresh_token")
	f.Add(ct, "token="+p.AccessToken)
	f.Add(ct, "token=&token=")
	f.Add("text/plain", "token=x")
	f.Add(ct, "token="+p.RefreshToken[:9]+"%0A"+p.RefreshToken[9:])
	f.Add(ct, "client_id=conf&client_secret=s3cret&token="+p.AccessToken)
	authed := refresh.NewHandlers(e.iss, refresh.HandlerConfig{MaxBodyBytes: 2048, ClientAuth: fuzzClientAuth}).RevocationHandler()
	f.Fuzz(func(t *testing.T, ctype, body string) {
		fuzzForm(t, h, ctype, body)
		fuzzForm(t, authed, ctype, body)
	})
}

// FuzzIntrospectionForm: the introspection endpoint answers every body
// with an RFC 6749 error or a 200 whose "active" is true only for the
// tokens it was seeded with, never a 5xx or detail; without ClientAuth it
// answers nothing but invalid_client.
func FuzzIntrospectionForm(f *testing.F) {
	e := newEnv(f)
	p := e.issue(f, "alice", refresh.WithClientID("conf"))
	const ct = "application/x-www-form-urlencoded"
	f.Add(ct, "client_id=conf&client_secret=s3cret&token="+p.AccessToken)
	f.Add(ct, "client_id=conf&client_secret=s3cret&token="+p.RefreshToken+"&token_type_hint=refresh_token")
	f.Add(ct, "client_id=pub&token="+p.AccessToken)
	f.Add(ct, "token=&token=")
	f.Add("text/plain", "token=x")
	authed := refresh.NewHandlers(e.iss, refresh.HandlerConfig{MaxBodyBytes: 2048, ClientAuth: fuzzClientAuth}).IntrospectionHandler()
	open := refresh.NewHandlers(e.iss, refresh.HandlerConfig{MaxBodyBytes: 2048}).IntrospectionHandler()
	f.Fuzz(func(t *testing.T, ctype, body string) {
		fuzzForm(t, authed, ctype, body)
		r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(body))
		r.Header.Set("Content-Type", ctype)
		w := httptest.NewRecorder()
		open.ServeHTTP(w, r)
		if w.Code == 200 {
			t.Fatalf("introspection without ClientAuth answered 200: %q", body)
		}
	})
}

// FuzzParseJWK: key input never panics, and what it accepts is usable.
func FuzzParseJWK(f *testing.F) {
	f.Add([]byte(`{"kty":"oct","kid":"k","alg":"HS256","k":"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY"}`))
	f.Add([]byte(`{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}`))
	f.Add([]byte(`{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}`))
	f.Add([]byte(`{"kty":"RSA","n":"AQAB","e":"AQAB"}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		k, err := refresh.ParseJWK(data)
		if err != nil {
			return
		}
		_, err = refresh.NewIssuer(refresh.Config{
			Issuer: "i", Audience: "a", Keys: []refresh.Key{k, {ID: "other", Algorithm: refresh.HS256, Key: hsSecret}},
			RefreshKeys: []refresh.RefreshKey{{ID: 1, Secret: macSecret}}, Store: refresh.NewMemoryStore(refresh.WithSweepInterval(0)),
		})
		if err != nil && !strings.Contains(err.Error(), "private key") && !strings.Contains(err.Error(), "duplicate key id") {
			t.Fatalf("ParseJWK accepted a key NewIssuer refuses: %v", err)
		}
	})
}

// FuzzParseKeyPEM: PEM key input never panics, and what it accepts is usable.
func FuzzParseKeyPEM(f *testing.F) {
	for _, k := range []any{edKey, ecKey, edKey.Public(), &ecKey.PublicKey} {
		f.Add(pemOf(k))
	}
	f.Add([]byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"))
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		k, err := refresh.ParseKeyPEM(data)
		if err != nil {
			return
		}
		k.ID = "k"
		_, err = refresh.NewIssuer(refresh.Config{
			Issuer: "i", Audience: "a", Keys: []refresh.Key{{ID: "hs", Algorithm: refresh.HS256, Key: hsSecret}, k},
			RefreshKeys: []refresh.RefreshKey{{ID: 1, Secret: macSecret}}, Store: refresh.NewMemoryStore(refresh.WithSweepInterval(0)),
		})
		if err != nil {
			t.Fatalf("ParseKeyPEM accepted a key NewIssuer refuses: %v", err)
		}
	})
}

// FuzzDPoPProof: proof verification never panics and refuses garbage as a
// client error.
func FuzzDPoPProof(f *testing.F) {
	e := newEnv(f)
	f.Add("a.b.c", "GET", "https://api.example.com/me")
	f.Add(forgeHS(map[string]any{"typ": "dpop+jwt", "alg": "EdDSA", "jwk": map[string]any{"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}},
		map[string]any{"jti": "1", "htm": "GET", "htu": "https://api.example.com/me", "iat": 1}, hsSecret), "GET", "https://api.example.com/me")
	f.Fuzz(func(t *testing.T, proof, method, u string) {
		if _, err := e.iss.VerifyDPoPProof(proof, method, u, ""); err != nil && !refresh.IsClientError(err) {
			t.Fatalf("non-client error: %v", err)
		}
	})
}
