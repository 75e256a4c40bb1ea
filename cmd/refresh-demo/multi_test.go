package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// instancePair starts two demo processes on one shared store (Postgres,
// Redis, or the SQLite file in their data directory), with the same keys
// (one data directory, which it returns) and one public name, as two
// replicas behind a load balancer.
func instancePair(t *testing.T, bin, store, dsn string, extra ...string) (a, b *proc, issuer, dataDir string) {
	t.Helper()
	issuer, dataDir = "http://refresh.test", filepath.Join(t.TempDir(), "data")
	env := []string{"REFRESH_SECRET=" + base64.StdEncoding.EncodeToString([]byte("multi-instance-test-mac-key-32by"))}
	args := append([]string{"-store", store, "-dsn", dsn, "-data", dataDir, "-issuer", issuer}, extra...)
	a = startProc(t, bin, env, append([]string{"-addr", freeAddr(t)}, args...)...)
	b = startProc(t, bin, env, append([]string{"-addr", freeAddr(t)}, args...)...)
	return a, b, issuer, dataDir
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
	jti := make([]byte, 16)
	_, _ = rand.Read(jti)
	claims := map[string]any{"jti": base64.RawURLEncoding.EncodeToString(jti), "htm": method, "htu": u, "iat": time.Now().Unix()}
	if accessToken != "" {
		sum := sha256.Sum256([]byte(accessToken))
		claims["ath"] = base64.RawURLEncoding.EncodeToString(sum[:])
	}
	return signEd(k.priv, map[string]any{"typ": "dpop+jwt", "alg": "EdDSA", "jwk": map[string]string{
		"kty": "OKP", "crv": "Ed25519", "x": base64.RawURLEncoding.EncodeToString(k.priv.Public().(ed25519.PublicKey)),
	}}, claims)
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
			a, b, issuer, _ := instancePair(t, bin, kind, dsn)

			// Reuse across instances.
			rt0 := loginPair(t, a.base, "alice", "wonderland")["refresh_token"].(string)
			r := refreshAt(t, a, rt0)
			if r.status != 200 {
				t.Fatalf("refresh at A: %d %v", r.status, r.body)
			}
			rt1 := r.body["refresh_token"].(string)
			if r = refreshAt(t, b, rt0); r.status != 400 || r.body["error"] != "invalid_grant" {
				t.Fatalf("the spent token at B: %d %v, want invalid_grant (reuse)", r.status, r.body)
			}
			if r = refreshAt(t, b, rt1); r.status != 400 {
				t.Fatalf("the newest token after reuse seen by B: %d %v, want the session revoked", r.status, r.body)
			}

			// DPoP across instances: a proof used at A is refused at B.
			key := newDPoPKey(t)
			pair := loginPair(t, a.base, "bob", "builder", "DPoP", key.proof("POST", issuer+"/login", ""))
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
			carol := loginAt(t, a.base, "alice", "wonderland")
			if got, _ := getWith(t, b.base+"/me", carol); got != 200 {
				t.Fatalf("B before logout-all: %d", got)
			}
			logoutAll(t, a.base, carol)
			delay := untilRefused(t, b.base+"/me", carol, 5*time.Second)
			if delay > 2*time.Second+500*time.Millisecond {
				t.Fatalf("logout-all reached B after %v, beyond SessionCheckTTL (2 s)", delay)
			}
			t.Logf("%s: logout-all on A refused at B after %v (SessionCheckTTL 2 s)", kind, delay.Round(time.Millisecond))

			// Strict rotation: 16 refreshes of one token, split across A and B.
			rt := loginPair(t, a.base, "alice", "wonderland")["refresh_token"].(string)
			wins, _ := raceRefresh(t, []*proc{a, b}, rt)
			if wins != 1 {
				t.Fatalf("strict: %d of 16 racing refreshes across two instances succeeded, want 1", wins)
			}
		})
		t.Run(kind+"/grace", func(t *testing.T) {
			a, b, _, _ := instancePair(t, bin, kind, dsn, "-grace", "10s")
			rt := loginPair(t, a.base, "alice", "wonderland")["refresh_token"].(string)
			wins, successors := raceRefresh(t, []*proc{a, b}, rt)
			if wins != 16 || len(successors) != 1 {
				t.Fatalf("grace: %d of 16 racing refreshes succeeded with %d distinct successors, want 16 and 1", wins, len(successors))
			}
		})
	}
}

