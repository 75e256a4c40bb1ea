package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/refreshkit/refresh"
	"golang.org/x/oauth2"
)

// TestOAuth2Client: golang.org/x/oauth2, the standard Go client, refreshes
// at the demo's /token after a sign-in at /login, in each of its client
// authentication styles (auto-detect included), with the demo's client
// authentication off and on (INTROSPECTION_SECRET), as a public client with
// and without a client_id; its tokens work at /me, and the demo's reuse
// detection reaches it as invalid_grant.
func TestOAuth2Client(t *testing.T) {
	for _, auth := range []struct {
		name string
		ac   authConfig
	}{{"no client auth", authConfig{}}, {"client auth on", authConfig{introspectionSecret: "rs-secret"}}} {
		srv := httptest.NewServer(newAuthMux(newTestIssuer(t), auth.ac))
		t.Cleanup(srv.Close)
		for _, clientID := range []string{"", "mobile"} {
			for _, style := range []oauth2.AuthStyle{oauth2.AuthStyleAutoDetect, oauth2.AuthStyleInParams, oauth2.AuthStyleInHeader} {
				if auth.ac.introspectionSecret != "" && style == oauth2.AuthStyleInHeader {
					// Basic authentication with an empty secret is a
					// confidential client's method: refused (401), which
					// AutoDetect answers by retrying in the body.
					continue
				}
				t.Run(auth.name+"/"+clientID+"/"+styleName(style), func(t *testing.T) {
					form := url.Values{"username": {"alice"}, "password": {"wonderland"}}
					if clientID != "" {
						form.Set("client_id", clientID)
					}
					r := post(t, srv.URL+"/login", "application/x-www-form-urlencoded", form.Encode())
					if r.status != 200 {
						t.Fatalf("login: %d %v", r.status, r.body)
					}
					conf := &oauth2.Config{ClientID: clientID, Endpoint: oauth2.Endpoint{TokenURL: srv.URL + "/token", AuthStyle: style}}
					first := &oauth2.Token{AccessToken: r.body["access_token"].(string), RefreshToken: r.body["refresh_token"].(string),
						Expiry: time.Now().Add(-time.Minute)} // expired: the next Token() refreshes
					ctx := context.Background()
					tok, err := conf.TokenSource(ctx, first).Token()
					if err != nil {
						t.Fatalf("refresh: %v", err)
					}
					if tok.RefreshToken == first.RefreshToken || tok.AccessToken == first.AccessToken || tok.Type() != "Bearer" {
						t.Fatalf("not a rotated pair: %+v", tok)
					}
					if tok.Extra("scope") != "profile sessions" || time.Until(tok.Expiry) < 14*time.Minute {
						t.Fatalf("scope %v, expiry %v", tok.Extra("scope"), tok.Expiry)
					}
					resp, err := conf.Client(ctx, tok).Get(srv.URL + "/me")
					if err != nil {
						t.Fatal(err)
					}
					var me map[string]any
					_ = json.NewDecoder(resp.Body).Decode(&me)
					resp.Body.Close()
					wantClient := clientID
					if wantClient == "" {
						wantClient = "refresh-demo" // Config.ClientID's default: the audience
					}
					if resp.StatusCode != 200 || me["sub"] != "alice" || me["client_id"] != wantClient {
						t.Fatalf("/me: %d %v", resp.StatusCode, me)
					}
					// The spent token again: reuse, the session is revoked.
					_, err = conf.TokenSource(ctx, first).Token()
					var re *oauth2.RetrieveError
					if !errors.As(err, &re) || re.ErrorCode != "invalid_grant" || re.Response.StatusCode != 400 {
						t.Fatalf("reuse: %v", err)
					}
					if _, err = conf.TokenSource(ctx, &oauth2.Token{RefreshToken: tok.RefreshToken}).Token(); !errors.As(err, &re) || re.ErrorCode != "invalid_grant" {
						t.Fatalf("the newest token after reuse: %v", err)
					}
				})
			}
		}
	}
}

func styleName(s oauth2.AuthStyle) string {
	return map[oauth2.AuthStyle]string{oauth2.AuthStyleAutoDetect: "auto", oauth2.AuthStyleInParams: "params", oauth2.AuthStyleInHeader: "header"}[s]
}

