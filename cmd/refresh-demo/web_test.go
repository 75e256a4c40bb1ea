package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/refreshkit/refresh"
)

// get fetches u and returns the status, headers and body.
func get(t *testing.T, u string) (int, http.Header, string) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

// The app's page and files come from the binary, with headers that keep
// injected markup from running and the page from being framed.
func TestAppServed(t *testing.T) {
	srv := httptest.NewServer(newMux(newTestIssuer(t)))
	defer srv.Close()
	for path, ctype := range map[string]string{"/": "text/html", "/assets/app.js": "text/javascript", "/assets/app.css": "text/css"} {
		code, h, body := get(t, srv.URL+path)
		if code != 200 || !strings.HasPrefix(h.Get("Content-Type"), ctype) || body == "" {
			t.Fatalf("%s: %d %q", path, code, h.Get("Content-Type"))
		}
		for name, want := range map[string]string{
			"Content-Security-Policy": contentSecurityPolicy,
			"X-Content-Type-Options":  "nosniff",
			"Referrer-Policy":         "no-referrer",
		} {
			if h.Get(name) != want {
				t.Errorf("%s: %s = %q", path, name, h.Get(name))
			}
		}
	}
	if !strings.Contains(contentSecurityPolicy, "script-src 'self'") || strings.Contains(contentSecurityPolicy, "unsafe-inline") ||
		!strings.Contains(contentSecurityPolicy, "frame-ancestors 'none'") {
		t.Fatalf("CSP: %s", contentSecurityPolicy)
	}
	// Names no file system can hold are 404 too, never 500 (found by
	// FuzzDemo: invalid UTF-8 made the file server answer 500).
	for _, p := range []string{"/assets/nope.js", "/assets/", "/app/app.js", "/web/index.html", "/assets/%F0", "/assets/%00",
		"/assets/index.html", "/assets/..%2Fgo.mod", "/assets/.", "/assets/%2E%2E", "/assets/app.js%00", "/assets/%ff%fe"} {
		if code, _, _ := get(t, srv.URL+p); code != 404 {
			t.Errorf("%s: %d, want 404", p, code)
		}
	}
	// What the CSP forbids must not be needed: no inline script or style,
	// no event-handler attributes, nothing from another origin.
	page, err := os.ReadFile("web/index.html")
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []*regexp.Regexp{
		regexp.MustCompile(`<script(?:\s[^>]*)?>\s*[^<\s]`), regexp.MustCompile(`<style`), regexp.MustCompile(`\son[a-z]+=`),
		regexp.MustCompile(`(?:src|href)="(?:https?:)?//`), regexp.MustCompile(`style="`),
	} {
		if m := bad.FindString(string(page)); m != "" {
			t.Errorf("index.html has %q, which the CSP refuses", m)
		}
	}
	js, _ := os.ReadFile("web/app.js")
	for _, bad := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "localStorage", "sessionStorage"} {
		if strings.Contains(string(js), bad) {
			t.Errorf("app.js uses %s", bad)
		}
	}
}

