// Package storetest is the refresh.Store contract in executable form. A store
// adapter calls Run from its own tests; an adapter that passes is correct for
// the Issuer:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) refresh.Store { return newTestStore(t) },
//			storetest.WithBrokenStore(func(t *testing.T) refresh.Store { return newStoreOnDeadBackend(t) }),
//			storetest.WithSecondInstance(func(t *testing.T, first refresh.Store) refresh.Store { return openLike(t, first) }))
//	}
//
// WARNING: Run creates, revokes and deletes sessions, and its expiry checks
// delete every session in the store that expires before the year 3000.
// Never run it against a database that holds real sessions.
//
// Run checks, each failure naming the rule of the contract (the Store
// comments in package refresh) it breaks: creation and duplicates, exact
// round trips of every field (claims as the same JSON value with numbers
// exact, also in access tokens minted from the stored session) and of
// times from 1970 to 2262 at nanosecond precision, not-found answers,
// compare-and-swap advances (64 goroutines, exactly one winner; then tight
// rounds of one goroutine per CPU started within nanoseconds of each other,
// for Advance, AdvanceActive, UseGrace and RecordProof, which catch a check
// and a write made back to back under two locks in one process), bounded
// grace counters, revocation idempotence (the first time kept, for the
// stale sweep too), revocations that stand when they race a rotation or a
// grace retry,
// subjects compared as exact bytes (case, SQL and glob wildcards, prefixes
// and "subject:" key prefixes, Unicode look-alikes and normalisations,
// 4-byte characters), scopes and metadata that a text encoding must escape,
// subject revocation counts and listings past 1,000-row pages, listing
// isolation and a deterministic order, also through an id a session of
// another subject had before it was swept or dropped, batched expiry
// deletion at its exact boundary that keeps revoked and unexpired sessions,
// sweep cut-offs before 1678 and after 2262, DPoP proof records swept at
// their exact expiry, limits of zero and below, aliasing of passed and returned values, cancelled contexts, system
// faults that must not look like sentinels (WithBrokenStore); and, through an
// Issuer on the store, 64 goroutines rotating one refresh token with grace 0
// (exactly one wins) and 32 and 64 concurrent refreshes over HTTP with a
// grace window (all receive the same successor, nobody is logged out); with
// WithSecondInstance, the same races across two instances on one backend,
// and that each instance sees the other's writes at once.
//
// Every date is relative to the start of the test binary and every session
// it keeps expires in the future, so a store whose backend drops sessions at
// ExpiresAt passes on any date. Each subtest uses fresh random ids and
// subjects, so a store that is shared between subtests (one database) is
// fine.
package storetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"math/big"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/refreshkit/refresh"
)

// Option configures Run.
type Option func(*options)

type options struct {
	broken func(t *testing.T) refresh.Store
	second func(t *testing.T, first refresh.Store) refresh.Store
}

// WithBrokenStore gives Run a way to make a store of the adapter whose
// backend fails every call (a pool pointed at a closed port, a database file
// locked by another process, ...). Run then checks that each method reports
// the failure as a system fault: a non-nil error matching none of the
// sentinels. Without it that check is skipped, and says so.
func WithBrokenStore(f func(t *testing.T) refresh.Store) Option {
	return func(o *options) { o.broken = f }
}

// Run runs the conformance suite. newStore is called once per subtest and
// may return the same store every time.
func Run(t *testing.T, newStore func(t *testing.T) refresh.Store, opts ...Option) {
	t.Helper()
	var o options
	for _, f := range opts {
		f(&o)
	}
	tests := []struct {
		name string
		f    func(t *testing.T, s refresh.Store)
	}{
		{"CreateGetRoundTrip", testCreateGet},
		{"CreateDuplicate", testDuplicate},
		{"NotFound", testNotFound},
		{"Advance", testAdvance},
		{"AdvanceConflict", testAdvanceConflict},
		{"AdvanceRevoked", testAdvanceRevoked},
		{"AdvanceConcurrent", testAdvanceConcurrent},
		{"AdvanceActive", testAdvanceActive},
		{"UseGrace", testUseGrace},
		{"UseGraceConcurrent", testUseGraceConcurrent},
		{"RevokeIdempotent", testRevokeIdempotent},
		{"RevocationsStand", func(t *testing.T, st refresh.Store) { testRevocationsStand(t, st, st) }},
		{"RevokeSubject", testRevokeSubject},
		{"SessionsIsolationAndOrder", testSessions},
		{"DeleteExpiredBoundary", testDeleteExpiredBoundary},
		{"DeleteExpiredBatches", testDeleteExpiredBatches},
		{"DeleteExpiredFarFuture", testDeleteExpiredFarFuture},
		{"SweepFarPast", testSweepFarPast},
		{"ReusedIDBelongsToItsNewSubject", testReusedID},
		{"NoAliasing", testAliasing},
		{"CancelledContext", testCancelled},
		{"IssuerConcurrentStrict", testIssuerStrict},
		{"IssuerConcurrentGrace", testIssuerGrace},
		{"IssuerClaimsExact", testIssuerClaims},
		{"TimeRange", testTimeRange},
		{"LongValuesKeptWhole", testLongValuesKeptWhole},
		{"SubjectsCompareExactly", testSubjectsExact},
		{"IDsCompareExactly", testIDsExact},
		{"ManySessionsPerSubject", testManySessions},
		{"SessionsOrderDeterministic", testSessionsOrder},
		{"DeleteExpiredKeepsWhatMustStay", testDeleteExpiredKeeps},
		{"DeleteStale", testDeleteStale},
		{"SweepKeepsChurnFlat", testChurn},
		{"RecordProof", testRecordProof},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.f(t, newStore(t))
		})
	}
	t.Run("TwoInstances", func(t *testing.T) {
		if o.second == nil {
			t.Skip("no WithSecondInstance given: cannot race two instances of the store on one backend (a swap atomic only within one process, or a cache in it, goes unseen)")
		}
		first := newStore(t)
		testTwoInstances(t, first, o.second(t, first))
	})
	t.Run("FaultsAreNotSentinels", func(t *testing.T) {
		if o.broken == nil {
			t.Skip("no WithBrokenStore given: cannot check that backend faults are reported as system faults")
		}
		testFaults(t, o.broken(t))
	})
}

