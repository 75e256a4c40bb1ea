package storetest

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/refreshkit/refresh"
)

// issuerKeys remembers the keys NewIssuer made, so that another Issuer can
// share them (NewIssuerWithKeysOf), as replicas of one service do.
var issuerKeys sync.Map // *refresh.Issuer -> [2][]byte

// NewIssuer returns an Issuer on st with fresh random HS256 and refresh keys
// and the given grace window, for adapter tests and benchmarks.
func NewIssuer(t testing.TB, st refresh.Store, grace time.Duration) *refresh.Issuer {
	t.Helper()
	secret := make([]byte, 32)
	mac := make([]byte, 32)
	_, _ = rand.Read(secret)
	_, _ = rand.Read(mac)
	iss := newIssuer(t, st, grace, secret, mac)
	issuerKeys.Store(iss, [2][]byte{secret, mac})
	return iss
}

// NewIssuerWithKeysOf returns another Issuer made like other by NewIssuer
// (same keys, same grace window) on st: a second instance of the same
// service, which has seen none of the first one's sessions.
func NewIssuerWithKeysOf(t testing.TB, other *refresh.Issuer, st refresh.Store) *refresh.Issuer {
	t.Helper()
	k, ok := issuerKeys.Load(other)
	if !ok {
		t.Fatal("storetest: NewIssuerWithKeysOf needs an Issuer made by NewIssuer")
	}
	keys := k.([2][]byte)
	iss := newIssuer(t, st, other.Grace(), keys[0], keys[1])
	issuerKeys.Store(iss, keys)
	return iss
}

func newIssuer(t testing.TB, st refresh.Store, grace time.Duration, secret, mac []byte) *refresh.Issuer {
	t.Helper()
	iss, err := refresh.NewIssuer(refresh.Config{
		Issuer:      "https://storetest.invalid",
		Audience:    "storetest",
		Keys:        []refresh.Key{{Algorithm: refresh.HS256, Key: secret}},
		RefreshKeys: []refresh.RefreshKey{{ID: 1, Secret: mac}},
		Store:       st,
		Grace:       grace,
	})
	if err != nil {
		t.Fatal(err)
	}
	return iss
}

// rotateRace presents one refresh token from racers goroutines at once,
// goroutine i to the Issuer of index i modulo len(iss).
func rotateRace(tok string, iss ...*refresh.Issuer) ([]*refresh.Pair, []error) {
	pairs := make([]*refresh.Pair, racers)
	errs := make([]error, racers)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := 0; i < racers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			pairs[i], errs[i] = iss[i%len(iss)].Rotate(context.Background(), tok)
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
	_, errs := rotateRace(p.RefreshToken, iss)
	strictRaceOutcome(t, st, p.SessionID, errs, "one Issuer")
}

// strictRaceOutcome checks a race of one token with grace 0: exactly one
// rotation succeeded, the others were reuse, and the session ended revoked
// at generation 1.
func strictRaceOutcome(t *testing.T, st refresh.Store, id string, errs []error, where string) {
	t.Helper()
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
		t.Fatalf("%d of %d concurrent rotations of one token on %s succeeded with grace 0, want exactly 1", wins, len(errs), where)
	}
	s := mustGet(t, st, id)
	if !s.Revoked() || s.Generation != 1 {
		t.Fatalf("after the race: revoked %v generation %d, want revoked at generation 1", s.Revoked(), s.Generation)
	}
}

// testIssuerGrace: with a grace window, a burst of 32 and then 64
// concurrent refreshes of one token through the refresh endpoint over real
// HTTP all succeed and receive the same successor; the session advanced
// exactly once and is not revoked (a burst of tabs must never log the user
// out).
func testIssuerGrace(t *testing.T, st refresh.Store) {
	iss := NewIssuer(t, st, time.Minute)
	srv := httptest.NewServer(refresh.NewHandlers(iss, refresh.HandlerConfig{}).RefreshHandler())
	defer srv.Close()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: racers}}
	defer client.CloseIdleConnections()
	for _, n := range []int{32, racers} {
		p, err := iss.Issue(ctx(t), subject(t))
		if err != nil {
			t.Fatal(err)
		}
		tokens := make([]string, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				tokens[i], errs[i] = refreshOverHTTP(client, srv.URL, p.RefreshToken)
			}()
		}
		close(start)
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("%d racers: racer %d: %v", n, i, err)
			}
			if tokens[i] != tokens[0] {
				t.Fatalf("%d racers: racer %d received another successor", n, i)
			}
		}
		s := mustGet(t, st, p.SessionID)
		if s.Revoked() || s.Generation != 1 {
			t.Fatalf("%d racers: after the race the session is revoked %v at generation %d; want live at 1 (Advance must let exactly one racer win)", n, s.Revoked(), s.Generation)
		}
		if _, err := iss.Rotate(ctx(t), tokens[0]); err != nil {
			t.Fatalf("the shared successor does not rotate: %v", err)
		}
	}
}

// refreshOverHTTP runs the refresh grant and returns the new refresh token.
func refreshOverHTTP(client *http.Client, base, tok string) (string, error) {
	resp, err := client.PostForm(base, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok}})
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var body struct {
		RefreshToken string `json:"refresh_token"`
		Error        string `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return "", fmt.Errorf("status %d: %w", resp.StatusCode, err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %d: %s", resp.StatusCode, body.Error)
	}
	return body.RefreshToken, nil
}

// testIssuerClaims: the application claims of a session reach every access
// token exactly, also the tokens an instance mints from what the store
// returns (another instance, which has not seen the session): a 64-bit id
// the store rounded would be another user's.
func testIssuerClaims(t *testing.T, st refresh.Store) {
	first := NewIssuer(t, st, 0)
	p, err := first.Issue(ctx(t), subject(t), refresh.WithClaims(appClaims()))
	if err != nil {
		t.Fatal(err)
	}
	tok := p.RefreshToken
	for i := range 2 {
		q, err := NewIssuerWithKeysOf(t, first, st).Rotate(ctx(t), tok) // reads the session from the store
		if errors.Is(err, refresh.ErrInvalidToken) {
			t.Fatalf("rule \"a store returns Claims as the same JSON value\": rotation %d on another instance: %v (a refresh token's tag covers the session's claims by value, numbers exact, so a store that changes one makes every token of the session invalid)", i+1, err)
		}
		if err != nil {
			t.Fatalf("rotation %d on another instance: %v", i+1, err)
		}
		c, err := first.Verify(ctx(t), q.AccessToken)
		if err != nil {
			t.Fatalf("rotation %d: its access token does not verify: %v", i+1, err)
		}
		tenant, _ := c.Extra["tenant"].(map[string]any)
		if c.Extra["uid"] != json.Number("9007199254740993") || tenant["id"] != json.Number("18446744073709551615") || tenant["name"] != "a<b>&c" {
			t.Fatalf("rule \"a store keeps Claims' numbers exact\": an access token minted from the stored session carries uid %v and tenant %v; want 9007199254740993 and {id 18446744073709551615, name a<b>&c}", c.Extra["uid"], c.Extra["tenant"])
		}
		tok = q.RefreshToken
	}
}