// TestSignInCannotNameAConfidentialClient: with client authentication on,
// the demo's sign-in authenticates the client it binds the session to, as
// the token endpoint does. Before, anyone with a user's password could sign
// in naming the confidential client "resource-server" without its secret
// and hold a session, and access tokens (client_id), in its name.
func TestSignInCannotNameAConfidentialClient(t *testing.T) {
	iss := newTestIssuer(t)
	srv := httptest.NewServer(newAuthMux(iss, authConfig{introspectionSecret: "rs-secret"}))
	t.Cleanup(srv.Close)
	basicAuth := func(id, secret string) string {
		return "Basic " + base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(id)+":"+url.QueryEscape(secret)))
	}
	bobs := func() int {
		l, err := iss.Sessions(context.Background(), "bob")
		if err != nil {
			t.Fatal(err)
		}
		return len(l)
	}
	for _, c := range []struct {
		name, ctype, body string
		hdr               []string
		status            int
		code              string
	}{
		{"bare client_id, form", form, "username=bob&password=builder&client_id=resource-server", nil, 401, "invalid_client"},
		{"bare client_id, JSON", "application/json", `{"username":"bob","password":"builder","client_id":"resource-server"}`, nil, 401, "invalid_client"},
		{"wrong secret in the body", form, "username=bob&password=builder&client_id=resource-server&client_secret=guess", nil, 401, "invalid_client"},
		{"empty secret in the body", form, "username=bob&password=builder&client_id=resource-server&client_secret=", nil, 401, "invalid_client"},
		{"wrong Basic secret", form, "username=bob&password=builder", []string{"Authorization", basicAuth("resource-server", "guess")}, 401, "invalid_client"},
		{"two methods at once", form, "username=bob&password=builder&client_secret=rs-secret", []string{"Authorization", basicAuth("resource-server", "rs-secret")}, 400, "invalid_request"},
		{"Basic naming another client_id", form, "username=bob&password=builder&client_id=mobile", []string{"Authorization", basicAuth("resource-server", "rs-secret")}, 400, "invalid_request"},
		{"a secret for a public client", form, "username=bob&password=builder&client_id=mobile&client_secret=x", nil, 401, "invalid_client"},
	} {
		before := bobs()
		r := post(t, srv.URL+"/login", c.ctype, c.body, c.hdr...)
		if r.status != c.status || r.body["error"] != c.code || r.body["access_token"] != nil {
			t.Errorf("%s: %d %v, want %d %s and no token", c.name, r.status, r.body, c.status, c.code)
		}
		if n := bobs(); n != before {
			t.Errorf("%s: bob has %d sessions, had %d: a refused sign-in created one", c.name, n, before)
		}
	}

	// The client itself, with its secret either way, and a public client
	// by name, still sign in; the confidential client's session refreshes
	// only with the secret.
	for _, c := range []struct {
		name, body, client string
		hdr                []string
	}{
		{"client_secret_post", "username=bob&password=builder&client_id=resource-server&client_secret=rs-secret", "resource-server", nil},
		{"client_secret_basic", "username=bob&password=builder", "resource-server", []string{"Authorization", basicAuth("resource-server", "rs-secret")}},
		{"public client", "username=bob&password=builder&client_id=mobile", "mobile", nil},
	} {
		r := post(t, srv.URL+"/login", form, c.body, c.hdr...)
		if r.status != 200 {
			t.Fatalf("%s: %d %v", c.name, r.status, r.body)
		}
		me := getBearer(t, srv.URL+"/me", r.body["access_token"].(string))
		if me.status != 200 || me.body["client_id"] != c.client {
			t.Errorf("%s: /me %d %v, want client_id %s", c.name, me.status, me.body, c.client)
		}
		if c.client != "resource-server" {
			continue
		}
		rt := r.body["refresh_token"].(string)
		bare := post(t, srv.URL+"/token", form, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {"resource-server"}}.Encode())
		if bare.status != 401 || bare.body["error"] != "invalid_client" {
			t.Errorf("%s: refresh without the secret: %d %v", c.name, bare.status, bare.body)
		}
		ok := post(t, srv.URL+"/token", form, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}.Encode(), "Authorization", basicAuth("resource-server", "rs-secret"))
		if ok.status != 200 {
			t.Errorf("%s: refresh with the secret: %d %v", c.name, ok.status, ok.body)
		}
	}
}

// getBearer GETs u with the access token and decodes the JSON answer.
func getBearer(t *testing.T, u, accessToken string) reply {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	req.Header.Set("Authorization", "Bearer "+accessToken)
	return doJSON(t, req)
}

