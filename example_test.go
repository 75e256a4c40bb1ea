package refresh_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"time"

	"github.com/refreshkit/refresh"
	"github.com/refreshkit/refresh/refreshtest"
)

// newExampleIssuer builds an Issuer the way a service would: an Ed25519
// signing key, a refresh MAC key, and a store.
// mod may change the configuration first (a clock, say).
func newExampleIssuer(grace time.Duration, mod ...func(*refresh.Config)) *refresh.Issuer {
	_, signing, _ := ed25519.GenerateKey(rand.Reader)
	mac := make([]byte, 32)
	_, _ = rand.Read(mac)
	cfg := refresh.Config{
		Issuer:      "https://auth.example.com",
		Audience:    "https://api.example.com",
		Keys:        []refresh.Key{{ID: "2026-11", Algorithm: refresh.EdDSA, Key: signing}},
		RefreshKeys: []refresh.RefreshKey{{ID: 1, Secret: mac}},
		Store:       refresh.NewMemoryStore(),
		Grace:       grace,
	}
	for _, m := range mod {
		m(&cfg)
	}
	iss, err := refresh.NewIssuer(cfg)
	if err != nil {
		log.Fatal(err)
	}
	return iss
}

// After your own login check, Issue starts a session; Rotate exchanges the
// refresh token for a new pair.
func Example() {
	ctx := context.Background()
	iss := newExampleIssuer(0)

	pair, err := iss.Issue(ctx, "alice", refresh.WithScope("read", "write"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(pair.TokenType, pair.Scope)

	next, err := iss.Rotate(ctx, pair.RefreshToken)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("rotated:", next.RefreshToken != pair.RefreshToken)
	fmt.Println("same session:", next.SessionID == pair.SessionID)
	// Output:
	// Bearer [read write]
	// rotated: true
	// same session: true
}

// Presenting a rotated refresh token again is reuse: the session is revoked,
// so a thief and a victim holding copies of one token both lose it.
func ExampleIssuer_Rotate_reuse() {
	ctx := context.Background()
	iss := newExampleIssuer(0)
	pair, _ := iss.Issue(ctx, "alice")
	next, _ := iss.Rotate(ctx, pair.RefreshToken)

	_, err := iss.Rotate(ctx, pair.RefreshToken) // the old token, again
	fmt.Println(errors.Is(err, refresh.ErrReused))

	_, err = iss.Rotate(ctx, next.RefreshToken) // the session is gone
	fmt.Println(errors.Is(err, refresh.ErrRevoked))
	// Output:
	// true
	// true
}

// With a grace window, a second tab or a retried request presenting the
// previous token shortly after a rotation receives the same successor.
func ExampleIssuer_Rotate_grace() {
	ctx := context.Background()
	iss := newExampleIssuer(10 * time.Second)
	pair, _ := iss.Issue(ctx, "alice")
	tab1, _ := iss.Rotate(ctx, pair.RefreshToken)
	tab2, err := iss.Rotate(ctx, pair.RefreshToken)
	fmt.Println(err == nil, tab1.RefreshToken == tab2.RefreshToken)
	// Output: true true
}

// Verify checks an access token and returns its claims.
func ExampleIssuer_Verify() {
	ctx := context.Background()
	iss := newExampleIssuer(0)
	pair, _ := iss.Issue(ctx, "alice",
		refresh.WithScope("read"),
		refresh.WithClaims(map[string]any{"roles": []string{"admin"}}))

	claims, err := iss.Verify(ctx, pair.AccessToken)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(claims.Subject, claims.Scope, claims.Roles(), claims.SessionID == pair.SessionID)

	_, err = iss.Verify(ctx, pair.AccessToken+"x")
	fmt.Println(errors.Is(err, refresh.ErrInvalidToken))
	// Output:
	// alice [read] [admin] true
	// true
}

// RevokeSubject logs a user out everywhere.
func ExampleIssuer_RevokeSubject() {
	ctx := context.Background()
	iss := newExampleIssuer(0)
	laptop, _ := iss.Issue(ctx, "alice")
	_, _ = iss.Issue(ctx, "alice")

	n, _ := iss.RevokeSubject(ctx, "alice")
	_, err := iss.Rotate(ctx, laptop.RefreshToken)
	fmt.Println(n, errors.Is(err, refresh.ErrRevoked))
	// Output: 2 true
}

// A devices page: Sessions lists the user's live sessions, and the "sign
// out" button of one row sends its id. RevokeSessionOf ends it only if it
// is the signed-in user's own (the subject comes from the verified access
// token, the id from the request).
func ExampleIssuer_RevokeSessionOf() {
	ctx := context.Background()
	iss := newExampleIssuer(0)
	phone, _ := iss.Issue(ctx, "alice", refresh.WithMeta(map[string]string{"device": "phone"}))
	_, _ = iss.Issue(ctx, "alice", refresh.WithMeta(map[string]string{"device": "laptop"}))

	err := iss.RevokeSessionOf(ctx, "mallory", phone.SessionID)
	fmt.Println("mallory:", errors.Is(err, refresh.ErrSessionNotFound))
	fmt.Println("alice:", iss.RevokeSessionOf(ctx, "alice", phone.SessionID))
	devices, _ := iss.Sessions(ctx, "alice")
	for _, d := range devices {
		fmt.Println("still signed in:", d.Meta["device"])
	}
	// Output:
	// mallory: true
	// alice: <nil>
	// still signed in: laptop
}

// Middleware protects routes; ClaimsFromContext gives handlers the verified
// claims, and RequireRole/RequireScope guard them further.
func ExampleIssuer_Middleware() {
	iss := newExampleIssuer(0)
	auth := iss.Middleware(refresh.WithRealm("example"))
	mux := http.NewServeMux()
	mux.Handle("/me", auth(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		claims, _ := refresh.ClaimsFromContext(r.Context())
		fmt.Fprintln(w, "hello", claims.Subject)
	})))
	mux.Handle("/admin", auth(refresh.RequireRole("admin")(http.NotFoundHandler())))
	mux.Handle("/notes", auth(refresh.RequireScope("write")(http.NotFoundHandler())))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	pair, _ := iss.Issue(context.Background(), "alice", refresh.WithScope("read"))
	get := func(path, token string) {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			log.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		line := fmt.Sprintf("%s %d %s %s", path, resp.StatusCode, resp.Header.Get("WWW-Authenticate"), strings.TrimSpace(string(body)))
		fmt.Println(strings.TrimSpace(line))
	}
	get("/me", pair.AccessToken)
	get("/me", "")
	get("/me", "not-a-token")
	get("/admin", pair.AccessToken)
	get("/notes", pair.AccessToken)
	// Output:
	// /me 200  hello alice
	// /me 401 Bearer realm="example"
	// /me 401 Bearer realm="example", error="invalid_token" {"error":"invalid_token"}
	// /admin 403 Bearer realm="example", error="insufficient_scope" {"error":"insufficient_scope"}
	// /notes 403 Bearer realm="example", error="insufficient_scope", scope="write" {"error":"insufficient_scope"}
}

