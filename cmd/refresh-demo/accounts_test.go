package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// A password changed at one instance holds at every instance on the store,
// and after a restart, through real HTTP between OS processes. Before, the
// demo kept passwords in each process's memory: the thief of a password
// the user had just changed signed in with it at the other instance, or at
// any instance after it restarted, and held a session again.
func TestPasswordChangeReachesEveryInstance(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: runs demo processes")
	}
	stores := serverStores(t)
	stores["sqlite"] = ""
	bin := buildDemo(t)
	const oldPass, newPass = "builder", "a-new-passphrase"
	for kind, dsn := range stores {
		t.Run(kind, func(t *testing.T) {
			// Two processes on one store (the SQLite one: one file in their
			// data directory). bob's password starts as the built-in one at
			// bcrypt's lowest cost (bcrypt_test.go), so that the demo,
			// built with -race, spends seconds less checking it (they read
			// it from the store at each check); and goes back to that
			// after the test, for the servers outlive it.
			a, b, _, dataDir := instancePair(t, bin, kind, dsn)
			setBob(t, kind, dsn, dataDir)
			if kind != "sqlite" {
				t.Cleanup(func() { setBob(t, kind, dsn, dataDir) })
			}
			changePassword(t, a.base, loginAt(t, a.base, "bob", oldPass), oldPass, newPass)
			oldAt := func(p *proc) {
				t.Helper()
				if r := post(t, p.base+"/login", form, url.Values{"username": {"bob"}, "password": {oldPass}}.Encode()); r.status != 401 {
					t.Fatalf("the old password at %s after the change at %s: %d %v, want 401", p.base, a.base, r.status, r.body)
				}
			}
			oldAt(b)
			loginAt(t, b.base, "bob", newPass)

			// A restart seeds the built-in accounts it does not hold, and
			// none it holds.
			b.stop(t)
			b = startProc(t, bin, b.cmd.Env, b.cmd.Args[1:]...)
			oldAt(b)
			if out := b.out.String(); !strings.Contains(out, "alice/wonderland (admin), bob/(password changed) (user)") {
				t.Errorf("the start-up line does not say bob's password changed:\n%s", out)
			}
		})
	}
}

// changePassword changes the password of the token's user at base.
func changePassword(t *testing.T, base, token, current, next string) {
	t.Helper()
	r := post(t, base+"/password", form, url.Values{"current_password": {current}, "password": {next}}.Encode(), "Authorization", "Bearer "+token)
	if r.status != 200 {
		t.Fatalf("POST /password at %s: %d %v", base, r.status, r.body)
	}
}

// setBob gives bob his built-in password, as this test binary has it
// (bcrypt_test.go), in the kind's store.
func setBob(t *testing.T, kind, dsn, dataDir string) {
	t.Helper()
	ctx := context.Background()
	if err := prepareDataDir(dataDir); err != nil {
		t.Fatal(err)
	}
	_, pw, closeStore, err := openStore(ctx, kind, dsn, dataDir)
	if err != nil {
		t.Fatalf("setting bob's password: %v", err)
	}
	defer closeStore()
	if err := pw.setPassword(ctx, "bob", users["bob"].hash); err != nil {
		t.Fatalf("setting bob's password: %v", err)
	}
}

// flakyPasswords is a passwordStore whose reads fail from the failFrom-th
// on (counting from 1; 0: none fail), and whose writes fail when failSet.
type flakyPasswords struct {
	passwordStore
	mu       sync.Mutex // guards reads, failFrom and failSet
	reads    int
	failFrom int
	failSet  bool
}

var errPasswordsDown = errors.New("password store down: secret detail")

func (f *flakyPasswords) password(ctx context.Context, username string) ([]byte, uint64, bool, error) {
	f.mu.Lock()
	f.reads++
	fail := f.failFrom > 0 && f.reads >= f.failFrom
	f.mu.Unlock()
	if fail {
		return nil, 0, false, errPasswordsDown
	}
	return f.passwordStore.password(ctx, username)
}

// failReadsFrom makes the n-th read from now on fail, and every one after
// it (0: none).
func (f *flakyPasswords) failReadsFrom(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reads, f.failFrom = 0, n
}

func (f *flakyPasswords) setPassword(ctx context.Context, username string, hash []byte) error {
	f.mu.Lock()
	fail := f.failSet
	f.mu.Unlock()
	if fail {
		return errPasswordsDown
	}
	return f.passwordStore.setPassword(ctx, username, hash)
}

// When the passwords cannot be read, a sign-in fails closed over HTTP: 503
// with no detail and no token, and no session left live, whether the read
// that failed was the password check or the re-check after Issue; it does
// not count against the client as a wrong password. A password change
// whose write fails changes nothing and ends no session.
func TestPasswordStoreDownFailsClosed(t *testing.T) {
	iss := newTestIssuer(t)
	pw := &flakyPasswords{passwordStore: newMemoryPasswords()}
	srv := httptest.NewServer(newAuthMux(iss, authConfig{passwords: pw, loginFailures: 1, loginWindow: time.Hour}))
	t.Cleanup(srv.Close)
	signIn := func() reply {
		return post(t, srv.URL+"/login", form, url.Values{"username": {"alice"}, "password": {"wonderland"}}.Encode())
	}
	down := func(r reply, what string) {
		t.Helper()
		if r.status != http.StatusServiceUnavailable || r.body["error"] != "temporarily_unavailable" || r.body["access_token"] != nil ||
			strings.Contains(fmt.Sprint(r.body), "secret detail") {
			t.Fatalf("%s: %d %v, want 503 temporarily_unavailable and nothing else", what, r.status, r.body)
		}
	}
	liveSessions := func() int {
		t.Helper()
		list, err := iss.Sessions(context.Background(), "alice")
		if err != nil {
			t.Fatal(err)
		}
		return len(list)
	}

	pw.failReadsFrom(1) // the password check's read
	down(signIn(), "the check's read failing")
	down(signIn(), "again (a wrong password would be throttled by now: limit 1)")
	pw.failReadsFrom(2) // the re-check after Issue
	down(signIn(), "the re-check's read failing")
	if n := liveSessions(); n != 0 {
		t.Fatalf("%d sessions live after sign-ins that failed, want 0", n)
	}

	pw.failReadsFrom(0)
	r := signIn()
	if r.status != 200 {
		t.Fatalf("sign-in with the store back: %v", r)
	}
	change := func() reply {
		return post(t, srv.URL+"/password", form, "current_password=wonderland&password=open+sesame", "Authorization", "Bearer "+r.body["access_token"].(string))
	}
	pw.failReadsFrom(1)
	down(change(), "a password change whose check's read fails")
	down(change(), "again (a wrong current password would be throttled by now)")
	pw.failReadsFrom(0)
	pw.mu.Lock()
	pw.failSet = true
	pw.mu.Unlock()
	down(change(), "a password change whose write fails")
	if n := liveSessions(); n != 1 {
		t.Fatalf("%d sessions live after a failed change, want 1", n)
	}
	pw.mu.Lock()
	pw.failSet = false
	pw.mu.Unlock()
	if r := signIn(); r.status != 200 {
		t.Fatalf("the old password after a failed change: %v", r)
	}
}
