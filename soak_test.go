package refresh_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/refreshkit/refresh"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// soakSession is what the soak test knows of one session.
type soakSession struct {
	id, subject string
	mu          sync.Mutex // guards tokens and until
	tokens      []string   // every refresh token seen, oldest first
	until       time.Time  // latest RefreshExpiresAt seen: usable until then at least
}

func (s *soakSession) add(p *refresh.Pair) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tokens[len(s.tokens)-1] != p.RefreshToken {
		s.tokens = append(s.tokens, p.RefreshToken)
	}
	if p.RefreshExpiresAt.After(s.until) {
		s.until = p.RefreshExpiresAt
	}
}

// usableUntil is a lower bound of when the session stops being usable (idle
// or absolute end), if nobody revokes it.
func (s *soakSession) usableUntil() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.until
}

func (s *soakSession) pick(r *rand.Rand) (tok string, latest bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(s.tokens)
	if n > 1 && r.IntN(60) == 0 {
		return s.tokens[r.IntN(n-1)], false
	}
	return s.tokens[n-1], true
}

// TestSoak runs a bounded number of concurrent issues, rotations (with and
// without grace), reuses, revocations of sessions and subjects, verifications
// and sweeps against one Issuer and memory store, and checks the invariants
// of the design throughout and at the end:
//
//   - at most one live generation per session: every rotation event advanced
//     the session by exactly one, and the final generation equals the number
//     of rotation events;
//   - nothing rotates after revocation: a revoked session's generation never
//     moves again;
//   - a presented token always receives the same successor (grace retries);
//   - every reuse revokes exactly its own session, and no session is revoked
//     without a reason the test caused;
//   - no session is lost (swept while still usable) or resurrected
//     (revoked, then live again).
func TestSoak(t *testing.T) {
	for _, grace := range []time.Duration{0, 500 * time.Millisecond} {
		t.Run(fmt.Sprintf("grace=%v", grace), func(t *testing.T) { soak(t, grace) })
	}
}

