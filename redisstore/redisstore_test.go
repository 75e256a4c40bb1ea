package redisstore_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/refreshkit/refresh"
	"github.com/refreshkit/refresh/redisstore"
	"github.com/refreshkit/refresh/storetest"
)

// testClient connects to REDIS_URL. Without it the tests skip, except under
// CI=true where a missing server is a failure.
func testClient(t testing.TB) *redis.Client {
	t.Helper()
	u := os.Getenv("REDIS_URL")
	if u == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("REDIS_URL is not set and CI=true: run scripts/test.sh, which starts a Redis")
		}
		t.Skip("REDIS_URL is not set: scripts/test.sh starts a throw-away Redis when redis-server is installed or it runs as root (to install it); or set REDIS_URL=redis://…")
	}
	opt, err := redis.ParseURL(u)
	if err != nil {
		t.Fatal(err)
	}
	opt.PoolSize = 80
	c := redis.NewClient(opt)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// newStore returns a store under a key prefix of its own, deleted after the
// test.
func newStore(t testing.TB, c *redis.Client) *redisstore.Store {
	t.Helper()
	st, _ := newStoreWithPrefix(t, c)
	return st
}

// newStoreWithPrefix is newStore, also returning its key prefix, so that a
// test looks only at its own keys on a shared server.
func newStoreWithPrefix(t testing.TB, c *redis.Client) (*redisstore.Store, string) {
	t.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	prefix := "rt-" + hex.EncodeToString(b[:]) + ":"
	t.Cleanup(func() {
		ctx := context.Background()
		iter := c.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		for iter.Next(ctx) {
			c.Del(ctx, iter.Val())
		}
	})
	return redisstore.New(c, redisstore.WithPrefix(prefix)), prefix
}

func TestConformance(t *testing.T) {
	c := testClient(t)
	st, prefix := newStoreWithPrefix(t, c)
	storetest.Run(t, func(*testing.T) refresh.Store { return st }, storetest.WithBrokenStore(brokenStore),
		storetest.WithSecondInstance(func(t *testing.T, _ refresh.Store) refresh.Store {
			// A second process: a client of its own, the same keys.
			return redisstore.New(testClient(t), redisstore.WithPrefix(prefix))
		}))
}

// brokenStore is a store whose client points at a closed port: every call
// fails with a connection error.
func brokenStore(t *testing.T) refresh.Store {
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: 2 * time.Second})
	t.Cleanup(func() { _ = c.Close() })
	return redisstore.New(c)
}

// Session hashes expire with the session's absolute lifetime.
func TestKeyTTLFollowsSessionExpiry(t *testing.T) {
	c := testClient(t)
	st, prefix := newStoreWithPrefix(t, c)
	ctx := context.Background()
	exp := time.Now().Add(90 * time.Minute).Truncate(time.Millisecond)
	s := &refresh.Session{ID: "ttl-test", Subject: "alice", Seed: make([]byte, 32),
		CreatedAt: time.Now(), RotatedAt: time.Now(), ExpiresAt: exp}
	if err := st.Create(ctx, s); err != nil {
		t.Fatal(err)
	}
	keys, err := c.Keys(ctx, prefix+"*{ttl-test}").Result()
	if err != nil || len(keys) != 1 {
		t.Fatalf("keys: %v %v", keys, err)
	}
	got, err := c.PExpireTime(ctx, keys[0]).Result()
	if err != nil {
		t.Fatal(err)
	}
	if got != time.Duration(exp.UnixMilli())*time.Millisecond {
		t.Fatalf("session key expires at %v, want %v", got, exp.UnixMilli())
	}
	subj, _ := c.Keys(ctx, prefix+"u:{alice}").Result()
	if len(subj) != 1 {
		t.Fatalf("subject key: %v", subj)
	}
	if ttl, _ := c.PTTL(ctx, subj[0]).Result(); ttl <= 0 || ttl > 91*time.Minute {
		t.Fatalf("subject set TTL %v", ttl)
	}
}

