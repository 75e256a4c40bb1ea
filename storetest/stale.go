package storetest

import (
	"context"
	"errors"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/refreshkit/refresh"
)

// staleCuts are the three cut-offs of one DeleteStale call.
type staleCuts struct{ expired, idle, revoked time.Time }

func deleteStale(t *testing.T, sd refresh.StaleDeleter, c staleCuts, limit int) int {
	t.Helper()
	n, err := sd.DeleteStale(ctx(t), c.expired, c.idle, c.revoked, limit)
	if err != nil {
		t.Fatalf("DeleteStale: %v", err)
	}
	if n < 0 || limit > 0 && n > limit {
		t.Fatalf("rule \"DeleteStale removes at most limit sessions\": DeleteStale(limit %d) reported %d", limit, n)
	}
	return n
}

// deleteStaleAll sweeps until a batch comes back short.
func deleteStaleAll(t *testing.T, sd refresh.StaleDeleter, c staleCuts) int {
	t.Helper()
	total := 0
	for range maxSweepBatches {
		n := deleteStale(t, sd, c, 500)
		total += n
		if n < 500 {
			return total
		}
	}
	t.Fatalf("DeleteStale never finished: it reported %d removals in %d full batches, more sessions than the suite ever makes (does it report removals it does not make?)", total, maxSweepBatches)
	return 0
}

