package storetest

import (
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/refreshkit/refresh"
)

// WithSecondInstance gives Run a way to open a second instance of the
// adapter on the backend of a subtest's store, as a second process of the
// service would open it: its own connections and its own in-process state,
// the same database. Run then races the atomic methods across the two
// instances and checks that each sees the other's writes at once. An
// adapter that makes a compare-and-swap atomic with a lock held in its own
// process (a sync.Mutex around a read and a write), or that answers Get
// from a cache in its process, passes every check on one instance and
// gives one refresh token two successors, or keeps a revoked session
// usable, as soon as a service runs twice. Without this option the check
// is skipped, and says so. A store that lives in one process (MemoryStore)
// has no second instance.
func WithSecondInstance(open func(t *testing.T, first refresh.Store) refresh.Store) Option {
	return func(o *options) { o.second = open }
}

// testTwoInstances runs the checks of WithSecondInstance on a and b, two
// instances of one store on one backend.
func testTwoInstances(t *testing.T, a, b refresh.Store) {
	on := func(i int) refresh.Store { return [2]refresh.Store{a, b}[i%2] }
	t.Run("SeeEachOthersWrites", func(t *testing.T) { testSeeEachOther(t, a, b) })
	t.Run("CreateRace", func(t *testing.T) {
		s := newSession(subject(t), base)
		wins := race(t, func(i int) error { return on(i).Create(ctx(t), s.Clone()) }, func(err error) bool {
			return errors.Is(err, refresh.ErrSessionExists)
		})
		if wins != 1 {
			t.Fatalf(`rule "Create is atomic across processes": %d of %d concurrent Create calls of one session on two instances succeeded, want exactly 1`, wins, racers)
		}
	})
	t.Run("AdvanceRace", func(t *testing.T) {
		s := newSession(subject(t), base)
		mustCreate(t, a, s)
		for gen := uint64(0); gen < 3; gen++ {
			wins := race(t, func(i int) error {
				return on(i).Advance(ctx(t), s.ID, gen, base.Add(time.Duration(i+1)*time.Second))
			}, isConflict)
			if wins != 1 {
				t.Fatalf(`rule "Advance is one atomic compare-and-swap in the backend, not in one process": generation %d: %d of %d concurrent Advance calls on two instances succeeded, want exactly 1`, gen, wins, racers)
			}
			if got := mustGet(t, b, s.ID).Generation; got != gen+1 {
				t.Fatalf("generation after the race: %d, want %d", got, gen+1)
			}
		}
		tightRounds(t, `rule "Advance is one atomic compare-and-swap in the backend, not in one process"`, func(r, i int) error {
			return on(i).Advance(ctx(t), s.ID, 3+uint64(r), base.Add(time.Duration(r+4)*time.Hour+time.Duration(i)))
		}, isConflict)
	})
	t.Run("UseGraceRace", func(t *testing.T) {
		for round := 0; round < 4; round++ {
			s := newSession(subject(t), base)
			mustCreate(t, a, s)
			const limit = 10
			wins := race(t, func(i int) error { return on(i).UseGrace(ctx(t), s.ID, 0, limit) }, isConflict)
			if wins != limit {
				t.Fatalf(`rule "UseGrace is atomic across processes": round %d: %d of %d concurrent UseGrace calls on two instances succeeded with limit %d`, round, wins, racers, limit)
			}
		}
		s := newSession(subject(t), base)
		mustCreate(t, a, s)
		tightRounds(t, `rule "UseGrace is atomic across processes"`, func(r, i int) error {
			return on(i).UseGrace(ctx(t), s.ID, 0, uint32(r+1)) // exactly one use per round
		}, isConflict)
	})
	aa, okA := a.(refresh.ActiveAdvancer)
	ab, okB := b.(refresh.ActiveAdvancer)
	if okA && okB {
		t.Run("AdvanceActiveRace", func(t *testing.T) {
			s := newSession(subject(t), base)
			mustCreate(t, a, s)
			// swap k: AdvanceActive on instance a (0) or b (1), Advance on a (2) or b (3).
			swap := func(k int, gen uint64, at time.Time) error {
				switch k {
				case 0:
					return aa.AdvanceActive(ctx(t), s.ID, gen, at, base.Add(-time.Hour))
				case 1:
					return ab.AdvanceActive(ctx(t), s.ID, gen, at, base.Add(-time.Hour))
				default:
					return on(k).Advance(ctx(t), s.ID, gen, at)
				}
			}
			for gen := uint64(0); gen < 3; gen++ {
				wins := race(t, func(i int) error {
					return swap(i%4, gen, base.Add(time.Duration(i+1)*time.Second)) // both methods, on both instances
				}, isConflict)
				if wins != 1 {
					t.Fatalf(`rule "AdvanceActive and Advance are atomic together, across processes": generation %d: %d of %d concurrent swaps on two instances succeeded, want exactly 1`, gen, wins, racers)
				}
			}
			tightRounds(t, `rule "AdvanceActive and Advance are atomic together, across processes"`, func(r, i int) error {
				return swap((r+i)%4, 3+uint64(r), base.Add(time.Duration(r+4)*time.Hour+time.Duration(i)))
			}, isConflict)
		})
	}
	pa, okA := a.(refresh.ProofRecorder)
	pb, okB := b.(refresh.ProofRecorder)
	if okA && okB {
		t.Run("RecordProofRace", func(t *testing.T) {
			id := "storetest-two-" + randID()
			now := base.Add(24 * time.Hour) // its expiry in the future, however long the run (a backend may drop it then)
			wins := race(t, func(i int) error {
				return [2]refresh.ProofRecorder{pa, pb}[i%2].RecordProof(ctx(t), id, now, now.Add(2*time.Minute))
			}, func(err error) bool { return errors.Is(err, refresh.ErrProofReplayed) })
			if wins != 1 {
				t.Fatalf(`rule "RecordProof is atomic across processes": %d of %d concurrent records of one proof on two instances succeeded, want exactly 1 (a replay accepted)`, wins, racers)
			}
			tightRounds(t, `rule "RecordProof is atomic across processes"`, func(r, i int) error {
				return [2]refresh.ProofRecorder{pa, pb}[i%2].RecordProof(ctx(t), id+"-"+strconv.Itoa(r), now, now.Add(2*time.Minute))
			}, func(err error) bool { return errors.Is(err, refresh.ErrProofReplayed) })
		})
	}
	t.Run("RevocationsStand", func(t *testing.T) { testRevocationsStand(t, a, b) })
	t.Run("IssuerRace", func(t *testing.T) {
		// Two instances of a service, grace 0: one token presented to both
		// at once has exactly one successor, and the session ends.
		ia := NewIssuer(t, a, 0)
		ib := NewIssuerWithKeysOf(t, ia, b)
		p, err := ia.Issue(ctx(t), subject(t))
		if err != nil {
			t.Fatal(err)
		}
		_, errs := rotateRace(p.RefreshToken, ia, ib)
		strictRaceOutcome(t, b, p.SessionID, errs, "two service instances")
	})
}

