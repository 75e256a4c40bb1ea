package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/refreshkit/refresh"
)

func newTestIssuer(t testing.TB) *refresh.Issuer {
	t.Helper()
	st := refresh.NewMemoryStore()
	t.Cleanup(func() { _ = st.Close() })
	return newTestIssuerOn(t, st)
}

// newTestIssuerOn is newTestIssuer on another store; mod may change the
// configuration first (a clock, say).
func newTestIssuerOn(t testing.TB, st refresh.Store, mod ...func(*refresh.Config)) *refresh.Issuer {
	t.Helper()
	key, _, err := signingKey("")
	if err != nil {
		t.Fatal(err)
	}
	mac := make([]byte, 32)
	_, _ = rand.Read(mac)
	cfg := refresh.Config{
		Issuer: "http://demo.test", Audience: "refresh-demo",
		Keys: []refresh.Key{key}, RefreshKeys: []refresh.RefreshKey{{ID: 1, Secret: mac}},
		Store: st, CheckSession: true,
	}
	for _, m := range mod {
		m(&cfg)
	}
	iss, err := refresh.NewIssuer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return iss
}

// The README's walkthrough, run for real with curl and jq against the demo.
func TestREADMEWalkthrough(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	want := walkthrough("http://127.0.0.1:8080")
	if !bytes.Contains(readme, []byte(want)) {
		t.Fatalf("README.md does not contain the walkthrough the demo prints:\n%s", want)
	}
	for _, tool := range []string{"curl", "jq", "bash"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is missing (scripts/test.sh installs it as root)", tool)
			}
			t.Skipf("%s is not installed; scripts/test.sh installs it as root", tool)
		}
	}
	srv := httptest.NewServer(newMux(newTestIssuer(t)))
	defer srv.Close()
	cmd := exec.Command("bash", "-euo", "pipefail", "-c", walkthrough(srv.URL))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("walkthrough failed: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	expect := []string{
		`"access_token":`,           // 1. login
		`"sub":"alice"`,             // 2. /me
		`"area":"admin"`,            // 2. /admin
		`"refresh_token":"rt_`,      // 3. refresh
		`{"error":"invalid_grant"}`, // 4. replay
		`{"error":"invalid_grant"}`, // 4. newest token dead too
		`2`,                         // 5. bob's sessions
		`403`,                       // 5. bob is no admin
		`204`,                       // 5. logout everywhere
		`401`,                       // 5. access token dead at once
	}
	if len(lines) != len(expect) {
		t.Fatalf("walkthrough printed %d lines, want %d:\n%s", len(lines), len(expect), out)
	}
	for i, e := range expect {
		if !strings.Contains(lines[i], e) {
			t.Errorf("line %d: %q does not contain %q", i+1, lines[i], e)
		}
	}
}

type reply struct {
	status int
	body   map[string]any
}

func post(t *testing.T, u, ctype, body string, hdr ...string) reply {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, u, strings.NewReader(body))
	req.Header.Set("Content-Type", ctype)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	return doJSON(t, req)
}

// doJSON sends req and decodes the JSON answer.
func doJSON(t *testing.T, req *http.Request) reply {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	r := reply{status: resp.StatusCode}
	_ = json.NewDecoder(resp.Body).Decode(&r.body)
	return r
}

const form = "application/x-www-form-urlencoded"

func TestLogin(t *testing.T) {
	srv := httptest.NewServer(newMux(newTestIssuer(t)))
	defer srv.Close()
	cases := []struct {
		name, ctype, body string
		status            int
		errCode           string
	}{
		{"form", form, "username=alice&password=wonderland", 200, ""},
		{"json", "application/json", `{"username":"bob","password":"builder","client_id":"cli"}`, 200, ""},
		{"wrong password", form, "username=alice&password=builder", 401, "invalid_credentials"},
		{"unknown user", form, "username=mallory&password=x", 401, "invalid_credentials"},
		{"missing password", form, "username=alice", 400, "invalid_request"},
		{"bad json", "application/json", `{"username":`, 400, "invalid_request"},
		{"json then more", "application/json", `{"username":"bob","password":"builder"}{"username":"alice"}`, 400, "invalid_request"},
		{"json then garbage", "application/json", `{"username":"bob","password":"builder"}garbage`, 400, "invalid_request"},
		{"json name in other case", "application/json", `{"USERNAME":"bob","password":"builder"}`, 400, "invalid_request"},
		{"json unknown member", "application/json", `{"username":"bob","password":"builder","admin":"true"}`, 400, "invalid_request"},
		{"json number", "application/json", `{"username":"bob","password":1}`, 400, "invalid_request"},
		{"json null", "application/json", `null`, 400, "invalid_request"},
		{"json array", "application/json", `["bob","builder"]`, 400, "invalid_request"},
		{"json repeated member", "application/json", `{"username":"bob","username":"alice","password":"wonderland"}`, 400, "invalid_request"},
		{"json nested value", "application/json", `{"username":{"x":"alice"},"password":"wonderland"}`, 400, "invalid_request"},
		{"json empty object", "application/json", `{}`, 400, "invalid_request"},
		{"json unterminated", "application/json", `{"username":"bob","password":"builder"`, 400, "invalid_request"},
		{"json with trailing space", "application/json", `{"username":"bob","password":"builder"}` + "\n", 200, ""},
		{"repeated form field", form, "username=mallory&username=alice&password=wonderland", 400, "invalid_request"},
		{"text", "text/plain", "alice:wonderland", 400, "invalid_request"},
		{"oversized", form, "username=alice&password=" + strings.Repeat("x", 5000), 413, "invalid_request"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := post(t, srv.URL+"/login", tc.ctype, tc.body)
			if r.status != tc.status {
				t.Fatalf("status %d, want %d (%v)", r.status, tc.status, r.body)
			}
			if tc.errCode != "" && r.body["error"] != tc.errCode {
				t.Fatalf("error %v, want %s", r.body["error"], tc.errCode)
			}
			if tc.status == 200 && (r.body["token_type"] != "Bearer" || r.body["refresh_token"] == nil) {
				t.Fatalf("not a token response: %v", r.body)
			}
		})
	}
	resp, err := http.Get(srv.URL + "/login")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 405 {
		t.Fatalf("GET /login: %d", resp.StatusCode)
	}
}

