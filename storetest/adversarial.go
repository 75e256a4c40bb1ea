package storetest

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/refreshkit/refresh"
)

// The checks below were added after a third-party adapter written from the
// docs, with realistic bugs put in one at a time, passed the suite. Each
// names the rule it checks; storetest's own tests keep a catalogue of such
// bugs (mutants of a reference store) and require Run to fail on every one.

// testTimeRange: the zero Time and every instant from 1970 to 2262 round-trip
// at nanosecond precision.
func testTimeRange(t *testing.T, st refresh.Store) {
	s := newSession(subject(t), base)
	s.CreatedAt = time.Unix(0, 1).UTC()
	s.RotatedAt = time.Unix(0, math.MaxInt64-1e9-1).UTC() // in 2262
	s.ExpiresAt = time.Unix(0, math.MaxInt64).UTC()
	mustCreate(t, st, s)
	got := mustGet(t, st, s.ID)
	if d := equal(s, got); d != "" {
		t.Fatalf("rule \"times from 1970 to 2262 round-trip at nanosecond precision\": %s", d)
	}
	if got.Revoked() || !got.RevokedAt.IsZero() {
		t.Fatalf("rule \"the zero Time round-trips\": a live session came back with RevokedAt %v", got.RevokedAt)
	}
}

// lookalikes returns subjects that a loose comparison would mix up with
// root: other case, SQL wildcards and prefixes, a Cyrillic look-alike, the
// other Unicode normalisation, white space.
func lookalikes(root string) []string {
	return []string{
		root,                                 // alice-<rand>
		strings.ToUpper(root[:1]) + root[1:], // Alice-<rand>
		root + "_",
		root + "%",
		root + "1",
		root[:len(root)-1], // a prefix of root
		root[:len(root)-1] + "_",
		root[:len(root)-1] + "%",
		"\u0430" + root[1:], // Cyrillic а
		root + "\u00e9",     // é, composed (NFC)
		root + "e\u0301",    // é, decomposed (NFD)
		root + " ",
		" " + root,
		// Key-value layouts: a glob pattern (Redis SCAN MATCH), a
		// "<subject>:<id>" key listed by prefix, a hash tag in a Redis
		// Cluster key, and a MySQL utf8mb3 column that cuts a subject
		// before its first 4-byte character.
		root + "*",
		root + "?",
		root + ":1",
		"{" + root + "}",
		root + "\U0001F600", // 😀
		// Two of 1 KiB (the longest Issue accepts) that share their first
		// 1023 bytes: a column that cuts subjects (varchar(255), an index
		// prefix) makes them one.
		longSubject(root, "1"),
		longSubject(root, "2"),
	}
}

// longSubject is a 1 KiB subject ending in last.
func longSubject(root, last string) string {
	return root + strings.Repeat("s", 1024-len(root)-len(last)) + last
}

// testSubjectsExact: Sessions and RevokeSubject compare subjects as exact
// bytes.
func testSubjectsExact(t *testing.T, st refresh.Store) {
	subjects := lookalikes("alice-" + strings.ToLower(randID()))
	ids := map[string]string{}
	for _, sub := range subjects {
		s := newSession(sub, base)
		mustCreate(t, st, s)
		ids[sub] = s.ID
	}
	const rule = `rule "subjects compare as exact bytes" (no case-insensitive collation, LIKE or glob pattern, prefix, normalising comparison, or a column that cuts or re-encodes them)`
	for _, sub := range subjects {
		list, err := st.Sessions(ctx(t), sub)
		if err != nil {
			t.Fatalf("Sessions(%q): %v", sub, err)
		}
		if len(list) != 1 || list[0].ID != ids[sub] || list[0].Subject != sub {
			var got []string
			for _, s := range list {
				got = append(got, s.Subject)
			}
			t.Fatalf("%s: Sessions(%q) returned sessions of subjects %q, want only its own", rule, sub, got)
		}
	}
	// Log one subject out everywhere: only its own session is revoked.
	victim := subjects[0]
	if n, err := st.RevokeSubject(ctx(t), victim, base.Add(time.Minute), "revoked-all"); err != nil || n != 1 {
		t.Fatalf("%s: RevokeSubject(%q) = %d, %v; want 1 (its one session)", rule, victim, n, err)
	}
	for _, sub := range subjects[1:] {
		if s := mustGet(t, st, ids[sub]); s.Revoked() {
			t.Fatalf("%s: RevokeSubject(%q) also revoked the session of %q", rule, victim, sub)
		}
	}
	if !mustGet(t, st, ids[victim]).Revoked() {
		t.Fatalf("RevokeSubject(%q) did not revoke its session", victim)
	}
}

