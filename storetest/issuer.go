package storetest

import (
	"context"
	"crypto/rand"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/refreshkit/refresh"
)

// NewIssuer returns an Issuer on st with fresh random HS256 and refresh keys
// and the given grace window, for adapter tests and benchmarks.
func NewIssuer(t testing.TB, st refresh.Store, grace time.Duration) *refresh.Issuer {
	t.Helper()
	secret := make([]byte, 32)
	mac := make([]byte, 32)
	_, _ = rand.Read(secret)
	_, _ = rand.Read(mac)
	iss, err := refresh.NewIssuer(refresh.Config{
		Issuer:       "https://storetest.invalid",
		Audience:     "storetest",
		Keys:         []refresh.Key{{Algorithm: refresh.HS256, Key: secret}},
		RefreshKeys:  []refresh.RefreshKey{{ID: 1, Secret: mac}},
		Store:        st,
		Grace:        grace,
		MaxGraceUses: racers,
	})
	if err != nil {
		t.Fatal(err)
	}
	return iss
}

// rotateRace presents one refresh token from racers goroutines at once.
func rotateRace(iss *refresh.Issuer, tok string) ([]*refresh.Pair, []error) {
	pairs := make([]*refresh.Pair, racers)
	errs := make([]error, racers)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := 0; i < racers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			pairs[i], errs[i] = iss.Rotate(context.Background(), tok)
		}()
	}
	close(start)
	wg.Wait()
	return pairs, errs
}

// testIssuerStrict: with grace 0, of 64 concurrent rotations of one token
// through an Issuer on this store exactly one succeeds and the session ends
// revoked.
func testIssuerStrict(t *testing.T, st refresh.Store) {
	iss := NewIssuer(t, st, 0)
	p, err := iss.Issue(ctx(t), subject(t))
	if err != nil {
		t.Fatal(err)
	}
	_, errs := rotateRace(iss, p.RefreshToken)
	wins := 0
	for _, err := range errs {
		switch {
		case err == nil:
			wins++
		case errors.Is(err, refresh.ErrReused), errors.Is(err, refresh.ErrRevoked):
		default:
			t.Errorf("unexpected error: %v", err)
		}
	}
	if wins != 1 {
		t.Fatalf("%d of %d concurrent rotations succeeded with grace 0, want exactly 1", wins, racers)
	}
	s := mustGet(t, st, p.SessionID)
	if !s.Revoked() || s.Generation != 1 {
		t.Fatalf("after the race: revoked %v generation %d, want revoked at generation 1", s.Revoked(), s.Generation)
	}
}

// testIssuerGrace: with a grace window, all 64 concurrent rotations succeed
// and receive the same successor; the session advanced exactly once.
func testIssuerGrace(t *testing.T, st refresh.Store) {
	iss := NewIssuer(t, st, time.Minute)
	p, err := iss.Issue(ctx(t), subject(t))
	if err != nil {
		t.Fatal(err)
	}
	pairs, errs := rotateRace(iss, p.RefreshToken)
	for i, err := range errs {
		if err != nil {
			t.Fatalf("racer %d: %v", i, err)
		}
		if pairs[i].RefreshToken != pairs[0].RefreshToken {
			t.Fatalf("racer %d received another successor", i)
		}
	}
	s := mustGet(t, st, p.SessionID)
	if s.Revoked() || s.Generation != 1 || s.GraceUses != racers-1 {
		t.Fatalf("after the race: revoked %v generation %d grace %d, want live, 1, %d", s.Revoked(), s.Generation, s.GraceUses, racers-1)
	}
	if _, err := iss.Rotate(ctx(t), pairs[0].RefreshToken); err != nil {
		t.Fatalf("the shared successor does not rotate: %v", err)
	}
}
