// Package refreshtest gives a service's own tests a ready Issuer, in the
// spirit of net/http/httptest: generated keys, a fresh MemoryStore, a manual
// clock, and one-line helpers for handler tests.
//
//	func TestMe(t *testing.T) {
//		iss := refreshtest.New(t)
//		h := iss.Middleware()(meHandler)
//		r := httptest.NewRequest(http.MethodGet, "/me", nil)
//		r.Header.Set("Authorization", iss.LoginHeader("alice", refresh.WithScope("read")))
//		w := httptest.NewRecorder()
//		h.ServeHTTP(w, r)
//		// assert on w ...
//	}
//
// Time moves only when the test says so (Clock.Advance, Clock.Set), for the
// Issuer and the store alike, so idle and absolute expiry, grace windows and
// access-token expiry are tested without sleeping. Every helper fails the
// test with a clear message instead of returning an error, so it works with
// the standard testing package and with testify alike.
//
// It imports only the standard library and the refresh package. Never use it
// outside tests: its keys are generated per test and its clock stands still.
package refreshtest

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"sync"
	"testing"
	"time"

	"github.com/refreshkit/refresh"
)

// Clock is a manual clock: it moves only when told to. It is safe for
// concurrent use.
type Clock struct {
	mu sync.Mutex // guards t
	t  time.Time
}

// NewClock returns a Clock reading start.
func NewClock(start time.Time) *Clock { return &Clock{t: start} }

// Now returns the clock's reading. Pass it as Config.Now.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock forward by d (backward if d is negative).
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// Set sets the clock to t.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

// Option varies New.
type Option func(*options)

type options struct {
	start  time.Time
	config []func(*refresh.Config)
}

// WithStart sets the clock's first reading. Default: the wall clock when
// New runs, truncated to the second.
func WithStart(t time.Time) Option { return func(o *options) { o.start = t } }

// WithConfig changes the configuration before NewIssuer sees it: lifetimes,
// Grace, CheckSession, hooks, other keys, even another Store (the Issuer's
// Store field then still names the unused MemoryStore). Config.Now is the
// manual clock; replace it only if you mean to. OnEvent hooks set here still
// run, after the Issuer records the event.
func WithConfig(f func(*refresh.Config)) Option {
	return func(o *options) { o.config = append(o.config, f) }
}

// Issuer is a ready *refresh.Issuer (embedded: call Middleware, Rotate,
// Verify... on it directly) with what a test needs around it. It is safe for
// concurrent use, like the Issuer it embeds, so tests may run it in
// parallel subtests; give each top-level test its own with New.
type Issuer struct {
	*refresh.Issuer
	// Store is the MemoryStore the Issuer keeps its sessions in, on Clock.
	Store *refresh.MemoryStore
	// Clock is the time of the Issuer and of Store.
	Clock *Clock
	// Config is the configuration the Issuer was made with (keys included).
	// Its Store is Store as the Issuer sees it, through FailStore's faults
	// (a wrapper, not the *refresh.MemoryStore itself).
	Config refresh.Config

	t      testing.TB
	faults *faultyStore // the Issuer's store, unless WithConfig replaced it
	mu     sync.Mutex   // guards events
	events []refresh.Event
}

// The issuer and audience of New's configuration.
const (
	DefaultIssuer   = "https://issuer.refreshtest.invalid"
	DefaultAudience = "https://api.refreshtest.invalid"
)

// New returns an Issuer for the test: Issuer and Audience as the constants
// above, a fresh Ed25519 signing key and refresh MAC key, a MemoryStore with
// no background sweeper, the manual clock, CheckSession on (so that a
// revoked session's access tokens are refused at once) and every other
// setting at the library's defaults. The store is closed when the test ends.
func New(t testing.TB, opts ...Option) *Issuer {
	t.Helper()
	o := options{start: time.Now().UTC().Truncate(time.Second)}
	for _, f := range opts {
		f(&o)
	}
	_, signing, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatalf("refreshtest: generate signing key: %v", err)
	}
	mac := make([]byte, 32)
	_, _ = rand.Read(mac)
	clock := NewClock(o.start)
	store := refresh.NewMemoryStore(refresh.WithSweepInterval(0), refresh.WithStoreClock(clock.Now))
	t.Cleanup(func() { _ = store.Close() })
	faulty := &faultyStore{MemoryStore: store}
	f := &Issuer{Store: store, Clock: clock, t: t}
	cfg := refresh.Config{
		Issuer:       DefaultIssuer,
		Audience:     DefaultAudience,
		Keys:         []refresh.Key{{ID: "refreshtest", Algorithm: refresh.EdDSA, Key: signing}},
		RefreshKeys:  []refresh.RefreshKey{{ID: 1, Secret: mac}},
		Store:        faulty,
		CheckSession: true,
		Now:          clock.Now,
	}
	for _, change := range o.config {
		change(&cfg)
	}
	if cfg.Store == refresh.Store(faulty) {
		f.faults = faulty
	}
	user := cfg.OnEvent
	cfg.OnEvent = func(ctx context.Context, e refresh.Event) {
		f.mu.Lock()
		f.events = append(f.events, e)
		f.mu.Unlock()
		if user != nil {
			user(ctx, e)
		}
	}
	iss, err := refresh.NewIssuer(cfg)
	if err != nil {
		t.Fatalf("refreshtest: NewIssuer: %v", err)
	}
	f.Issuer, f.Config = iss, cfg
	return f
}

