package main

import (
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"
)

// loginThrottle slows password guessing: after limit failed sign-ins from
// one client (IPv4 address, or IPv6 /64) within window (counted from the first), that IP's sign-ins
// are refused with 429 and Retry-After until the window ends, before the
// password is checked (so a guesser also stops costing bcrypt time).
// Successful sign-ins are not counted. It is per IP only: it does not lock
// a user's account (which an attacker could do to anyone), and it does not
// stop guessing spread over many addresses. Behind a reverse proxy every
// client has the proxy's address; do not enable it there without taking
// the client address from the proxy. At most maxTracked addresses are
// remembered; past that, new addresses are not counted until old windows
// end. It is safe for concurrent use; a nil *loginThrottle refuses nothing.
type loginThrottle struct {
	limit  int
	window time.Duration
	now    func() time.Time

	mu    sync.Mutex // guards fails and swept
	fails map[string]*failures
	swept time.Time // when a full map was last swept
}

type failures struct {
	first time.Time
	n     int
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

// refuse answers 429 and reports true if r's address has used up its
// failures.
func (l *loginThrottle) refuse(w http.ResponseWriter, r *http.Request) bool {
	if l == nil {
		return false
	}
	ip := clientKey(r)
	l.mu.Lock()
	f := l.fails[ip]
	var wait time.Duration
	if f != nil {
		now := l.now()
		if end := f.first.Add(l.window); !now.Before(end) {
			delete(l.fails, ip)
		} else if f.n >= l.limit {
			wait = end.Sub(now)
		}
	}
	l.mu.Unlock()
	if wait <= 0 {
		return false
	}
	w.Header().Set("Retry-After", strconv.FormatInt(int64((wait+time.Second-1)/time.Second), 10))
	writeJSON(w, http.StatusTooManyRequests, map[string]string{"error": "too_many_attempts"})
	return true
}

// failed counts a failed sign-in from r's address.
func (l *loginThrottle) failed(r *http.Request) {
	if l == nil {
		return
	}
	ip := clientKey(r)
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if f := l.fails[ip]; f != nil && now.Before(f.first.Add(l.window)) {
		f.n++
		return
	}
	if len(l.fails) >= maxTracked {
		if now.Sub(l.swept) < l.window/10 {
			return // swept moments ago: do not scan the map on every failure
		}
		l.swept = now
		for k, f := range l.fails {
			if !now.Before(f.first.Add(l.window)) {
				delete(l.fails, k)
			}
		}
		if len(l.fails) >= maxTracked {
			return
		}
	}
	l.fails[ip] = &failures{first: now, n: 1}
}