// TestRecentSignInRoutes is the attacker's test of the demo's "sudo mode":
// a thief holding alice's refresh token gets fresh access tokens for as
// long as the session lives, yet /admin and signing out another device
// want a sign-in at most 15 minutes old, and a refresh keeps the session's
// auth_time. At exactly 15 minutes the refreshed token passes, one
// nanosecond later it is 401 insufficient_user_authentication (RFC 9470)
// while /me still answers, and the thief cannot sign alice's phone out;
// alice, signing in again, gets back in and signs the thief's session out.
func TestRecentSignInRoutes(t *testing.T) {
	clock := &testClock{t: time.Unix(1_800_000_000, 0)}
	st := refresh.NewMemoryStore(refresh.WithStoreClock(clock.Now))
	t.Cleanup(func() { _ = st.Close() })
	iss := newTestIssuerOn(t, st, func(c *refresh.Config) { c.Now = clock.Now })
	srv := httptest.NewServer(newAuthMux(iss, authConfig{}))
	t.Cleanup(srv.Close)
	signIn := func() (access, refreshToken, sid string) {
		r := post(t, srv.URL+"/login", form, "username=alice&password=wonderland")
		if r.status != 200 {
			t.Fatalf("sign-in: %d %v", r.status, r.body)
		}
		access = r.body["access_token"].(string)
		return access, r.body["refresh_token"].(string), getBearer(t, srv.URL+"/me", access).body["sid"].(string)
	}
	call := func(method, path, access string) *http.Response {
		req, _ := http.NewRequest(method, srv.URL+path, nil)
		req.Header.Set("Authorization", "Bearer "+access)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	laptopAT, stolen, laptop := signIn()
	_, phoneRT, phone := signIn()
	if code := call("GET", "/admin", laptopAT).StatusCode; code != 200 {
		t.Fatalf("/admin right after sign-in: %d", code)
	}
	clock.Add(defaultRecentAuth)
	r := post(t, srv.URL+"/token", form, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {stolen}}.Encode())
	if r.status != 200 {
		t.Fatalf("refresh: %d %v", r.status, r.body)
	}
	at := r.body["access_token"].(string)
	if code := call("GET", "/admin", at).StatusCode; code != 200 {
		t.Fatalf("/admin at exactly 15 min: %d", code)
	}
	clock.Add(time.Nanosecond)
	const want = `Bearer realm="refresh-demo", error="insufficient_user_authentication", max_age="900"`
	for _, c := range []struct{ method, path string }{{"GET", "/admin"}, {"DELETE", "/sessions/" + phone}} {
		if resp := call(c.method, c.path, at); resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") != want {
			t.Fatalf("%s %s 15 min + 1 ns after sign-in: %d %q, want 401 %q", c.method, c.path, resp.StatusCode, resp.Header.Get("WWW-Authenticate"), want)
		}
	}
	me := getBearer(t, srv.URL+"/me", at)
	if me.status != 200 || me.body["auth_time"] != time.Unix(1_800_000_000, 0).UTC().Format(time.RFC3339) {
		t.Fatalf("/me: %d %v, want 200 with the sign-in's auth_time", me.status, me.body)
	}
	if r := post(t, srv.URL+"/token", form, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {phoneRT}}.Encode()); r.status != 200 {
		t.Fatalf("the phone was signed out by a refreshed token: refresh %d %v", r.status, r.body)
	}
	fresh, _, _ := signIn()
	if code := call("GET", "/admin", fresh).StatusCode; code != 200 {
		t.Fatalf("/admin after signing in again: %d", code)
	}
	if code := call("DELETE", "/sessions/"+laptop, fresh).StatusCode; code != 204 {
		t.Fatalf("signing the stolen session out after signing in again: %d", code)
	}
	if code := call("GET", "/me", at).StatusCode; code != 401 {
		t.Fatalf("the thief's token after its session was signed out: /me %d", code)
	}
}

// -recent-auth under a second is refused at start-up, with a message,
// by both the auth service and the resource server (RequireRecentAuth
// would panic on it).
func TestRecentAuthFlag(t *testing.T) {
	for _, runner := range []func(context.Context, options, *slog.Logger, io.Writer) error{run, runResource} {
		err := runner(context.Background(), options{store: "memory", recentAuth: 999 * time.Millisecond}, slog.New(slog.NewTextHandler(io.Discard, nil)), io.Discard)
		if err == nil || !strings.Contains(err.Error(), "-recent-auth") {
			t.Errorf("-recent-auth 999ms: %v, want a refusal naming the flag", err)
		}
	}
}

// The resource server refuses bad settings at start-up, naming them, before
// it fetches anything: an -auth that is not an http(s) URL with a host (a
// scheme it cannot fetch from, no host, no scheme at all); a -public-url
// that is not one, or has a path (htu is this URL plus the request's
// path); a DPOP_NONCE_SECRET that is not base64 of at least 32 bytes.
func TestResourceServerFlags(t *testing.T) {
	discard := slog.New(slog.NewTextHandler(io.Discard, nil))
	// A server these settings got past would stop at once: its context has
	// ended, and it listens on a port of its own.
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	start := func(o options) error {
		o.addr = "127.0.0.1:0"
		return runResource(ended, o, discard, io.Discard)
	}
	for _, auth := range []string{"", "ftp://auth.example", "http://", "https:///jwks", "auth.example:8080", "//auth.example", "http://a b", "file:///etc/passwd"} {
		if err := start(options{authURL: auth}); err == nil || !strings.Contains(err.Error(), "-auth") {
			t.Errorf("-auth %q: %v, want a refusal naming the flag", auth, err)
		}
	}
	const auth = "http://127.0.0.1:1" // nothing listens: only a refusal before any fetch returns at once
	for _, public := range []string{"ftp://api.example", "http://", "api.example", "https://api.example/v1", "https://api.example/?x=1", "https://api.example#top"} {
		if err := start(options{authURL: auth, publicURL: public}); err == nil || !strings.Contains(err.Error(), "-public-url") {
			t.Errorf("-public-url %q: %v, want a refusal naming the flag", public, err)
		}
	}
	for _, secret := range []string{"not base64!", "c2hvcnQ"} { // the second: 5 bytes
		t.Setenv("DPOP_NONCE_SECRET", secret)
		if err := start(options{authURL: auth, dpopNonce: time.Minute}); err == nil || !strings.Contains(err.Error(), "DPOP_NONCE_SECRET") {
			t.Errorf("DPOP_NONCE_SECRET %q: %v, want a refusal naming it", secret, err)
		}
	}
}
