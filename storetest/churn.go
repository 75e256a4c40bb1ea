package storetest

import (
	"crypto/rand"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/refreshkit/refresh"
)

// testChurn: sessions are created and abandoned continuously (each used once,
// some logged out), with Issuer.Sweep run every step; the number of sessions
// the store holds must stop growing once a step is older than IdleTTL, and
// stay under the bound the Issuer's policy sets. Without idle and retention
// sweeping it would grow for the whole SessionTTL.
func testChurn(t *testing.T, st refresh.Store) {
	if _, ok := st.(refresh.StaleDeleter); !ok {
		t.Skip("the store is not a refresh.StaleDeleter: abandoned sessions stay until ExpiresAt")
	}
	const (
		step      = 10 * time.Minute
		steps     = 48 // 8 hours
		idle      = time.Hour
		retention = 30 * time.Minute
		perStep   = 30 // new sessions per step
		revoked   = 8  // of which logged out at once
	)
	var (
		mu  sync.Mutex
		now = time.Now().UTC().Truncate(time.Second).Add(3 * time.Nanosecond)
	)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	secret := make([]byte, 32)
	mac := make([]byte, 32)
	_, _ = rand.Read(secret)
	_, _ = rand.Read(mac)
	iss, err := refresh.NewIssuer(refresh.Config{
		Issuer: "https://storetest.invalid", Audience: "storetest",
		Keys:        []refresh.Key{{Algorithm: refresh.HS256, Key: secret}},
		RefreshKeys: []refresh.RefreshKey{{ID: 1, Secret: mac}},
		Store:       st, Now: clock,
		AccessTTL: time.Minute, IdleTTL: idle, SessionTTL: 24 * time.Hour, RevokedRetention: retention,
	})
	if err != nil {
		t.Fatal(err)
	}
	// Steady state: sessions issued in the last idle/step+2 steps (each is
	// rotated once, one step after it was issued), plus revoked ones kept
	// for retention.
	bound := (int(idle/step)+2)*perStep + (int(retention/step)+1)*revoked
	held := map[string]bool{} // our sessions the store may still hold
	var last []*refresh.Pair
	counts := make([]int, 0, steps)
	for i := 0; i < steps; i++ {
		var fresh []*refresh.Pair
		for j := 0; j < perStep; j++ {
			p, err := iss.Issue(ctx(t), "churn-"+randID())
			if err != nil {
				t.Fatal(err)
			}
			held[p.SessionID] = true
			if j < revoked {
				if err := iss.RevokeSession(ctx(t), p.SessionID); err != nil {
					t.Fatal(err)
				}
				continue
			}
			fresh = append(fresh, p)
		}
		for _, p := range last { // used once more, then abandoned
			if _, err := iss.Rotate(ctx(t), p.RefreshToken); err != nil {
				t.Fatalf("step %d: rotating a session issued one step ago: %v", i, err)
			}
		}
		last = fresh
		if _, err := iss.Sweep(ctx(t), 100); err != nil {
			t.Fatal(err)
		}
		for id := range held {
			_, err := st.Get(ctx(t), id)
			switch {
			case errors.Is(err, refresh.ErrSessionNotFound):
				delete(held, id)
			case err != nil:
				t.Fatal(err)
			}
		}
		counts = append(counts, len(held))
		mu.Lock()
		now = now.Add(step)
		mu.Unlock()
	}
	settled := int(idle/step) + 3
	for i := settled; i < steps; i++ {
		if counts[i] > bound {
			t.Fatalf("rule \"Sweep keeps the store bounded by the sessions in use\": %d sessions held after step %d, bound %d; counts per step: %v", counts[i], i, bound, counts)
		}
		if d := counts[i] - counts[settled]; d > perStep || d < -perStep {
			t.Fatalf("rule \"Sweep keeps the store flat under churn\": %d sessions after step %d, %d after step %d; counts per step: %v", counts[i], i, counts[settled], settled, counts)
		}
	}
	t.Logf("sessions held per step (bound %d, %d created in all): %v", bound, steps*perStep, counts)
}
