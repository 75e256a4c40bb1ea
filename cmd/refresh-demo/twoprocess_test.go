package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// proc is the demo running as an OS process.
type proc struct {
	cmd  *exec.Cmd
	out  *syncBuffer // stdout and stderr
	base string
	done chan error
}

func buildDemo(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "refresh-demo")
	out, err := exec.Command("go", append(append([]string{"build"}, raceFlag...), "-o", bin, ".")...).CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

var urlLine = regexp.MustCompile(`refresh-demo (?:resource server )?on (http://127\.0\.0\.1:\d+)`)

func startProc(t *testing.T, bin string, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(bin, args...), out: &syncBuffer{}, done: make(chan error, 1)}
	p.cmd.Env = append(childEnv(), env...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() { p.stop(t) })
	deadline := time.Now().Add(20 * time.Second)
	for p.base == "" {
		if m := urlLine.FindStringSubmatch(p.out.String()); m != nil {
			p.base = m[1]
			break
		}
		select {
		case err := <-p.done:
			p.done <- err
			t.Fatalf("%v exited: %v\n%s", args, err, p.out.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%v printed no URL:\n%s", args, p.out.String())
		}
	}
	return p
}

// childEnv is the environment of a demo process: this one's, and a binary
// built with -race (raceFlag) exits without the race detector's one-second
// pause at exit (GORACE atexit_sleep_ms, 1000 by default), which every
// stop of a demo process paid; stop still sees a race it reported, by its
// report and by its exit status.
func childEnv() []string {
	return append(os.Environ(), "GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
}

// raceExit is the exit status of a binary built with -race that reported a
// data race (GORACE exitcode, 66 by default).
const raceExit = 66

// stop sends SIGTERM and waits; a second call does nothing. A data race
// the demo (built with -race under go test -race) reported fails the test.
func (p *proc) stop(t *testing.T) {
	if p.cmd.ProcessState != nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		t.Errorf("the demo did not stop on SIGTERM:\n%s", p.out.String())
	}
	if strings.Contains(p.out.String(), "WARNING: DATA RACE") || p.cmd.ProcessState.ExitCode() == raceExit {
		t.Errorf("the demo reported a data race (exit status %d):\n%s", p.cmd.ProcessState.ExitCode(), p.out.String())
	}
}

func writeEdKey(t *testing.T, path string) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// loginPair logs user in at base (headers as name, value pairs, for a
// DPoP proof) and returns the token response.
func loginPair(t *testing.T, base, user, pass string, hdr ...string) map[string]any {
	t.Helper()
	r := post(t, base+"/login", form, url.Values{"username": {user}, "password": {pass}}.Encode(), hdr...)
	if _, ok := r.body["access_token"].(string); r.status != 200 || !ok {
		t.Fatalf("login %s at %s: %d %v", user, base, r.status, r.body)
	}
	return r.body
}

func loginAt(t *testing.T, base, user, pass string) string {
	t.Helper()
	return loginPair(t, base, user, pass)["access_token"].(string)
}

// logoutAll ends every session of the token's user at base.
func logoutAll(t *testing.T, base, token string) {
	t.Helper()
	if r := post(t, base+"/logout-all", form, "", "Authorization", "Bearer "+token); r.status != 204 {
		t.Fatalf("logout-all at %s: %d %v", base, r.status, r.body)
	}
}