// RequireRecentAuth keeps what a refresh token alone must not do (here a
// password change) behind a recent sign-in: a refresh mints a new access
// token, fresh by iat, but keeps the session's auth_time.
func ExampleRequireRecentAuth() {
	ctx := context.Background()
	clock := refreshtest.NewClock(time.Date(2026, 12, 2, 9, 0, 0, 0, time.UTC))
	iss := newExampleIssuer(0, func(c *refresh.Config) { c.Now = clock.Now })
	changePassword := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "password changed") })
	srv := httptest.NewServer(iss.Middleware()(refresh.RequireRecentAuth(10 * time.Minute)(changePassword)))
	defer srv.Close()
	try := func(token string) {
		req, _ := http.NewRequest(http.MethodPost, srv.URL, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			log.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		fmt.Println(resp.StatusCode, resp.Header.Get("WWW-Authenticate"), strings.TrimSpace(string(body)))
	}

	pair, _ := iss.Issue(ctx, "alice") // alice signs in at 9:00
	try(pair.AccessToken)

	clock.Advance(time.Hour) // a refresh at 10:00, by alice or by a thief
	pair, _ = iss.Rotate(ctx, pair.RefreshToken)
	claims, _ := iss.Verify(ctx, pair.AccessToken)
	fmt.Println("minted", claims.IssuedAt.UTC().Format(time.Kitchen), "signed in", claims.AuthTime.UTC().Format(time.Kitchen))
	try(pair.AccessToken)

	pair, _ = iss.Issue(ctx, "alice") // alice signs in again
	try(pair.AccessToken)
	// Output:
	// 200  password changed
	// minted 10:00AM signed in 9:00AM
	// 401 Bearer realm="api", error="insufficient_user_authentication", max_age="600" {"error":"insufficient_user_authentication"}
	// 200  password changed
}

