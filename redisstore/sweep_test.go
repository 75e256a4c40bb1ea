package redisstore_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/refreshkit/refresh"
)

// What the store's API cannot show, read from the keys themselves: after
// DeleteStale each index holds exactly the sessions that are left, scored
// by their real times (so a session rotated since it was indexed is moved,
// once, not deleted and not visited again), the subject's set lists only
// them, and candidates beyond the limit stay in the indexes for the next
// call. Revocations that revoke nothing leave no entry behind.
func TestDeleteStaleKeepsItsIndexesExact(t *testing.T) {
	c := testClient(t)
	st, prefix := newStoreWithPrefix(t, c)
	ctx := context.Background()
	now := time.Now().Truncate(time.Second).Add(500 * time.Millisecond)
	idleBy, revokedBy := now.Add(-time.Hour), now.Add(-10*time.Minute)
	day := now.Add(24 * time.Hour)
	mk := func(id string, created, rotated, revoked time.Time) {
		t.Helper()
		s := &refresh.Session{ID: id, Subject: "alice", Seed: make([]byte, 32), CreatedAt: created, RotatedAt: created, ExpiresAt: day}
		if err := st.Create(ctx, s); err != nil {
			t.Fatal(err)
		}
		if rotated.After(created) {
			if err := st.Advance(ctx, id, 0, rotated); err != nil {
				t.Fatal(err)
			}
		}
		if !revoked.IsZero() {
			if err := st.Revoke(ctx, id, revoked, "logout"); err != nil {
				t.Fatal(err)
			}
		}
	}
	var none time.Time
	old := now.Add(-5 * time.Hour)
	mk("active", old, now.Add(-time.Minute), none)                          // indexed at old, rotated since: moved
	mk("edge", old, idleBy.Add(time.Nanosecond), none)                      // rotated 1ns after the cut, same second
	mk("idle", old, idleBy, none)                                           // idle at the cut exactly
	mk("revoked-old", now.Add(-time.Hour/2), none, revokedBy)               // revoked at the cut exactly
	mk("revoked-new", now.Add(-time.Hour/2), none, now.Add(-5*time.Minute)) // kept for the sessions page
	mk("revoked-edge", now.Add(-time.Hour/2), none, revokedBy.Add(time.Nanosecond))
	for i := range 3 {
		mk(fmt.Sprintf("idle-%d", i), old.Add(time.Duration(i)*time.Second), none, none)
	}
	// A revocation that finds no session (an unknown id from a devices
	// page) and one of a subject's set holding a dangling id.
	if err := st.Revoke(ctx, "nobody", now, "logout"); err == nil {
		t.Fatal("Revoke of an unknown id succeeded")
	}
	c.SAdd(ctx, prefix+"u:{bob}", "dangling")
	if n, err := st.RevokeSubject(ctx, "bob", now, "logout"); err != nil || n != 0 {
		t.Fatalf("RevokeSubject(bob) = %d, %v", n, err)
	}
	for _, id := range []string{"nobody", "dangling"} {
		if _, err := c.ZScore(ctx, prefix+"rev", id).Result(); err != redis.Nil {
			t.Errorf("the revocation index keeps %q, which revoked nothing", id)
		}
	}
	if m, _ := c.SMembers(ctx, prefix+"u:{bob}").Result(); len(m) != 0 {
		t.Errorf("bob's set after RevokeSubject: %v, want the dangling id gone", m)
	}

	// Entries a crash can leave behind (an index written, the hash not):
	// removed, and not counted as sessions.
	c.ZAdd(ctx, prefix+"idle", redis.Z{Score: float64(old.Unix()), Member: "stray"})
	c.ZAdd(ctx, prefix+"rev", redis.Z{Score: float64(old.Unix()), Member: "stray"})

	// A server that forgot the scripts (a restart, SCRIPT FLUSH): the sweep
	// loads them again.
	if err := c.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}

	// Limit 3: three of the stale sessions go; the other stale ones stay
	// in the indexes for the next call (the second page takes three, with
	// room for two: the third is put back).
	n, err := st.DeleteStale(ctx, now, idleBy, revokedBy, 3)
	if err != nil || n != 3 {
		t.Fatalf("DeleteStale(limit 3) = %d, %v; want 3", n, err)
	}
	if m, _ := c.ZCard(ctx, prefix+"exp").Result(); m != 9-3 {
		t.Fatalf("expiry index after one call of limit 3: %d entries, want 6", m)
	}
	total := n
	for n == 3 {
		if n, err = st.DeleteStale(ctx, now, idleBy, revokedBy, 3); err != nil {
			t.Fatal(err)
		}
		total += n
	}
	if total != 5 {
		t.Fatalf("removed %d sessions in all, want 5 (idle, idle-0..2, revoked-old)", total)
	}
	left := []string{"active", "edge", "revoked-edge", "revoked-new"}
	members := func(key string) []string {
		m, err := c.ZRange(ctx, prefix+key, 0, -1).Result()
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(m)
		return m
	}
	if got := members("exp"); !slices.Equal(got, left) {
		t.Errorf("expiry index: %v, want %v", got, left)
	}
	if got := members("idle"); !slices.Equal(got, left) {
		t.Errorf("rotation index: %v, want %v", got, left)
	}
	if got := members("rev"); !slices.Equal(got, []string{"revoked-edge", "revoked-new"}) {
		t.Errorf("revocation index: %v, want [revoked-edge revoked-new]", got)
	}
	set, _ := c.SMembers(ctx, prefix+"u:{alice}").Result()
	if slices.Sort(set); !slices.Equal(set, left) {
		t.Errorf("alice's set: %v, want %v", set, left)
	}
	if s, _ := c.ZScore(ctx, prefix+"idle", "active").Result(); s != float64(now.Add(-time.Minute).Unix()) {
		t.Errorf("the active session is scored %v in the rotation index, want its last rotation %d", s, now.Add(-time.Minute).Unix())
	}
	for _, id := range left {
		if _, err := st.Get(ctx, id); err != nil {
			t.Errorf("%s: %v", id, err)
		}
	}

	// The same cut-offs again: nothing left to move or delete but the two
	// in the cut's own second, read and put back. One claim per index, one
	// read, one script page, one clean-up, one put-back.
	rt := &countingHook{}
	c.AddHook(rt)
	if n, err := st.DeleteStale(ctx, now, idleBy, revokedBy, 100); err != nil || n != 0 {
		t.Fatalf("second sweep: %d, %v", n, err)
	}
	if got := rt.n.Load(); got > 9 {
		t.Errorf("a sweep with nothing to do cost %d round trips", got)
	}
	if got := members("idle"); !slices.Equal(got, left) {
		t.Errorf("rotation index after a second sweep: %v, want %v", got, left)
	}
}