// The server stops mid-test: calls fail with clear, non-client errors and
// change nothing; after the restart (the AOF keeps the data) rotation goes
// on with no generation lost or duplicated, and the scripts are reloaded.
func TestServerRestart(t *testing.T) {
	st := newStore(t, testClient(t))
	storetest.RestartWithCommands(t, st, "redisstore", os.Getenv("REDIS_STOP_CMD"), os.Getenv("REDIS_START_CMD"))
}

// BenchmarkRotate: rotations through an Issuer on Redis with 1, 8 and 64
// concurrent clients. Rotations per second = 1e9 / ns/op.
func BenchmarkRotate(b *testing.B) {
	c := testClient(b)
	st := newStore(b, c)
	storetest.BenchmarkPaths(b, st)
}

// countingHook counts commands and pipelines sent: one round trip each,
// but for a new connection's handshake (HELLO, CLIENT SETINFO).
type countingHook struct{ n atomic.Int64 }

func handshake(cmd redis.Cmder) bool { return cmd.Name() == "hello" || cmd.Name() == "client" }

func (h *countingHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *countingHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if !handshake(cmd) {
			h.n.Add(1)
		}
		return next(ctx, cmd)
	}
}
func (h *countingHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if len(cmds) > 0 && !handshake(cmds[0]) {
			h.n.Add(1)
		}
		return next(ctx, cmds)
	}
}

// A rotation costs one round trip (the Lua compare-and-swap by its SHA),
// and the other refreshes what storetest.Want says.
func TestRoundTripsPerRotation(t *testing.T) {
	c := testClient(t)
	h := &countingHook{}
	c.AddHook(h)
	got := storetest.CheckRoundTrips(t, newStore(t, c), h.n.Load, storetest.Want)
	t.Logf("round trips: %+v", got)
}

// The whole conformance suite, and the Issuer races in it, on a real
// three-master Redis Cluster: every script touches one key, so nothing is
// refused with CROSSSLOT, and what spans slots stays correct.
func TestClusterConformance(t *testing.T) {
	addrs := os.Getenv("REDIS_CLUSTER_ADDRS")
	if addrs == "" {
		if os.Getenv("CI") == "true" && os.Getenv("REDIS_URL_GIVEN") == "" {
			t.Fatal("REDIS_CLUSTER_ADDRS is not set and CI=true: scripts/test.sh starts a cluster")
		}
		t.Skip("REDIS_CLUSTER_ADDRS is not set: scripts/test.sh starts a three-node cluster unless REDIS_URL names your own server")
	}
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: strings.Split(addrs, ","), PoolSize: 80})
	defer c.Close()
	ctx := context.Background()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	prefix := "rtc-" + hex.EncodeToString(b[:]) + ":"
	t.Cleanup(func() {
		_ = c.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error {
			iter := n.Scan(ctx, 0, prefix+"*", 1000).Iterator()
			for iter.Next(ctx) {
				n.Del(ctx, iter.Val())
			}
			return nil
		})
	})
	st := redisstore.New(c, redisstore.WithPrefix(prefix))
	storetest.Run(t, func(*testing.T) refresh.Store { return st }, storetest.WithSecondInstance(func(t *testing.T, _ refresh.Store) refresh.Store {
		c2 := redis.NewClusterClient(&redis.ClusterOptions{Addrs: strings.Split(addrs, ","), PoolSize: 80})
		t.Cleanup(func() { _ = c2.Close() })
		return redisstore.New(c2, redisstore.WithPrefix(prefix))
	}))

	// The keys really are spread over several nodes.
	var nodes atomic.Int32 // ForEachMaster calls in parallel
	_ = c.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error {
		if keys, _ := n.Keys(ctx, prefix+"*").Result(); len(keys) > 0 {
			nodes.Add(1)
		}
		return nil
	})
	if nodes := nodes.Load(); nodes < 2 {
		t.Fatalf("keys on %d node(s): the test did not exercise several slots", nodes)
	}

	// One round trip per rotation on the cluster too (each script touches
	// one key, so one node answers it).
	h := &countingHook{}
	c.AddHook(h)
	got := storetest.CheckRoundTrips(t, st, h.n.Load, storetest.Want)
	t.Logf("round trips on the cluster: %+v", got)
}

