package storetest

import (
	"crypto/rand"
	"errors"
	"net/http/httptest"
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
		steps     = 30 // 5 hours: 24 steps after it settles
		idle      = time.Hour
		retention = 30 * time.Minute
		perStep   = 16 // new sessions per step
		revoked   = 4  // of which logged out at once
	)
	var (
		mu  sync.Mutex
		now = time.Now().UTC().Truncate(time.Second).Add(3 * time.Nanosecond).In(westZone)
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
	// Tokens of the first step's sessions, which the sweep removes: those
	// logged out at once (revoked, then kept for the retention), and those
	// used once and abandoned (idle), with the token each had before.
	type token struct{ session, value string }
	var swept []token
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
				if i == 0 {
					swept = append(swept, token{p.SessionID, p.RefreshToken})
				}
				continue
			}
			fresh = append(fresh, p)
		}
		for _, p := range last { // used once more, then abandoned
			q, err := iss.Rotate(ctx(t), p.RefreshToken)
			if err != nil {
				t.Fatalf("step %d: rotating a session issued one step ago: %v", i, err)
			}
			if i == 1 {
				swept = append(swept, token{p.SessionID, p.RefreshToken}, token{p.SessionID, q.RefreshToken})
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

	// What the sweep deleted stays dead: each of those tokens, presented
	// to the refresh endpoint over HTTP as a thief holding it would, is
	// 400 invalid_grant (never revived, never a 5xx), and nothing is
	// created in its place.
	srv := httptest.NewServer(refresh.NewHandlers(iss, refresh.HandlerConfig{}).RefreshHandler())
	defer srv.Close()
	for _, tok := range swept {
		if _, err := st.Get(ctx(t), tok.session); !errors.Is(err, refresh.ErrSessionNotFound) {
			t.Fatalf("rule \"Sweep removes idle and long-revoked sessions\": session %s of the first step is still stored: %v", tok.session, err)
		}
		if _, err := refreshOverHTTP(srv.Client(), srv.URL, tok.value); err == nil || err.Error() != "status 400: invalid_grant" {
			t.Fatalf("rule \"a swept session's tokens stay invalid\": a token of a session the sweep removed, over HTTP: %v, want status 400: invalid_grant", err)
		}
		if _, err := st.Get(ctx(t), tok.session); !errors.Is(err, refresh.ErrSessionNotFound) {
			t.Fatalf("rule \"a swept session's tokens stay invalid\": presenting a swept token brought session %s back: %v", tok.session, err)
		}
	}
}
