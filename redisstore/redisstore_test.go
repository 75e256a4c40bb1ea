package redisstore_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
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
		t.Skip("REDIS_URL is not set: run scripts/test.sh (starts a throw-away Redis) or set REDIS_URL=redis://…")
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
	return redisstore.New(c, redisstore.WithPrefix(prefix))
}

func TestConformance(t *testing.T) {
	c := testClient(t)
	st := newStore(t, c)
	storetest.Run(t, func(*testing.T) refresh.Store { return st })
}

// Session hashes expire with the session's absolute lifetime.
func TestKeyTTLFollowsSessionExpiry(t *testing.T) {
	c := testClient(t)
	st := newStore(t, c)
	ctx := context.Background()
	exp := time.Now().Add(90 * time.Minute).Truncate(time.Millisecond)
	s := &refresh.Session{ID: "ttl-test", Subject: "alice", Seed: make([]byte, 32),
		CreatedAt: time.Now(), RotatedAt: time.Now(), ExpiresAt: exp}
	if err := st.Create(ctx, s); err != nil {
		t.Fatal(err)
	}
	keys, err := c.Keys(ctx, "*{ttl-test}").Result()
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
	subj, _ := c.Keys(ctx, "*u:{alice}").Result()
	if len(subj) != 1 {
		t.Fatalf("subject key: %v", subj)
	}
	if ttl, _ := c.PTTL(ctx, subj[0]).Result(); ttl <= 0 || ttl > 91*time.Minute {
		t.Fatalf("subject set TTL %v", ttl)
	}
}

func issuer(t testing.TB, st refresh.Store) *refresh.Issuer {
	t.Helper()
	iss, err := refresh.NewIssuer(refresh.Config{
		Issuer: "https://redis.test", Audience: "api",
		Keys:        []refresh.Key{{Algorithm: refresh.HS256, Key: []byte(strings.Repeat("k", 32))}},
		RefreshKeys: []refresh.RefreshKey{{ID: 1, Secret: []byte(strings.Repeat("m", 32))}},
		Store:       st,
	})
	if err != nil {
		t.Fatal(err)
	}
	return iss
}

func shell(t *testing.T, cmd string) {
	t.Helper()
	out, err := exec.Command("bash", "-c", cmd).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", cmd, err, out)
	}
}

// The server stops mid-test: calls fail with clear, non-client errors and
// change nothing; after the restart (the AOF keeps the data) rotation goes
// on with no generation lost or duplicated, and the scripts are reloaded.
func TestServerRestart(t *testing.T) {
	stop, start := os.Getenv("REDIS_STOP_CMD"), os.Getenv("REDIS_START_CMD")
	if stop == "" || start == "" {
		t.Skip("REDIS_STOP_CMD/REDIS_START_CMD not set (scripts/test.sh sets them for the server it starts)")
	}
	c := testClient(t)
	st := newStore(t, c)
	iss := issuer(t, st)
	ctx := context.Background()
	p, err := iss.Issue(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if p, err = iss.Rotate(ctx, p.RefreshToken); err != nil {
		t.Fatal(err)
	}
	shell(t, stop)
	restarted := false
	defer func() {
		if !restarted {
			shell(t, start)
		}
	}()
	for i := 0; i < 3; i++ {
		cc, cancel := context.WithTimeout(ctx, 3*time.Second)
		_, err = iss.Rotate(cc, p.RefreshToken)
		cancel()
		if err == nil {
			t.Fatal("Rotate succeeded with the server stopped")
		}
		if refresh.IsClientError(err) {
			t.Fatalf("a server outage was reported as the client's fault: %v", err)
		}
		if !strings.Contains(err.Error(), "redisstore") {
			t.Fatalf("error does not say where it came from: %v", err)
		}
		t.Logf("with the server stopped: %v", err)
	}
	shell(t, start)
	restarted = true
	var next *refresh.Pair
	deadline := time.Now().Add(30 * time.Second)
	for {
		next, err = iss.Rotate(ctx, p.RefreshToken)
		if err == nil || refresh.IsClientError(err) || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("after restart: %v", err)
	}
	s, err := st.Get(ctx, next.SessionID)
	if err != nil {
		t.Fatal(err)
	}
	if s.Generation != 2 || s.Revoked() {
		t.Fatalf("after restart: generation %d revoked %v, want 2 and live", s.Generation, s.Revoked())
	}
}

// BenchmarkRotate: rotations through an Issuer on Redis with 1, 8 and 64
// concurrent clients. Rotations per second = 1e9 / ns/op.
func BenchmarkRotate(b *testing.B) {
	c := testClient(b)
	st := newStore(b, c)
	iss := issuer(b, st)
	for _, clients := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			b.ReportAllocs()
			storetest.BenchmarkClients(b, iss, clients)
		})
	}
}

// countingHook counts commands and pipelines sent: one round trip each.
type countingHook struct{ n atomic.Int64 }

func (h *countingHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *countingHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmd)
	}
}
func (h *countingHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmds)
	}
}

// A rotation costs exactly two round trips: HGETALL, then the Lua
// compare-and-swap by its SHA.
func TestRoundTripsPerRotation(t *testing.T) {
	c := testClient(t)
	h := &countingHook{}
	c.AddHook(h)
	iss := issuer(t, newStore(t, c))
	ctx := context.Background()
	p, err := iss.Issue(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if p, err = iss.Rotate(ctx, p.RefreshToken); err != nil { // loads the script if needed
		t.Fatal(err)
	}
	before := h.n.Load()
	const n = 50
	for i := 0; i < n; i++ {
		if p, err = iss.Rotate(ctx, p.RefreshToken); err != nil {
			t.Fatal(err)
		}
	}
	if got := h.n.Load() - before; got != 2*n {
		t.Fatalf("%d round trips for %d rotations, want %d", got, n, 2*n)
	}
}