// untilRefused polls u with token until it answers 401 and returns how
// long that took; any answer but 200 before, or a wait over limit, fails.
func untilRefused(t *testing.T, u, token string, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		code, _ := getWith(t, u, token)
		if code == 401 {
			return time.Since(start)
		}
		if code != 200 || time.Since(start) > limit {
			t.Fatalf("%s still answers %d after %v", u, code, time.Since(start))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// signEd is a compact JWS over header and claims with an Ed25519 key.
func signEd(priv ed25519.PrivateKey, header, claims any) string {
	enc := func(v any) string {
		b, _ := json.Marshal(v)
		return base64.RawURLEncoding.EncodeToString(b)
	}
	in := enc(header) + "." + enc(claims)
	return in + "." + base64.RawURLEncoding.EncodeToString(ed25519.Sign(priv, []byte(in)))
}

func getWith(t *testing.T, u, token string) (int, http.Header) {
	t.Helper()
	code, h, _ := call(t, "GET", u, token)
	return code, h
}

// call sends a bodiless request with a bearer token (none if "") and
// returns the status, headers and body.
func call(t *testing.T, method, u, token string) (int, http.Header, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, u, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

func tokenKid(t *testing.T, tok string) string {
	hdr, err := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[0])
	if err != nil {
		t.Fatal(err)
	}
	var h struct{ Kid string }
	_ = json.Unmarshal(hdr, &h)
	return h.Kid
}

// An auth service and a resource server as two OS processes, over real
// HTTP: the resource server verifies the auth service's tokens from its
// JWKS alone; the auth service rotates its signing key (restart with -key
// new -old-key old) and both old and new tokens keep working without
// restarting the resource server; a flood of tokens with made-up key ids
// costs the auth service at most one JWKS request; "log out everywhere" on
// the auth service reaches the resource server through introspection
// within its cache TTL (the delay is measured and logged). A DPoP request
// captured on either is refused by the other (1b).
func TestTwoProcessesResourceServer(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds the demo and runs two processes")
	}
	bin := buildDemo(t)
	dir := t.TempDir()
	keyA, keyB := filepath.Join(dir, "a.pem"), filepath.Join(dir, "b.pem")
	writeEdKey(t, keyA)
	writeEdKey(t, keyB)
	env := []string{"INTROSPECTION_SECRET=two-process-test-secret", "REFRESH_SECRET=" + base64.StdEncoding.EncodeToString(make([]byte, 32))}
	authAddr := freeAddr(t)
	authArgs := []string{"-addr", authAddr, "-store", "sqlite", "-data", filepath.Join(dir, "data")}
	auth := startProc(t, bin, env, append(authArgs, "-key", keyA)...)
	const introTTL = time.Second
	rs := startProc(t, bin, env, "-resource-server", "-addr", freeAddr(t), "-auth", auth.base,
		"-introspect-ttl", introTTL.String(), "-jwks-refetch", "2s")
	if !strings.Contains(rs.out.String(), "Keys loaded") || !strings.Contains(rs.out.String(), "Introspection on") {
		t.Fatalf("resource server start-up:\n%s", rs.out.String())
	}

	// 1. Verification from the JWKS.
	alice := loginAt(t, auth.base, "alice", "wonderland")
	bob := loginAt(t, auth.base, "bob", "builder")
	for _, c := range []struct {
		path, tok string
		want      int
	}{{"/me", alice, 200}, {"/admin", alice, 200}, {"/me", bob, 200}, {"/admin", bob, 403}, {"/me", "", 401}, {"/me", alice + "x", 401}} {
		if got, h := getWith(t, rs.base+c.path, c.tok); got != c.want {
			t.Fatalf("resource server %s: %d, want %d (%v)", c.path, got, c.want, h)
		}
	}
	if _, h := getWith(t, rs.base+"/me", ""); !strings.Contains(h.Get("WWW-Authenticate"), `Bearer realm="refresh-demo-api"`) {
		t.Fatalf("challenge: %q", h.Get("WWW-Authenticate"))
	}

	// 1b. A DPoP request captured on one service, replayed to the other
	// with the first one's Host header, so that the proof's htu matches the
	// URL the Host makes (both /me accept the same tokens, and each keeps
	// its own replay cache): 421 both ways, nothing answered from the
	// token (before: 200 both ways, within the proof's minute).
	key := newDPoPKey(t)
	pair := loginPair(t, auth.base, "bob", "builder", "DPoP", key.proof("POST", auth.base+"/login", ""))
	at := pair["access_token"].(string)
	dpopGet := func(target, host, proof string) (int, string) {
		t.Helper()
		return dpopGetAs(t, target, host, at, proof)
	}
	authHost, rsHost := strings.TrimPrefix(auth.base, "http://"), strings.TrimPrefix(rs.base, "http://")
	atAuth := key.proof("GET", auth.base+"/me", at)
	if code, body := dpopGet(auth.base+"/me", authHost, atAuth); code != 200 {
		t.Fatalf("the owner's DPoP request at the auth service: %d %s", code, body)
	}
	if code, body := dpopGet(rs.base+"/me", authHost, atAuth); code != http.StatusMisdirectedRequest || strings.Contains(body, "bob") {
		t.Fatalf("the auth service's request replayed to the resource server with its Host: %d %s, want 421", code, body)
	}
	atRS := key.proof("GET", rs.base+"/me", at)
	if code, body := dpopGet(rs.base+"/me", rsHost, atRS); code != 200 {
		t.Fatalf("the owner's DPoP request at the resource server: %d %s", code, body)
	}
	if code, body := dpopGet(auth.base+"/me", rsHost, atRS); code != http.StatusMisdirectedRequest || strings.Contains(body, "bob") {
		t.Fatalf("the resource server's request replayed to the auth service with its Host: %d %s, want 421", code, body)
	}
	// Any host name on a service's own port reaches it (localhost for
	// 127.0.0.1); another port does not, whatever the name.
	_, rsPort, _ := strings.Cut(rsHost, ":")
	if code, body := dpopGet(rs.base+"/me", "localhost:"+rsPort, key.proof("GET", "http://localhost:"+rsPort+"/me", at)); code != 200 {
		t.Fatalf("localhost on the resource server's port: %d %s", code, body)
	}
	if code, _ := dpopGet(rs.base+"/me", "localhost:1", key.proof("GET", "http://localhost:1/me", at)); code != http.StatusMisdirectedRequest {
		t.Fatalf("another port: %d, want 421", code)
	}

	// 2. Key rotation on the auth service, the resource server untouched.
	auth.stop(t)
	auth = startProc(t, bin, env, append(authArgs, "-key", keyB, "-old-key", keyA)...)
	alice2 := loginAt(t, auth.base, "alice", "wonderland")
	if tokenKid(t, alice2) == tokenKid(t, alice) {
		t.Fatal("the restarted auth service still signs with the old key")
	}
	if got, _ := getWith(t, rs.base+"/me", alice2); got != 200 {
		t.Fatalf("a token from the new key: %d\n%s", got, rs.out.String())
	}
	if got, _ := getWith(t, rs.base+"/me", alice); got != 200 {
		t.Fatalf("a token from the old key, still published: %d", got)
	}

	// 3. A flood of made-up key ids: at most one JWKS request. (Wait out
	// the refetch interval that step 2's new kid used, so that the flood
	// may cost one.)
	time.Sleep(2 * time.Second)
	served := func() int { return strings.Count(auth.out.String(), "jwks served") }
	before := served()
	var wg sync.WaitGroup
	var mu sync.Mutex
	codes := map[int]int{}
	for i := 0; i < 300; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, _ := getWith(t, rs.base+"/me", forgedToken(t, fmt.Sprintf("flood-%d", i)))
			mu.Lock()
			codes[code]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	if codes[401] != 300 {
		t.Fatalf("flood answers: %v, want 300 × 401", codes)
	}
	if n := served() - before; n > 1 {
		t.Fatalf("300 unknown key ids cost the auth service %d JWKS requests, want at most 1", n)
	}
	t.Logf("kid flood: 300 requests, %d JWKS fetches", served()-before)

	// 4. Log out everywhere on the auth service; the resource server refuses
	// the token within its introspection cache TTL.
	logoutAll(t, auth.base, alice2)
	delay := untilRefused(t, rs.base+"/me", alice2, introTTL+2*time.Second)
	t.Logf("logout-all reached the resource server after %v (introspection cache TTL %v)", delay.Round(time.Millisecond), introTTL)
	if got, _ := getWith(t, rs.base+"/me", alice); got != 401 {
		t.Fatalf("alice's first token after logout-all: %d", got)
	}
}

// forgedToken is an EdDSA access token from a key nobody published.
// dpopGetAs sends GET target with Host host, the DPoP-bound access token
// at and proof, and returns the status and body.
func dpopGetAs(t *testing.T, target, host, at, proof string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", target, nil)
	req.Host = host
	req.Header.Set("Authorization", "DPoP "+at)
	req.Header.Set("DPoP", proof)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func forgedToken(t *testing.T, kid string) string {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	return signEd(priv, map[string]string{"alg": "EdDSA", "kid": kid, "typ": "at+jwt"},
		map[string]any{"sub": "mallory", "exp": time.Now().Add(time.Hour).Unix()})
}