// testDeleteStale checks the optional sweep of refresh.StaleDeleter: each of
// its three rules one nanosecond either side, idleness read from RotatedAt
// (not CreatedAt), a live session never taken for a revoked one, a zero
// revokedBy matching nothing, limits, concurrent sweepers counting each
// session once, and a cancelled context.
func testDeleteStale(t *testing.T, st refresh.Store) {
	sd, ok := st.(refresh.StaleDeleter)
	if !ok {
		t.Skip("the store is not a refresh.StaleDeleter: Issuer.Sweep removes only sessions past ExpiresAt")
	}
	const rule = `rule "DeleteStale removes exactly the sessions with ExpiresAt <= expiredBy, or RotatedAt <= idleBy, or revoked with RevokedAt <= revokedBy"`
	// Cut-offs far from every other subtest's sessions, with nanosecond
	// parts: idle < revoked < expired.
	idle := base.Add(60*24*time.Hour + time.Duration(randUint(1<<40))*time.Microsecond + 7)
	c := staleCuts{idle: idle, revoked: idle.Add(20 * time.Hour), expired: idle.Add(50 * time.Hour)}
	sub := subject(t)
	// mk creates a session made at created, rotated (Advance) at rotated if
	// that is later, expiring at expires, revoked at revoked unless zero.
	mk := func(created, rotated, expires, revoked time.Time) *refresh.Session {
		t.Helper()
		s := newSession(sub, created)
		s.ExpiresAt = expires
		mustCreate(t, st, s)
		if rotated.After(created) {
			if err := st.Advance(ctx(t), s.ID, 0, rotated); err != nil {
				t.Fatal(err)
			}
			s.Generation, s.RotatedAt = 1, rotated
		}
		if !revoked.IsZero() {
			if err := st.Revoke(ctx(t), s.ID, revoked, "logout"); err != nil {
				t.Fatal(err)
			}
			s.RevokedAt, s.RevokeReason = revoked, "logout"
		}
		return s
	}
	fresh := c.idle.Add(time.Hour) // active at every cut
	later := c.expired.Add(100 * time.Hour)
	var none time.Time
	gone := map[string]*refresh.Session{
		"ExpiresAt equal to expiredBy":          mk(fresh, fresh, c.expired, none),
		"RotatedAt equal to idleBy":             mk(c.idle.Add(-time.Hour), c.idle, later, none),
		"RotatedAt 1ns before idleBy":           mk(c.idle.Add(-time.Nanosecond), c.idle.Add(-time.Nanosecond), later, none),
		"revoked, RevokedAt equal to revokedBy": mk(fresh, fresh, later, c.revoked),
	}
	kept := map[string]*refresh.Session{
		"ExpiresAt 1ns after expiredBy": mk(fresh, fresh, c.expired.Add(time.Nanosecond), none),
		// Created long before idleBy, but rotated since: idleness is read
		// from RotatedAt.
		"created before idleBy, rotated 1ns after it": mk(c.idle.Add(-time.Hour), c.idle.Add(time.Nanosecond), later, none),
		"revoked 1ns after revokedBy":                 mk(fresh, fresh, later, c.revoked.Add(time.Nanosecond)),
		"live, never revoked":                         mk(fresh, fresh, later, none),
	}
	check := func(when string) {
		t.Helper()
		for name, s := range kept {
			got, err := st.Get(ctx(t), s.ID)
			if err != nil {
				t.Fatalf("%s: %s: the session %q must stay, Get: %v", rule, when, name, err)
			}
			expectSame(t, s, got)
		}
	}

	// limit <= 0 removes nothing.
	for _, limit := range []int{0, -1, math.MinInt} {
		if n, err := sd.DeleteStale(ctx(t), c.expired, c.idle, c.revoked, limit); err != nil || n != 0 {
			t.Fatalf("rule \"limit <= 0 removes nothing\": DeleteStale(limit %d) = %d, %v", limit, n, err)
		}
		for name, s := range gone {
			if _, err := st.Get(ctx(t), s.ID); err != nil {
				t.Fatalf("rule \"limit <= 0 removes nothing\": after DeleteStale(limit %d), %q: %v", limit, name, err)
			}
		}
	}
	// A zero revokedBy matches no revoked session (the Issuer passes it
	// when revoked sessions are kept until they expire): with the other
	// two cut-offs before everything here, nothing of ours goes.
	early := base.Add(-time.Hour)
	deleteStaleAll(t, sd, staleCuts{expired: early, idle: early})
	for name, s := range gone {
		if _, err := st.Get(ctx(t), s.ID); err != nil {
			t.Fatalf("rule \"a zero revokedBy matches no session\": DeleteStale(zero revokedBy) removed %q: %v", name, err)
		}
	}
	check("with a zero revokedBy")
	// And a revokedBy later than every revocation never takes a live
	// session for a revoked one.
	deleteStaleAll(t, sd, staleCuts{expired: early, idle: early, revoked: time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC)})
	if _, err := st.Get(ctx(t), kept["live, never revoked"].ID); err != nil {
		t.Fatalf("rule \"a live session is never revoked\": DeleteStale(revokedBy year 3000) removed a live session: %v", err)
	}
	if _, err := st.Get(ctx(t), gone["revoked, RevokedAt equal to revokedBy"].ID); !errors.Is(err, refresh.ErrSessionNotFound) {
		t.Fatalf("%s: DeleteStale(revokedBy year 3000) kept a revoked session: %v", rule, err)
	}
	delete(gone, "revoked, RevokedAt equal to revokedBy")
	delete(kept, "revoked 1ns after revokedBy")
	gone["revoked, RevokedAt equal to revokedBy"] = mk(fresh, fresh, later, c.revoked)
	kept["revoked 1ns after revokedBy"] = mk(fresh, fresh, later, c.revoked.Add(time.Nanosecond))

	// The real cut-offs.
	if n := deleteStaleAll(t, sd, c); n < len(gone) {
		t.Fatalf("%s: DeleteStale removed %d, want at least our %d", rule, n, len(gone))
	}
	for name, s := range gone {
		if _, err := st.Get(ctx(t), s.ID); !errors.Is(err, refresh.ErrSessionNotFound) {
			t.Fatalf("%s: %q still there: %v", rule, name, err)
		}
	}
	check("after DeleteStale")
	list, err := st.Sessions(ctx(t), sub)
	if err != nil || len(list) != len(kept) {
		t.Fatalf("Sessions after DeleteStale: %d, %v; want the %d kept", len(list), err, len(kept))
	}

	// Concurrent sweepers, small batches: every stale session is removed
	// and counted exactly once. The live session is rotated past the new
	// idle cut-off first; then a first sweep clears whatever else (ours
	// and a shared store's) the new cut-offs match.
	c2 := staleCuts{idle: c.idle.Add(200 * time.Hour), revoked: c.revoked.Add(200 * time.Hour), expired: c.expired.Add(50 * time.Hour)}
	keepAll := kept["live, never revoked"]
	if err := st.Advance(ctx(t), keepAll.ID, 0, c2.idle.Add(time.Nanosecond)); err != nil {
		t.Fatal(err)
	}
	deleteStaleAll(t, sd, c2)
	// Some idle, the others revoked and active since the idle cut-off: one
	// batch can find sessions by two rules, and still takes at most limit
	// of them (a LIMIT on each rule's query alone would take one limit per
	// rule).
	const stale = 25 // odd: some batch is short
	for i := 0; i < stale; i++ {
		if i%2 == 0 {
			at := c2.idle.Add(-time.Duration(i+1) * time.Minute)
			mk(at, at, c2.idle.Add(100*time.Hour+time.Duration(i)*time.Hour), none)
			continue
		}
		at := c2.idle.Add(time.Duration(i) * time.Minute)
		mk(at, at, c2.idle.Add(100*time.Hour+time.Duration(i)*time.Hour), at.Add(time.Second))
	}
	var (
		mu    sync.Mutex
		total int
		wg    sync.WaitGroup
	)
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				n, err := sd.DeleteStale(ctx(t), c2.expired, c2.idle, c2.revoked, 2)
				if err != nil {
					t.Errorf("concurrent DeleteStale: %v", err)
					return
				}
				if n > 2 {
					t.Errorf("rule \"DeleteStale removes at most limit sessions\": DeleteStale(limit 2) reported %d", n)
					return
				}
				mu.Lock()
				total += n
				over := total > stale // reports rows it did not remove: stop, the count below fails
				mu.Unlock()
				if n < 2 || over {
					return
				}
			}
		}()
	}
	wg.Wait()
	if total != stale {
		t.Fatalf("rule \"DeleteStale reports what it removed\": 4 concurrent sweepers reported %d in all, want %d (each stale session once)", total, stale)
	}
	if list, err := st.Sessions(ctx(t), sub); err != nil || len(list) != 1 || list[0].ID != keepAll.ID {
		t.Fatalf("Sessions after concurrent DeleteStale: %d, %v; want only the session rotated after the cut", len(list), err)
	}

	cc, cancel := context.WithCancel(ctx(t))
	cancel()
	if _, err := sd.DeleteStale(cc, c2.expired.Add(time.Hour), c2.expired.Add(time.Hour), c2.expired.Add(time.Hour), 10); !errors.Is(err, context.Canceled) {
		t.Fatalf("DeleteStale with a cancelled context: %v, want an error wrapping context.Canceled", err)
	}
	if _, err := st.Get(ctx(t), keepAll.ID); err != nil {
		t.Fatalf("DeleteStale with a cancelled context removed a session: %v", err)
	}
}
