package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// instancePair starts two demo processes on one shared store (Postgres or
// Redis), with the same keys (one data directory) and one public name, as
// two replicas behind a load balancer.
func instancePair(t *testing.T, bin, store, dsn string, extra ...string) (a, b *proc, issuer string) {
	t.Helper()
	issuer = "http://refresh.test"
	env := []string{"REFRESH_SECRET=" + base64.StdEncoding.EncodeToString([]byte("multi-instance-test-mac-key-32by"))}
	args := append([]string{"-store", store, "-dsn", dsn, "-data", filepath.Join(t.TempDir(), "data"), "-issuer", issuer}, extra...)
	a = startProc(t, bin, env, append([]string{"-addr", freeAddr(t)}, args...)...)
	b = startProc(t, bin, env, append([]string{"-addr", freeAddr(t)}, args...)...)
	return a, b, issuer
}

// postValues posts a form (with optional headers) and decodes the JSON answer.
func postValues(t *testing.T, u string, v url.Values, hdr map[string]string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest("POST", u, strings.NewReader(v.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for k, x := range hdr {
		req.Header.Set(k, x)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	b, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(b, &body)
	return resp.StatusCode, body
}

// dpopKey makes RFC 9449 proofs by hand, as a client library would.
type dpopKey struct{ priv ed25519.PrivateKey }

func newDPoPKey(t *testing.T) *dpopKey {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &dpopKey{priv}
}

func (k *dpopKey) proof(method, u, accessToken string) string {
	enc := func(v any) string {
		b, _ := json.Marshal(v)
		return base64.RawURLEncoding.EncodeToString(b)
	}
	jti := make([]byte, 16)
	_, _ = rand.Read(jti)
	claims := map[string]any{"jti": base64.RawURLEncoding.EncodeToString(jti), "htm": method, "htu": u, "iat": time.Now().Unix()}
	if accessToken != "" {
		sum := sha256.Sum256([]byte(accessToken))
		claims["ath"] = base64.RawURLEncoding.EncodeToString(sum[:])
	}
	hdr := map[string]any{"typ": "dpop+jwt", "alg": "EdDSA", "jwk": map[string]string{
		"kty": "OKP", "crv": "Ed25519", "x": base64.RawURLEncoding.EncodeToString(k.priv.Public().(ed25519.PublicKey)),
	}}
	in := enc(hdr) + "." + enc(claims)
	return in + "." + base64.RawURLEncoding.EncodeToString(ed25519.Sign(k.priv, []byte(in)))
}

// Two instances of the demo as OS processes on one store, over real HTTP:
// reuse across instances revokes the session; a DPoP proof used on one is
// refused by the other; "log out everywhere" on one is seen by the other
// within SessionCheckTTL (measured); racing refreshes split across both get
// exactly one rotation (strict) or one identical successor (grace).
func TestTwoInstancesOneStore(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: runs demo processes")
	}
	stores := serverStores(t)
	if len(stores) == 0 {
		t.Skip("no shared store: set PG_DSN or REDIS_URL (scripts/test.sh does)")
	}
	bin := buildDemo(t)
	for kind, dsn := range stores {
		t.Run(kind, func(t *testing.T) {
			a, b, issuer := instancePair(t, bin, kind, dsn)
			refresh := func(p *proc, rt string, hdr map[string]string) (int, map[string]any) {
				return postValues(t, p.base+"/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}, hdr)
			}
			login := func(p *proc, user, pass string, hdr map[string]string) map[string]any {
				code, body := postValues(t, p.base+"/login", url.Values{"username": {user}, "password": {pass}}, hdr)
				if code != 200 {
					t.Fatalf("login at %s: %d %v", p.base, code, body)
				}
				return body
			}

			// Reuse across instances.
			rt0 := login(a, "alice", "wonderland", nil)["refresh_token"].(string)
			code, body := refresh(a, rt0, nil)
			if code != 200 {
				t.Fatalf("refresh at A: %d %v", code, body)
			}
			rt1 := body["refresh_token"].(string)
			if code, body = refresh(b, rt0, nil); code != 400 || body["error"] != "invalid_grant" {
				t.Fatalf("the spent token at B: %d %v, want invalid_grant (reuse)", code, body)
			}
			if code, body = refresh(b, rt1, nil); code != 400 {
				t.Fatalf("the newest token after reuse seen by B: %d %v, want the session revoked", code, body)
			}

			// DPoP across instances: a proof used at A is refused at B.
			key := newDPoPKey(t)
			pair := login(a, "bob", "builder", map[string]string{"DPoP": key.proof("POST", issuer+"/login", "")})
			at := pair["access_token"].(string)
			if pair["token_type"] != "DPoP" {
				t.Fatalf("login with a DPoP proof: %v", pair)
			}
			me := func(p *proc, proof string) int {
				req, _ := http.NewRequest("GET", p.base+"/me", nil)
				req.Header.Set("Authorization", "DPoP "+at)
				req.Header.Set("DPoP", proof)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				return resp.StatusCode
			}
			proof := key.proof("GET", issuer+"/me", at)
			if got := me(a, proof); got != 200 {
				t.Fatalf("DPoP call at A: %d", got)
			}
			if got := me(b, proof); got != 401 {
				t.Fatalf("the same DPoP proof replayed to B: %d, want 401", got)
			}
			if got := me(b, key.proof("GET", issuer+"/me", at)); got != 200 {
				t.Fatalf("a fresh proof at B: %d", got)
			}

			// Log out everywhere on A; B refuses within SessionCheckTTL (2 s).
			carol := login(a, "alice", "wonderland", nil)["access_token"].(string)
			if got, _ := getWith(t, b.base+"/me", carol); got != 200 {
				t.Fatalf("B before logout-all: %d", got)
			}
			req, _ := http.NewRequest("POST", a.base+"/logout-all", nil)
			req.Header.Set("Authorization", "Bearer "+carol)
			resp, err := http.DefaultClient.Do(req)
			if err != nil || resp.StatusCode != 204 {
				t.Fatalf("logout-all at A: %v %v", resp, err)
			}
			resp.Body.Close()
			start := time.Now()
			for {
				got, _ := getWith(t, b.base+"/me", carol)
				if got == 401 {
					break
				}
				if got != 200 || time.Since(start) > 5*time.Second {
					t.Fatalf("B after logout-all on A: %d after %v", got, time.Since(start))
				}
				time.Sleep(10 * time.Millisecond)
			}
			delay := time.Since(start)
			if delay > 2*time.Second+500*time.Millisecond {
				t.Fatalf("logout-all reached B after %v, beyond SessionCheckTTL (2 s)", delay)
			}
			t.Logf("%s: logout-all on A refused at B after %v (SessionCheckTTL 2 s)", kind, delay.Round(time.Millisecond))

			// Strict rotation: 16 refreshes of one token, split across A and B.
			rt := login(a, "alice", "wonderland", nil)["refresh_token"].(string)
			wins, _ := raceRefresh(t, []*proc{a, b}, rt, refresh)
			if wins != 1 {
				t.Fatalf("strict: %d of 16 racing refreshes across two instances succeeded, want 1", wins)
			}
		})
		t.Run(kind+"/grace", func(t *testing.T) {
			a, b, _ := instancePair(t, bin, kind, dsn, "-grace", "10s")
			code, body := postValues(t, a.base+"/login", url.Values{"username": {"alice"}, "password": {"wonderland"}}, nil)
			if code != 200 {
				t.Fatalf("login: %d %v", code, body)
			}
			refresh := func(p *proc, rt string, hdr map[string]string) (int, map[string]any) {
				return postValues(t, p.base+"/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}, hdr)
			}
			wins, successors := raceRefresh(t, []*proc{a, b}, body["refresh_token"].(string), refresh)
			if wins != 16 || len(successors) != 1 {
				t.Fatalf("grace: %d of 16 racing refreshes succeeded with %d distinct successors, want 16 and 1", wins, len(successors))
			}
		})
	}
}

// raceRefresh sends 16 concurrent refreshes of rt, alternating between the
// instances, and returns how many succeeded and the distinct successors.
func raceRefresh(t *testing.T, ps []*proc, rt string, refresh func(*proc, string, map[string]string) (int, map[string]any)) (int, map[string]bool) {
	var (
		wg         sync.WaitGroup
		mu         sync.Mutex
		wins       int
		successors = map[string]bool{}
		start      = make(chan struct{})
	)
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			code, body := refresh(ps[i%len(ps)], rt, nil)
			mu.Lock()
			defer mu.Unlock()
			if code == 200 {
				wins++
				successors[fmt.Sprint(body["refresh_token"])] = true
			}
		}()
	}
	close(start)
	wg.Wait()
	return wins, successors
}