// Login starts a session for subject, as a login handler would after
// checking a password, and returns its pair. opts are Issue's: WithScope,
// WithClaims (roles...), WithClientID, WithMeta, WithDPoP.
func (f *Issuer) Login(subject string, opts ...refresh.Option) *refresh.Pair {
	f.t.Helper()
	p, err := f.Issue(context.Background(), subject, opts...)
	if err != nil {
		f.t.Fatalf("refreshtest: Login(%q): %v", subject, err)
	}
	return p
}

// LoginHeader is Login returning only the Authorization header value of the
// new access token ("Bearer …").
func (f *Issuer) LoginHeader(subject string, opts ...refresh.Option) string {
	f.t.Helper()
	return AuthHeader(f.Login(subject, opts...))
}

// AuthHeader is the Authorization header value for p's access token: its
// token type and the token. (A DPoP-bound token also needs a DPoP proof
// header, which the test must sign with its key.)
func AuthHeader(p *refresh.Pair) string { return p.TokenType + " " + p.AccessToken }

// Refresh rotates refreshToken and returns the new pair; opts are Rotate's.
// It fails the test if the refresh is refused; call Rotate to test refusals.
func (f *Issuer) Refresh(refreshToken string, opts ...refresh.Option) *refresh.Pair {
	f.t.Helper()
	p, err := f.Rotate(context.Background(), refreshToken, opts...)
	if err != nil {
		f.t.Fatalf("refreshtest: Refresh: %v", err)
	}
	return p
}

// ExpiredLogin is Login whose access token has already expired (by one
// second) at the clock's current reading; the session and its refresh token
// are live, so the test can also check that a client refreshes. The clock
// does not move.
func (f *Issuer) ExpiredLogin(subject string, opts ...refresh.Option) *refresh.Pair {
	f.t.Helper()
	past := f.Config
	past.Now = func() time.Time { return f.Clock.Now().Add(-f.AccessTTL() - time.Second) }
	iss, err := refresh.NewIssuer(past)
	if err != nil {
		f.t.Fatalf("refreshtest: ExpiredLogin: %v", err)
	}
	p, err := iss.Issue(context.Background(), subject, opts...)
	if err != nil {
		f.t.Fatalf("refreshtest: ExpiredLogin(%q): %v", subject, err)
	}
	return p
}

// RevokedLogin is Login whose session has been revoked: its refresh token
// is refused, and so is its access token (CheckSession is on unless the
// test turned it off).
func (f *Issuer) RevokedLogin(subject string, opts ...refresh.Option) *refresh.Pair {
	f.t.Helper()
	p := f.Login(subject, opts...)
	if err := f.RevokeSession(context.Background(), p.SessionID); err != nil {
		f.t.Fatalf("refreshtest: RevokedLogin(%q): %v", subject, err)
	}
	return p
}

// Session returns the stored session with the id, failing the test if there
// is none. It reads the store directly, whatever FailStore made fail.
func (f *Issuer) Session(id string) *refresh.Session {
	f.t.Helper()
	st := f.Config.Store
	if f.faults != nil {
		st = f.Store
	}
	s, err := st.Get(context.Background(), id)
	if err != nil {
		f.t.Fatalf("refreshtest: Session(%q): %v", id, err)
	}
	return s
}

// Events returns the events the Issuer emitted so far, oldest first, only
// those of the given kinds if any are given: Events(refresh.EventReused)
// tells whether a reuse was detected.
func (f *Issuer) Events(kinds ...refresh.EventKind) []refresh.Event {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := []refresh.Event{}
	for _, e := range f.events {
		if len(kinds) == 0 || contains(kinds, e.Kind) {
			out = append(out, e)
		}
	}
	return out
}

func contains(kinds []refresh.EventKind, k refresh.EventKind) bool {
	for _, x := range kinds {
		if x == k {
			return true
		}
	}
	return false
}
