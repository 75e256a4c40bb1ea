package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/refreshkit/refresh"
)

// gatedStore holds the next Create, once armed, until release is closed:
// a sign-in whose password check has passed, caught between the check and
// its session's creation.
type gatedStore struct {
	refresh.Store
	mu      sync.Mutex // guards armed
	armed   bool
	entered chan struct{} // closed when the held Create arrives
	release chan struct{}
}

func (g *gatedStore) Create(ctx context.Context, s *refresh.Session) error {
	g.mu.Lock()
	armed := g.armed
	g.armed = false
	g.mu.Unlock()
	if armed {
		close(g.entered)
		<-g.release
	}
	return g.Store.Create(ctx, s)
}

func (g *gatedStore) arm() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.armed, g.entered, g.release = true, make(chan struct{}), make(chan struct{})
}

// TestPasswordChangeEndsEverySession is the attack on "log out everywhere"
// after a password change: whoever knows alice's password keeps signing
// in, so that one sign-in is always between its password check and its
// session's creation, and hopes that one lands after the change's
// RevokeSubject, which then missed it. The attacker's sign-in is held
// there (gatedStore) while alice changes her password over HTTP; released,
// it must get no token, and no session of alice may be live. Before
// loginHandler compared the password's version after Issue, it got 200
// and a session that outlived the change.
func TestPasswordChangeEndsEverySession(t *testing.T) {
	mem := refresh.NewMemoryStore()
	t.Cleanup(func() { _ = mem.Close() })
	gs := &gatedStore{Store: mem}
	iss := newTestIssuerOn(t, gs)
	// Two wrong current passwords per client and window, as for sign-ins.
	throttleClock := &testClock{t: time.Unix(1_800_000_000, 0)}
	srv := httptest.NewServer(newAuthMux(iss, authConfig{loginFailures: 2, loginWindow: time.Hour, now: throttleClock.Now}))
	t.Cleanup(srv.Close)
	signIn := func(password string) reply {
		return post(t, srv.URL+"/login", form, url.Values{"username": {"alice"}, "password": {password}}.Encode())
	}
	changePassword := func(access, body string) reply {
		return post(t, srv.URL+"/password", form, body, "Authorization", "Bearer "+access)
	}
	r := signIn("wonderland")
	if r.status != 200 {
		t.Fatalf("alice's sign-in: %v", r)
	}

	// Refusals change nothing.
	narrowed := post(t, srv.URL+"/token", form, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {r.body["refresh_token"].(string)}, "scope": {"sessions"}}.Encode())
	if narrowed.status != 200 {
		t.Fatalf("narrowing refresh: %v", narrowed)
	}
	onlySessions := narrowed.body["access_token"].(string) // scope sessions: not enough
	if got := changePassword(onlySessions, "current_password=wonderland&password=open+sesame"); got.status != 403 || got.body["error"] != "insufficient_scope" {
		t.Fatalf("a token without scope profile changed the password: %v", got)
	}
	alice := signIn("wonderland").body["access_token"].(string)
	for _, bad := range []struct{ body, why string }{
		{"current_password=wonderland&password=short", "under 8 bytes"},
		{"current_password=wonderland&password=" + strings.Repeat("x", minPasswordLen-1), "one byte under 8"},
		{"current_password=wonderland&password=" + strings.Repeat("x", maxPasswordLen+1), "over bcrypt's 72 bytes"},
		{"current_password=wonderland&password=open+sesame&password=other+one", "two passwords"},
		{"current_password=wonderland&current_password=x&password=open+sesame", "two current passwords"},
		{"password=open+sesame", "no current password"},
		{"current_password=wonderland", "no new password"},
	} {
		if got := changePassword(alice, bad.body); got.status != 400 || got.body["error"] != "invalid_request" {
			t.Errorf("%s: %v, want 400 invalid_request", bad.why, got)
		}
	}
	if got := post(t, srv.URL+"/password", "text/plain", "current_password=wonderland&password=open+sesame", "Authorization", "Bearer "+alice); got.status != 400 {
		t.Errorf("text/plain: %v", got)
	}
	if got := post(t, srv.URL+"/password", form, "current_password=wonderland&password=open+sesame"); got.status != 401 {
		t.Errorf("no token: %v", got)
	}
	// An access token alone (stolen in the minutes after a sign-in, say)
	// does not change the password: it wants the current one, and guesses
	// count like failed sign-ins.
	for i := range 2 {
		if got := changePassword(alice, "current_password=guess"+strconv.Itoa(i)+"&password=open+sesame"); got.status != 403 || got.body["error"] != "invalid_credentials" {
			t.Errorf("wrong current password %d: %v, want 403 invalid_credentials", i, got)
		}
	}
	if got := changePassword(alice, "current_password=wonderland&password=open+sesame"); got.status != http.StatusTooManyRequests {
		t.Errorf("a third guess: %v, want 429", got)
	}
	throttleClock.Add(time.Hour) // the window ends
	if r := signIn("wonderland"); r.status != 200 {
		t.Fatalf("a refused change changed the password: %v", r)
	}

	// The attack.
	gs.arm()
	attacker := make(chan reply, 1)
	go func() { attacker <- signIn("wonderland") }()
	select {
	case <-gs.entered: // its password check passed; its session is not created yet
	case a := <-attacker:
		t.Fatalf("the attacker's sign-in ended before creating a session: %v", a)
	}
	got := changePassword(alice, "current_password=wonderland&password=open+sesame")
	if got.status != 200 {
		t.Fatalf("alice's password change: %v", got)
	}
	if n, _ := got.body["sessions_ended"].(float64); n != 3 {
		t.Errorf("sessions_ended = %v, want alice's 3 sign-ins", got.body["sessions_ended"])
	}
	close(gs.release)
	if a := <-attacker; a.status != 401 || a.body["error"] != "invalid_credentials" || a.body["access_token"] != nil {
		t.Fatalf("the sign-in in flight during the change: %v; want 401 invalid_credentials and no token", a)
	}
	live, err := iss.Sessions(context.Background(), "alice")
	if err != nil || len(live) != 0 {
		t.Fatalf("alice's live sessions after the change: %d (%v), want none", len(live), err)
	}
	if code, _ := getWith(t, srv.URL+"/me", alice); code != http.StatusUnauthorized {
		t.Errorf("the changing device's own token after the change: %d, want 401 (it signs in again)", code)
	}
	if r := signIn("wonderland"); r.status != 401 {
		t.Errorf("the old password: %v", r)
	}
	throttleClock.Add(time.Hour) // the held sign-in and the old password counted as failures
	if r := signIn("open sesame"); r.status != 200 {
		t.Errorf("the new password: %v", r)
	}
}