// The app's login is cookie mode: the refresh token only in the cookie, and
// a cross-site page cannot sign the browser in (login CSRF).
func TestAppLogin(t *testing.T) {
	srv := httptest.NewServer(newMux(newTestIssuer(t)))
	defer srv.Close()
	body := `{"username":"alice","password":"wonderland","client_id":"refresh-demo-web"}`
	for name, hdr := range map[string][]string{
		"no CSRF header":             {"Sec-Fetch-Site", "same-origin"},
		"same site, not same origin": {"X-Requested-With", "x", "Sec-Fetch-Site", "same-site", "Origin", "http://127.0.0.1:1"},
		"cross site":                 {"X-Requested-With", "x", "Sec-Fetch-Site", "cross-site", "Origin", "https://evil.example"},
	} {
		req, _ := http.NewRequest("POST", srv.URL+"/app/login", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		for i := 0; i < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 403 || resp.Header.Get("Set-Cookie") != "" {
			t.Errorf("%s: %d, Set-Cookie %q", name, resp.StatusCode, resp.Header.Get("Set-Cookie"))
		}
	}

	req, _ := http.NewRequest("POST", srv.URL+"/app/login", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Requested-With", "refresh-demo")
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || strings.Contains(string(b), "refresh_token") || !strings.Contains(string(b), "access_token") {
		t.Fatalf("login: %d %s", resp.StatusCode, b)
	}
	cookies := resp.Cookies()
	if len(cookies) != 1 {
		t.Fatalf("cookies: %v", cookies)
	}
	c := cookies[0]
	if c.Name != "__Host-refresh_token" || !c.HttpOnly || !c.Secure || c.SameSite != http.SameSiteStrictMode || c.Path != "/" || c.Domain != "" || !strings.HasPrefix(c.Value, "rt_") {
		t.Fatalf("cookie: %+v", c)
	}

	// The cookie refreshes at /app/token with the header and the app's
	// client id, and only there: the JSON API's /token ignores cookies.
	refreshWith := func(path string, hdr ...string) reply {
		return post(t, srv.URL+path, form, url.Values{"grant_type": {"refresh_token"}, "client_id": {appClientID}}.Encode(),
			append([]string{"Cookie", c.Name + "=" + c.Value}, hdr...)...)
	}
	if r := refreshWith("/token", "X-Requested-With", "x"); r.status != 400 || r.body["error"] != "invalid_request" {
		t.Fatalf("/token with a cookie: %v", r)
	}
	if r := refreshWith("/app/token"); r.status != 403 {
		t.Fatalf("/app/token without the header: %v", r)
	}
	if r := refreshWith("/app/token", "X-Requested-With", "x"); r.status != 200 || r.body["refresh_token"] != nil {
		t.Fatalf("/app/token: %v", r)
	}
}

// "Sign out this device" on the devices page: a user can end their own
// sessions by id, and nobody else's; the answer does not tell another
// user's session from a missing one.
func TestDeleteSession(t *testing.T) {
	srv := httptest.NewServer(newMux(newTestIssuer(t)))
	defer srv.Close()
	del := func(id, token string) int {
		code, _, _ := call(t, "DELETE", srv.URL+"/sessions/"+url.PathEscape(id), token)
		return code
	}
	phone := loginPair(t, srv.URL, "alice", "wonderland")
	laptop := loginAt(t, srv.URL, "alice", "wonderland")
	bob := loginAt(t, srv.URL, "bob", "builder")
	phoneSid := sid(t, srv.URL, phone["access_token"].(string))

	if code := del(phoneSid, bob); code != 404 {
		t.Fatalf("bob deleting alice's session: %d", code)
	}
	if code := del(phoneSid, ""); code != 401 {
		t.Fatalf("no token: %d", code)
	}
	if code := del("no-such-session", laptop); code != 404 {
		t.Fatalf("unknown id: %d", code)
	}
	if code, _ := getWith(t, srv.URL+"/me", phone["access_token"].(string)); code != 200 {
		t.Fatalf("refused attempts ended the session: %d", code)
	}
	if code := del(phoneSid, laptop); code != 204 {
		t.Fatalf("alice signing out her phone: %d", code)
	}
	if code, _ := getWith(t, srv.URL+"/me", phone["access_token"].(string)); code != 401 {
		t.Fatalf("the phone's access token still works: %d", code)
	}
	r := post(t, srv.URL+"/token", form, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {phone["refresh_token"].(string)}}.Encode())
	if r.status != 400 || r.body["error"] != "invalid_grant" {
		t.Fatalf("the phone's refresh token: %v", r)
	}
	if code := del(phoneSid, laptop); code != 404 {
		t.Fatalf("deleting it again: %d", code)
	}
	if code, _ := getWith(t, srv.URL+"/me", laptop); code != 200 {
		t.Fatalf("the laptop was signed out too: %d", code)
	}
}

// sid is the session id of an access token, from /me.
func sid(t *testing.T, base, token string) string {
	t.Helper()
	_, _, b := call(t, "GET", base+"/me", token)
	var me struct {
		Sid string `json:"sid"`
	}
	if err := json.Unmarshal(b, &me); err != nil || me.Sid == "" {
		t.Fatalf("/me: %s", b)
	}
	return me.Sid
}

// -log-requests logs method, path, status and origin of every request.
func TestRequestLog(t *testing.T) {
	var buf syncBuffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	srv := httptest.NewServer(requestLog(newMux(newTestIssuer(t)), log))
	defer srv.Close()
	post(t, srv.URL+"/app/token", form, "grant_type=refresh_token", "Cookie", "__Host-refresh_token=rt_x", "Origin", "http://127.0.0.1:1")
	get(t, srv.URL+"/")
	out := buf.String()
	for _, want := range []string{
		`msg=request method=POST path=/app/token status=403 origin=http://127.0.0.1:1 `,
		`msg=request method=GET path=/ status=200 `,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
}

// TestMetadata: the demo publishes RFC 8414 metadata under its issuer, with
// the endpoints it serves, so that discovering clients find them; a
// malformed -issuer is refused at startup instead of publishing nonsense.
func TestMetadata(t *testing.T) {
	srv := httptest.NewServer(newMux(newTestIssuer(t)))
	defer srv.Close()
	code, hdr, body := call(t, "GET", srv.URL+"/.well-known/oauth-authorization-server", "")
	if code != 200 || hdr.Get("Content-Type") != "application/json" {
		t.Fatalf("metadata: %d %s", code, body)
	}
	var doc map[string]any
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{
		"issuer": "http://demo.test", "token_endpoint": "http://demo.test/token",
		"revocation_endpoint": "http://demo.test/revoke", "jwks_uri": "http://demo.test/.well-known/jwks.json",
	} {
		if doc[k] != want {
			t.Errorf("%s = %v, want %s", k, doc[k], want)
		}
	}
	if _, ok := doc["introspection_endpoint"]; ok {
		t.Error("introspection advertised without INTROSPECTION_SECRET")
	}

	for _, bad := range []string{"foo", "ftp://x.example", "https://", "https://x.example/?a=b"} {
		o := options{addr: "127.0.0.1:0", store: "memory", issuer: bad}
		if err := run(context.Background(), o, slog.New(slog.NewTextHandler(io.Discard, nil)), io.Discard); err == nil || !strings.Contains(err.Error(), "-issuer") {
			t.Errorf("-issuer %q: %v", bad, err)
		}
	}
}

// TestScopesEnforced: a token narrowed at the refresh grant keeps only what
// its scopes grant. Before, the demo granted "profile sessions" at sign-in
// and checked neither, so a token narrowed to "profile" (one handed to a
// less trusted part of an app) could still list the user's devices, sign
// them out and sign out everywhere.
func TestScopesEnforced(t *testing.T) {
	srv := httptest.NewServer(newMux(newTestIssuer(t)))
	defer srv.Close()
	narrow := func(scope string) string {
		full := loginPair(t, srv.URL, "alice", "wonderland")
		r := post(t, srv.URL+"/token", form, url.Values{"grant_type": {"refresh_token"},
			"refresh_token": {full["refresh_token"].(string)}, "scope": {scope}}.Encode())
		if r.status != 200 || r.body["scope"] != scope {
			t.Fatalf("narrowing to %q: %d %v", scope, r.status, r.body)
		}
		return r.body["access_token"].(string)
	}
	laptop := loginAt(t, srv.URL, "alice", "wonderland") // both scopes
	laptopSid := sid(t, srv.URL, laptop)
	profileOnly, sessionsOnly := narrow("profile"), narrow("sessions")

	refused := func(method, path, token, scope string) {
		t.Helper()
		code, h, _ := call(t, method, srv.URL+path, token)
		ch := h.Get("WWW-Authenticate")
		if code != 403 || !strings.Contains(ch, `error="insufficient_scope"`) || !strings.Contains(ch, `scope="`+scope+`"`) {
			t.Fatalf("%s %s: %d %q, want 403 insufficient_scope for %s", method, path, code, ch, scope)
		}
	}
	admitted := func(method, path, token string, want int) {
		t.Helper()
		if code, _, b := call(t, method, srv.URL+path, token); code != want {
			t.Fatalf("%s %s: %d %s, want %d", method, path, code, b, want)
		}
	}
	refused("GET", "/sessions", profileOnly, "sessions")
	refused("DELETE", "/sessions/"+laptopSid, profileOnly, "sessions")
	refused("POST", "/logout-all", profileOnly, "sessions")
	admitted("GET", "/me", laptop, 200) // nothing was signed out
	admitted("GET", "/me", profileOnly, 200)
	admitted("GET", "/admin", profileOnly, 200)

	refused("GET", "/me", sessionsOnly, "profile")
	refused("GET", "/admin", sessionsOnly, "profile")
	admitted("GET", "/sessions", sessionsOnly, 200)

	admitted("GET", "/sessions", laptop, 200)
	admitted("DELETE", "/sessions/"+laptopSid, sessionsOnly, 204)
	admitted("GET", "/me", laptop, 401)

	// The resource server asks for the same scope.
	v, err := refresh.NewVerifier(refresh.VerifierConfig{Issuer: "http://demo.test", Audience: "refresh-demo",
		JWKSURL: srv.URL + "/.well-known/jwks.json"})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	rs := httptest.NewServer(newResourceMux(v, 0))
	defer rs.Close()
	if code, _, b := call(t, "GET", rs.URL+"/me", profileOnly); code != 200 {
		t.Fatalf("resource server, profile token: %d %s", code, b)
	}
	for _, p := range []string{"/me", "/admin"} {
		if code, h, _ := call(t, "GET", rs.URL+p, sessionsOnly); code != 403 || !strings.Contains(h.Get("WWW-Authenticate"), `scope="profile"`) {
			t.Fatalf("resource server %s, sessions-only token: %d %q", p, code, h.Get("WWW-Authenticate"))
		}
	}
}

// ownPortOnly's Host rules, request by request: the port decides (none
// means the scheme's), any name passes on the server's own port, and the
// auth service's host is refused at the resource server even there.
func TestOwnPortOnly(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) })
	addr := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8080}
	web := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 80}
	for _, c := range []struct {
		addr  net.Addr
		other string
		host  string
		tls   bool
		want  int
	}{
		{addr, "", "127.0.0.1:8080", false, 204},
		{addr, "", "localhost:8080", false, 204},
		{addr, "", "[::1]:8080", false, 204},
		{addr, "", "127.0.0.1:8081", false, 421},
		{addr, "", "127.0.0.1", false, 421},
		{addr, "", "127.0.0.1:", false, 421},
		{addr, "", "", false, 421},
		{addr, "", "a:b:c", false, 421},
		{web, "", "example.com", false, 204},
		{web, "", "example.com", true, 421},
		{addr, "auth.example:8080", "rs.example:8080", false, 204},
		{addr, "auth.example:8080", "AUTH.example:8080", false, 421},
	} {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("GET", "/me", nil)
		req.Host = c.host
		if c.tls {
			req.TLS = &tls.ConnectionState{}
		}
		ownPortOnly(ok, c.addr, c.other, "-issuer").ServeHTTP(rec, req)
		if rec.Code != c.want {
			t.Errorf("listening on %v (other %q), Host %q (TLS %v): %d, want %d", c.addr, c.other, c.host, c.tls, rec.Code, c.want)
		}
		if c.want == 421 && (!strings.Contains(rec.Body.String(), "-issuer") || strings.Contains(rec.Body.String(), c.host) && c.host != "") {
			t.Errorf("Host %q: body %q: want the flag named and the Host not echoed", c.host, rec.Body.String())
		}
	}
}