// A client-bound login refreshes only with its client_id.
func TestLoginClientBinding(t *testing.T) {
	srv := httptest.NewServer(newMux(newTestIssuer(t)))
	defer srv.Close()
	r := post(t, srv.URL+"/login", form, "username=alice&password=wonderland&client_id=mobile")
	rt := r.body["refresh_token"].(string)
	bad := post(t, srv.URL+"/token", form, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {"web"}}.Encode())
	if bad.status != 400 || bad.body["error"] != "invalid_grant" {
		t.Fatalf("other client: %v", bad)
	}
	good := post(t, srv.URL+"/token", form, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {"mobile"}}.Encode())
	if good.status != 200 {
		t.Fatalf("own client: %v", good)
	}
}

type syncBuffer struct {
	mu sync.Mutex // guards b
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// serverStores returns the server stores the environment names (PG_DSN,
// REDIS_URL) by -store name; a missing one is a failure under CI=true.
func serverStores(t *testing.T) map[string]string {
	stores := map[string]string{}
	for kind, env := range map[string]string{"postgres": "PG_DSN", "redis": "REDIS_URL"} {
		if v := os.Getenv(env); v != "" {
			stores[kind] = v
		} else if os.Getenv("CI") == "true" {
			t.Errorf("%s is not set and CI=true", env)
		} else {
			t.Logf("%s not set: -store %s not tried", env, kind)
		}
	}
	return stores
}

// run serves on a real port with each store, prints its URL and walkthrough,
// and shuts down gracefully when its context ends.
func TestRunEachStore(t *testing.T) {
	eachStore(t, func(t *testing.T, o options) {
		kind := o.store
		base, stop, out := startDemo(t, o)
		r := post(t, base+"/login", form, "username=alice&password=wonderland")
		if r.status != 200 {
			t.Fatalf("login: %v", r)
		}
		r = post(t, base+"/token", form, "grant_type=refresh_token&refresh_token="+r.body["refresh_token"].(string))
		if r.status != 200 {
			t.Fatalf("refresh: %v", r)
		}
		resp, err := http.Get(base + "/.well-known/jwks.json")
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("jwks: %v %v", resp, err)
		}
		resp.Body.Close()
		stop()
		want := "Created new keys in " + o.dataDir
		if kind == "memory" {
			want = "sessions and generated keys die with this process"
		}
		if !strings.Contains(out.String(), want) {
			t.Fatalf("the demo does not say %q:\n%s", want, out.String())
		}
	})
}

// eachStore runs f once per store the demo offers (Postgres and Redis when
// PG_DSN / REDIS_URL are set), with options for a fresh instance on it.
func eachStore(t *testing.T, f func(t *testing.T, o options)) {
	stores := serverStores(t)
	stores["memory"], stores["sqlite"] = "", ""
	for kind, dsn := range stores {
		t.Run(kind, func(t *testing.T) {
			f(t, options{addr: "127.0.0.1:0", store: kind, dsn: dsn, dataDir: t.TempDir(), accessTTL: time.Minute, idleTTL: time.Hour, sessTTL: 2 * time.Hour})
		})
	}
}

