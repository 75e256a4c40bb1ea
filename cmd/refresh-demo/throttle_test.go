package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// testClock is a settable clock.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *testClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// TestLoginThrottle is the password guesser's view: after 3 failures from
// one address, even the right password is refused with 429 (and no
// session starts) until a minute after the first failure, to the
// nanosecond; other addresses, and sign-ins that succeed, are not affected;
// the browser app's sign-in shares the count.
func TestLoginThrottle(t *testing.T) {
	t.Parallel() // bcrypt under -race: seconds
	iss := newTestIssuer(t)
	clock := &testClock{t: time.Unix(1_800_000_000, 0)}
	mux := newAuthMux(iss, authConfig{loginFailures: 3, loginWindow: time.Minute, now: clock.Now})
	login := func(path, ip, password string) *httptest.ResponseRecorder {
		var req *http.Request
		if path == "/app/login" {
			req = httptest.NewRequest("POST", path, strings.NewReader(`{"username":"alice","password":"`+password+`"}`))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("X-Requested-With", "test")
		} else {
			req = httptest.NewRequest("POST", path, strings.NewReader(url.Values{"username": {"alice"}, "password": {password}}.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
		req.RemoteAddr = ip + ":40000"
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, req)
		return rec
	}
	live := func() int {
		list, err := iss.Sessions(context.Background(), "alice")
		if err != nil {
			t.Fatal(err)
		}
		return len(list)
	}

	for i := 0; i < 4; i++ {
		if c := login("/login", "192.0.2.1", "wonderland").Code; c != 200 {
			t.Fatalf("successful sign-in %d: %d (successes must not count)", i, c)
		}
	}
	for i := 0; i < 2; i++ {
		if c := login("/login", "192.0.2.1", "guess").Code; c != 401 {
			t.Fatalf("failure %d: %d", i, c)
		}
		clock.Add(time.Second)
	}
	if c := login("/app/login", "192.0.2.1", "guess").Code; c != 401 {
		t.Fatalf("third failure, through the browser app: %d", c)
	}
	before := live()
	for _, path := range []string{"/login", "/app/login"} {
		rec := login(path, "192.0.2.1", "wonderland")
		if rec.Code != 429 || rec.Header().Get("Retry-After") != "58" {
			t.Fatalf("%s after 3 failures: %d Retry-After %q (want 429, 58)", path, rec.Code, rec.Header().Get("Retry-After"))
		}
		if strings.Contains(rec.Body.String(), "alice") || rec.Header().Get("Set-Cookie") != "" {
			t.Fatalf("%s: a refused sign-in answered with more than the error: %s", path, rec.Body)
		}
	}
	if live() != before {
		t.Fatal("a refused sign-in started a session")
	}
	if c := login("/login", "192.0.2.99", "wonderland").Code; c != 200 {
		t.Fatalf("another address: %d", c)
	}

	clock.Add(time.Minute - 2*time.Second - 1) // 1 ns before the window ends
	if rec := login("/login", "192.0.2.1", "wonderland"); rec.Code != 429 || rec.Header().Get("Retry-After") != "1" {
		t.Fatalf("1 ns before the end: %d Retry-After %q", rec.Code, rec.Header().Get("Retry-After"))
	}
	clock.Add(1)
	if c := login("/login", "192.0.2.1", "wonderland").Code; c != 200 {
		t.Fatalf("at the end of the window: %d", c)
	}
	if c := login("/login", "192.0.2.1", "guess").Code; c != 401 {
		t.Fatalf("a new window counts afresh: %d", c)
	}

	// Off (the default of newMux), nothing is refused.
	open := newAuthMux(iss, authConfig{})
	for i := 0; i < 4; i++ {
		req := httptest.NewRequest("POST", "/login", strings.NewReader("username=alice&password=guess"))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		rec := httptest.NewRecorder()
		open.ServeHTTP(rec, req)
		if rec.Code != 401 {
			t.Fatalf("without a limit, attempt %d: %d", i, rec.Code)
		}
	}
}

// TestLoginThrottleBounded: a guesser with more addresses than the
// throttle remembers cannot grow it without bound.
func TestLoginThrottleBounded(t *testing.T) {
	t.Parallel()
	clock := &testClock{t: time.Unix(1_800_000_000, 0)}
	l := newLoginThrottle(1, time.Minute, clock.Now)
	for i := 0; i < maxTracked+500; i++ {
		r := httptest.NewRequest("POST", "/login", nil)
		r.RemoteAddr = fmt.Sprintf("[2001:db8::%x:%x]:1", i>>16, i&0xffff)
		l.failed(r)
	}
	if n := len(l.fails); n != maxTracked {
		t.Fatalf("%d addresses remembered, want %d", n, maxTracked)
	}
	clock.Add(time.Minute)
	r := httptest.NewRequest("POST", "/login", nil)
	r.RemoteAddr = "192.0.2.7:1"
	l.failed(r)
	if n := len(l.fails); n != 1 {
		t.Fatalf("after the windows ended: %d addresses, want 1 (expired ones swept)", n)
	}
}

// TestLoginThrottleOverHTTP: the guesser against the running demo, over
// real HTTP with the -login-failures setting.
func TestLoginThrottleOverHTTP(t *testing.T) {
	t.Parallel()
	base, stop, _ := startDemo(t, options{addr: "127.0.0.1:0", store: "memory", loginFailures: 2})
	defer stop()
	try := func(password string) *http.Response {
		resp, err := http.PostForm(base+"/login", url.Values{"username": {"bob"}, "password": {password}})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	for i := 0; i < 2; i++ {
		if resp := try(fmt.Sprint("guess", i)); resp.StatusCode != 401 {
			t.Fatalf("guess %d: %d", i, resp.StatusCode)
		}
	}
	resp := try("builder")
	ra, err := strconv.Atoi(resp.Header.Get("Retry-After"))
	if resp.StatusCode != 429 || err != nil || ra < 1 || ra > 60 {
		t.Fatalf("the right password after 2 failures: %d Retry-After %q (want 429, 1-60)", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
}