// TestFaultSoak: the soak invariants on a real Redis (AOF everysec) while
// the server is stopped and started and, separately, every client
// connection is killed (CLIENT KILL). Only on the server scripts/test.sh
// started (REDIS_STOP_CMD set). SOAK_DURATION (default 3s) runs it longer.
func TestFaultSoak(t *testing.T) {
	c := testClient(t)
	stopCmd, startCmd := os.Getenv("REDIS_STOP_CMD"), os.Getenv("REDIS_START_CMD")
	if stopCmd == "" || startCmd == "" {
		t.Skip("REDIS_STOP_CMD/REDIS_START_CMD not set: the fault soak runs only on the throw-away server of scripts/test.sh")
	}
	admin := testClient(t)
	rep := storetest.FaultSoak(t, newStore(t, c), storetest.SoakConfig{
		Faults: []storetest.Fault{
			// Down for 1.5 s: longer than go-redis's own retries, which
			// hide shorter outages from the Issuer entirely.
			{Name: "server stopped for 1.5 s and started", Inject: func(t *testing.T) {
				for i, cmd := range []string{stopCmd, startCmd} {
					if i == 1 {
						time.Sleep(1500 * time.Millisecond)
					}
					if out, err := exec.Command("bash", "-c", cmd).CombinedOutput(); err != nil {
						t.Fatalf("%s: %v\n%s", cmd, err, out)
					}
				}
			}},
			{Name: "every client connection killed (CLIENT KILL)", Inject: func(t *testing.T) {
				for i := 0; i < 3; i++ {
					if err := admin.Do(context.Background(), "CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes").Err(); err != nil {
						t.Logf("client kill: %v", err)
					}
					time.Sleep(100 * time.Millisecond)
				}
			}},
		},
	})
	t.Logf("fault soak: %v", rep)
	fmt.Fprintf(os.Stderr, "redisstore fault soak: %v\n", rep)
}

