package refresh

import (
	"fmt"
	"testing"
	"time"
)

// TestSameURL: htu matches the request's URL after RFC 3986's syntax- and
// scheme-based normalizations (RFC 9449 §4.3 asks servers to apply them),
// and only then.
func TestSameURL(t *testing.T) {
	const req = "https://api.example.com/me/x"
	for _, htu := range []string{
		"https://api.example.com/me/x", "HTTPS://API.Example.COM/me/x", "https://api.example.com:443/me/x",
		"https://api.example.com/%6De/x", "https://api.example.com/%6de/%78", "https://api.example.com/me/x?q=1#f",
	} {
		if !sameURL(htu, req) || !sameURL(req, htu) {
			t.Errorf("%q does not match %q", htu, req)
		}
	}
	for _, htu := range []string{
		"https://api.example.com/me/X", "https://api.example.com/me%2Fx", "https://api.example.com/me/x/",
		"http://api.example.com/me/x", "https://api.example.com:8443/me/x", "https://api.example.com:80/me/x",
		"https://evil.example.com/me/x", "https://user@api.example.com/me/x", "/me/x", "https://api.example.com/me/%zz",
	} {
		if sameURL(htu, req) || sameURL(req, htu) {
			t.Errorf("%q matches %q", htu, req)
		}
	}
	pairs := [][2]string{
		{"https://a.example", "https://a.example/"},
		{"http://a.example:80/t", "http://a.example/t"},
		{"https://[::1]:443/t", "https://[::1]/t"},
		{"https://a.example/%c3%a9", "https://a.example/%C3%A9"},
		{"https://a.example/a%2fb", "https://a.example/a%2Fb"},
		// Every edge of the unreserved set (RFC 3986 §2.3), encoded.
		{"https://a.example/%41%5A%61%7A%30%39%2D%2E%5F%7E", "https://a.example/AZaz09-._~"},
	}
	// Their neighbours outside it are reserved or other characters:
	// encoded, they stay distinct from the character itself.
	for _, c := range []string{"@", ",", "/", ":", "$", "+", "=", ";"} {
		enc := fmt.Sprintf("%%%02X", c[0])
		if sameURL("https://a.example/x"+enc, "https://a.example/x"+c) {
			t.Errorf("%s matches %s", enc, c)
		}
	}
	for _, p := range pairs {
		if !sameURL(p[0], p[1]) {
			t.Errorf("%q does not match %q", p[0], p[1])
		}
	}
	if sameURL("http://a.example:443/t", "http://a.example/t") {
		t.Error("port 443 is the default of https only")
	}
}

// TestReplayCacheBounds: the replay cache's bounds count both generations,
// a proof is remembered for at least the window, and a generation ages
// out, freeing its places. For each bound alone (the other out of reach):
// exactly that many proofs, refused beyond; still refused once they have
// moved to the previous generation; accepted again when it is gone.
func TestReplayCacheBounds(t *testing.T) {
	const window = time.Minute
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, b := range []struct {
		name        string
		max, perKey int
		keys        []string // whose proofs fill the bound, one each in turn
	}{
		{"per key", 100, 6, []string{"A"}},
		{"all keys", 6, 100, []string{"A", "B", "C"}},
	} {
		c := &replayCache{window: window, max: b.max, perKey: b.perKey}
		add := func(i int, at time.Time) replayVerdict {
			return c.add(b.keys[i%len(b.keys)], fmt.Sprint("jti-", i), at)
		}
		for i := range 6 {
			if v := add(i, t0); v != replayNew {
				t.Fatalf("%s: proof %d: %v", b.name, i, v)
			}
		}
		if v := add(6, t0); v != replayFull {
			t.Fatalf("%s: a 7th proof: %v, want refused at the bound", b.name, v)
		}
		if v := add(0, t0.Add(window)); v != replaySeen {
			t.Fatalf("%s: the first proof again at the window's end: %v, want seen", b.name, v)
		}
		// A new generation: the old one's proofs are still remembered,
		// and still count.
		next := t0.Add(window + time.Nanosecond)
		if v := add(0, next); v != replaySeen {
			t.Fatalf("%s: the first proof in the next generation: %v, want seen", b.name, v)
		}
		if v := add(6, next); v != replayFull {
			t.Fatalf("%s: a proof beside the previous generation's six: %v, want refused", b.name, v)
		}
		// Once that generation is gone, its places are free.
		later := next.Add(window + time.Nanosecond)
		for i := range 6 {
			if v := add(100+i, later); v != replayNew {
				t.Fatalf("%s: proof %d two windows on: %v", b.name, i, v)
			}
		}
	}
}

// TestReplayWindowCoversProofLifetime: a proof is remembered for as long
// as it can verify. Made as far ahead as its iat may be (dpopMaxFuture
// plus Leeway), it verifies until dpopMaxAge plus Leeway past that iat;
// until then a replay is refused, even while an attacker's own proofs, one
// a second, turn the cache's generations over as early as they can.
func TestReplayWindowCoversProofLifetime(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, leeway := range []time.Duration{0, 30 * time.Second, MaxLeeway} {
		rs := newResourceServer("i", "a", "", leeway, DefaultMaxTokenSize, 0, nil)
		lifetime := dpopMaxFuture + leeway + dpopMaxAge + leeway
		if v := rs.dpopSeen.add("victim", "P", t0); v != replayNew {
			t.Fatalf("leeway %v: first use: %v", leeway, v)
		}
		for at := t0.Add(time.Second); at.Before(t0.Add(lifetime)); at = at.Add(time.Second) {
			if v := rs.dpopSeen.add("attacker", at.String(), at); v != replayNew {
				t.Fatalf("leeway %v: the attacker's proof at %v: %v", leeway, at, v)
			}
		}
		if v := rs.dpopSeen.add("victim", "P", t0.Add(lifetime)); v != replaySeen {
			t.Fatalf("leeway %v: the proof replayed at the end of its life: %v, want seen", leeway, v)
		}
	}
}