// Sessions rotated all the time are moved in the rotation index once per
// idle lifetime, not on every rotation (which stays one round trip) and not
// on every sweep.
func TestActiveSessionsAreMovedOncePerIdlePeriod(t *testing.T) {
	c := testClient(t)
	st, prefix := newStoreWithPrefix(t, c)
	ctx := context.Background()
	t0 := time.Now().Truncate(time.Second)
	const n = 50
	for i := range n {
		s := &refresh.Session{ID: fmt.Sprintf("s%d", i), Subject: "alice", Seed: make([]byte, 32), CreatedAt: t0, RotatedAt: t0, ExpiresAt: t0.Add(48 * time.Hour)}
		if err := st.Create(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	idle := time.Hour
	moved := func() int {
		var m int
		idx, _ := c.ZRangeWithScores(ctx, prefix+"idle", 0, -1).Result()
		for _, z := range idx {
			if z.Score != float64(t0.Unix()) {
				m++
			}
		}
		return m
	}
	// Every session rotated every ten minutes for three hours, swept every
	// ten minutes with the cut an hour back.
	for step := 1; step <= 18; step++ {
		at := t0.Add(time.Duration(step) * 10 * time.Minute)
		for i := range n {
			if err := st.Advance(ctx, fmt.Sprintf("s%d", i), uint64(step-1), at); err != nil {
				t.Fatal(err)
			}
		}
		got, err := st.DeleteStale(ctx, at, at.Add(-idle), time.Time{}, 1000)
		if err != nil || got != 0 {
			t.Fatalf("step %d: DeleteStale removed %d active sessions, %v", step, got, err)
		}
		if step < 6 && moved() != 0 {
			t.Fatalf("step %d: sessions moved before their entry reached the cut", step)
		}
		if step == 6 && moved() != n {
			t.Fatalf("step %d: %d of %d sessions moved when their entry reached the cut", step, moved(), n)
		}
	}
	// Scored at the rotation seen at step 6 (an hour in), moved again when
	// that reached the cut (step 12) and at step 18: three moves each in
	// three hours, where every rotation would have been 18.
	idx, _ := c.ZRangeWithScores(ctx, prefix+"idle", 0, -1).Result()
	want := float64(t0.Add(180 * time.Minute).Unix())
	for _, z := range idx {
		if z.Score != want {
			t.Fatalf("%v scored %v, want the rotation seen at the last move (%v)", z.Member, z.Score, want)
		}
	}
}

// The expiry index's candidates in the cut's own second are kept when they
// expire a nanosecond after it; the pages after one that kept some take
// only what the limit leaves, so a call never removes more than its limit.
func TestDeleteExpiredBoundarySecondWithinLimit(t *testing.T) {
	c := testClient(t)
	st, prefix := newStoreWithPrefix(t, c)
	ctx := context.Background()
	cut := time.Now().Add(time.Hour).Truncate(time.Second).Add(500 * time.Millisecond)
	// All scored in cut's second; "a" (kept) is the first of them.
	for id, exp := range map[string]time.Time{"a": cut.Add(time.Nanosecond), "b": cut, "c": cut.Add(-time.Millisecond), "d": cut.Add(-time.Millisecond)} {
		s := &refresh.Session{ID: id, Subject: "alice", Seed: make([]byte, 32), CreatedAt: cut.Add(-time.Hour), RotatedAt: cut.Add(-time.Hour), ExpiresAt: exp}
		if err := st.Create(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	for _, want := range []int{2, 1, 0} {
		if n, err := st.DeleteExpired(ctx, cut, 2); err != nil || n != want {
			t.Fatalf("DeleteExpired(limit 2) = %d, %v; want %d", n, err, want)
		}
	}
	if ids, _ := c.ZRange(ctx, prefix+"exp", 0, -1).Result(); !slices.Equal(ids, []string{"a"}) {
		t.Fatalf("expiry index: %v, want [a]", ids)
	}
}

// BenchmarkSweepIdle: one Issuer.Sweep(ctx, 1000) over 10,000 sessions
// idle past IdleTTL and 10,000 in use whose rotation-index entry is older
// than the cut (each read and moved, not deleted): the cost of the lazy
// rotation index, per session swept or moved.
func BenchmarkSweepIdle(b *testing.B) {
	c := testClient(b)
	st, prefix := newStoreWithPrefix(b, c)
	ctx := context.Background()
	now := time.Now()
	iss, err := refresh.NewIssuer(refresh.Config{
		Issuer: "https://bench.invalid", Audience: "bench",
		Keys:        []refresh.Key{{Algorithm: refresh.HS256, Key: make([]byte, 32)}},
		RefreshKeys: []refresh.RefreshKey{{ID: 1, Secret: bytes.Repeat([]byte{1}, 32)}},
		Store:       st, Now: func() time.Time { return now }, IdleTTL: time.Hour,
	})
	if err != nil {
		b.Fatal(err)
	}
	const each = 10_000
	old := now.Add(-2 * time.Hour)
	for b.Loop() {
		b.StopTimer()
		_, _ = c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i := range 2 * each {
				rotated := old // idle
				if i%2 == 1 {
					rotated = now.Add(-time.Minute) // in use: indexed at old
				}
				id := fmt.Sprintf("s%d", i)
				p.HSet(ctx, prefix+"s:{"+id+"}", "sub", "alice", "expires", fmt.Sprintf("%020d", now.Add(24*time.Hour).UnixNano()),
					"rotated", fmt.Sprintf("%020d", rotated.UnixNano()))
				p.ZAdd(ctx, prefix+"exp", redis.Z{Score: float64(now.Add(24 * time.Hour).Unix()), Member: id})
				p.ZAdd(ctx, prefix+"idle", redis.Z{Score: float64(old.Unix()), Member: id})
			}
			return nil
		})
		b.StartTimer()
		n, err := iss.Sweep(ctx, 1000)
		b.StopTimer()
		if err != nil || n != each {
			b.Fatalf("Sweep = %d, %v; want %d", n, err, each)
		}
		c.Del(ctx, prefix+"exp", prefix+"idle")
		b.StartTimer()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*2*each), "ns/session")
}

// BenchmarkMemoryPerSession reports what a session costs Redis (its hash,
// its TTL, its entries in the subject's set and the sweep's indexes) from
// used_memory, for 5,000 sessions of 1,250 subjects: with metadata short
// enough for the hash's compact encoding (every field at most
// hash-max-listpack-value, 64 bytes by default) and with a browser's user
// agent, which is longer.
func BenchmarkMemoryPerSession(b *testing.B) {
	c := testClient(b)
	ctx := context.Background()
	used := func() int64 {
		info, err := c.Info(ctx, "memory").Result()
		if err != nil {
			b.Fatal(err)
		}
		for _, l := range strings.Split(info, "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(l), "used_memory:"); ok {
				n, _ := strconv.ParseInt(v, 10, 64)
				return n
			}
		}
		b.Fatal("no used_memory in INFO memory")
		return 0
	}
	for _, bc := range []struct{ name, ua string }{
		{"short-meta", "curl/8.5"},
		{"browser-user-agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			const n = 5_000
			var per int64
			for b.Loop() {
				st, _ := newStoreWithPrefix(b, c)
				now := time.Now()
				before := used()
				for i := range n {
					s := &refresh.Session{ID: fmt.Sprintf("%022d", i), Subject: fmt.Sprintf("user-%d", i%1250), ClientID: "web",
						Seed: make([]byte, 32), Scope: []string{"profile", "sessions"},
						Meta:      map[string]string{"ip": "203.0.113.7", "user_agent": bc.ua},
						CreatedAt: now, RotatedAt: now, ExpiresAt: now.Add(24 * time.Hour)}
					if err := st.Create(ctx, s); err != nil {
						b.Fatal(err)
					}
				}
				per = (used() - before) / n
			}
			b.ReportMetric(float64(per), "B/session")
		})
	}
}

