package refresh_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/refreshkit/refresh"
	"github.com/refreshkit/refresh/storetest"
	"github.com/stretchr/testify/require"
)

func TestMemoryStoreConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) refresh.Store {
		m := refresh.NewMemoryStore()
		t.Cleanup(func() { _ = m.Close() })
		return m
	})
}

// The sweeper deletes expired sessions on its own and stops on Close.
func TestMemoryStoreSweeper(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := make(chan time.Time, 1)
	clock <- now
	m := refresh.NewMemoryStore(refresh.WithSweepInterval(time.Millisecond), refresh.WithStoreClock(func() time.Time {
		t := <-clock
		clock <- t
		return t
	}))
	ctx := context.Background()
	for i, exp := range []time.Time{now.Add(-time.Nanosecond), now, now.Add(time.Nanosecond)} {
		require.NoError(t, m.Create(ctx, &refresh.Session{ID: string(rune('a' + i)), Subject: "u", ExpiresAt: exp}))
	}
	require.Eventually(t, func() bool { return m.Len() == 1 }, 5*time.Second, time.Millisecond)
	_, err := m.Get(ctx, "c")
	require.NoError(t, err, "the session expiring after now must survive")
	require.NoError(t, m.Close())
	require.NoError(t, m.Close(), "Close is idempotent")
}

// One round of the sweeper goes on batch after batch while a batch of
// sessions or of proof records comes back full, so that a round leaves
// nothing expired of either however much has built up; and stops at the
// first round where both come back short.
func TestMemoryStoreSweeperBatches(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	ctx := context.Background()
	for _, tc := range []struct{ sessions, proofs int }{{25, 3}, {3, 25}, {20, 20}, {0, 0}} {
		m := refresh.NewMemoryStore(refresh.WithSweepInterval(0), refresh.WithStoreClock(func() time.Time { return now }))
		for i := range tc.sessions {
			require.NoError(t, m.Create(ctx, &refresh.Session{ID: "s" + strconv.Itoa(i), Subject: "u", ExpiresAt: now}))
		}
		require.NoError(t, m.Create(ctx, &refresh.Session{ID: "live", Subject: "u", ExpiresAt: now.Add(time.Nanosecond)}))
		for i := range tc.proofs {
			require.NoError(t, m.RecordProof(ctx, "p"+strconv.Itoa(i), now.Add(-time.Minute), now))
		}
		require.NoError(t, m.RecordProof(ctx, "live", now, now.Add(time.Nanosecond)))
		refresh.SweepAll(m, 10)
		require.Equal(t, 1, m.Len(), "%d sessions, %d proofs: sessions left", tc.sessions, tc.proofs)
		require.Equal(t, 1, refresh.ProofLen(m), "%d sessions, %d proofs: proof records left", tc.sessions, tc.proofs)
		// The subject's index forgets what was swept: it does not grow
		// with every session a long-running store ever held.
		require.Equal(t, 1, refresh.SubjectIndexLen(m, "u"), "%d sessions, %d proofs: ids left in the subject's index", tc.sessions, tc.proofs)
	}
}

// Times beyond the nanosecond range keep their order: a sweep "before the
// year 3000" deletes everything that expires earlier.
func TestMemoryStoreFarFuture(t *testing.T) {
	m := refresh.NewMemoryStore(refresh.WithSweepInterval(0))
	ctx := context.Background()
	require.NoError(t, m.Create(ctx, &refresh.Session{ID: "a", Subject: "u", ExpiresAt: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}))
	n, err := m.DeleteExpired(ctx, time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC), 10)
	require.NoError(t, err)
	require.Equal(t, 1, n)
}

// The Issuer's session ids are 22 base64url characters, which the memory
// store keeps as 16 bytes; any other id, of a session an application
// created on the store itself, is kept as a string. A subject's index counts
// both kinds: one subject with sessions of each is listed, swept and
// revoked whole, also once a sweep has removed some of them.
func TestMemoryStoreMixedIDs(t *testing.T) {
	m := refresh.NewMemoryStore(refresh.WithSweepInterval(0))
	ctx := context.Background()
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	create := func(id, subject string, expires time.Time) {
		t.Helper()
		require.NoError(t, m.Create(ctx, &refresh.Session{ID: id, Subject: subject, Seed: make([]byte, 32),
			CreatedAt: now, RotatedAt: now, ExpiresAt: expires}))
	}
	issuerID := func() string {
		b := make([]byte, 16)
		_, _ = rand.Read(b)
		return b64raw(b)
	}
	later := now.Add(time.Hour)
	create(issuerID(), "u", now) // ends first
	create(issuerID(), "u", later)
	create(issuerID(), "u", later)
	create("legacy-1", "u", later)
	create("legacy-2", "u", later)
	create("legacy-3", "v", later) // a subject with only such ids

	list, err := m.Sessions(ctx, "v")
	require.NoError(t, err)
	require.Len(t, list, 1)
	n, err := m.DeleteExpired(ctx, now.Add(time.Nanosecond), 10)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	list, err = m.Sessions(ctx, "u")
	require.NoError(t, err)
	require.Len(t, list, 4, "the sweep lost the subject's other sessions")
	n, err = m.RevokeSubject(ctx, "u", later, "logout")
	require.NoError(t, err)
	require.Equal(t, 4, n)
}