// testSeeEachOther: what one instance writes, the other reads at once,
// also after it has read the session before (no cache in the process).
func testSeeEachOther(t *testing.T, a, b refresh.Store) {
	const rule = `rule "every instance sees every write at once" (no session cache in the store's process)`
	s := newSession(subject(t), base)
	mustCreate(t, a, s)
	if d := equal(s, mustGet(t, b, s.ID)); d != "" {
		t.Fatalf("%s: created on one instance, read on the other: %s", rule, d)
	}
	at := base.Add(time.Second + 5*time.Nanosecond)
	if err := a.Advance(ctx(t), s.ID, 0, at); err != nil {
		t.Fatal(err)
	}
	if got := mustGet(t, b, s.ID); got.Generation != 1 || !got.RotatedAt.Equal(at) {
		t.Fatalf("%s: advanced on one instance, the other reads generation %d rotated %v, want 1 and %v", rule, got.Generation, got.RotatedAt, at)
	}
	if err := b.UseGrace(ctx(t), s.ID, 1, 5); err != nil {
		t.Fatal(err)
	}
	if got := mustGet(t, a, s.ID); got.GraceUses != 1 {
		t.Fatalf("%s: a grace retry on one instance, the other reads GraceUses %d, want 1", rule, got.GraceUses)
	}
	revoked := at.Add(time.Minute)
	if err := b.Revoke(ctx(t), s.ID, revoked, "reuse"); err != nil {
		t.Fatal(err)
	}
	if got := mustGet(t, a, s.ID); !got.Revoked() || !got.RevokedAt.Equal(revoked) {
		t.Fatalf("%s: revoked on one instance, the other reads RevokedAt %v, want %v", rule, got.RevokedAt, revoked)
	}
	if err := a.Advance(ctx(t), s.ID, 1, revoked.Add(time.Second)); !errors.Is(err, refresh.ErrConflict) {
		t.Fatalf("%s: Advance of a session revoked on the other instance: %v, want ErrConflict", rule, err)
	}
}