// The README's promise for sweeping on Redis: Redis drops an expired
// session's hash by itself, and Issuer.Sweep trims the id it leaves in the
// expiry index, which nothing else removes; live sessions stay listed.
func TestSweepTrimsTheExpiryIndex(t *testing.T) {
	c := testClient(t)
	st, prefix := newStoreWithPrefix(t, c)
	ctx := context.Background()
	now := time.Now()
	for id, exp := range map[string]time.Time{"gone": now.Add(-2 * time.Second), "live": now.Add(time.Hour)} {
		s := &refresh.Session{ID: id, Subject: "alice", Seed: make([]byte, 32), CreatedAt: now.Add(-time.Hour), RotatedAt: now.Add(-time.Hour), ExpiresAt: exp}
		if err := st.Create(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	if n, _ := c.Exists(ctx, prefix+"s:{gone}").Result(); n != 0 {
		t.Fatalf("Redis kept the expired session's hash")
	}
	if n, _ := c.ZCard(ctx, prefix+"exp").Result(); n != 2 {
		t.Fatalf("expiry index holds %d ids before the sweep, want 2", n)
	}
	if _, err := storetest.NewIssuer(t, st, 0).Sweep(ctx, 100); err != nil {
		t.Fatal(err)
	}
	ids, err := c.ZRange(ctx, prefix+"exp", 0, -1).Result()
	if err != nil || len(ids) != 1 || ids[0] != "live" {
		t.Fatalf("expiry index after the sweep: %v %v, want [live]", ids, err)
	}
}

// DeleteExpired's work is bounded by its limit whatever the index holds:
// ids Redis already expired (the usual case: every hash has its expiry as
// TTL) count against the limit and in the answer, so that one call never
// walks a day's worth of them and Sweep goes on until the index is clean.
// A page costs three round trips, whatever its size; deleted sessions
// leave their subject's set too.
func TestDeleteExpiredIsBatched(t *testing.T) {
	c := testClient(t)
	st, prefix := newStoreWithPrefix(t, c)
	ctx := context.Background()
	now := time.Now()
	create := func(id, sub string, exp time.Time) {
		s := &refresh.Session{ID: id, Subject: sub, Seed: make([]byte, 32), CreatedAt: now.Add(-time.Hour), RotatedAt: now.Add(-time.Hour), ExpiresAt: exp}
		if err := st.Create(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 1000 { // dropped by Redis at once: only their ids remain
		create(fmt.Sprintf("gone-%d", i), "alice", now.Add(-2*time.Second))
	}
	for i := range 50 { // hashes present, expiring within the hour
		create(fmt.Sprintf("due-%d", i), "bob", now.Add(time.Hour))
	}
	create("live", "bob", now.Add(3*time.Hour))
	before := now.Add(2 * time.Hour)

	rt := &countingHook{}
	c.AddHook(rt)
	n, err := st.DeleteExpired(ctx, before, 100)
	if err != nil || n != 100 {
		t.Fatalf("DeleteExpired(limit 100) = %d, %v; want 100: one call takes at most limit ids, and trimmed ones count", n, err)
	}
	if got := rt.n.Load(); got != 3 {
		t.Errorf("one page of 100 cost %d round trips, want 3", got)
	}
	if left, _ := c.ZCard(ctx, prefix+"exp").Result(); left != 951 {
		t.Fatalf("expiry index holds %d ids after one call, want 951", left)
	}
	total := n
	for n == 100 {
		if n, err = st.DeleteExpired(ctx, before, 100); err != nil {
			t.Fatal(err)
		}
		total += n
	}
	if total != 1050 {
		t.Errorf("deleted %d in all, want 1050", total)
	}
	ids, _ := c.ZRange(ctx, prefix+"exp", 0, -1).Result()
	if len(ids) != 1 || ids[0] != "live" {
		t.Errorf("expiry index after draining: %v, want [live]", ids)
	}
	if members, _ := c.SMembers(ctx, prefix+"u:{bob}").Result(); len(members) != 1 || members[0] != "live" {
		t.Errorf("bob's set after draining: %v, want [live]", members)
	}
	if _, err := st.Get(ctx, "live"); err != nil {
		t.Errorf("the live session: %v", err)
	}
}

// Check refuses a server that may evict keys before they expire, which
// would let a full Redis drop the subject set that "log out everywhere"
// reads (leaving sessions live) or a DPoP replay record (accepting a
// replay); on a Cluster it asks every master.
func TestCheckRefusesEviction(t *testing.T) {
	c := testClient(t)
	st := redisstore.New(c)
	ctx := context.Background()
	policy, err := c.ConfigGet(ctx, "maxmemory-policy").Result()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.ConfigSet(context.Background(), "maxmemory-policy", policy["maxmemory-policy"]) })
	if err := c.ConfigSet(ctx, "maxmemory-policy", "noeviction").Err(); err != nil {
		t.Fatal(err)
	}
	if err := st.Check(ctx); err != nil {
		t.Fatalf("Check with noeviction: %v", err)
	}
	// maxmemory stays 0 (no limit): nothing is evicted while the other
	// tests run.
	for _, p := range []string{"allkeys-lru", "volatile-lru", "volatile-ttl", "allkeys-random"} {
		if err := c.ConfigSet(ctx, "maxmemory-policy", p).Err(); err != nil {
			t.Fatal(err)
		}
		err := st.Check(ctx)
		if !errors.Is(err, redisstore.ErrEviction) || !strings.Contains(err.Error(), p) {
			t.Errorf("Check with %s: %v, want ErrEviction naming the policy", p, err)
		}
	}

	// A store that has not passed the check yet refuses to write: no
	// session, no revocation that could miss sessions, no proof record;
	// and nothing is written.
	fresh, prefix := newStoreWithPrefix(t, c)
	s := &refresh.Session{ID: "s1", Subject: "alice", Seed: make([]byte, 32), CreatedAt: time.Now(), RotatedAt: time.Now(), ExpiresAt: time.Now().Add(time.Hour)}
	if err := fresh.Create(ctx, s); !errors.Is(err, redisstore.ErrEviction) {
		t.Errorf("Create on an evicting server: %v, want ErrEviction", err)
	}
	if _, err := fresh.RevokeSubject(ctx, "alice", time.Now(), "logout"); !errors.Is(err, redisstore.ErrEviction) {
		t.Errorf("RevokeSubject on an evicting server: %v, want ErrEviction", err)
	}
	if err := fresh.RecordProof(ctx, "p1", time.Now(), time.Now().Add(time.Minute)); !errors.Is(err, redisstore.ErrEviction) {
		t.Errorf("RecordProof on an evicting server: %v, want ErrEviction", err)
	}
	if keys, _ := c.Keys(ctx, prefix+"*").Result(); len(keys) != 0 {
		t.Errorf("refused writes left keys: %v", keys)
	}
	// WithoutEvictionCheck is the way out for a server whose ACL denies INFO.
	unchecked := redisstore.New(c, redisstore.WithPrefix(prefix), redisstore.WithoutEvictionCheck())
	if err := unchecked.Create(ctx, s); err != nil {
		t.Errorf("Create WithoutEvictionCheck: %v", err)
	}
	// The policy fixed, the same store writes: a refusal is not kept.
	if err := c.ConfigSet(ctx, "maxmemory-policy", "noeviction").Err(); err != nil {
		t.Fatal(err)
	}
	s.ID = "s2"
	if err := fresh.Create(ctx, s); err != nil {
		t.Errorf("Create once the policy is noeviction: %v", err)
	}

	// A server that does not answer is an error, not a pass.
	down := redisstore.New(redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1}))
	if err := down.Check(ctx); err == nil || errors.Is(err, redisstore.ErrEviction) {
		t.Errorf("Check of an unreachable server: %v", err)
	}

	addrs := os.Getenv("REDIS_CLUSTER_ADDRS")
	if addrs == "" {
		return
	}
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: strings.Split(addrs, ",")})
	defer cc.Close()
	if err := redisstore.New(cc).Check(ctx); err != nil {
		t.Fatalf("Check on the cluster: %v", err)
	}
	// One master of three evicting is enough to refuse.
	last := strings.Split(addrs, ",")[2]
	node := redis.NewClient(&redis.Options{Addr: last})
	defer node.Close()
	if err := node.ConfigSet(ctx, "maxmemory-policy", "allkeys-lfu").Err(); err != nil {
		t.Fatal(err)
	}
	defer node.ConfigSet(context.Background(), "maxmemory-policy", "noeviction")
	if err := redisstore.New(cc).Check(ctx); !errors.Is(err, redisstore.ErrEviction) || !strings.Contains(err.Error(), last) {
		t.Errorf("Check on the cluster with %s evicting: %v", last, err)
	}
}