// testIDsExact: a session is found only by its exact ID. A case-insensitive
// or PAD SPACE collation (MySQL's defaults) would find it under another
// case, or with trailing spaces; a prefix index used as the key, under a
// prefix. Every method must answer ErrSessionNotFound for those and change
// nothing.
func testIDsExact(t *testing.T, st refresh.Store) {
	s := newSession(subject(t), base)
	s.ID = "aZ" + s.ID[2:] // letters of both cases, whatever rand gave
	mustCreate(t, st, s)
	const rule = `rule "IDs compare as exact bytes" (no case-insensitive or PAD SPACE collation, no prefix)`
	for _, id := range []string{swapCase(s.ID), strings.ToLower(s.ID), s.ID + " ", s.ID[:len(s.ID)-1], s.ID + "A"} {
		if _, err := st.Get(ctx(t), id); !errors.Is(err, refresh.ErrSessionNotFound) {
			t.Fatalf("%s: Get(%q) of session %q: %v, want ErrSessionNotFound", rule, id, s.ID, err)
		}
		if err := st.Advance(ctx(t), id, 0, base.Add(time.Second)); !errors.Is(err, refresh.ErrSessionNotFound) {
			t.Fatalf("%s: Advance(%q): %v, want ErrSessionNotFound", rule, id, err)
		}
		if err := st.UseGrace(ctx(t), id, 0, 3); !errors.Is(err, refresh.ErrSessionNotFound) {
			t.Fatalf("%s: UseGrace(%q): %v, want ErrSessionNotFound", rule, id, err)
		}
		if aa, ok := st.(refresh.ActiveAdvancer); ok {
			if err := aa.AdvanceActive(ctx(t), id, 0, base.Add(time.Second), base.Add(-time.Second)); !errors.Is(err, refresh.ErrSessionNotFound) {
				t.Fatalf("%s: AdvanceActive(%q): %v, want ErrSessionNotFound", rule, id, err)
			}
		}
		if err := st.Revoke(ctx(t), id, base.Add(time.Second), "logout"); !errors.Is(err, refresh.ErrSessionNotFound) {
			t.Fatalf("%s: Revoke(%q): %v, want ErrSessionNotFound", rule, id, err)
		}
	}
	if d := equal(s, mustGet(t, st, s.ID)); d != "" {
		t.Fatalf("%s: calls naming other IDs changed session %q: %s", rule, s.ID, d)
	}
}

// testManySessions: a subject with hundreds of sessions (a shared service
// account, a script that signs in on every run) is listed and logged out in
// full. An adapter that pages through them and stops after the first page
// leaves sessions live after "log out everywhere".
func testManySessions(t *testing.T, st refresh.Store) {
	// More than the pages adapters forget to follow: 100 and 1,000 rows
	// (a LIMIT, an ORM's default), a 1 MB DynamoDB page (about 600 such
	// sessions). Someone with a user's password who signs in that often
	// would otherwise keep a session through "log out everywhere".
	const n = 1100
	sub := subject(t)
	ids := make([]string, 0, n)
	for i := range n {
		s := newSession(sub, base.Add(time.Duration(n-i)*time.Nanosecond)) // created in reverse order
		mustCreate(t, st, s)
		ids = append(ids, s.ID)
	}
	slices.Reverse(ids)
	list, err := st.Sessions(ctx(t), sub)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]string, 0, len(list))
	for _, s := range list {
		got = append(got, s.ID)
	}
	if !slices.Equal(got, ids) {
		t.Fatalf(`rule "Sessions returns every session of the subject, ordered": %d sessions of %d, or out of order`, len(got), n)
	}
	at := base.Add(time.Minute)
	if k, err := st.RevokeSubject(ctx(t), sub, at, "revoked-all"); err != nil || k != n {
		t.Fatalf(`rule "RevokeSubject revokes every session of the subject": revoked %d of %d, %v`, k, n, err)
	}
	list, err = st.Sessions(ctx(t), sub)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range list {
		if !s.Revoked() {
			t.Fatalf(`rule "RevokeSubject revokes every session of the subject": session %q is still live`, s.ID)
		}
	}
}