// base is the start of the test binary, with a nanosecond part to catch
// stores that round times. Every session the suite keeps expires after it,
// so the suite is no time bomb for stores whose backend drops sessions at
// ExpiresAt. It is read in a zone west of UTC, and sessions' own times in
// one east of it (mustCreate), so that a store keeping wall clocks without
// their zone, or comparing times as text, keeps wrong instants or compares
// them wrongly: times are instants, whatever their Location.
var base = time.Now().UTC().Truncate(time.Second).Add(123456789).In(westZone)

var (
	westZone = time.FixedZone("storetest-west", -(7*3600 + 30*60))
	eastZone = time.FixedZone("storetest-east", 5*3600+45*60)
)

func randID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// appClaims are application claims with numbers no float64 holds and
// markup that encoding/json escapes.
func appClaims() map[string]any {
	return map[string]any{
		"roles":  []string{"admin"},
		"uid":    uint64(1<<53 + 1),
		"tenant": map[string]any{"id": uint64(math.MaxUint64), "name": "a<b>&c"},
		"ratio":  json.Number("2.50E1"), // jsonb writes 25.0: the same value
	}
}

// claims are appClaims as Issue stores them: encoding/json's output,
// members in byte order.
var claims = func() []byte {
	b, err := json.Marshal(appClaims())
	if err != nil {
		panic(err)
	}
	return b
}()

// newSession returns a session with every field set.
func newSession(subject string, created time.Time) *refresh.Session {
	seed := make([]byte, 32)
	_, _ = rand.Read(seed)
	return &refresh.Session{
		ID:         randID(),
		Subject:    subject,
		ClientID:   "client-" + subject,
		DPoPKey:    "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs",
		Generation: 0,
		Seed:       seed,
		// Not sorted: order is kept. A scope token may hold , ; = { } [ ] (RFC 6749 §3.3).
		Scope:  []string{"write", "read", "admin:all", "files:read,write;v={2}"},
		Claims: slices.Clone(claims),
		// Values hold what a text encoding must escape, and a 4-byte character.
		Meta:      map[string]string{"ip": "192.0.2.1", "ua": "test/1.0 (a=b; c, \"d\" \\ é \U0001F600)\nip=203.0.113.9"},
		CreatedAt: created,
		RotatedAt: created,
		ExpiresAt: created.Add(90 * 24 * time.Hour),
	}
}

func subject(t *testing.T) string { return "user-" + randID() }

func ctx(t *testing.T) context.Context { return t.Context() }

// mustCreate creates s, its times read in eastZone (the same instants):
// the suite's calls then compare them with times in westZone.
func mustCreate(t *testing.T, st refresh.Store, s *refresh.Session) {
	t.Helper()
	s.CreatedAt, s.RotatedAt, s.ExpiresAt = s.CreatedAt.In(eastZone), s.RotatedAt.In(eastZone), s.ExpiresAt.In(eastZone)
	if !s.RevokedAt.IsZero() {
		s.RevokedAt = s.RevokedAt.In(eastZone)
	}
	if err := st.Create(ctx(t), s); err != nil {
		t.Fatalf("Create: %v", err)
	}
}

func mustGet(t *testing.T, st refresh.Store, id string) *refresh.Session {
	t.Helper()
	s, err := st.Get(ctx(t), id)
	if err != nil {
		t.Fatalf("Get(%q) of a session that must be there: %v (rule: a store never drops a session before its ExpiresAt; check precision and that no other call deleted it)", id, err)
	}
	if s == nil || s.ID != id {
		t.Fatalf(`rule "Get returns the session with the ID asked for, or an error": Get(%q) returned %v and no error`, id, s)
	}
	return s
}

// equal reports the first difference between two sessions, or "".
func equal(want, got *refresh.Session) string {
	switch {
	case want.ID != got.ID:
		return fmt.Sprintf("ID %q, want %q", got.ID, want.ID)
	case want.Subject != got.Subject:
		return fmt.Sprintf("Subject %q, want %q", got.Subject, want.Subject)
	case want.ClientID != got.ClientID:
		return fmt.Sprintf("ClientID %q, want %q", got.ClientID, want.ClientID)
	case want.DPoPKey != got.DPoPKey:
		return fmt.Sprintf("DPoPKey %q, want %q", got.DPoPKey, want.DPoPKey)
	case want.Generation != got.Generation:
		return fmt.Sprintf("Generation %d, want %d", got.Generation, want.Generation)
	case want.GraceUses != got.GraceUses:
		return fmt.Sprintf("GraceUses %d, want %d", got.GraceUses, want.GraceUses)
	case string(want.Seed) != string(got.Seed):
		return "Seed differs"
	case !slices.Equal(want.Scope, got.Scope):
		return fmt.Sprintf("Scope %q, want %q", got.Scope, want.Scope)
	case !jsonEqual(want.Claims, got.Claims):
		return fmt.Sprintf("Claims %s, want %s (the same JSON value: members may move and white space and escapes change, numbers must stay exact; decoding into float64 rounds integers above 2^53)", got.Claims, want.Claims)
	case !maps.Equal(want.Meta, got.Meta):
		return fmt.Sprintf("Meta %q, want %q", got.Meta, want.Meta)
	case !want.CreatedAt.Equal(got.CreatedAt):
		return fmt.Sprintf("CreatedAt %v, want %v", got.CreatedAt, want.CreatedAt)
	case !want.RotatedAt.Equal(got.RotatedAt):
		return fmt.Sprintf("RotatedAt %v, want %v", got.RotatedAt, want.RotatedAt)
	case !want.ExpiresAt.Equal(got.ExpiresAt):
		return fmt.Sprintf("ExpiresAt %v, want %v", got.ExpiresAt, want.ExpiresAt)
	case !want.RevokedAt.Equal(got.RevokedAt):
		return fmt.Sprintf("RevokedAt %v, want %v", got.RevokedAt, want.RevokedAt)
	case want.RevokeReason != got.RevokeReason:
		return fmt.Sprintf("RevokeReason %q, want %q", got.RevokeReason, want.RevokeReason)
	}
	return ""
}

