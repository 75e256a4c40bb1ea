package storetest

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/refreshkit/refresh"
)

// testRevocationsStand: a revocation that races a rotation or a grace
// retry of the same session stands, whichever lands first. A store that
// keeps each session as one document and writes back the whole document
// it read, with a compare-and-swap on the generation alone, passes every
// other check and undoes such a revocation: a sign-out, "log out
// everywhere" or a reuse detection that lands while a refresh of the same
// session is between its read and its write leaves the session live, and
// the refresher (a thief refreshing in a loop, say) keeps it.
//
// Each pair runs the swap on a and the revocation on b (the same store, or
// two instances of it).
func testRevocationsStand(t *testing.T, a, b refresh.Store) {
	type swap struct {
		name     string
		advances bool // a success moves the generation to 1
		do       func(id string) error
	}
	at := base.Add(time.Second)
	swaps := []swap{
		{"Advance", true, func(id string) error { return a.Advance(ctx(t), id, 0, at) }},
		{"UseGrace", false, func(id string) error { return a.UseGrace(ctx(t), id, 0, 1000) }},
	}
	if aa, ok := a.(refresh.ActiveAdvancer); ok {
		swaps = append(swaps, swap{"AdvanceActive", true, func(id string) error { return aa.AdvanceActive(ctx(t), id, 0, at, base.Add(-time.Hour)) }})
	}
	revokedAt := base.Add(2 * time.Second)
	revocations := []struct {
		name string
		do   func(s *refresh.Session) error
	}{
		{"Revoke", func(s *refresh.Session) error { return b.Revoke(ctx(t), s.ID, revokedAt, "logout") }},
		{"RevokeSubject", func(s *refresh.Session) error {
			n, err := b.RevokeSubject(ctx(t), s.Subject, revokedAt, "logout")
			if err == nil && n != 1 {
				t.Errorf("RevokeSubject of a subject with one live session revoked %d", n)
			}
			return err
		}},
	}
	for _, sw := range swaps {
		for _, rv := range revocations {
			sessions := make([]*refresh.Session, racers)
			for i := range sessions {
				sessions[i] = newSession(subject(t), base)
				mustCreate(t, a, sessions[i])
			}
			swapErrs, revErrs := make([]error, racers), make([]error, racers)
			var wg sync.WaitGroup
			start := make(chan struct{})
			for i, s := range sessions {
				wg.Add(2)
				go func() { defer wg.Done(); <-start; swapErrs[i] = sw.do(s.ID) }()
				go func() { defer wg.Done(); <-start; revErrs[i] = rv.do(s) }()
			}
			close(start)
			wg.Wait()
			for i, s := range sessions {
				if revErrs[i] != nil {
					t.Fatalf("%s racing %s: %v", rv.name, sw.name, revErrs[i])
				}
				if err := swapErrs[i]; err != nil && !errors.Is(err, refresh.ErrConflict) {
					t.Fatalf("%s racing %s: %s: %v, want nil or ErrConflict", sw.name, rv.name, sw.name, err)
				}
				got := mustGet(t, a, s.ID)
				if !got.Revoked() || !got.RevokedAt.Equal(revokedAt) || got.RevokeReason != "logout" {
					t.Fatalf(`rule "a revocation stands, whatever it races": %s and %s of one session at once left it revoked at %v (%q), want %v ("logout"): the swap wrote back a copy read before the revocation (a compare-and-swap must change only the counters it swaps, never the whole record)`,
						rv.name, sw.name, got.RevokedAt, got.RevokeReason, revokedAt)
				}
				if swapErrs[i] == nil && sw.advances && got.Generation != 1 {
					t.Fatalf("%s succeeded beside %s, but the generation is %d, want 1", sw.name, rv.name, got.Generation)
				}
			}
		}
	}
}