// testSessionsOrder: ties on CreatedAt are broken by ID in byte order, so
// the order is the same on every call and every store. Inserted in reverse,
// with IDs whose byte order differs from any case-insensitive or
// locale-aware order, so that a missing tie-break or a collation fails
// every time, not by chance.
func testSessionsOrder(t *testing.T, st refresh.Store) {
	sub := subject(t)
	at := base.Add(3 * time.Second)
	var ids []string
	for _, p := range []string{"-", "0", "B", "Z", "_", "a", "b", "z"} {
		ids = append(ids, p+randID()[1:])
	}
	slices.Sort(ids) // byte order: - 0 B Z _ a b z
	earlier := newSession(sub, at.Add(-time.Nanosecond))
	mustCreate(t, st, earlier)
	for i := len(ids) - 1; i >= 0; i-- {
		s := newSession(sub, at)
		s.ID = ids[i]
		mustCreate(t, st, s)
	}
	later := newSession(sub, at.Add(time.Nanosecond))
	later.ID = "-" + later.ID[1:] // sorts first by ID, last by time
	mustCreate(t, st, later)
	want := append(append([]string{earlier.ID}, ids...), later.ID)
	for range 3 {
		list, err := st.Sessions(ctx(t), sub)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, s := range list {
			got = append(got, s.ID)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("rule \"Sessions orders by CreatedAt, then ID in byte order (COLLATE \\\"C\\\")\":\n got %q\nwant %q", got, want)
		}
	}
}

// testDeleteExpiredKeeps: with expired, unexpired, revoked-unexpired and
// revoked-expired sessions in place first, a limit of 0 or below removes
// nothing, and a real sweep removes exactly the expired ones.
func testDeleteExpiredKeeps(t *testing.T, st refresh.Store) {
	cut := base.Add(50*24*time.Hour + time.Duration(randUint(1<<40))*time.Microsecond)
	sub := subject(t)
	mk := func(exp time.Time, revoked bool) *refresh.Session {
		s := newSession(sub, base)
		s.ExpiresAt = exp
		mustCreate(t, st, s)
		if revoked {
			if err := st.Revoke(ctx(t), s.ID, base.Add(time.Second), "logout"); err != nil {
				t.Fatal(err)
			}
			s.RevokedAt, s.RevokeReason = base.Add(time.Second), "logout"
		}
		return s
	}
	expired := mk(cut.Add(-time.Hour), false)
	revokedExpired := mk(cut, true)
	live := mk(cut.Add(time.Hour), false)
	revokedLive := mk(cut.Add(time.Nanosecond), true)
	all := []*refresh.Session{expired, revokedExpired, live, revokedLive}

	for _, limit := range []int{0, -1, math.MinInt} {
		if n, err := st.DeleteExpired(ctx(t), cut, limit); err != nil || n != 0 {
			t.Fatalf("rule \"limit <= 0 removes nothing\": DeleteExpired(limit %d) = %d, %v", limit, n, err)
		}
		for _, s := range all {
			if _, err := st.Get(ctx(t), s.ID); err != nil {
				t.Fatalf("rule \"limit <= 0 removes nothing\": after DeleteExpired(limit %d), Get: %v", limit, err)
			}
		}
	}
	deleteAll(t, st, cut)
	for _, s := range []*refresh.Session{expired, revokedExpired} {
		if _, err := st.Get(ctx(t), s.ID); !errors.Is(err, refresh.ErrSessionNotFound) {
			t.Fatalf("DeleteExpired kept a session that expired before the cut-off (revoked %v): %v", s.Revoked(), err)
		}
	}
	for _, s := range []*refresh.Session{live, revokedLive} {
		got, err := st.Get(ctx(t), s.ID)
		if err != nil {
			t.Fatalf("rule \"DeleteExpired never removes a session before its ExpiresAt, revoked or not\": a session (revoked %v) expiring after the cut-off is gone: %v", s.Revoked(), err)
		}
		expectSame(t, s, got)
	}
}

