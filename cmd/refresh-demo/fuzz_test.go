package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"os"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/refreshkit/refresh"
)

// FuzzDemo sends arbitrary requests to the whole demo service: every
// route, the browser app's cookie endpoints, introspection. Fragments
// {AT}, {RT}, {SID} and {RS} in the input stand for a live access token,
// refresh token and session id of a fresh session, and the resource
// server's secret, so the fuzzer reaches past the token checks. Whatever
// it sends, the service answers below 500 (its store never fails here),
// never shows internal detail (Go error text, stack traces, the secret),
// answers JSON errors in JSON, and never lets a response carrying tokens
// be cached.
//
// With PG_DSN set (scripts/test.sh sets it) the service runs on Postgres,
// the strictest store about what it keeps, so that the seeds and every
// recorded crasher are replayed there by the ordinary test run; fuzzing
// proper (scripts/fuzz.sh) runs on the memory store, in a build with
// -tags demofuzz that has no other (stores_fuzz.go).
func FuzzDemo(f *testing.F) {
	var iss *refresh.Issuer
	if dsn := os.Getenv("PG_DSN"); dsn != "" {
		st, _, closeStore, err := openStore(f.Context(), "postgres", dsn, "")
		if err != nil {
			f.Fatal(err)
		}
		f.Cleanup(closeStore)
		iss = newTestIssuerOn(f, st)
	} else {
		iss = newTestIssuer(f)
	}
	const rsSecret = "rs-s3cret-for-fuzzing"
	mux := newAuthMux(iss, authConfig{introspectionSecret: rsSecret})

	seeds := []struct{ method, path, header, ctype, body string }{
		{"POST", "/login", "", "application/json", `{"username":"alice","password":"wonderland"}`},
		{"POST", "/login", "", "application/x-www-form-urlencoded", "username=bob&password=x&client_id=c"},
		{"POST", "/login", "", "application/json", `{"username":"bob","username":"alice","password":"wonderland"}`},
		{"POST", "/login", "", "application/json", `{"username":"bob","password":"builder","client_id":"resource-server","client_secret":"{RS}"}`},
		{"POST", "/login", "Authorization: Basic cmVzb3VyY2Utc2VydmVyOg==", "application/x-www-form-urlencoded", "username=bob&password=builder&client_secret="},
		{"POST", "/token", "", "application/x-www-form-urlencoded", "grant_type=refresh_token&refresh_token={RT}"},
		{"POST", "/token", "Authorization: Basic cmVzb3VyY2Utc2VydmVyOg==", "application/x-www-form-urlencoded", "grant_type=refresh_token&refresh_token={RT}&scope=profile"},
		{"POST", "/revoke", "", "application/x-www-form-urlencoded", "token={AT}&token_type_hint=access_token"},
		{"POST", "/introspect", "", "application/x-www-form-urlencoded", "client_id=resource-server&client_secret={RS}&token={RT}"},
		{"GET", "/me", "Authorization: Bearer {AT}", "", ""},
		{"GET", "/admin", "Authorization: DPoP {AT}", "", ""},
		{"GET", "/sessions", "Authorization: Bearer {AT}", "", ""},
		{"DELETE", "/sessions/{SID}", "Authorization: Bearer {AT}", "", ""},
		{"POST", "/logout-all", "Authorization: Bearer {AT}", "", ""},
		{"POST", "/password", "Authorization: Bearer {AT}", "application/x-www-form-urlencoded", "current_password=wonderland&password=open+sesame"},
		{"POST", "/app/token", "Cookie: __Host-refresh_token={RT}", "application/x-www-form-urlencoded", "grant_type=refresh_token"},
		{"POST", "/app/revoke", "X-Requested-With: x", "application/x-www-form-urlencoded", ""},
		{"GET", "/.well-known/oauth-authorization-server", "", "", ""},
		{"HEAD", "/.well-known/jwks.json", "", "", ""},
		{"GET", "/assets/app.js", "", "", ""},
		{"GET", "/../../etc/passwd", "", "", ""},
		{"PUT", "/token", "DPoP: e30.e30.", "text/plain", "\x00\xff"},
		// What no text column keeps (TestHostileStringsEachStore).
		{"POST", "/login", "", "application/x-www-form-urlencoded", "username=alice&password=wonderland&client_id=%00"},
		{"POST", "/app/login", "X-Requested-With: x", "application/json", `{"username":"bob","password":"builder","client_id":"\u0000"}`},
		{"DELETE", "/sessions/%FF", "Authorization: Bearer {AT}", "", ""},
		{"DELETE", "/sessions/%00%00", "Authorization: Bearer {AT}", "", ""},
		{"POST", "/token", "", "application/x-www-form-urlencoded", "grant_type=refresh_token&refresh_token={RT}&client_id=%00%FF"},
		{"POST", "/revoke", "", "application/x-www-form-urlencoded", "token={RT}&client_id=%C3"},
	}
	for _, s := range seeds {
		f.Add(s.method, s.path, s.header, s.ctype, s.body)
	}
	// A subject per input: one subject gathering a session per input would
	// make every /sessions and /logout-all of the run slower than the last.
	var n atomic.Int64
	f.Fuzz(func(t *testing.T, method, path, header, ctype, body string) {
		p, err := iss.Issue(t.Context(), fmt.Sprintf("fuzz-%d", n.Add(1)), refresh.WithScope("profile", "sessions"),
			refresh.WithClaims(map[string]any{"roles": []string{"admin"}}))
		if err != nil {
			t.Fatal(err)
		}
		fill := strings.NewReplacer("{AT}", p.AccessToken, "{RT}", p.RefreshToken, "{SID}", p.SessionID, "{RS}", rsSecret)
		req, err := http.NewRequest(method, "http://demo.test"+fill.Replace(path), strings.NewReader(fill.Replace(body)))
		if err != nil || !strings.HasPrefix(path, "/") {
			t.Skip()
		}
		req.RemoteAddr = "192.0.2.7:4242"
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		if name, value, ok := strings.Cut(fill.Replace(header), ":"); ok {
			name = textproto.CanonicalMIMEHeaderKey(strings.TrimSpace(name))
			if name == "" || strings.ContainsAny(name+value, "\r\n\x00") {
				t.Skip()
			}
			req.Header.Add(name, strings.TrimSpace(value))
		}
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, req)

		res := rec.Result()
		out := rec.Body.String()
		if res.StatusCode >= 500 {
			t.Fatalf("%s %q: %d %s", method, path, res.StatusCode, out)
		}
		ct := res.Header.Get("Content-Type")
		for _, leak := range []string{"refresh:", "goroutine ", "panic", "runtime error", ".go:", rsSecret} {
			if (ct == "" || strings.HasPrefix(ct, "application/json") || strings.HasPrefix(ct, "text/plain")) &&
				strings.Contains(out, leak) && !strings.Contains(body+path+header, leak) {
				t.Fatalf("%s %q: the answer shows %q: %s", method, path, leak, out)
			}
		}
		if strings.HasPrefix(ct, "application/json") && method != http.MethodHead && !json.Valid(rec.Body.Bytes()) {
			t.Fatalf("%s %q: a JSON answer that is not JSON: %q", method, path, out)
		}
		var fields map[string]json.RawMessage
		_ = json.Unmarshal(rec.Body.Bytes(), &fields)
		if fields["access_token"] != nil || fields["refresh_token"] != nil || strings.Contains(res.Header.Get("Set-Cookie"), "refresh_token=rt_") {
			if res.Header.Get("Cache-Control") != "no-store" {
				t.Fatalf("%s %q: tokens in a cacheable answer (Cache-Control %q)", method, path, res.Header.Get("Cache-Control"))
			}
		}
	})
}