func TestRefreshSecret(t *testing.T) {
	if _, _, err := decodeSecret("REFRESH_SECRET", "c2hvcnQ="); err == nil {
		t.Fatal("a short REFRESH_SECRET was accepted")
	}
	if _, _, err := decodeSecret("REFRESH_SECRET", "!!!"); err == nil {
		t.Fatal("a non-base64 REFRESH_SECRET was accepted")
	}
	b, gen, err := decodeSecret("REFRESH_SECRET", strings.Repeat("QUFB", 11))
	if err != nil || gen || len(b) != 33 {
		t.Fatalf("%d %v %v", len(b), gen, err)
	}
}

func TestSigningKeyFile(t *testing.T) {
	dir := t.TempDir()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(priv)
	pemFile := dir + "/key.pem"
	if err := os.WriteFile(pemFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	k, generated, err := signingKey(pemFile)
	if err != nil || generated || k.Algorithm != refresh.EdDSA {
		t.Fatalf("PEM key: %v %v %v", k.Algorithm, generated, err)
	}
	jwkFile := dir + "/key.json"
	secret := base64.RawURLEncoding.EncodeToString([]byte(strings.Repeat("s", 32)))
	if err := os.WriteFile(jwkFile, []byte(`{"kty":"oct","kid":"demo","alg":"HS256","k":"`+secret+`"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if k, _, err = signingKey(jwkFile); err != nil || k.ID != "demo" {
		t.Fatalf("JWK key: %v %v", k.ID, err)
	}
	if _, _, err := signingKey(dir + "/missing"); err == nil {
		t.Fatal("a missing key file was accepted")
	}
}

// startDemo runs the demo with o until the returned stop is called (which
// fails the test if run returns an error), and returns its base URL and
// what it printed.
func startDemo(t *testing.T, o options) (base string, stop func(), out *syncBuffer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out = &syncBuffer{}
	done := make(chan error, 1)
	go func() { done <- run(ctx, o, slog.New(slog.NewTextHandler(io.Discard, nil)), out) }()
	re := regexp.MustCompile(`refresh-demo on (http://127\.0\.0\.1:\d+)`)
	for i := 0; i < 400 && base == ""; i++ {
		if m := re.FindStringSubmatch(out.String()); m != nil {
			base = m[1]
		} else {
			time.Sleep(25 * time.Millisecond)
		}
	}
	if base == "" {
		cancel()
		t.Fatalf("no URL printed: %s (%v)", out.String(), <-done)
	}
	return base, func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	}, out
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// The default store keeps sessions and keys in the data directory: after a
// restart the access token still verifies, the refresh token still rotates
// (once), and nobody is logged out. The directory is 0700, its files 0600.
func TestRestartKeepsSessions(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	o := options{addr: freeAddr(t), store: "sqlite", dataDir: dir, accessTTL: time.Minute, idleTTL: time.Hour, sessTTL: 2 * time.Hour}
	base, stop, _ := startDemo(t, o)
	login := post(t, base+"/login", form, "username=alice&password=wonderland")
	if login.status != 200 {
		t.Fatalf("login: %v", login)
	}
	stop()

	base, stop, _ = startDemo(t, o)
	defer stop()
	req, _ := http.NewRequest("GET", base+"/me", nil)
	req.Header.Set("Authorization", "Bearer "+login.body["access_token"].(string))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("the access token from before the restart: %d, want 200 (same signing key)", resp.StatusCode)
	}
	rt := login.body["refresh_token"].(string)
	if r := post(t, base+"/token", form, "grant_type=refresh_token&refresh_token="+rt); r.status != 200 {
		t.Fatalf("the refresh token from before the restart: %v, want a new pair", r)
	}
	if r := post(t, base+"/token", form, "grant_type=refresh_token&refresh_token="+rt); r.status != 400 || r.body["error"] != "invalid_grant" {
		t.Fatalf("the same refresh token again: %v, want invalid_grant (reuse)", r)
	}
	for path, want := range map[string]os.FileMode{dir: 0o700, filepath.Join(dir, "sessions.db"): 0o600,
		filepath.Join(dir, "signing-key.pem"): 0o600, filepath.Join(dir, "refresh-secret"): 0o600} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s: mode %04o, want %04o", path, fi.Mode().Perm(), want)
		}
	}
}

// A key file others can read is refused, with the fix in the message.
func TestDataDirRefusesReadableKey(t *testing.T) {
	dir := t.TempDir()
	if err := prepareDataDir(dir); err != nil {
		t.Fatal(err)
	}
	if _, _, err := persistentSigningKey(dir); err != nil {
		t.Fatal(err)
	}
	k1, created, err := persistentSigningKey(dir)
	if err != nil || created {
		t.Fatalf("second read: created %v, %v", created, err)
	}
	path := filepath.Join(dir, "signing-key.pem")
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := persistentSigningKey(dir); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("a world-readable key: %v, want a refusal saying chmod 600", err)
	}
	_ = k1
	if err := os.WriteFile(filepath.Join(dir, "refresh-secret"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := persistentSecret(dir); err == nil {
		t.Fatal("an empty refresh-secret file was accepted")
	}
}