// sentinels are every error a store or the Issuer uses for an expected
// outcome; a backend fault must match none.
var sentinels = []error{
	refresh.ErrSessionNotFound, refresh.ErrSessionExists, refresh.ErrConflict,
	refresh.ErrInvalidToken, refresh.ErrExpired, refresh.ErrRevoked, refresh.ErrReused,
	refresh.ErrProofReplayed,
}

// testFaults: on a store whose backend fails, every method returns an error
// that is not a sentinel, and the Issuer surfaces it as a system fault.
func testFaults(t *testing.T, st refresh.Store) {
	const rule = `rule "a backend fault is a system fault, never a sentinel"`
	check := func(method string, err error) {
		t.Helper()
		if err == nil {
			t.Errorf("%s: %s on a failing backend returned nil", rule, method)
			return
		}
		for _, s := range sentinels {
			if errors.Is(err, s) {
				t.Errorf("%s: %s on a failing backend returned %q, which matches %v: an outage would look like an answer", rule, method, err, s)
			}
		}
	}
	s := newSession(subject(t), base)
	check("Create", st.Create(ctx(t), s))
	_, err := st.Get(ctx(t), s.ID)
	check("Get", err)
	check("Advance", st.Advance(ctx(t), s.ID, 0, base))
	check("UseGrace", st.UseGrace(ctx(t), s.ID, 0, 3))
	check("Revoke", st.Revoke(ctx(t), s.ID, base, "x"))
	_, err = st.RevokeSubject(ctx(t), s.Subject, base, "x")
	check("RevokeSubject", err)
	_, err = st.Sessions(ctx(t), s.Subject)
	check("Sessions", err)
	_, err = st.DeleteExpired(ctx(t), base, 10)
	check("DeleteExpired", err)
	if aa, ok := st.(refresh.ActiveAdvancer); ok {
		check("AdvanceActive", aa.AdvanceActive(ctx(t), s.ID, 0, base, base))
	}
	if pr, ok := st.(refresh.ProofRecorder); ok {
		check("RecordProof", pr.RecordProof(ctx(t), randID(), base, base.Add(time.Minute)))
		// A store whose backend expires records by itself may sweep
		// nothing, and so meet no fault; an error it does return must not
		// be a sentinel.
		if _, err = pr.DeleteExpiredProofs(ctx(t), base, 10); err != nil {
			check("DeleteExpiredProofs", err)
		}
	}
	if sd, ok := st.(refresh.StaleDeleter); ok {
		_, err = sd.DeleteStale(ctx(t), base, base, base, 10)
		check("DeleteStale", err)
	}

	iss := NewIssuer(t, st, 0)
	if _, err := iss.Issue(ctx(t), "alice"); err == nil || refresh.IsClientError(err) {
		t.Errorf("%s: Issuer.Issue on a failing backend: %v, want a system fault", rule, err)
	}
	// A well-formed token of a made-up session, with the session check
	// the Issuer's key gives it, reaches the store.
	_, err = iss.Rotate(ctx(t), checkedToken(t, iss))
	if err == nil || refresh.IsClientError(err) {
		t.Errorf("%s: Issuer.Rotate on a failing backend: %v, want a system fault (503 on the wire), not an invalid grant", rule, err)
	}
}

