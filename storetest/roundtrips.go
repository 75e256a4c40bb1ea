package storetest

import (
	"context"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/refreshkit/refresh"
)

// HideCapabilities returns st as a plain refresh.Store, without any optional
// capability such as refresh.ActiveAdvancer, so that the Issuer takes the
// path a store without them gets (for benchmarks and round-trip tests).
func HideCapabilities(st refresh.Store) refresh.Store { return struct{ refresh.Store }{st} }

// RoundTrips is what each kind of refresh costs in round trips to a store.
type RoundTrips struct {
	Rotate     int64 // the current token of a live session, on an instance that has seen it
	ColdRotate int64 // the same on an instance that has not (after a restart)
	Grace      int64 // the previous token within the grace window
	Reuse      int64 // an older token: reuse, the session is revoked
	Plain      int64 // a rotation through a store without refresh.ActiveAdvancer
	Forged     int64 // all of 20 forged tokens naming real sessions, on a cold instance: 0
}

// Want is what the shipped stores achieve, and what an ActiveAdvancer
// should: one round trip for the common rotation.
var Want = RoundTrips{Rotate: 1, ColdRotate: 2, Grace: 2, Reuse: 3, Plain: 2, Forged: 0}

// CheckRoundTrips measures RoundTrips through Issuers on st, counting with
// count (the adapter's own hook on its driver: a pgx tracer, a go-redis
// hook), and fails the test if they differ from want. Every figure is the
// average of several rotations, measured after a warm-up so that one-time
// costs (loading a Lua script) do not count.
func CheckRoundTrips(t *testing.T, st refresh.Store, count func() int64, want RoundTrips) RoundTrips {
	t.Helper()
	c := context.Background()
	const n = 20
	measure := func(f func()) int64 {
		before := count()
		for range n {
			f()
		}
		return (count() - before + n/2) / n
	}
	must := func(p *refresh.Pair, err error) *refresh.Pair {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	var got RoundTrips
	iss := NewIssuer(t, st, time.Minute)
	p := must(iss.Issue(c, "alice"))
	p = must(iss.Rotate(c, p.RefreshToken)) // warm-up
	got.Rotate = measure(func() { p = must(iss.Rotate(c, p.RefreshToken)) })

	// An instance that never saw the sessions (a restart, another replica).
	var toks []string
	for range n {
		toks = append(toks, must(iss.Issue(c, "alice")).RefreshToken)
	}
	// Forged tokens naming those real sessions (their ids are in every
	// access token) with a wrong session check: refused before the store is
	// asked, so this one is a total, not an average.
	cold := NewIssuerWithKeysOf(t, iss, st)
	before := count()
	for _, tok := range toks {
		if _, err := cold.Rotate(c, flipCheckBit(t, tok)); !errors.Is(err, refresh.ErrInvalidToken) {
			t.Fatalf("forged token: %v, want ErrInvalidToken", err)
		}
	}
	got.Forged = count() - before
	i := 0
	got.ColdRotate = measure(func() { must(cold.Rotate(c, toks[i])); i++ })

	// The previous token within the grace window.
	prev := p.RefreshToken
	p = must(iss.Rotate(c, prev))
	got.Grace = measure(func() { must(iss.Rotate(c, prev)) })

	// Reuse: each time a fresh session whose older token is replayed.
	var old []string
	for range n {
		q := must(iss.Issue(c, "alice"))
		r := must(iss.Rotate(c, q.RefreshToken))
		must(iss.Rotate(c, r.RefreshToken))
		old = append(old, q.RefreshToken)
	}
	i = 0
	got.Reuse = measure(func() {
		if _, err := iss.Rotate(c, old[i]); !errors.Is(err, refresh.ErrReused) {
			t.Fatalf("reuse: %v", err)
		}
		i++
	})

	plain := NewIssuerWithKeysOf(t, iss, HideCapabilities(st))
	q := must(plain.Issue(c, "alice"))
	q = must(plain.Rotate(c, q.RefreshToken))
	got.Plain = measure(func() { q = must(plain.Rotate(c, q.RefreshToken)) })

	if got != want {
		t.Errorf("round trips per refresh: %+v, want %+v", got, want)
	}
	return got
}

// flipCheckBit returns tok with one bit of its session check flipped (the
// token format of refreshtoken.go; see checkedToken).
func flipCheckBit(t testing.TB, tok string) string {
	t.Helper()
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(tok, "rt_"))
	if err != nil || len(raw) < 26 {
		t.Fatalf("not a refresh token: %q", tok)
	}
	raw[18] ^= 1
	return "rt_" + base64.RawURLEncoding.EncodeToString(raw)
}