func soak(t *testing.T, grace time.Duration) {
	const workers, opsPerWorker, subjects = 8, 1500, 6
	var (
		mu        sync.Mutex            // guards the maps below
		rotations = map[string]uint64{} // session -> rotation events
		revokedBy = map[string]string{} // session -> why the test expects it revoked
		frozenGen = map[string]uint64{} // session -> generation when first seen revoked
		successor = map[string]string{} // presented token -> refresh token it received
		sessions  []*soakSession
		failures  []string
	)
	fail := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		if len(failures) < 10 {
			failures = append(failures, fmt.Sprintf(format, args...))
		}
	}
	e := newEnv(t, func(c *refresh.Config) {
		c.Grace = grace
		c.MaxGraceUses = 2
		c.AccessTTL, c.IdleTTL, c.SessionTTL = 5*time.Second, 20*time.Second, time.Minute
		c.CheckSession = true
		c.SessionCheckTTL = time.Nanosecond
		c.OnEvent = func(_ context.Context, ev refresh.Event) {
			if ev.Kind == refresh.EventRotated {
				mu.Lock()
				rotations[ev.SessionID]++
				mu.Unlock()
			}
		}
	})
	var clockMu sync.Mutex
	tick := func(d time.Duration) { clockMu.Lock(); e.clock.Advance(d); clockMu.Unlock() }

	issue := func(r *rand.Rand) {
		sub := fmt.Sprintf("user%d", r.IntN(subjects))
		p, err := e.iss.Issue(bg, sub)
		if err != nil {
			fail("issue: %v", err)
			return
		}
		mu.Lock()
		sessions = append(sessions, &soakSession{id: p.SessionID, subject: sub, until: p.RefreshExpiresAt, tokens: []string{p.RefreshToken}})
		mu.Unlock()
	}
	pickSession := func(r *rand.Rand) *soakSession {
		mu.Lock()
		defer mu.Unlock()
		return sessions[r.IntN(len(sessions))]
	}
	expectRevoked := func(id, why string) {
		mu.Lock()
		defer mu.Unlock()
		if _, ok := revokedBy[id]; !ok {
			revokedBy[id] = why
		}
	}

	r0 := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 20; i++ {
		issue(r0)
	}
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 99))
			for op := 0; op < opsPerWorker; op++ {
				tick(time.Duration(r.IntN(20)) * time.Millisecond)
				s := pickSession(r)
				switch n := r.IntN(100); {
				case n < 70: // rotate
					tok, _ := s.pick(r)
					p, err := e.iss.Rotate(bg, tok)
					switch {
					case err == nil:
						s.add(p)
						mu.Lock()
						if prev, ok := successor[tok]; ok && prev != p.RefreshToken {
							failures = append(failures, "one token received two different successors")
						}
						successor[tok] = p.RefreshToken
						mu.Unlock()
					case errors.Is(err, refresh.ErrReused):
						expectRevoked(s.id, "reuse")
						if got, err := e.store.Get(bg, s.id); err == nil && !got.Revoked() {
							fail("reuse did not revoke session %s", s.id)
						}
					case errors.Is(err, refresh.ErrRevoked), errors.Is(err, refresh.ErrExpired):
					case errors.Is(err, refresh.ErrInvalidToken):
						// Only a token of a swept session that could no longer
						// be used (idle or past its absolute end; revoked ones
						// are kept for RevokedRetention, longer than the soak).
						if _, gerr := e.store.Get(bg, s.id); !errors.Is(gerr, refresh.ErrSessionNotFound) {
							fail("genuine token of a stored session refused: %v", err)
						} else if e.clock.Now().Before(s.usableUntil()) {
							fail("session %s swept while still usable", s.id)
						}
					default:
						fail("rotate: %v", err)
					}
				case n < 71:
					if err := e.iss.RevokeSession(bg, s.id); err != nil && !errors.Is(err, refresh.ErrSessionNotFound) {
						fail("revoke: %v", err)
					} else if err == nil {
						expectRevoked(s.id, "revoke")
					}
				case n < 72 && r.IntN(5) == 0:
					mu.Lock()
					var ids []string
					for _, x := range sessions {
						if x.subject == s.subject {
							ids = append(ids, x.id)
						}
					}
					mu.Unlock()
					if _, err := e.iss.RevokeSubject(bg, s.subject); err != nil {
						fail("revoke subject: %v", err)
					}
					for _, id := range ids {
						expectRevoked(id, "subject")
					}
				case n < 80:
					issue(r)
				case n < 81:
					if _, err := e.iss.Sweep(bg, 10); err != nil {
						fail("sweep: %v", err)
					}
				default: // look at the session, checking invariants on the way
					got, err := e.store.Get(bg, s.id)
					if errors.Is(err, refresh.ErrSessionNotFound) {
						continue
					}
					if err != nil {
						fail("get: %v", err)
						continue
					}
					mu.Lock()
					if got.Revoked() {
						if _, ok := revokedBy[s.id]; !ok && got.RevokeReason != "reuse" && got.RevokeReason != "revoked" && got.RevokeReason != "revoked-all" {
							failures = append(failures, "session revoked for no reason: "+got.RevokeReason)
						}
						if g, ok := frozenGen[s.id]; ok && g != got.Generation {
							failures = append(failures, fmt.Sprintf("revoked session %s moved from generation %d to %d", s.id, g, got.Generation))
						}
						frozenGen[s.id] = got.Generation
					}
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	require.Empty(t, failures)

	now := e.clock.Now()
	swept := 0
	for _, s := range sessions {
		got, err := e.store.Get(bg, s.id)
		if errors.Is(err, refresh.ErrSessionNotFound) {
			require.False(t, now.Before(s.usableUntil()), "session %s swept while still usable", s.id)
			swept++
			continue
		}
		require.NoError(t, err)
		require.Equal(t, rotations[s.id], got.Generation, "session %s: generation must equal its rotation events", s.id)
		if why, ok := revokedBy[s.id]; ok {
			require.True(t, got.Revoked(), "session %s should be revoked (%s)", s.id, why)
		}
		if g, ok := frozenGen[s.id]; ok {
			require.Equal(t, g, got.Generation, "a revoked session rotated")
		}
		if got.Revoked() {
			_, err := e.iss.Rotate(bg, s.tokens[len(s.tokens)-1])
			require.True(t, errors.Is(err, refresh.ErrRevoked) || errors.Is(err, refresh.ErrExpired), "revoked session refreshed: %v", err)
		}
	}
	t.Logf("%d sessions, %d swept, %d revoked, %d rotations", len(sessions), swept, len(revokedBy), sum(rotations))
	require.Greater(t, len(sessions), 20)
}

func sum(m map[string]uint64) (n uint64) {
	for _, v := range m {
		n += v
	}
	return n
}

// TestFaultsNeverEndSessions: store calls failing at random while many
// clients rotate, each presenting only its current token, on two instances
// (one of which must read sessions from the store first), never end a
// session, never answer a client error and never lose or invent a
// rotation: a failed rotation changes nothing, and the client retries the
// same token. Afterwards each session's generation is exactly its count of
// successful rotations and its token still rotates.
func TestFaultsNeverEndSessions(t *testing.T) {
	for _, grace := range []time.Duration{0, time.Second} {
		t.Run(fmt.Sprintf("grace=%v", grace), func(t *testing.T) {
			e := newEnv(t, func(c *refresh.Config) { c.Grace, c.MaxGraceUses = grace, 2 })
			cold, err := refresh.NewIssuer(e.cfg) // the same store, nothing cached
			require.NoError(t, err)
			const clients, rounds = 16, 150
			methods := []string{"Get", "Advance", "AdvanceActive", "UseGrace", "Revoke"}
			errFault := errors.New("connection reset by peer")

			pairs := make([]*refresh.Pair, clients)
			for i := range pairs {
				pairs[i] = e.issue(t, fmt.Sprintf("user%d", i))
			}
			// Every client sets the faults before each of its rotations, so
			// they change with the calls, not with the scheduler's timing,
			// and every call meets whichever setting came last.
			setFaults := func(r *rand.Rand) {
				var some []string
				for _, m := range methods {
					if r.IntN(3) == 0 {
						some = append(some, m)
					}
				}
				if len(some) == 0 {
					e.fx.FailStore(nil)
				} else {
					e.fx.FailStore(errFault, some...)
				}
			}

			ok := make([]uint64, clients)
			faults := make([]int, clients)
			var wg sync.WaitGroup
			for i := range clients {
				wg.Add(1)
				go func() {
					defer wg.Done()
					r := rand.New(rand.NewPCG(uint64(i), 1))
					tok := pairs[i].RefreshToken
					for range rounds {
						iss := e.iss
						if r.IntN(2) == 0 {
							iss = cold
						}
						setFaults(r)
						p, err := iss.Rotate(bg, tok)
						switch {
						case err == nil:
							tok = p.RefreshToken
							ok[i]++
						case refresh.IsClientError(err):
							t.Errorf("client %d: a store fault answered as a client error: %v", i, err)
							return
						case !errors.Is(err, errFault):
							t.Errorf("client %d: a system error that is not the store's fault: %v", i, err)
							return
						default:
							faults[i]++
						}
					}
					pairs[i] = &refresh.Pair{RefreshToken: tok, SessionID: pairs[i].SessionID}
				}()
			}
			wg.Wait()
			e.fx.FailStore(nil)

			var totalOK, totalFaults int
			for i, p := range pairs {
				s := e.session(t, p.SessionID)
				assert.False(t, s.Revoked(), "client %d: session ended by faults", i)
				assert.Equal(t, ok[i], s.Generation, "client %d: generation is the count of successful rotations", i)
				_, err := e.iss.Rotate(bg, p.RefreshToken)
				assert.NoError(t, err, "client %d: the current token rotates once the store is well", i)
				totalOK += int(ok[i])
				totalFaults += faults[i]
			}
			// Both outcomes happened often enough for the test to mean something.
			assert.Greater(t, totalOK, clients*rounds/5)
			assert.Greater(t, totalFaults, clients*rounds/5)
			t.Logf("%d rotations, %d refused by faults", totalOK, totalFaults)
		})
	}
}