// A login that signs the user in on an identity provider's word (OpenID
// Connect) passes the provider's auth_time: the session is new, the
// authentication is not, and the step-up guards measure from it.
func ExampleWithAuthTime() {
	ctx := context.Background()
	clock := refreshtest.NewClock(time.Date(2026, 12, 2, 9, 0, 0, 0, time.UTC))
	iss := newExampleIssuer(0, func(c *refresh.Config) { c.Now = clock.Now })

	// From the provider's verified ID token: alice signed in there at 8:00.
	idpAuthTime := time.Unix(1796198400, 0)
	pair, err := iss.Issue(ctx, "alice", refresh.WithAuthTime(idpAuthTime))
	if err != nil {
		log.Fatal(err)
	}
	claims, _ := iss.Verify(ctx, pair.AccessToken)
	fmt.Println("minted", claims.IssuedAt.UTC().Format(time.Kitchen), "signed in", claims.AuthTime.UTC().Format(time.Kitchen))

	// A time no authentication can have is refused before anything is stored.
	_, err = iss.Issue(ctx, "alice", refresh.WithAuthTime(time.Time{}))
	fmt.Println(errors.Is(err, refresh.ErrInvalidRequest))
	// Output:
	// minted 9:00AM signed in 8:00AM
	// true
}

// NewHandlers serves the refresh grant; WriteTokenResponse answers logins in
// the same RFC 6749 format.
func ExampleNewHandlers() {
	iss := newExampleIssuer(0)
	h := refresh.NewHandlers(iss, refresh.HandlerConfig{})
	srv := httptest.NewServer(h.RefreshHandler())
	defer srv.Close()

	pair, _ := iss.Issue(context.Background(), "alice", refresh.WithScope("read"))
	refreshOnce := func(token string) map[string]any {
		resp, err := http.PostForm(srv.URL, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {token}})
		if err != nil {
			log.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&body)
		fmt.Println(resp.StatusCode, resp.Header.Get("Cache-Control"), body["token_type"], body["scope"], body["error"])
		return body
	}
	refreshOnce(pair.RefreshToken)
	refreshOnce(pair.RefreshToken) // reuse
	// Output:
	// 200 no-store Bearer read <nil>
	// 400 no-store <nil> <nil> invalid_grant
}

// A login handler: after its own password check it starts a session, and
// answers Issue's errors the way the token endpoint answers its own. A
// client_id that no store can keep (a NUL byte) is the client's fault.
func ExampleHandlers_WriteIssueError() {
	iss := newExampleIssuer(0)
	h := refresh.NewHandlers(iss, refresh.HandlerConfig{})
	login := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// ... check the user's password here ...
		_ = r.ParseForm()
		client, err := h.AuthenticateClient(r, r.PostForm)
		if err != nil {
			h.WriteIssueError(w, r, err)
			return
		}
		pair, err := iss.Issue(r.Context(), "alice", refresh.WithClientID(client))
		if err != nil {
			h.WriteIssueError(w, r, err) // 400 for a refused value or DPoP proof, else 503
			return
		}
		h.WriteTokenResponse(w, r, pair)
	})
	srv := httptest.NewServer(login)
	defer srv.Close()
	for _, client := range []string{"web", "web\x00"} {
		resp, err := http.PostForm(srv.URL, url.Values{"client_id": {client}})
		if err != nil {
			log.Fatal(err)
		}
		var body map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		fmt.Printf("%q: %d %v\n", client, resp.StatusCode, body["error"])
	}
	// Output:
	// "web": 200 <nil>
	// "web\x00": 400 invalid_request
}

// A login handler binds the session only to a client that authenticated
// as the token endpoint would have it: here "web" is public (its bare id
// is enough) and "backend" must show its secret, so a user's password alone
// cannot buy a session in backend's name.
func ExampleHandlers_AuthenticateClient() {
	iss := newExampleIssuer(0)
	h := refresh.NewHandlers(iss, refresh.HandlerConfig{
		ClientAuth: func(_ context.Context, c refresh.ClientCredentials) error {
			switch {
			case c.ID == "web" && c.Method == refresh.ClientAuthNone:
				return nil
			case c.ID == "backend" && c.Method != refresh.ClientAuthNone &&
				subtle.ConstantTimeCompare([]byte(c.Secret), []byte("backend-secret")) == 1:
				return nil
			}
			return refresh.ErrInvalidClient
		},
	})
	login := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// ... check the user's password here ...
		_ = r.ParseForm()
		client, err := h.AuthenticateClient(r, r.PostForm)
		if err != nil {
			h.WriteIssueError(w, r, err) // 401 invalid_client, 400, or 503
			return
		}
		pair, err := iss.Issue(r.Context(), "alice", refresh.WithClientID(client))
		if err != nil {
			h.WriteIssueError(w, r, err)
			return
		}
		h.WriteTokenResponse(w, r, pair)
	})
	srv := httptest.NewServer(login)
	defer srv.Close()
	for _, form := range []url.Values{
		{"client_id": {"web"}},
		{"client_id": {"backend"}},
		{"client_id": {"backend"}, "client_secret": {"guess"}},
		{"client_id": {"backend"}, "client_secret": {"backend-secret"}},
	} {
		resp, err := http.PostForm(srv.URL, form)
		if err != nil {
			log.Fatal(err)
		}
		var body map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		fmt.Println(form.Encode(), resp.StatusCode, body["error"])
	}
	// Output:
	// client_id=web 200 <nil>
	// client_id=backend 401 invalid_client
	// client_id=backend&client_secret=guess 401 invalid_client
	// client_id=backend&client_secret=backend-secret 200 <nil>
}