// What Check is for, as an attacker would see it: on a Redis that evicts
// (here allkeys-lru with a 4 MB maxmemory, a server of its own), an
// attacker's session that is in use keeps its hash, while the subject's
// set, written at sign-in an hour ago and not read since, is evicted once
// the server fills up with other data. The user's "log out everywhere"
// then finds no session, and the attacker's refresh token keeps working.
// The store refuses that server (Check, which Create runs) before any of
// it can happen; the attack is shown WithoutEvictionCheck.
func TestEvictionBreaksLogOutEverywhere(t *testing.T) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("redis-server is not on PATH and CI=true")
		}
		t.Skip("redis-server is not on PATH: scripts/test.sh installs it")
	}
	var port int
	for port = 22000; port < 22100; port++ { // above the script's servers, below the ephemeral range
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			c.Close()
			continue
		}
		break
	}
	srv := exec.Command(bin, "--port", fmt.Sprint(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", t.TempDir(), "--maxmemory", "4mb", "--maxmemory-policy", "allkeys-lru", "--maxmemory-samples", "64")
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Process.Kill(); _ = srv.Wait() })
	c := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", port)})
	defer c.Close()
	ctx := context.Background()
	for i := 0; c.Ping(ctx).Err() != nil; i++ {
		if i == 100 {
			t.Fatal("redis-server did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := redisstore.New(c).Check(ctx); !errors.Is(err, redisstore.ErrEviction) {
		t.Fatalf("Check on an allkeys-lru server: %v, want ErrEviction", err)
	}
	// The store refuses to sign anyone in there: the attack below cannot
	// start. Over HTTP, a login handler answers as the library's handlers
	// do: 503, no detail on the wire, the reason for the operator.
	guarded := storetest.NewIssuer(t, redisstore.New(c), 0)
	var reason error
	h := refresh.NewHandlers(guarded, refresh.HandlerConfig{OnError: func(_ *http.Request, err error) { reason = err }})
	login := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := guarded.Issue(r.Context(), "alice") // after the app's own password check
		if err != nil {
			h.WriteIssueError(w, r, err)
			return
		}
		h.WriteTokenResponse(w, r, p)
	}))
	defer login.Close()
	resp, err := http.Post(login.URL, "application/x-www-form-urlencoded", strings.NewReader("username=alice"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || strings.TrimSpace(string(body)) != `{"error":"temporarily_unavailable"}` {
		t.Fatalf("sign-in on an allkeys-lru server: %d %s, want 503 temporarily_unavailable", resp.StatusCode, body)
	}
	if !errors.Is(reason, redisstore.ErrEviction) {
		t.Fatalf("OnError saw %v, want ErrEviction", reason)
	}

	// What happens without the check.
	st := redisstore.New(c, redisstore.WithoutEvictionCheck())
	iss := storetest.NewIssuer(t, st, 0)
	attacker, err := iss.Issue(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	tok := attacker.RefreshToken
	// The sign-in was an hour ago: the set has not been read since (Redis
	// keeps a key's idle time; RESTORE … IDLETIME sets it).
	set := "refresh:u:{alice}"
	dump, err := c.Dump(ctx, set).Result()
	if err != nil {
		t.Fatal(err)
	}
	ttl, err := c.PTTL(ctx, set).Result()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Do(ctx, "RESTORE", set, ttl.Milliseconds(), dump, "REPLACE", "IDLETIME", 3600).Err(); err != nil {
		t.Fatal(err)
	}
	junk := strings.Repeat("x", 16<<10)
	for i := 0; ; i++ {
		if n, _ := c.Exists(ctx, "refresh:u:{alice}").Result(); n == 0 {
			break // the subject's set is gone
		}
		if i == 2000 {
			t.Skip("the subject set survived 32 MB of other data: eviction sampling kept it this time")
		}
		if err := c.Set(ctx, fmt.Sprintf("cache:%d", i), junk, 0).Err(); err != nil {
			t.Fatal(err)
		}
		p, err := iss.Rotate(ctx, tok) // the attacker's session stays warm
		if err != nil {
			t.Skipf("the attacker's own session was evicted first (%v): eviction sampling; nothing to show this time", err)
		}
		tok = p.RefreshToken
	}
	// The pressure ends (no more evictions); the user logs out everywhere.
	if err := c.ConfigSet(ctx, "maxmemory", "0").Err(); err != nil {
		t.Fatal(err)
	}
	n, err := iss.RevokeSubject(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := iss.Rotate(ctx, tok); err != nil || n != 0 {
		t.Fatalf("log out everywhere revoked %d and the attacker's refresh got %v: eviction did not break it this time", n, err)
	}
	t.Logf("on an evicting Redis, log out everywhere revoked %d sessions and the attacker's refresh token still rotates: what Check refuses", n)
}

// BenchmarkSweepStaleIDs: Issuer.Sweep trimming the expiry index of
// sessions Redis already dropped (the usual state of every expired session
// on Redis), 10,000 ids a sweep in pages of 1,000; ns/id is the cost of
// one. The ids are put in the index directly, as Redis's own expiry
// leaves them.
func BenchmarkSweepStaleIDs(b *testing.B) {
	c := testClient(b)
	st, prefix := newStoreWithPrefix(b, c)
	ctx := context.Background()
	iss := storetest.NewIssuer(b, st, 0)
	const ids = 10_000
	stale := make([]redis.Z, ids)
	score := float64(time.Now().Add(-time.Hour).Unix())
	for b.Loop() {
		b.StopTimer()
		for i := range stale {
			stale[i] = redis.Z{Score: score, Member: fmt.Sprintf("gone-%d", i)}
		}
		if err := c.ZAdd(ctx, prefix+"exp", stale...).Err(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if _, err := iss.Sweep(ctx, 1000); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if left, err := c.ZCard(ctx, prefix+"exp").Result(); err != nil || left != 0 {
			b.Fatalf("%d ids left after a sweep (%v)", left, err)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*ids), "ns/id")
}