// DeleteExpired's limit holds for sessions of other ids too (storetest's
// sessions all have the Issuer's).
func TestMemoryStoreDeleteLimitOtherIDs(t *testing.T) {
	m := refresh.NewMemoryStore(refresh.WithSweepInterval(0))
	ctx := context.Background()
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	// 300 sessions over the store's shards: several share each shard, so
	// that a batch fills up inside one.
	for i := range 300 {
		require.NoError(t, m.Create(ctx, &refresh.Session{ID: "legacy-" + strconv.Itoa(i), Subject: "u", ExpiresAt: now}))
	}
	for left := 300; left > 0; left -= 3 {
		n, err := m.DeleteExpired(ctx, now, 3)
		require.NoError(t, err)
		require.Equal(t, 3, n, "with %d left", left)
		require.Equal(t, left-3, m.Len())
	}
	n, err := m.DeleteExpired(ctx, now, 3)
	require.NoError(t, err)
	require.Zero(t, n)
}

// callCounter counts the calls an Issuer makes to a store: round trips, for
// a remote one.
type callCounter struct {
	*refresh.MemoryStore
	n atomic.Int64
}

func (c *callCounter) Create(ctx context.Context, s *refresh.Session) error {
	c.n.Add(1)
	return c.MemoryStore.Create(ctx, s)
}

func (c *callCounter) Get(ctx context.Context, id string) (*refresh.Session, error) {
	c.n.Add(1)
	return c.MemoryStore.Get(ctx, id)
}

func (c *callCounter) Advance(ctx context.Context, id string, from uint64, at time.Time) error {
	c.n.Add(1)
	return c.MemoryStore.Advance(ctx, id, from, at)
}

func (c *callCounter) AdvanceActive(ctx context.Context, id string, from uint64, at, after time.Time) error {
	c.n.Add(1)
	return c.MemoryStore.AdvanceActive(ctx, id, from, at, after)
}

func (c *callCounter) Revoke(ctx context.Context, id string, at time.Time, reason string) error {
	c.n.Add(1)
	return c.MemoryStore.Revoke(ctx, id, at, reason)
}

// The common rotation is one call to the store; the others cost what
// storetest.Want says.
func TestStoreCallsPerRefresh(t *testing.T) {
	st := &callCounter{MemoryStore: refresh.NewMemoryStore(refresh.WithSweepInterval(0))}
	storetest.CheckRoundTrips(t, st, st.n.Load, storetest.Want)
}

// BenchmarkMemoryStoreSweep: one Sweep of a store holding live sessions
// and a tenth as many idle ones, through DeleteStale in batches of 1000.
// Compare the ns/op of the sizes: a sweep whose every batch scanned the
// store from its first shard again grew with size × stale / batch.
func BenchmarkMemoryStoreSweep(b *testing.B) {
	for _, live := range []int{100_000, 1_000_000} {
		b.Run(strconv.Itoa(live), func(b *testing.B) {
			if raceEnabled && live > 100_000 {
				b.Skip("a million sessions take 20 s to set up under -race; run it without")
			}
			ctx := context.Background()
			now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
			m := refresh.NewMemoryStore(refresh.WithSweepInterval(0))
			id := func() string {
				var raw [16]byte
				_, _ = rand.Read(raw[:])
				return base64.RawURLEncoding.EncodeToString(raw[:])
			}
			add := func(n int, rotated time.Time) {
				for i := 0; i < n; i++ {
					require.NoError(b, m.Create(ctx, &refresh.Session{ID: id(), Subject: "u" + strconv.Itoa(i%5000),
						CreatedAt: rotated, RotatedAt: rotated, ExpiresAt: now.Add(time.Hour)}))
				}
			}
			add(live, now)
			idleBy := now.Add(-time.Minute)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				add(live/10, idleBy.Add(-time.Second))
				b.StartTimer()
				total := 0
				for {
					n, err := m.DeleteStale(ctx, now, idleBy, time.Time{}, 1000)
					require.NoError(b, err)
					total += n
					if n < 1000 {
						break
					}
				}
				if total != live/10 {
					b.Fatalf("swept %d, want %d", total, live/10)
				}
			}
		})
	}
}