// raceRefresh sends 16 concurrent refreshes of rt, alternating between the
// instances, and returns how many succeeded and the distinct successors.
func raceRefresh(t *testing.T, ps []*proc, rt string) (int, map[string]bool) {
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
			r := refreshAt(t, ps[i%len(ps)], rt)
			mu.Lock()
			defer mu.Unlock()
			if r.status == 200 {
				wins++
				successors[fmt.Sprint(r.body["refresh_token"])] = true
			}
		}()
	}
	close(start)
	wg.Wait()
	return wins, successors
}

// refreshAt presents rt to the refresh grant of p.
func refreshAt(t *testing.T, p *proc, rt string) reply {
	return post(t, p.base+"/token", form, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}.Encode())
}

// Two resource servers behind one public URL, as OS processes, over real
// HTTP: a DPoP request (token and proof) captured at one and replayed to
// the other within the proof's minute is refused when they share replay
// detection through -store postgres|redis (before: each remembered only
// its own proofs, and the replay was answered with the user's profile, as
// it still is, and said at start-up, without -store).
func TestResourceServerInstancesShareReplays(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: runs demo processes")
	}
	bin := buildDemo(t)
	auth := startProc(t, bin, nil, "-addr", freeAddr(t), "-store", "memory")
	key := newDPoPKey(t)
	at := loginPair(t, auth.base, "bob", "builder", "DPoP", key.proof("POST", auth.base+"/login", ""))["access_token"].(string)
	const public = "http://api.test"
	pair := func(store ...string) (a, b *proc) {
		args := append([]string{"-resource-server", "-auth", auth.base, "-public-url", public}, store...)
		a = startProc(t, bin, nil, append([]string{"-addr", freeAddr(t)}, args...)...)
		b = startProc(t, bin, nil, append([]string{"-addr", freeAddr(t)}, args...)...)
		return a, b
	}
	me := func(p *proc, proof string) (int, string) {
		t.Helper()
		return dpopGetAs(t, p.base+"/me", "api.test", at, proof) // the Host the load balancer passes on
	}

	t.Run("per process", func(t *testing.T) {
		a, b := pair()
		if !strings.Contains(b.out.String(), "each remember only their own") {
			t.Errorf("start-up does not say replay detection is per instance:\n%s", b.out.String())
		}
		proof := key.proof("GET", public+"/me", at)
		if code, body := me(a, proof); code != 200 {
			t.Fatalf("the owner's request at A: %d %s", code, body)
		}
		if code, _ := me(a, proof); code != 401 {
			t.Fatalf("the proof replayed to A: %d, want 401", code)
		}
		if code, _ := me(b, proof); code != 200 {
			t.Fatalf("the proof replayed to B without a shared store: %d; this is the gap -store closes, expected 200", code)
		}
	})
	for kind, dsn := range serverStores(t) {
		t.Run(kind, func(t *testing.T) {
			a, b := pair("-store", kind, "-dsn", dsn)
			if !strings.Contains(a.out.String(), "replay detection shared through "+kind) {
				t.Errorf("start-up does not say replay detection is shared:\n%s", a.out.String())
			}
			proof := key.proof("GET", public+"/me", at)
			if code, body := me(a, proof); code != 200 {
				t.Fatalf("the owner's request at A: %d %s", code, body)
			}
			if code, body := me(b, proof); code != 401 || strings.Contains(body, "bob") {
				t.Fatalf("the proof replayed to B: %d %s, want 401", code, body)
			}
			if code, body := me(b, key.proof("GET", public+"/me", at)); code != 200 {
				t.Fatalf("a fresh proof at B: %d %s", code, body)
			}
		})
	}
	if _, err := exec.Command(bin, "-resource-server", "-addr", freeAddr(t), "-auth", auth.base, "-store", "sqlite").CombinedOutput(); err == nil {
		t.Error("-resource-server -store sqlite started; want a refusal (postgres, redis or memory)")
	}
}