// A resource server in another service verifies the auth service's tokens
// from its JWKS document, and asks its introspection endpoint whether the
// session still lives.
func ExampleNewVerifier() {
	// The auth service: an Issuer behind JWKS and introspection handlers.
	iss := newExampleIssuer(0)
	h := refresh.NewHandlers(iss, refresh.HandlerConfig{
		ClientAuth: func(_ context.Context, c refresh.ClientCredentials) error {
			if c.ID == "orders-api" && c.Secret == "orders-secret" {
				return nil
			}
			return refresh.ErrInvalidClient
		},
	})
	mux := http.NewServeMux()
	mux.Handle("/.well-known/jwks.json", h.JWKSHandler())
	mux.Handle("/introspect", h.IntrospectionHandler())
	auth := httptest.NewServer(mux)
	defer auth.Close()

	// The resource server.
	v, err := refresh.NewVerifier(refresh.VerifierConfig{
		Issuer:   "https://auth.example.com",
		Audience: "https://api.example.com",
		JWKSURL:  auth.URL + "/.well-known/jwks.json",
		Introspection: &refresh.IntrospectionConfig{
			URL: auth.URL + "/introspect", ClientID: "orders-api", ClientSecret: "orders-secret",
			CacheTTL: -1, // ask every time, for the example
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer v.Close()

	p, _ := iss.Issue(context.Background(), "alice")
	c, err := v.Verify(context.Background(), p.AccessToken)
	fmt.Println(c.Subject, err)
	_ = iss.RevokeSession(context.Background(), p.SessionID)
	_, err = v.Verify(context.Background(), p.AccessToken)
	fmt.Println(errors.Is(err, refresh.ErrRevoked))
	// Output:
	// alice <nil>
	// true
}

// MetadataHandler publishes RFC 8414 metadata so that OAuth clients which
// know only the issuer find the endpoints; paths are resolved against
// Config.Issuer.
func ExampleHandlers_MetadataHandler() {
	h := refresh.NewHandlers(newExampleIssuer(0), refresh.HandlerConfig{})
	meta, err := h.MetadataHandler(refresh.Endpoints{TokenEndpoint: "/token", RevocationEndpoint: "/revoke"})
	if err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET "+h.MetadataPath(), meta)

	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("GET", "/.well-known/oauth-authorization-server", nil))
	var doc struct {
		TokenEndpoint string   `json:"token_endpoint"`
		Grants        []string `json:"grant_types_supported"`
	}
	_ = json.Unmarshal(rec.Body.Bytes(), &doc)
	fmt.Println(h.MetadataPath())
	fmt.Println(doc.TokenEndpoint, doc.Grants)
	// Output:
	// /.well-known/oauth-authorization-server
	// https://auth.example.com/token [refresh_token]
}

// Application claims come back from Verify (and ClaimsFromContext) as
// encoding/json decodes them, except numbers, which are json.Number: a
// 64-bit id keeps its every digit. OnRefresh sees them the same way, so a
// hook that reloads nothing re-signs them exactly.
func ExampleWithClaims() {
	ctx := context.Background()
	iss := newExampleIssuer(0, func(c *refresh.Config) {
		c.OnRefresh = func(_ context.Context, info *refresh.RefreshInfo) error {
			if info.Claims["tenant"] == json.Number("9007199254740993") {
				info.Claims["roles"] = []string{"billing"} // reloaded from your database
			}
			return nil
		}
	})
	pair, err := iss.Issue(ctx, "alice", refresh.WithClaims(map[string]any{
		"tenant": uint64(9007199254740993), // 2^53+1: no float64 holds it
		"roles":  []string{"user"},
	}))
	if err != nil {
		log.Fatal(err)
	}
	next, err := iss.Rotate(ctx, pair.RefreshToken)
	if err != nil {
		log.Fatal(err)
	}
	c, err := iss.Verify(ctx, next.AccessToken)
	if err != nil {
		log.Fatal(err)
	}
	tenant, err := c.Extra["tenant"].(json.Number).Int64()
	fmt.Println(tenant, err, c.Roles())
	// Output: 9007199254740993 <nil> [billing]
}