// testAdvanceActive checks the optional one-round-trip swap
// (refresh.ActiveAdvancer) like Advance: its idle condition one nanosecond
// either side, generation and revocation, not-found versus conflict, 64
// concurrent callers, a cancelled context.
func testAdvanceActive(t *testing.T, st refresh.Store) {
	aa, ok := st.(refresh.ActiveAdvancer)
	if !ok {
		t.Skip("the store is not a refresh.ActiveAdvancer: rotations cost two round trips (Get, then Advance)")
	}
	const rule = `rule "AdvanceActive is Advance that also requires RotatedAt > activeAfter, in the same atomic step"`
	s := newSession(subject(t), base)
	s.RotatedAt = base.Add(time.Minute + 5*time.Nanosecond)
	mustCreate(t, st, s)
	at := base.Add(time.Hour)
	if err := aa.AdvanceActive(ctx(t), randID(), 0, at, base); !errors.Is(err, refresh.ErrSessionNotFound) {
		t.Fatalf("%s: AdvanceActive of a missing session: %v, want ErrSessionNotFound", rule, err)
	}
	for name, c := range map[string]struct {
		from  uint64
		after time.Time
	}{
		"RotatedAt equal to activeAfter (idle)": {0, s.RotatedAt},
		"RotatedAt before activeAfter (idle)":   {0, s.RotatedAt.Add(time.Nanosecond)},
		"another generation":                    {1, base},
	} {
		if err := aa.AdvanceActive(ctx(t), s.ID, c.from, at, c.after); !errors.Is(err, refresh.ErrConflict) {
			t.Fatalf("%s: %s: %v, want ErrConflict", rule, name, err)
		}
		expectSame(t, s, mustGet(t, st, s.ID))
	}
	if err := st.UseGrace(ctx(t), s.ID, 0, 5); err != nil {
		t.Fatal(err)
	}
	if err := aa.AdvanceActive(ctx(t), s.ID, 0, at, s.RotatedAt.Add(-time.Nanosecond)); err != nil {
		t.Fatalf("%s: RotatedAt 1ns after activeAfter: %v, want success", rule, err)
	}
	want := s.Clone()
	want.Generation, want.RotatedAt, want.GraceUses = 1, at, 0
	expectSame(t, want, mustGet(t, st, s.ID))

	// Revoked: refused.
	if err := st.Revoke(ctx(t), s.ID, at, "logout"); err != nil {
		t.Fatal(err)
	}
	if err := aa.AdvanceActive(ctx(t), s.ID, 1, at.Add(time.Second), base); !errors.Is(err, refresh.ErrConflict) {
		t.Fatalf("%s: a revoked session: %v, want ErrConflict", rule, err)
	}

	// 64 concurrent callers: exactly one wins per generation.
	r := newSession(subject(t), base)
	mustCreate(t, st, r)
	for gen := uint64(0); gen < 3; gen++ {
		wins := race(t, func(i int) error {
			return aa.AdvanceActive(ctx(t), r.ID, gen, base.Add(time.Duration(gen+1)*time.Hour+time.Duration(i)), base.Add(-time.Hour))
		}, isConflict)
		if wins != 1 {
			t.Fatalf("%s: generation %d: %d of %d concurrent calls succeeded, want exactly 1", rule, gen, wins, racers)
		}
	}
	// Advance and AdvanceActive racing each other: a warm instance takes the
	// one-round-trip path while a cold one reads and calls Advance. They
	// are one compare-and-swap: an AdvanceActive that is atomic only
	// against itself (its own lock, its own script) lets both win, and one
	// token gets two successors.
	for gen := uint64(3); gen < 11; gen++ {
		wins := race(t, func(i int) error {
			at := base.Add(time.Duration(gen+1)*time.Hour + time.Duration(i))
			if i%2 == 0 {
				return st.Advance(ctx(t), r.ID, gen, at)
			}
			return aa.AdvanceActive(ctx(t), r.ID, gen, at, base.Add(-time.Hour))
		}, isConflict)
		if wins != 1 {
			t.Fatalf("%s: generation %d: %d of %d concurrent Advance and AdvanceActive calls succeeded, want exactly 1", rule, gen, wins, racers)
		}
	}
	c, cancel := context.WithCancel(ctx(t))
	cancel()
	if err := aa.AdvanceActive(c, r.ID, 11, base.Add(13*time.Hour), base); !errors.Is(err, context.Canceled) {
		t.Fatalf("AdvanceActive with a cancelled context: %v, want an error wrapping context.Canceled", err)
	}
	if got := mustGet(t, st, r.ID).Generation; got != 11 {
		t.Fatalf("generation %d after eleven races and a cancelled call, want 11", got)
	}
	tightRounds(t, rule, func(round, i int) error {
		gen, at := 11+uint64(round), base.Add(time.Duration(round+12)*time.Hour+time.Duration(i))
		if (round+i)%2 == 0 {
			return st.Advance(ctx(t), r.ID, gen, at)
		}
		return aa.AdvanceActive(ctx(t), r.ID, gen, at, base.Add(-time.Hour))
	}, isConflict)
}