// TestPasswordLengthBounds: a new password of exactly 8 bytes and one of
// exactly 72 (the most bcrypt reads) are taken over HTTP and sign in;
// with one byte less or more they are refused (above), and a 72-byte
// password differing only in its last byte does not sign in, so no byte
// of it is cut off.
func TestPasswordLengthBounds(t *testing.T) {
	iss := newTestIssuer(t)
	srv := httptest.NewServer(newAuthMux(iss, authConfig{}))
	t.Cleanup(srv.Close)
	signIn := func(password string) reply {
		return post(t, srv.URL+"/login", form, url.Values{"username": {"bob"}, "password": {password}}.Encode())
	}
	current := "builder"
	for _, next := range []string{strings.Repeat("b", minPasswordLen), strings.Repeat("B", maxPasswordLen-1) + "1"} {
		r := signIn(current)
		if r.status != 200 {
			t.Fatalf("bob's sign-in with %d bytes: %v", len(current), r)
		}
		body := url.Values{"current_password": {current}, "password": {next}}.Encode()
		if got := post(t, srv.URL+"/password", form, body, "Authorization", "Bearer "+r.body["access_token"].(string)); got.status != 200 {
			t.Fatalf("a new password of %d bytes: %v, want 200", len(next), got)
		}
		if r := signIn(next); r.status != 200 {
			t.Fatalf("signing in with the new %d-byte password: %v", len(next), r)
		}
		current = next
	}
	if r := signIn(current[:maxPasswordLen-1] + "2"); r.status != 401 {
		t.Fatalf("a 72-byte password differing in its last byte: %v, want 401", r)
	}
}
