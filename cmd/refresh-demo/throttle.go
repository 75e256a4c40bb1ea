package main

import (
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"
)

// loginThrottle slows password guessing: after limit failed sign-ins from
// one client (IPv4 address, or IPv6 /64) within window (counted from the
// first), that IP's sign-ins are refused with 429 and Retry-After until the
// window ends, before the password is checked (so a guesser also stops
// costing bcrypt time). A check counts from the moment it starts: the
// failures of the window plus the checks still running never pass limit, so
// guesses sent all at once cannot slip past before the first failure is
// counted (TestLoginThrottleConcurrentGuesses). Successful sign-ins are not
// counted. It is per IP only: it does not lock a user's account (which an
// attacker could do to anyone), and it does not stop guessing spread over
// many addresses. Behind a reverse proxy every client has the proxy's
// address; do not enable it there without taking the client address from
// the proxy. At most maxTracked addresses are remembered; past that, new
// addresses are not counted until old windows end. It is safe for
// concurrent use; a nil *loginThrottle refuses nothing.
type loginThrottle struct {
	limit  int
	window time.Duration
	now    func() time.Time

	mu    sync.Mutex // guards fails and swept
	fails map[string]*failures
	swept time.Time // when a full map was last swept
}

// failures is one client's count: n failures since first (zero while there
// is none), and the checks it has running.
type failures struct {
	first   time.Time
	n       int
	running int
}

const maxTracked = 100_000

func newLoginThrottle(limit int, window time.Duration, now func() time.Time) *loginThrottle {
	if limit <= 0 {
		return nil
	}
	if now == nil {
		now = time.Now
	}
	return &loginThrottle{limit: limit, window: window, now: now, fails: map[string]*failures{}}
}

// clientKey names the client r came from: its IPv4 address, or the /64 of
// its IPv6 address (one subscriber usually holds a whole /64, so counting
// single IPv6 addresses would give a guesser 2^64 fresh starts).
func clientKey(r *http.Request) string {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	a := ap.Addr().Unmap()
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.String()
	}
	return a.String()
}

// admit reserves a password check for r's client. When the client's
// failures in the window and its running checks have reached the limit, it
// answers 429 with Retry-After and returns nil; otherwise it returns done,
// which the caller must call once, with whether the check failed.
func (l *loginThrottle) admit(w http.ResponseWriter, r *http.Request) (done func(failed bool)) {
	if l == nil {
		return func(bool) {}
	}
	ip := clientKey(r)
	l.mu.Lock()
	now := l.now()
	f := l.fails[ip]
	if f != nil && f.n > 0 && !now.Before(f.first.Add(l.window)) {
		f.first, f.n = time.Time{}, 0 // the window is over
	}
	if f != nil && f.n+f.running >= l.limit {
		wait := time.Second // checks still running: their outcome decides
		if f.n >= l.limit {
			wait = f.first.Add(l.window).Sub(now)
		}
		l.mu.Unlock()
		w.Header().Set("Retry-After", strconv.FormatInt(int64((wait+time.Second-1)/time.Second), 10))
		writeJSON(w, http.StatusTooManyRequests, map[string]string{"error": "too_many_attempts"})
		return nil
	}
	if f == nil {
		if !l.room(now) {
			l.mu.Unlock()
			return func(bool) {} // full: not counted
		}
		f = &failures{}
		l.fails[ip] = f
	}
	f.running++
	l.mu.Unlock()
	return func(failed bool) {
		l.mu.Lock()
		defer l.mu.Unlock()
		f.running--
		if failed {
			if now := l.now(); f.n == 0 || !now.Before(f.first.Add(l.window)) {
				f.first, f.n = now, 0
			}
			f.n++
		}
		if f.n == 0 && f.running == 0 && l.fails[ip] == f {
			delete(l.fails, ip)
		}
	}
}

// room reports whether another client may be remembered, sweeping clients
// with nothing left to count when the map is full (at most once per tenth
// of a window). l.mu must be held.
func (l *loginThrottle) room(now time.Time) bool {
	if len(l.fails) < maxTracked {
		return true
	}
	if now.Sub(l.swept) < l.window/10 {
		return false // swept moments ago: do not scan the map on every sign-in
	}
	l.swept = now
	for k, f := range l.fails {
		if f.running == 0 && (f.n == 0 || !now.Before(f.first.Add(l.window))) {
			delete(l.fails, k)
		}
	}
	return len(l.fails) < maxTracked
}