// checkedToken returns a refresh token of a made-up session that passes the
// session check of iss (made by NewIssuer), so that the Issuer asks the
// store about it. It writes the token format of refreshtoken.go (version 3, key
// id 1, session id, check, generation 0, tag); if that changes, the
// FaultsAreNotSentinels rule says so.
func checkedToken(t testing.TB, iss *refresh.Issuer) string {
	t.Helper()
	k, ok := issuerKeys.Load(iss)
	if !ok {
		t.Fatal("storetest: checkedToken needs an Issuer made by NewIssuer")
	}
	sid := make([]byte, 16)
	_, _ = rand.Read(sid)
	m := hmac.New(sha256.New, k.([2][]byte)[1])
	m.Write([]byte("refreshkit/refresh-check\x00\x03\x01"))
	m.Write(sid)
	raw := append([]byte{3, 1}, sid...)
	raw = append(raw, m.Sum(nil)[:8]...)
	raw = append(raw, 0)                   // generation 0
	raw = append(raw, make([]byte, 16)...) // a tag the store's seed would decide
	return "rt_" + base64.RawURLEncoding.EncodeToString(raw)
}

// testLongValuesKeptWhole: metadata of refresh.MaxMetaBytes and a client
// ID of 1 KiB, the most Issue accepts, round-trip whole. A column sized for
// a short user agent (varchar(255)) cuts it, or refuses the row, and then
// every sign-in from a browser with a long user agent fails; a cut client
// ID no longer matches its client, whose refreshes all fail.
func testLongValuesKeptWhole(t *testing.T, st refresh.Store) {
	const ip = "2001:db8:85a3::8a2e:370:7334"
	unit := "Mozilla/5.0 (X11; Linux x86_64) Ünïcödé ✓ 😀 " // multi-byte runes too
	rest := refresh.MaxMetaBytes - len("user_agent") - len("ip") - len(ip)
	ua := strings.ToValidUTF8(strings.Repeat(unit, rest/len(unit)+1)[:rest], "") // a rune cut in two dropped
	ua += strings.Repeat("x", rest-len(ua))
	s := newSession(subject(t), base)
	s.Meta = map[string]string{"user_agent": ua, "ip": ip}
	s.ClientID = strings.Repeat("client-✓", 1024/len("client-✓")) // 1020 bytes
	s.ClientID += strings.Repeat("c", 1024-len(s.ClientID))
	mustCreate(t, st, s)
	got := mustGet(t, st, s.ID)
	if got.ClientID != s.ClientID {
		t.Fatalf(`rule "client IDs of 1024 bytes are kept whole": one of %d bytes came back as %d bytes`, len(s.ClientID), len(got.ClientID))
	}
	if got.Meta["user_agent"] != ua || got.Meta["ip"] != ip {
		t.Fatalf(`rule "metadata of MaxMetaBytes (%d bytes, keys and values together) is kept whole": a user agent of %d bytes came back as %d bytes`, refresh.MaxMetaBytes, len(ua), len(got.Meta["user_agent"]))
	}
}