// Sessions written before the sweep's indexes existed are in none of
// them: IndexSessions adds them, at their real times, and then the sweep
// removes the idle and long-revoked ones. Running it again adds nothing.
func TestIndexSessionsAfterUpgrade(t *testing.T) {
	c := testClient(t)
	st, prefix := newStoreWithPrefix(t, c)
	ctx := context.Background()
	now := time.Now().Truncate(time.Second).Add(time.Millisecond)
	const n = 2500 // more than one page
	for i := range n {
		s := &refresh.Session{ID: fmt.Sprintf("s%04d", i), Subject: "alice", Seed: make([]byte, 32), CreatedAt: now.Add(-3 * time.Hour), RotatedAt: now.Add(-3 * time.Hour), ExpiresAt: now.Add(24 * time.Hour)}
		if err := st.Create(ctx, s); err != nil {
			t.Fatal(err)
		}
		switch i % 5 {
		case 0: // in use
			if err := st.Advance(ctx, s.ID, 0, now.Add(-time.Minute)); err != nil {
				t.Fatal(err)
			}
		case 1: // in use, then revoked an hour ago
			if err := st.Advance(ctx, s.ID, 0, now.Add(-time.Minute)); err != nil {
				t.Fatal(err)
			}
			if err := st.Revoke(ctx, s.ID, now.Add(-time.Hour), "logout"); err != nil {
				t.Fatal(err)
			}
		}
	}
	// The keys an earlier version wrote: no rotation or revocation index.
	c.Del(ctx, prefix+"idle", prefix+"rev")
	if got, err := st.DeleteStale(ctx, now, now.Add(-2*time.Hour), now.Add(-30*time.Minute), 10_000); err != nil || got != 0 {
		t.Fatalf("before IndexSessions the sweep found %d, %v: it has no index to find them by", got, err)
	}
	added, err := st.IndexSessions(ctx)
	if err != nil || added != n+n/5 {
		t.Fatalf("IndexSessions = %d, %v; want %d (every session, and the revoked ones again)", added, err, n+n/5)
	}
	if s, _ := c.ZScore(ctx, prefix+"idle", "s0000").Result(); s != float64(now.Add(-time.Minute).Unix()) {
		t.Errorf("a session in use indexed at %v, want its last rotation", s)
	}
	if again, err := st.IndexSessions(ctx); err != nil || again != 0 {
		t.Fatalf("IndexSessions again = %d, %v; want 0", again, err)
	}
	// Idle (3 of 5) and revoked past the retention (1 of 5) go.
	total := 0
	for {
		got, err := st.DeleteStale(ctx, now, now.Add(-2*time.Hour), now.Add(-30*time.Minute), 1000)
		if err != nil {
			t.Fatal(err)
		}
		if total += got; got < 1000 {
			break
		}
	}
	if total != n*4/5 {
		t.Fatalf("the sweep removed %d, want %d", total, n*4/5)
	}
	if left, _ := c.ZCard(ctx, prefix+"exp").Result(); left != n/5 {
		t.Fatalf("%d sessions left, want the %d in use", left, n/5)
	}
}