// jsonEqual reports whether two claims sets are the same JSON value. A
// store may reorder members and change white space and string escapes (a
// Postgres jsonb column does all three); it may not change a number, not
// even its last digit, which a store decoding claims into float64 does to
// every integer above 2^53. Numbers compare by exact decimal value, so 1e2
// and 100 (jsonb's rewriting) are equal.
func jsonEqual(a, b []byte) bool {
	if len(a) == 0 && len(b) == 0 {
		return true
	}
	var x, y any
	if decodeExact(a, &x) != nil || decodeExact(b, &y) != nil {
		return false
	}
	return sameJSON(x, y)
}

func decodeExact(b []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	if err := d.Decode(v); err != nil {
		return err
	}
	if _, err := d.Token(); err != io.EOF {
		return errors.New("trailing data")
	}
	return nil
}

func sameJSON(x, y any) bool {
	switch x := x.(type) {
	case map[string]any:
		y, ok := y.(map[string]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for k, v := range x {
			w, ok := y[k]
			if !ok || !sameJSON(v, w) {
				return false
			}
		}
		return true
	case []any:
		y, ok := y.([]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if !sameJSON(x[i], y[i]) {
				return false
			}
		}
		return true
	case json.Number:
		y, ok := y.(json.Number)
		if !ok {
			return false
		}
		var p, q big.Rat
		_, okp := p.SetString(string(x))
		_, okq := q.SetString(string(y))
		return okp && okq && p.Cmp(&q) == 0
	}
	return x == y // string, bool, nil
}

func expectSame(t *testing.T, want, got *refresh.Session) {
	t.Helper()
	if d := equal(want, got); d != "" {
		t.Fatalf("rule \"a store keeps every field exactly as given\" (Create, Get): stored session differs: %s", d)
	}
}

func testCreateGet(t *testing.T, st refresh.Store) {
	s := newSession(subject(t), base)
	mustCreate(t, st, s)
	expectSame(t, s, mustGet(t, st, s.ID))

	// So does one with no field at its zero value: a store keeps what it is
	// given, it does not initialise counters or revocation.
	full := newSession(subject(t), base)
	full.Generation, full.GraceUses = 1<<40+7, 2
	full.RevokedAt, full.RevokeReason = base.Add(time.Minute+3*time.Nanosecond), "reuse"
	mustCreate(t, st, full)
	expectSame(t, full, mustGet(t, st, full.ID))

	// A session with empty optional fields round-trips too.
	bare := &refresh.Session{ID: randID(), Subject: subject(t), Seed: make([]byte, 32),
		CreatedAt: base, RotatedAt: base, ExpiresAt: base.Add(time.Hour)}
	mustCreate(t, st, bare)
	got := mustGet(t, st, bare.ID)
	expectSame(t, bare, got)
	if got.Revoked() {
		t.Fatal("a new session must not be revoked")
	}

	// And so does one with a single optional field set, each in turn (a
	// store that keeps the rarer fields apart, and decides from some of
	// them whether there are any, loses the one it forgot): a session
	// restored from a backup may be revoked and have nothing else.
	for name, set := range map[string]func(*refresh.Session){
		"ClientID":  func(s *refresh.Session) { s.ClientID = "client" },
		"DPoPKey":   func(s *refresh.Session) { s.DPoPKey = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs" },
		"Scope":     func(s *refresh.Session) { s.Scope = []string{"read"} },
		"Claims":    func(s *refresh.Session) { s.Claims = []byte(`{"role":"admin"}`) },
		"Meta":      func(s *refresh.Session) { s.Meta = map[string]string{"ip": "192.0.2.1"} },
		"GraceUses": func(s *refresh.Session) { s.GraceUses = 1 },
		"revoked": func(s *refresh.Session) {
			s.RevokedAt, s.RevokeReason = base.Add(time.Minute), "logout"
		},
	} {
		one := &refresh.Session{ID: randID(), Subject: subject(t), Seed: make([]byte, 32),
			CreatedAt: base, RotatedAt: base, ExpiresAt: base.Add(time.Hour)}
		set(one)
		mustCreate(t, st, one)
		if d := equal(one, mustGet(t, st, one.ID)); d != "" {
			t.Errorf("rule \"a store keeps every field exactly as given\" (Create, Get): a session with only %s of the optional fields set differs: %s", name, d)
		}
	}
}

func testDuplicate(t *testing.T, st refresh.Store) {
	s := newSession(subject(t), base)
	mustCreate(t, st, s)
	other := newSession(subject(t), base.Add(time.Hour))
	other.ID = s.ID
	if err := st.Create(ctx(t), other); !errors.Is(err, refresh.ErrSessionExists) {
		t.Fatalf("Create of a taken id: %v, want ErrSessionExists", err)
	}
	expectSame(t, s, mustGet(t, st, s.ID))
	if list, _ := st.Sessions(ctx(t), other.Subject); len(list) != 0 {
		t.Fatalf("a refused Create left %d sessions under its subject", len(list))
	}
}

func testNotFound(t *testing.T, st refresh.Store) {
	id := randID()
	if _, err := st.Get(ctx(t), id); !errors.Is(err, refresh.ErrSessionNotFound) {
		t.Errorf("Get: %v, want ErrSessionNotFound", err)
	}
	if err := st.Advance(ctx(t), id, 0, base); !errors.Is(err, refresh.ErrSessionNotFound) {
		t.Errorf("Advance: %v, want ErrSessionNotFound", err)
	}
	if err := st.UseGrace(ctx(t), id, 0, 3); !errors.Is(err, refresh.ErrSessionNotFound) {
		t.Errorf("UseGrace: %v, want ErrSessionNotFound", err)
	}
	if err := st.Revoke(ctx(t), id, base, "x"); !errors.Is(err, refresh.ErrSessionNotFound) {
		t.Errorf("Revoke: %v, want ErrSessionNotFound", err)
	}
	if n, err := st.RevokeSubject(ctx(t), subject(t), base, "x"); err != nil || n != 0 {
		t.Errorf("RevokeSubject of unknown subject: %d, %v; want 0, nil", n, err)
	}
	list, err := st.Sessions(ctx(t), subject(t))
	if err != nil || len(list) != 0 {
		t.Errorf("Sessions of unknown subject: %d, %v; want 0, nil", len(list), err)
	}
}

func testAdvance(t *testing.T, st refresh.Store) {
	s := newSession(subject(t), base)
	mustCreate(t, st, s)
	if err := st.UseGrace(ctx(t), s.ID, 0, 5); err != nil {
		t.Fatalf("UseGrace: %v", err)
	}
	at := base.Add(time.Minute + time.Nanosecond)
	if err := st.Advance(ctx(t), s.ID, 0, at); err != nil {
		t.Fatalf("Advance: %v", err)
	}
	want := s.Clone()
	want.Generation, want.RotatedAt, want.GraceUses = 1, at, 0
	expectSame(t, want, mustGet(t, st, s.ID))
	at2 := at.Add(time.Second)
	if err := st.Advance(ctx(t), s.ID, 1, at2); err != nil {
		t.Fatalf("second Advance: %v", err)
	}
	want.Generation, want.RotatedAt = 2, at2
	expectSame(t, want, mustGet(t, st, s.ID))
}

func testAdvanceConflict(t *testing.T, st refresh.Store) {
	s := newSession(subject(t), base)
	mustCreate(t, st, s)
	for _, from := range []uint64{1, 2, 1 << 62} {
		if err := st.Advance(ctx(t), s.ID, from, base.Add(time.Hour)); !errors.Is(err, refresh.ErrConflict) {
			t.Fatalf("Advance from %d at generation 0: %v, want ErrConflict", from, err)
		}
	}
	expectSame(t, s, mustGet(t, st, s.ID))
}

func testAdvanceRevoked(t *testing.T, st refresh.Store) {
	s := newSession(subject(t), base)
	mustCreate(t, st, s)
	if err := st.Revoke(ctx(t), s.ID, base.Add(time.Second), "logout"); err != nil {
		t.Fatal(err)
	}
	if err := st.Advance(ctx(t), s.ID, 0, base.Add(time.Hour)); !errors.Is(err, refresh.ErrConflict) {
		t.Fatalf("Advance of a revoked session: %v, want ErrConflict", err)
	}
	if err := st.UseGrace(ctx(t), s.ID, 0, 5); !errors.Is(err, refresh.ErrConflict) {
		t.Fatalf("UseGrace of a revoked session: %v, want ErrConflict", err)
	}
	got := mustGet(t, st, s.ID)
	if got.Generation != 0 || !got.RotatedAt.Equal(base) || got.GraceUses != 0 {
		t.Fatalf("revoked session changed: generation %d, rotated %v, grace %d", got.Generation, got.RotatedAt, got.GraceUses)
	}
}

const racers = 64

// race runs f from racers goroutines released together and counts nil
// results; every other result must satisfy ok.
func race(t *testing.T, f func(i int) error, ok func(error) bool) int {
	t.Helper()
	wins, _ := raceN(t, racers, false, f, ok)
	return wins
}

// busySpins is how many turns a busy spin at raceN's barrier takes before
// it yields: a few microseconds.
const busySpins = 1 << 14

// raceN runs f from n goroutines released together by a spinning barrier,
// not a closed channel: goroutines woken from a channel start one by one,
// microseconds apart, and a check-then-write bug with little between its
// steps slips through; spinning ones on every CPU start together. With
// busy the spin does not yield for its first busySpins turns, which starts
// them within nanoseconds of each other; use it only with n <= GOMAXPROCS.
// overlapped reports whether any two calls ran at the same time (on a busy
// machine, one may start only after another ended).
func raceN(t *testing.T, n int, busy bool, f func(i int) error, ok func(error) bool) (wins int, overlapped bool) {
	t.Helper()
	var won atomic.Int64
	var wg sync.WaitGroup
	var ready atomic.Int64
	errs := make(chan error, n)
	spans := make([][2]time.Time, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ready.Add(1)
			for spins := 0; ready.Load() < int64(n); spins++ {
				// A busy spin lasts a few microseconds at most: past that
				// the others are not running (a busy machine), and
				// spinning on would only keep them off the CPU.
				if !busy || spins >= busySpins {
					runtime.Gosched()
				}
			}
			start := time.Now()
			err := f(i)
			spans[i] = [2]time.Time{start, time.Now()}
			if err == nil {
				won.Add(1)
			} else if !ok(err) {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	seen := map[string]int{}
	var order []string
	for err := range errs {
		if seen[err.Error()] == 0 {
			order = append(order, err.Error())
		}
		seen[err.Error()]++
	}
	for _, msg := range order {
		t.Errorf("%d of %d concurrent calls failed with an unexpected error (rule: a lost race is ErrConflict, nothing else): %s", seen[msg], n, msg)
	}
	slices.SortFunc(spans, func(a, b [2]time.Time) int { return a[0].Compare(b[0]) })
	var end time.Time // the latest end of the calls started so far
	for i, sp := range spans {
		if i > 0 && sp[0].Before(end) {
			overlapped = true
		}
		if sp[1].After(end) {
			end = sp[1]
		}
	}
	return int(won.Load()), overlapped
}

// Tight rounds: after the 64-racer races, which a store reached over the
// network loses whenever its check and its write are two statements, the
// same rule is raced again in many small rounds of one goroutine per CPU
// released within nanoseconds of each other, to catch the in-process form
// of the bug (a check under a read lock, the write under the write lock:
// a window of nanoseconds, which a round of 64 hits only by luck; measured
// on 2 CPUs, one round of 64 in 200 caught it, a tight round two in three).
// Only rounds whose calls overlapped count: on a busy machine a goroutine
// may get a CPU only after the other finished, and such a round tests
// nothing.
const (
	tightOverlaps  = 64                     // rounds whose calls ran at once
	tightMaxRounds = 10000                  // however few overlapped
	tightBudget    = 100 * time.Millisecond // however few overlapped, once tightMinRounds ran
	tightMinRounds = 16
)

// tightRounds runs round after round of raceN with busy spinning, n =
// GOMAXPROCS (2 to 8) goroutines: round r calls f(r, i) in goroutine i and
// must see exactly one call succeed, all others satisfying ok; what says
// which rule is broken. It stops after tightOverlaps rounds whose calls
// overlapped, or tightMaxRounds, or tightBudget (at least tightMinRounds).
func tightRounds(t *testing.T, what string, f func(r, i int) error, ok func(error) bool) {
	t.Helper()
	n := min(max(runtime.GOMAXPROCS(0), 2), 8)
	busy := runtime.GOMAXPROCS(0) >= n
	began := time.Now()
	r, overlaps := 0, 0
	for ; overlaps < tightOverlaps && r < tightMaxRounds && (r < tightMinRounds || time.Since(began) < tightBudget); r++ {
		wins, overlapped := raceN(t, n, busy, func(i int) error { return f(r, i) }, ok)
		if wins != 1 {
			t.Fatalf("%s: tight round %d: %d of %d calls started together succeeded, want exactly 1", what, r, wins, n)
		}
		if overlapped {
			overlaps++
		}
	}
	switch {
	case overlaps >= tightOverlaps:
	case runtime.GOMAXPROCS(0) < 2 && overlaps == 0:
		t.Logf("%s: one CPU (GOMAXPROCS=1) runs no two calls at the same time, so %d tight rounds tried nothing: run the suite on a machine with two or more CPUs too", what, r)
	default:
		t.Logf("%s: only %d of %d tight rounds ran their calls at the same time (a busy machine?): an in-process check-then-write bug may go unseen; run the suite on an idle machine too", what, overlaps, r)
	}
}

func isConflict(err error) bool { return errors.Is(err, refresh.ErrConflict) }

func testAdvanceConcurrent(t *testing.T, st refresh.Store) {
	s := newSession(subject(t), base)
	mustCreate(t, st, s)
	for gen := uint64(0); gen < 3; gen++ {
		wins := race(t, func(i int) error {
			return st.Advance(ctx(t), s.ID, gen, base.Add(time.Duration(i+1)*time.Second))
		}, isConflict)
		if wins != 1 {
			t.Fatalf("generation %d: %d of %d concurrent Advance calls succeeded, want exactly 1", gen, wins, racers)
		}
		if got := mustGet(t, st, s.ID).Generation; got != gen+1 {
			t.Fatalf("generation after the race: %d, want %d", got, gen+1)
		}
	}
	tightRounds(t, `rule "Advance is one atomic compare-and-swap"`, func(r, i int) error {
		return st.Advance(ctx(t), s.ID, 3+uint64(r), base.Add(time.Duration(r+4)*time.Hour+time.Duration(i)))
	}, isConflict)
}

func testUseGrace(t *testing.T, st refresh.Store) {
	s := newSession(subject(t), base)
	mustCreate(t, st, s)
	for i := 0; i < 3; i++ {
		if err := st.UseGrace(ctx(t), s.ID, 0, 3); err != nil {
			t.Fatalf("UseGrace %d of 3: %v", i+1, err)
		}
	}
	if err := st.UseGrace(ctx(t), s.ID, 0, 3); !errors.Is(err, refresh.ErrConflict) {
		t.Fatalf("UseGrace past the limit: %v, want ErrConflict", err)
	}
	if err := st.UseGrace(ctx(t), s.ID, 1, 100); !errors.Is(err, refresh.ErrConflict) {
		t.Fatalf("UseGrace of another generation: %v, want ErrConflict", err)
	}
	// UseGrace changes the count and nothing else: a store that also
	// touched RotatedAt (a last-used column) would move the grace window and
	// the idle expiry on with every retry.
	want := s.Clone()
	want.GraceUses = 3
	if d := equal(want, mustGet(t, st, s.ID)); d != "" {
		t.Fatalf(`rule "each call changes only the fields it names" (UseGrace: GraceUses): after three uses: %s`, d)
	}
	if err := st.UseGrace(ctx(t), s.ID, 0, 0); !errors.Is(err, refresh.ErrConflict) {
		t.Fatalf("UseGrace with limit 0: %v, want ErrConflict", err)
	}
}

func testUseGraceConcurrent(t *testing.T, st refresh.Store) {
	// Several rounds, each on a fresh session: a read-then-increment store
	// loses only when callers interleave, which one round may not show.
	for round := 0; round < 4; round++ {
		s := newSession(subject(t), base)
		mustCreate(t, st, s)
		const limit = 10
		wins := race(t, func(int) error { return st.UseGrace(ctx(t), s.ID, 0, limit) }, isConflict)
		if wins != limit {
			t.Fatalf("round %d: %d of %d concurrent UseGrace calls succeeded with limit %d", round, wins, racers, limit)
		}
		if got := mustGet(t, st, s.ID).GraceUses; got != limit {
			t.Fatalf("round %d: GraceUses %d, want %d", round, got, limit)
		}
	}
	// Tight rounds on one session: round r raises the limit to r+1, so
	// exactly one call of each round may count a use.
	s := newSession(subject(t), base)
	mustCreate(t, st, s)
	tightRounds(t, `rule "UseGrace counts atomically"`, func(r, _ int) error {
		return st.UseGrace(ctx(t), s.ID, 0, uint32(r+1))
	}, isConflict)
}

func testRevokeIdempotent(t *testing.T, st refresh.Store) {
	s := newSession(subject(t), base)
	mustCreate(t, st, s)
	first := base.Add(time.Minute + 7*time.Nanosecond)
	if err := st.Revoke(ctx(t), s.ID, first, "logout"); err != nil {
		t.Fatal(err)
	}
	if err := st.Revoke(ctx(t), s.ID, first.Add(time.Hour), "reuse"); err != nil {
		t.Fatalf("second Revoke: %v, want nil", err)
	}
	want := s.Clone()
	want.RevokedAt, want.RevokeReason = first, "logout"
	expectSame(t, want, mustGet(t, st, s.ID))
	if _, err := st.RevokeSubject(ctx(t), s.Subject, first.Add(2*time.Hour), "all"); err != nil {
		t.Fatal(err)
	}
	expectSame(t, want, mustGet(t, st, s.ID))
	// The first time holds for the stale sweep too: retention counts from
	// it, not from a later Revoke (an index of revocation times that took
	// the later one would keep the session another hour).
	if sd, ok := st.(refresh.StaleDeleter); ok {
		early := base.Add(-time.Hour)
		deleteStaleAll(t, sd, staleCuts{early, early, first})
		if _, err := st.Get(ctx(t), s.ID); !errors.Is(err, refresh.ErrSessionNotFound) {
			t.Fatalf(`rule "a second Revoke keeps the first one's time, for DeleteStale too": DeleteStale(revokedBy = the first revocation's time) kept the session (%v)`, err)
		}
	}
}

func testRevokeSubject(t *testing.T, st refresh.Store) {
	alice, bob := subject(t), subject(t)
	var as []*refresh.Session
	for i := 0; i < 4; i++ {
		s := newSession(alice, base.Add(time.Duration(i)*time.Second))
		mustCreate(t, st, s)
		as = append(as, s)
	}
	b := newSession(bob, base)
	mustCreate(t, st, b)
	if err := st.Revoke(ctx(t), as[0].ID, base, "logout"); err != nil {
		t.Fatal(err)
	}
	at := base.Add(time.Hour)
	n, err := st.RevokeSubject(ctx(t), alice, at, "password-change")
	if err != nil || n != 3 {
		t.Fatalf("RevokeSubject: %d, %v; want 3 (one was already revoked)", n, err)
	}
	for i, s := range as {
		got := mustGet(t, st, s.ID)
		if !got.Revoked() {
			t.Fatalf("alice's session %d not revoked", i)
		}
		if i > 0 && (!got.RevokedAt.Equal(at) || got.RevokeReason != "password-change") {
			t.Fatalf("session %d: revoked %v for %q", i, got.RevokedAt, got.RevokeReason)
		}
	}
	if mustGet(t, st, b.ID).Revoked() {
		t.Fatal("RevokeSubject revoked another subject's session")
	}
	if n, err := st.RevokeSubject(ctx(t), alice, at, "again"); err != nil || n != 0 {
		t.Fatalf("second RevokeSubject: %d, %v; want 0", n, err)
	}
}

func testSessions(t *testing.T, st refresh.Store) {
	alice, bob := subject(t), subject(t)
	// Created out of order, with two sharing a CreatedAt (then ordered by ID).
	times := []time.Duration{3, 1, 2, 2}
	var want []*refresh.Session
	for _, d := range times {
		s := newSession(alice, base.Add(d*time.Second))
		mustCreate(t, st, s)
		want = append(want, s)
	}
	mustCreate(t, st, newSession(bob, base))
	revokedAt := base.Add(time.Minute + 5*time.Nanosecond)
	if err := st.Revoke(ctx(t), want[0].ID, revokedAt, "x"); err != nil {
		t.Fatal(err)
	}
	want[0].RevokedAt, want[0].RevokeReason = revokedAt, "x"
	// The listing shows each session as it is now, every field: what a
	// devices page shows and what the Issuer's liveness and session limit
	// read from it (a listing kept as a copy made at Create, or one that
	// selects a few columns, shows stale or empty sessions).
	rotated := base.Add(2*time.Minute + 7*time.Nanosecond)
	if err := st.Advance(ctx(t), want[1].ID, 0, rotated); err != nil {
		t.Fatal(err)
	}
	want[1].Generation, want[1].RotatedAt = 1, rotated
	if err := st.UseGrace(ctx(t), want[1].ID, 1, 3); err != nil {
		t.Fatal(err)
	}
	want[1].GraceUses = 1
	got, err := st.Sessions(ctx(t), alice)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("Sessions: %d sessions, want %d (revoked included, other subjects excluded)", len(got), len(want))
	}
	for i := 1; i < len(got); i++ {
		a, b := got[i-1], got[i]
		if a.CreatedAt.After(b.CreatedAt) || a.CreatedAt.Equal(b.CreatedAt) && a.ID > b.ID {
			t.Fatalf("Sessions not ordered by CreatedAt, ID at %d", i)
		}
	}
	byID := map[string]*refresh.Session{}
	for _, s := range want {
		byID[s.ID] = s
	}
	for _, s := range got {
		if s.Subject != alice {
			t.Fatalf("Sessions returned subject %q", s.Subject)
		}
		if w := byID[s.ID]; w == nil {
			t.Fatalf("Sessions returned an unknown session %q", s.ID)
		} else if d := equal(w, s); d != "" {
			t.Fatalf(`rule "Sessions returns every session as Get would, every field": session %q: %s`, s.ID, d)
		}
	}
}

func testDeleteExpiredBoundary(t *testing.T, st refresh.Store) {
	// A fresh "now" far in the future of other subtests' sessions keeps a
	// shared store's other rows out of the way: every session here expires
	// at cut, cut+1ns or later, and only sessions at or before cut go.
	cut := base.Add(time.Hour + 987654321 + time.Duration(randUint(1<<40))*time.Microsecond)
	sub := subject(t)
	mk := func(exp time.Time) *refresh.Session {
		s := newSession(sub, exp.Add(-time.Hour))
		s.ExpiresAt = exp
		mustCreate(t, st, s)
		return s
	}
	at := mk(cut)
	after := mk(cut.Add(time.Nanosecond))
	before := mk(cut.Add(-time.Nanosecond))
	n := deleteAll(t, st, cut)
	if n < 2 {
		t.Fatalf("DeleteExpired removed %d, want at least the 2 sessions expiring at or before the cut", n)
	}
	for _, s := range []*refresh.Session{at, before} {
		if _, err := st.Get(ctx(t), s.ID); !errors.Is(err, refresh.ErrSessionNotFound) {
			t.Fatalf("session expiring at %v still there after DeleteExpired(%v): %v", s.ExpiresAt, cut, err)
		}
	}
	if _, err := st.Get(ctx(t), after.ID); err != nil {
		t.Fatalf("rule \"DeleteExpired removes only sessions whose ExpiresAt is at or before the cut-off, at nanosecond precision\": a session expiring 1ns after the cut-off is gone (%v); compare full nanoseconds, not seconds or microseconds", err)
	}
	expectSame(t, after, mustGet(t, st, after.ID))
	list, err := st.Sessions(ctx(t), sub)
	if err != nil || len(list) != 1 || list[0].ID != after.ID {
		t.Fatalf("Sessions after DeleteExpired: %d, %v; want only the live one", len(list), err)
	}
}

func deleteAll(t *testing.T, st refresh.Store, before time.Time) int {
	t.Helper()
	total := 0
	for range maxSweepBatches {
		n, err := st.DeleteExpired(ctx(t), before, 500)
		if err != nil {
			t.Fatalf("DeleteExpired: %v", err)
		}
		total += n
		if n < 500 {
			return total
		}
	}
	t.Fatalf("DeleteExpired never finished: it reported %d removals in %d full batches, more sessions than the suite ever makes (does it report removals it does not make?)", total, maxSweepBatches)
	return 0
}

// maxSweepBatches bounds the sweeps of deleteAll and deleteStaleAll: a
// million sessions in batches of 500, far more than the suite makes. A
// store that reports removals it does not make never finishes a sweep,
// and the bound fails it in a second instead of 40 (100,000 batches under
// -race).
const maxSweepBatches = 2000

func randUint(n uint64) uint64 {
	var b [8]byte
	_, _ = rand.Read(b[:])
	var v uint64
	for _, c := range b {
		v = v<<8 | uint64(c)
	}
	return v % n
}

func testDeleteExpiredBatches(t *testing.T, st refresh.Store) {
	cut := base.Add(40*24*time.Hour + time.Duration(randUint(1<<40))*time.Microsecond)
	// Clear whatever a shared store holds that expires before the cut.
	deleteAll(t, st, cut)
	sub := subject(t)
	for i := 0; i < 7; i++ {
		s := newSession(sub, cut.Add(-time.Hour))
		s.ExpiresAt = cut.Add(-time.Duration(i) * time.Minute)
		mustCreate(t, st, s)
	}
	var got []int
	for len(got) < 10 { // 7 sessions: a fourth full batch is a count of rows not removed
		n, err := st.DeleteExpired(ctx(t), cut, 3)
		if err != nil {
			t.Fatal(err)
		}
		if n > 3 {
			t.Fatalf("DeleteExpired(limit 3) removed %d", n)
		}
		got = append(got, n)
		if n < 3 {
			break
		}
	}
	if fmt.Sprint(got) != "[3 3 1]" {
		t.Fatalf("batches %v, want [3 3 1]", got)
	}
	if list, _ := st.Sessions(ctx(t), sub); len(list) != 0 {
		t.Fatalf("%d sessions left after deleting all", len(list))
	}
}

// A cut-off beyond the years that fit Unix nanoseconds (2262) still
// deletes what expires before it.
func testDeleteExpiredFarFuture(t *testing.T, st refresh.Store) {
	s := newSession(subject(t), base)
	mustCreate(t, st, s)
	deleteAll(t, st, time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC))
	if _, err := st.Get(ctx(t), s.ID); !errors.Is(err, refresh.ErrSessionNotFound) {
		t.Fatalf("rule \"a cut-off past 2262 compares as later than every stored time\": DeleteExpired(year 3000) kept a session expiring at %v: %v", s.ExpiresAt, err)
	}
}

// farPast holds cut-offs before the years that fit Unix nanoseconds
// (1678): the zero Time among them. Converted without a clamp, they wrap
// around int64, year 1000 to 2169 and year 1600 to 2184, and a sweep
// "before the year 1000" would delete nearly everything.
var farPast = []time.Time{{}, time.Date(1000, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(1600, 1, 1, 0, 0, 0, 0, time.UTC)}

// testSweepFarPast: a sweep's cut-off before 1678 compares as earlier than
// every stored time, in DeleteExpired, in each rule of DeleteStale and in
// DeleteExpiredProofs: a session (live, and revoked) and a proof record
// stay.
func testSweepFarPast(t *testing.T, st refresh.Store) {
	const rule = `rule "a cut-off before 1678 compares as earlier than every stored time"`
	live := newSession(subject(t), base)
	revoked := newSession(subject(t), base)
	revoked.RevokedAt, revoked.RevokeReason = base.Add(time.Second), "logout"
	mustCreate(t, st, live)
	mustCreate(t, st, revoked)
	kept := func(what string, cut time.Time) {
		t.Helper()
		for _, s := range []*refresh.Session{live, revoked} {
			if _, err := st.Get(ctx(t), s.ID); err != nil {
				t.Fatalf("%s: %s(%v) lost a session expiring at %v: %v", rule, what, cut, s.ExpiresAt, err)
			}
		}
	}
	sd, stale := st.(refresh.StaleDeleter)
	for _, cut := range farPast {
		if _, err := st.DeleteExpired(ctx(t), cut, 1000); err != nil {
			t.Fatalf("DeleteExpired(%v): %v", cut, err)
		}
		kept("DeleteExpired", cut)
		if !stale {
			continue
		}
		early := base.Add(-time.Hour) // before both sessions' times
		for _, c := range []staleCuts{{cut, early, time.Time{}}, {early, cut, time.Time{}}, {early, early, cut}} {
			if _, err := sd.DeleteStale(ctx(t), c.expired, c.idle, c.revoked, 1000); err != nil {
				t.Fatalf("DeleteStale(%+v): %v", c, err)
			}
			kept("DeleteStale", cut)
		}
	}
	pr, ok := st.(refresh.ProofRecorder)
	if !ok {
		return
	}
	id := randID() + randID()
	if err := pr.RecordProof(ctx(t), id, base, base.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	for _, cut := range farPast {
		if _, err := pr.DeleteExpiredProofs(ctx(t), cut, 1000); err != nil {
			t.Fatalf("DeleteExpiredProofs(%v): %v", cut, err)
		}
	}
	if err := pr.RecordProof(ctx(t), id, base, base.Add(time.Minute)); !errors.Is(err, refresh.ErrProofReplayed) {
		t.Fatalf("%s: DeleteExpiredProofs before 1678 removed a record expiring at %v (%v)", rule, base.Add(time.Minute), err)
	}
}

// testReusedID: a session id created again, for another subject, once the
// first session with it is gone (swept, or dropped by the backend at its
// expiry, as Redis does by a key's TTL), is the new session's only: an
// index entry the first one left behind (a subject's set of ids) must not
// let the first subject's Sessions list the new session (another user's
// device on a devices page) or its RevokeSubject revoke it.
func testReusedID(t *testing.T, st refresh.Store) {
	const rule = `rule "Sessions and RevokeSubject reach only sessions of the subject, also through an id an earlier session of another subject had"`
	a, b := subject(t), subject(t)
	// The first subject keeps a live session, so that an index of its ids
	// with a lifetime of its own (a Redis set living as long as its
	// longest session) outlives the one that goes.
	keep := newSession(a, base)
	mustCreate(t, st, keep)
	first := newSession(a, base.Add(-100*24*time.Hour)) // expired ten days ago
	mustCreate(t, st, first)
	second := newSession(b, base)
	second.ID = first.ID
	err := st.Create(ctx(t), second)
	if errors.Is(err, refresh.ErrSessionExists) {
		// Kept until swept: sweep it, then create the id again.
		deleteAll(t, st, first.ExpiresAt)
		err = st.Create(ctx(t), second)
	}
	if err != nil {
		t.Fatalf("Create of an id whose session expired and was swept, for another subject: %v", err)
	}
	if list, err := st.Sessions(ctx(t), a); err != nil || len(list) != 1 || list[0].ID != keep.ID {
		t.Fatalf("%s: Sessions(first subject) = %d sessions, %v; want its one live session (the other is gone, and its id another subject's now)", rule, len(list), err)
	}
	if n, err := st.RevokeSubject(ctx(t), a, base.Add(time.Second), "logout-all"); err != nil || n != 1 {
		t.Fatalf("%s: RevokeSubject(first subject) = %d, %v; want 1", rule, n, err)
	}
	got := mustGet(t, st, second.ID)
	if d := equal(second, got); d != "" {
		t.Fatalf("%s: the new session changed: %s", rule, d)
	}
	if list, err := st.Sessions(ctx(t), b); err != nil || len(list) != 1 || list[0].ID != second.ID {
		t.Fatalf("Sessions(new subject) = %d sessions, %v; want its one session", len(list), err)
	}
}

func testAliasing(t *testing.T, st refresh.Store) {
	s := newSession(subject(t), base)
	// Values no other subtest uses, so that a store that interns them (and
	// keeps the caller's slice) cannot pass by luck.
	s.Scope = []string{"alias-" + randID(), "alias-" + randID()}
	s.Claims = []byte(`{"u":"` + randID() + `"}`)
	s.Meta = map[string]string{"ip": randID(), "ua": randID()}
	keep := s.Clone()
	mustCreate(t, st, s)
	// Changing what was passed to Create must not change the store.
	s.Seed[0] ^= 0xff
	s.Scope[0] = "changed"
	s.Claims[2] = 'X'
	s.Meta["ip"] = "changed"
	expectSame(t, keep, mustGet(t, st, keep.ID))
	// Nor changing what Get or Sessions returned.
	got := mustGet(t, st, keep.ID)
	got.Seed[0] ^= 0xff
	got.Scope[0] = "changed"
	got.Claims[2] = 'X'
	got.Meta["ip"] = "changed"
	got.Generation = 99
	list, err := st.Sessions(ctx(t), keep.Subject)
	if err != nil || len(list) != 1 {
		t.Fatalf("Sessions: %d, %v", len(list), err)
	}
	list[0].Seed[1] ^= 0xff
	list[0].Scope[1] = "changed" // an application's devices page trimming what it shows
	list[0].Claims[3] = 'Y'
	list[0].Meta["ua"] = "changed"
	list[0] = nil
	expectSame(t, keep, mustGet(t, st, keep.ID))
}

func testCancelled(t *testing.T, st refresh.Store) {
	s := newSession(subject(t), base)
	mustCreate(t, st, s)
	c, cancel := context.WithCancel(ctx(t))
	cancel()
	check := func(name string, err error) {
		t.Helper()
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s with a cancelled context: %v, want an error wrapping context.Canceled", name, err)
		}
	}
	other := newSession(s.Subject, base)
	check("Create", st.Create(c, other))
	_, err := st.Get(c, s.ID)
	check("Get", err)
	check("Advance", st.Advance(c, s.ID, 0, base.Add(time.Hour)))
	check("UseGrace", st.UseGrace(c, s.ID, 0, 3))
	check("Revoke", st.Revoke(c, s.ID, base, "x"))
	_, err = st.RevokeSubject(c, s.Subject, base, "x")
	check("RevokeSubject", err)
	_, err = st.Sessions(c, s.Subject)
	check("Sessions", err)
	_, err = st.DeleteExpired(c, base.Add(1000*time.Hour), 10)
	check("DeleteExpired", err)
	// Nothing changed.
	expectSame(t, s, mustGet(t, st, s.ID))
	if _, err := st.Get(ctx(t), other.ID); !errors.Is(err, refresh.ErrSessionNotFound) {
		t.Fatalf("Create with a cancelled context stored the session: %v", err)
	}
}
