package main

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/refreshkit/refresh"
	"github.com/refreshkit/refresh/refreshtest"
)

// TestStoreDownEveryRoute: with the session store down, every route of the
// demo answers without a 500 and without the store's error text: 503
// temporarily_unavailable where the store is needed (sign-in, refresh,
// revocation, the sessions page and its sign-outs), the usual answers where
// it is not (keys, metadata, the app). The session check answers from its
// cache here (a long SessionCheckTTL, warmed before the store goes down), so
// that the routes behind the middleware reach their own store calls; a
// session check that has to ask the store is 503 at the middleware
// (TestMiddlewareStoreDown in the library). Once the store is back, the
// pair signed in before still works: nothing was lost.
func TestStoreDownEveryRoute(t *testing.T) {
	fx := refreshtest.New(t, refreshtest.WithConfig(func(c *refresh.Config) {
		c.Issuer, c.Audience = "http://demo.test", "refresh-demo"
		c.SessionCheckTTL = time.Hour
	}))
	srv := httptest.NewServer(newMux(fx.Issuer))
	t.Cleanup(srv.Close)
	login := post(t, srv.URL+"/login", form, "username=alice&password=wonderland")
	if login.status != 200 {
		t.Fatalf("sign-in: %d %v", login.status, login.body)
	}
	at, rt := login.body["access_token"].(string), login.body["refresh_token"].(string)
	sid := sessionIDOf(t, at)
	warm, _ := http.NewRequest("GET", srv.URL+"/me", nil)
	warm.Header.Set("Authorization", "Bearer "+at)
	if resp, err := http.DefaultClient.Do(warm); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /me before the store goes down: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}

	fx.FailStore(errors.New("dial tcp 10.0.0.7:5432: connect: secret detail"))
	for _, c := range []struct {
		method, path, ctype, body string
		bearer                    bool
		want                      []int
		has                       string // in a 200 answer
	}{
		{"POST", "/login", form, "username=alice&password=wonderland", false, []int{503}, ""},
		{"POST", "/login", "application/json", `{"username":"bob","password":"builder"}`, false, []int{503}, ""},
		{"POST", "/token", form, "grant_type=refresh_token&refresh_token=" + rt, false, []int{503}, ""},
		{"POST", "/revoke", form, "token=" + rt, false, []int{503}, ""},
		{"POST", "/revoke", form, "token=" + at + "&token_type_hint=access_token", false, []int{503}, ""},
		{"GET", "/me", "", "", true, []int{200}, "alice"},
		{"GET", "/sessions", "", "", true, []int{503}, ""},
		{"DELETE", "/sessions/" + sid, "", "", true, []int{503}, ""},
		{"POST", "/logout-all", "", "", true, []int{503}, ""},
		{"POST", "/password", form, "current_password=wonderland&password=open+sesame", true, []int{503}, ""},
		{"GET", "/.well-known/jwks.json", "", "", false, []int{200}, `"keys"`},
		{"GET", "/.well-known/oauth-authorization-server", "", "", false, []int{200}, `"token_endpoint"`},
		{"GET", "/", "", "", false, []int{200}, "<html"},
	} {
		name := c.method + " " + c.path
		req, _ := http.NewRequest(c.method, srv.URL+c.path, strings.NewReader(c.body))
		if c.ctype != "" {
			req.Header.Set("Content-Type", c.ctype)
		}
		if c.bearer {
			req.Header.Set("Authorization", "Bearer "+at)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		ok := false
		for _, w := range c.want {
			ok = ok || resp.StatusCode == w
		}
		if !ok {
			t.Errorf("%s: %d %s, want one of %v", name, resp.StatusCode, raw, c.want)
		}
		if strings.Contains(string(raw), "secret detail") || strings.Contains(string(raw), "10.0.0.7") {
			t.Errorf("%s: the store's error reached the wire: %s", name, raw)
		}
		if resp.StatusCode == 200 && !strings.Contains(string(raw), c.has) {
			t.Errorf("%s: 200 without %s: %.200s", name, c.has, raw)
		}
		if resp.StatusCode == 503 && !strings.Contains(string(raw), "temporarily_unavailable") {
			t.Errorf("%s: 503 without temporarily_unavailable: %s", name, raw)
		}
	}

	fx.FailStore(nil)
	if r := post(t, srv.URL+"/token", form, "grant_type=refresh_token&refresh_token="+rt); r.status != 200 {
		t.Fatalf("after the store is back, the refresh token signed in before: %d %v", r.status, r.body)
	}
}

// sessionIDOf reads the sid claim of the access token at.
func sessionIDOf(t *testing.T, at string) string {
	t.Helper()
	parts := strings.Split(at, ".")
	if len(parts) != 3 {
		t.Fatal("not a JWT")
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims struct {
		SID string `json:"sid"`
	}
	if err := json.Unmarshal(raw, &claims); err != nil || claims.SID == "" {
		t.Fatalf("no sid claim: %v", err)
	}
	return claims.SID
}

// TestSignInFailsClosedWithoutTheSessionBound: with a bound on sessions
// (the demo's -max-sessions), a sign-in whose bound cannot be checked or
// enforced, because the store cannot list the user's sessions or end the
// oldest, is 503 with no token, and the user's earlier session lives on.
func TestSignInFailsClosedWithoutTheSessionBound(t *testing.T) {
	fx := refreshtest.New(t, refreshtest.WithConfig(func(c *refresh.Config) {
		c.Issuer, c.Audience = "http://demo.test", "refresh-demo"
		c.MaxSessions = 1
	}))
	srv := httptest.NewServer(newMux(fx.Issuer))
	t.Cleanup(srv.Close)
	first := post(t, srv.URL+"/login", form, "username=bob&password=builder")
	if first.status != 200 {
		t.Fatalf("sign-in: %d %v", first.status, first.body)
	}
	sid := sessionIDOf(t, first.body["access_token"].(string))
	for _, method := range []string{"Sessions", "Revoke"} {
		fx.FailStore(errors.New("dial tcp 10.0.0.7:5432: connect: secret detail"), method)
		r := post(t, srv.URL+"/login", form, "username=bob&password=builder")
		fx.FailStore(nil)
		if r.status != 503 || r.body["access_token"] != nil || r.body["refresh_token"] != nil {
			t.Errorf("%s failing: %d %v, want 503 and no token", method, r.status, r.body)
		}
		if fx.Session(sid).Revoked() {
			t.Errorf("%s failing: the earlier session ended", method)
		}
	}
}
