package storetest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/refreshkit/refresh"
)

// SoakConfig configures FaultSoak.
type SoakConfig struct {
	// Workers rotate concurrently (default 16), each over Sessions sessions
	// of its own (default 4), for Duration (default: the SOAK_DURATION
	// environment variable, for long runs, or 3 s).
	Workers, Sessions int
	Duration          time.Duration
	// Faults are injected one after another, starting a quarter of the way
	// into the run: each breaks the backend and repairs it before returning
	// (stop and start the server, kill connections). Name them for the
	// report.
	Faults []Fault
}

// Fault is one injected failure of the backend.
type Fault struct {
	Name   string
	Inject func(t *testing.T)
}

// SoakReport is what FaultSoak did and checked.
type SoakReport struct {
	Rotations, Retries, SystemErrors int64 // successful rotations, grace retries among them, refused calls during faults
	Faults                           int   // faults injected
	Sessions, Checks                 int   // sessions at the end, invariant checks passed
}

// String is the report in one line, for logs and the test command's output.
func (r SoakReport) String() string {
	return fmt.Sprintf("%d rotations (%d of them grace retries: two tabs at once, or a lost answer), %d calls failed cleanly during %d faults, %d sessions, %d invariant checks passed",
		r.Rotations, r.Retries, r.SystemErrors, r.Faults, r.Sessions, r.Checks)
}

// soakSession is what a client of one session knows.
type soakSession struct {
	id         string
	token      string          // the newest refresh token it holds
	successors map[string]bool // every distinct successor it was given
	seen       map[string]string
}

// FaultSoak runs workers that rotate their sessions continuously through an
// Issuer (grace window on, as real clients need when answers get lost) on
// st, while cfg.Faults break the backend. It checks, during the run, that
// every failure is a system fault (never the client's, never a wrong
// answer) and that one presented token never gets two different successors;
// and at the end, once the backend is back, that every session continues
// with the newest token its client holds, that none was revoked, and that
// each session's generation equals the number of distinct successors its
// client was given (no rotation lost, none applied twice). Run it against
// a real server; it is the soak test's invariants under faults.
func FaultSoak(t *testing.T, st refresh.Store, cfg SoakConfig) SoakReport {
	t.Helper()
	if cfg.Workers <= 0 {
		cfg.Workers = 16
	}
	if cfg.Sessions <= 0 {
		cfg.Sessions = 4
	}
	if cfg.Duration <= 0 {
		cfg.Duration = 3 * time.Second
		if v := os.Getenv("SOAK_DURATION"); v != "" {
			d, err := time.ParseDuration(v)
			if err != nil {
				t.Fatalf("SOAK_DURATION: %v", err)
			}
			cfg.Duration = d
		}
	}
	iss := NewIssuer(t, st, time.Minute)
	var (
		rep      SoakReport
		rotated  atomic.Int64
		retried  atomic.Int64
		sysErrs  atomic.Int64
		faulting atomic.Bool
		mu       sync.Mutex // guards failures
		failures []string
	)
	fail := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		if len(failures) < 20 {
			failures = append(failures, fmt.Sprintf(format, args...))
		}
	}
	sessions := make([][]*soakSession, cfg.Workers)
	for w := range sessions {
		for i := 0; i < cfg.Sessions; i++ {
			p, err := iss.Issue(context.Background(), fmt.Sprintf("soak-%d-%d-%s", w, i, randID()))
			if err != nil {
				t.Fatal(err)
			}
			sessions[w] = append(sessions[w], &soakSession{id: p.SessionID, token: p.RefreshToken, successors: map[string]bool{}, seen: map[string]string{}})
		}
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < cfg.Workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 7))
			for {
				select {
				case <-stop:
					return
				default:
				}
				s := sessions[w][r.IntN(cfg.Sessions)]
				tok := s.token
				// Sometimes two tabs present the same token at once.
				tries := 1
				if r.IntN(8) == 0 {
					tries = 2
				}
				var twg sync.WaitGroup
				results := make([]*refresh.Pair, tries)
				errs := make([]error, tries)
				for i := 0; i < tries; i++ {
					twg.Add(1)
					go func() {
						defer twg.Done()
						ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
						defer cancel()
						results[i], errs[i] = iss.Rotate(ctx, tok)
					}()
				}
				twg.Wait()
				for i := 0; i < tries; i++ {
					err, p := errs[i], results[i]
					switch {
					case err != nil && refresh.IsClientError(err):
						fail("session %s: a client error for the newest token (faulting: %v): %v", s.id, faulting.Load(), err)
					case err != nil:
						sysErrs.Add(1)
						if !faulting.Load() {
							// Allowed just after a repair, while pools reconnect.
							time.Sleep(10 * time.Millisecond)
						}
					default:
						rotated.Add(1)
						if prev, ok := s.seen[tok]; ok {
							retried.Add(1)
							if prev != p.RefreshToken {
								fail("session %s: one token got two different successors", s.id)
							}
						}
						s.seen[tok] = p.RefreshToken
						s.successors[p.RefreshToken] = true
						s.token = p.RefreshToken
					}
				}
			}
		}()
	}

	time.Sleep(cfg.Duration / 4)
	for _, f := range cfg.Faults {
		faulting.Store(true)
		t.Logf("fault: %s", f.Name)
		f.Inject(t)
		faulting.Store(false)
		rep.Faults++
		time.Sleep(cfg.Duration / time.Duration(2*len(cfg.Faults)+2))
	}
	time.Sleep(cfg.Duration / 4)
	close(stop)
	wg.Wait()
	mu.Lock()
	for _, f := range failures {
		t.Error(f)
	}
	mu.Unlock()

	// Afterwards every session continues, none was revoked, and its
	// generation counts exactly the successors its client saw.
	for _, list := range sessions {
		for _, s := range list {
			var p *refresh.Pair
			var err error
			deadline := time.Now().Add(30 * time.Second)
			for {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				p, err = iss.Rotate(ctx, s.token)
				cancel()
				if err == nil || refresh.IsClientError(err) || time.Now().After(deadline) {
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
			if err != nil {
				t.Fatalf(`rule "after the faults every session continues": session %s: %v`, s.id, err)
			}
			s.successors[p.RefreshToken] = true
			got := mustGet(t, st, s.id)
			if got.Revoked() {
				t.Fatalf(`rule "faults revoke nothing": session %s revoked (%s)`, s.id, got.RevokeReason)
			}
			if got.Generation != uint64(len(s.successors)) {
				t.Fatalf(`rule "no rotation lost or applied twice": session %s has generation %d, its client saw %d successors`, s.id, got.Generation, len(s.successors))
			}
			rep.Sessions++
			rep.Checks += 3
		}
	}
	rep.Rotations, rep.Retries, rep.SystemErrors = rotated.Load(), retried.Load(), sysErrs.Load()
	if rep.Faults > 0 && rep.SystemErrors == 0 {
		t.Errorf("%d faults injected but no call failed: the faults did not reach the store", rep.Faults)
	}
	return rep
}
