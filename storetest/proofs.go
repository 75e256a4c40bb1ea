package storetest

import (
	"context"
	"errors"
	"math"
	"strconv"
	"testing"
	"time"

	"github.com/refreshkit/refresh"
)

// testRecordProof checks the optional shared DPoP replay store
// (refresh.ProofRecorder): first use recorded, replays refused until the
// expiry and accepted from it on (±1 ns), 64 concurrent callers with one
// id and exactly one winner, ids independent, the sweep at its cut-off
// (a record expiring exactly at it is removed) and its limit, a
// cancelled context.
func testRecordProof(t *testing.T, st refresh.Store) {
	pr, ok := st.(refresh.ProofRecorder)
	if !ok {
		t.Skip("the store is not a refresh.ProofRecorder: DPoP replays are caught per instance only")
	}
	const rule = `rule "RecordProof records an id once until its expiry: ErrProofReplayed while expires > now"`
	now := base.Add(time.Duration(randUint(1<<40))*time.Microsecond + 3)
	exp := now.Add(2 * time.Minute)
	id, other := randID()+randID(), randID()+randID()
	if err := pr.RecordProof(ctx(t), id, now, exp); err != nil {
		t.Fatalf("%s: first RecordProof: %v", rule, err)
	}
	for name, at := range map[string]time.Time{"at once": now, "1ns before the expiry": exp.Add(-time.Nanosecond)} {
		if err := pr.RecordProof(ctx(t), id, at, at.Add(2*time.Minute)); !errors.Is(err, refresh.ErrProofReplayed) {
			t.Fatalf("%s: the same id again %s: %v, want ErrProofReplayed", rule, name, err)
		}
	}
	if err := pr.RecordProof(ctx(t), other, now, exp); err != nil {
		t.Fatalf("%s: another id: %v", rule, err)
	}
	// Ids compare exactly, as session ids do: not case-insensitively, not
	// ignoring trailing spaces (the collations a SQL column may have).
	for _, look := range []string{swapCase(id), id + " "} {
		if err := pr.RecordProof(ctx(t), look, now, exp); err != nil {
			t.Fatalf(`rule "proof ids compare exactly": %q after %q: %v, want it recorded as another id`, look, id, err)
		}
	}
	// At the expiry the record counts as absent: the id records again, and
	// the new expiry holds.
	later := exp.Add(3 * time.Minute)
	if err := pr.RecordProof(ctx(t), id, exp, later); err != nil {
		t.Fatalf("%s: the id at its expiry: %v, want it recorded again", rule, err)
	}
	if err := pr.RecordProof(ctx(t), id, later.Add(-time.Nanosecond), later.Add(time.Minute)); !errors.Is(err, refresh.ErrProofReplayed) {
		t.Fatalf("%s: the re-recorded id 1ns before its new expiry: %v, want ErrProofReplayed", rule, err)
	}

	// 64 concurrent callers, one id: exactly one records it. Several
	// rounds, each with a fresh id: a check-then-set store loses only when
	// two callers interleave, which one round on a busy machine may not
	// show.
	for round := 0; round < 8; round++ {
		race1 := randID() + randID()
		wins := race(t, func(int) error { return pr.RecordProof(ctx(t), race1, now, exp) },
			func(err error) bool { return errors.Is(err, refresh.ErrProofReplayed) })
		if wins != 1 {
			t.Fatalf(`rule "of concurrent RecordProof calls for one id exactly one succeeds": %d of %d did (round %d)`, wins, racers, round)
		}
	}
	tight := randID()
	tightRounds(t, `rule "of concurrent RecordProof calls for one id exactly one succeeds"`, func(r, _ int) error {
		return pr.RecordProof(ctx(t), tight+strconv.Itoa(r), now, exp)
	}, func(err error) bool { return errors.Is(err, refresh.ErrProofReplayed) })

	// The sweep: only records expired by the cut-off, at most limit.
	cut := later.Add(time.Hour + 5)
	var gone, kept []string
	var goneExp []time.Time
	for i := 0; i < 5; i++ {
		g, k := randID()+randID(), randID()+randID()
		goneExp = append(goneExp, cut.Add(-time.Duration(i)*time.Second)) // the first exactly at the cut
		if err := pr.RecordProof(ctx(t), g, now, goneExp[i]); err != nil {
			t.Fatal(err)
		}
		if err := pr.RecordProof(ctx(t), k, now, cut.Add(time.Nanosecond+time.Duration(i)*time.Second)); err != nil {
			t.Fatal(err)
		}
		gone, kept = append(gone, g), append(kept, k)
	}
	for _, limit := range []int{0, -1, math.MinInt} {
		if n, err := pr.DeleteExpiredProofs(ctx(t), cut, limit); err != nil || n != 0 {
			t.Fatalf(`rule "limit <= 0 removes nothing": DeleteExpiredProofs(limit %d) = %d, %v`, limit, n, err)
		}
	}
	const reportsOnly = `rule "DeleteExpiredProofs reports what it removed"`
	drained, removed := false, 0
	for i := 0; i < 100000 && !drained; i++ {
		n, err := pr.DeleteExpiredProofs(ctx(t), cut, 2)
		if err != nil {
			t.Fatal(err)
		}
		removed += n
		if n > 2 {
			t.Fatalf(`rule "DeleteExpiredProofs removes at most limit": %d with limit 2`, n)
		}
		drained = n < 2
	}
	if !drained {
		t.Fatalf("%s: it reported 2 removals 100,000 times in a row, more records than the suite ever made", reportsOnly)
	}
	if n, err := pr.DeleteExpiredProofs(ctx(t), cut, 2); err != nil || n != 0 {
		t.Fatalf("%s: a second sweep at the same cut-off reported %d more (%v)", reportsOnly, n, err)
	}
	// What a sweep keeps is still a replay; what it removed (by the cut,
	// after its expiry) records again.
	for _, k := range kept {
		if err := pr.RecordProof(ctx(t), k, cut, cut.Add(time.Hour)); !errors.Is(err, refresh.ErrProofReplayed) {
			t.Fatalf(`rule "DeleteExpiredProofs removes only records expired by the cut-off": a record expiring after it was lost (%v)`, err)
		}
	}
	for i, g := range gone {
		// A store that sweeps (one whose backend drops records by itself,
		// a TTL, may remove nothing) removed every record expiring at or
		// before the cut, the one exactly at it too: asked as of a moment
		// before that expiry, it has no record left to refuse the id by.
		if removed > 0 {
			if err := pr.RecordProof(ctx(t), g, goneExp[i].Add(-time.Nanosecond), goneExp[i]); err != nil {
				t.Fatalf(`rule "DeleteExpiredProofs removes the records whose expiry is at or before the cut-off": a record expiring %v before the cut-off survived it (%v)`, cut.Sub(goneExp[i]), err)
			}
		}
		if err := pr.RecordProof(ctx(t), g, cut, cut.Add(time.Hour)); err != nil {
			t.Fatalf("%s: an expired, swept id: %v", rule, err)
		}
	}

	c, cancel := context.WithCancel(ctx(t))
	cancel()
	fresh := randID() + randID()
	if err := pr.RecordProof(c, fresh, now, exp); !errors.Is(err, context.Canceled) {
		t.Fatalf("RecordProof with a cancelled context: %v, want an error wrapping context.Canceled", err)
	}
	if err := pr.RecordProof(ctx(t), fresh, now, exp); err != nil {
		t.Fatalf("RecordProof with a cancelled context recorded the id: %v", err)
	}
	if _, err := pr.DeleteExpiredProofs(c, cut, 10); !errors.Is(err, context.Canceled) {
		t.Fatalf("DeleteExpiredProofs with a cancelled context: %v, want an error wrapping context.Canceled", err)
	}
}

// swapCase turns upper-case ASCII letters into lower case and back.
func swapCase(s string) string {
	b := []byte(s)
	for i, c := range b {
		switch {
		case 'a' <= c && c <= 'z':
			b[i] = c - 'a' + 'A'
		case 'A' <= c && c <= 'Z':
			b[i] = c - 'A' + 'a'
		}
	}
	return string(b)
}