// failFirstZAdd fails the first pipeline that writes to a sorted set: a
// sweep's clean-up, lost on the way.
type failFirstZAdd struct{ done atomic.Bool }

func (h *failFirstZAdd) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *failFirstZAdd) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return next
}
func (h *failFirstZAdd) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, c := range cmds {
			if c.Name() == "zadd" && h.done.CompareAndSwap(false, true) {
				return errors.New("connection lost")
			}
		}
		return next(ctx, cmds)
	}
}

// A sweep whose clean-up fails reports the error and still leaves every
// session it did not delete in the index, at its real time: the entries it
// had claimed go back at the end of the call.
func TestSweepFailureLosesNoIndexEntry(t *testing.T) {
	c := testClient(t)
	st, prefix := newStoreWithPrefix(t, c)
	ctx := context.Background()
	now := time.Now().Truncate(time.Second)
	for _, id := range []string{"a", "b"} {
		s := &refresh.Session{ID: id, Subject: "alice", Seed: make([]byte, 32), CreatedAt: now.Add(-3 * time.Hour), RotatedAt: now.Add(-3 * time.Hour), ExpiresAt: now.Add(24 * time.Hour)}
		if err := st.Create(ctx, s); err != nil {
			t.Fatal(err)
		}
		if err := st.Advance(ctx, id, 0, now.Add(-time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	c.AddHook(&failFirstZAdd{})
	if _, err := st.DeleteStale(ctx, now, now.Add(-time.Hour), time.Time{}, 100); err == nil {
		t.Fatal("DeleteStale reported no error for a failed clean-up")
	}
	for _, id := range []string{"a", "b"} {
		s, err := c.ZScore(ctx, prefix+"idle", id).Result()
		if err != nil || s != float64(now.Add(-time.Minute).Unix()) {
			t.Errorf("%s in the rotation index after a failed sweep: %v, %v; want its last rotation", id, s, err)
		}
	}
}
