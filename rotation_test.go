package refresh_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/refreshkit/refresh"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var bg = context.Background()

func TestNewIssuerValidation(t *testing.T) {
	rsaSmall, err := rsa.GenerateKey(rand.Reader, 1024)
	require.NoError(t, err)
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	require.NoError(t, err)
	cases := []struct {
		name string
		mod  func(*refresh.Config)
		want string
	}{
		{"no issuer", func(c *refresh.Config) { c.Issuer = "" }, "Issuer is required"},
		{"no audience", func(c *refresh.Config) { c.Audience = "" }, "Audience is required"},
		{"no store", func(c *refresh.Config) { c.Store = nil }, "Store is required"},
		{"no keys", func(c *refresh.Config) { c.Keys = nil }, "at least one key"},
		{"no refresh keys", func(c *refresh.Config) { c.RefreshKeys = nil }, "RefreshKeys needs"},
		{"HMAC secret of 31 bytes", func(c *refresh.Config) { c.Keys[0].Key = hsSecret[:31] }, "under the 32 bytes"},
		{"HS512 secret of 63 bytes", func(c *refresh.Config) {
			c.Keys[0] = refresh.Key{Algorithm: refresh.HS512, Key: make([]byte, 63)}
		}, "under the 64 bytes"},
		{"refresh key of 31 bytes", func(c *refresh.Config) { c.RefreshKeys[0].Secret = macSecret[:31] }, "under the 32 bytes"},
		{"key without algorithm", func(c *refresh.Config) { c.Keys[0].Algorithm = "" }, "no algorithm"},
		{"alg none", func(c *refresh.Config) { c.Keys[0].Algorithm = "none" }, "unsupported algorithm"},
		{"HMAC key given to RS256", func(c *refresh.Config) { c.Keys[0].Algorithm = refresh.RS256 }, "needs an *rsa"},
		{"RSA 1024", func(c *refresh.Config) { c.Keys[0] = refresh.Key{Algorithm: refresh.RS256, Key: rsaSmall} }, "2048 bits"},
		{"ES256 on P-384", func(c *refresh.Config) { c.Keys[0] = refresh.Key{Algorithm: refresh.ES256, Key: p384} }, "P-256"},
		{"verify-only signing key", func(c *refresh.Config) {
			c.Keys[0] = refresh.Key{Algorithm: refresh.ES256, Key: &ecKey.PublicKey}
		}, "needs a private key"},
		{"duplicate kid", func(c *refresh.Config) { c.Keys = append(c.Keys, c.Keys[0]) }, "duplicate key id"},
		{"duplicate refresh key id", func(c *refresh.Config) { c.RefreshKeys = append(c.RefreshKeys, c.RefreshKeys[0]) }, "duplicate refresh key id"},
		{"refresh key reusing the HMAC signing secret", func(c *refresh.Config) {
			c.RefreshKeys = append(c.RefreshKeys, refresh.RefreshKey{ID: 7, Secret: hsSecret})
		}, "has the secret of signing key"},
		{"access TTL over an hour", func(c *refresh.Config) { c.AccessTTL = time.Hour + 1 }, "over the maximum"},
		{"access TTL over idle TTL", func(c *refresh.Config) { c.AccessTTL, c.IdleTTL = 30*time.Minute, 20*time.Minute }, "longer than IdleTTL"},
		{"idle TTL over session TTL", func(c *refresh.Config) { c.IdleTTL, c.SessionTTL = 48*time.Hour, 24*time.Hour }, "longer than SessionTTL"},
		{"grace not under idle", func(c *refresh.Config) { c.IdleTTL, c.Grace = time.Hour, time.Hour }, "shorter than IdleTTL"},
		{"negative grace", func(c *refresh.Config) { c.Grace = -1 }, "negative"},
		{"huge leeway", func(c *refresh.Config) { c.Leeway = time.Hour }, "Leeway"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := newEnv(t).cfg
			cfg.Keys = append([]refresh.Key(nil), cfg.Keys...)
			cfg.RefreshKeys = append([]refresh.RefreshKey(nil), cfg.RefreshKeys...)
			tc.mod(&cfg)
			_, err := refresh.NewIssuer(cfg)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			assert.True(t, strings.HasPrefix(err.Error(), "refresh: "), "errors carry the package prefix: %v", err)
		})
	}
}

func TestIssueDefaultsAndPair(t *testing.T) {
	e := newEnv(t)
	p := e.issue(t, "alice", refresh.WithScope("read", "write"))
	now := e.clock.Now()
	assert.Equal(t, "Bearer", p.TokenType)
	assert.Equal(t, now.Add(refresh.DefaultAccessTTL), p.AccessExpiresAt)
	assert.Equal(t, now.Add(refresh.DefaultIdleTTL), p.RefreshExpiresAt)
	assert.Equal(t, []string{"read", "write"}, p.Scope)
	assert.True(t, strings.HasPrefix(p.RefreshToken, "rt_"), "secret scanners recognise the rt_ prefix")
	s := e.session(t, p.SessionID)
	assert.Equal(t, now.Add(refresh.DefaultSessionTTL), s.ExpiresAt)
	assert.Equal(t, "alice", s.Subject)
	assert.Len(t, s.Seed, 32)
}

func TestIssueRefusesReservedClaims(t *testing.T) {
	e := newEnv(t)
	for _, name := range []string{"iss", "sub", "aud", "exp", "nbf", "iat", "jti", "sid", "scope", "client_id", "cnf", "auth_time"} {
		_, err := e.iss.Issue(bg, "alice", refresh.WithClaims(map[string]any{name: "x"}))
		require.ErrorIs(t, err, refresh.ErrInvalidRequest, name)
	}
	// Claims JSON cannot carry are the caller's fault too, not a 503.
	for _, v := range []any{math.NaN(), math.Inf(1), make(chan int), func() {}} {
		_, err := e.iss.Issue(bg, "alice", refresh.WithClaims(map[string]any{"x": v}))
		require.ErrorIs(t, err, refresh.ErrInvalidRequest, "%T", v)
	}
	assert.Equal(t, 0, e.store.Len(), "a refused Issue stores nothing")
	_, err := e.iss.Issue(bg, "")
	require.Error(t, err)
}

// R1: refresh tokens carry a 128-bit session id, a 256-bit seed and a 128-bit
// tag, and access tokens a 128-bit jti. 100,000 pairs issued from four
// goroutines (the jti batches are per-goroutine pools) are all distinct, and
// every bit of the session ids and of the jtis is set in about half of them:
// a counter, a clock, a constant or a stuck byte fails here even when it is
// unique. Each of the 256 bit counts has to lie within 6 standard
// deviations of n/2; an unbiased generator fails that about once in two
// million runs. Under the race detector, where an Issue costs ten times as
// much, 10,000 pairs; .ci/run runs the 100,000 without it.
func TestR1_TokenEntropy(t *testing.T) {
	e := newEnv(t)
	n, workers := 100_000, 4
	if raceEnabled || testing.Short() {
		n = 10_000
	}
	tolerance := 3 * math.Sqrt(float64(n)) // 6σ, σ = √n/2
	pairs := make([]*refresh.Pair, n)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				p, err := e.iss.Issue(bg, "alice")
				if err != nil {
					t.Error(err)
					return
				}
				pairs[i] = p
			}
		})
	}
	wg.Wait()
	require.False(t, t.Failed())
	tokens := make(map[string]struct{}, n)
	sids := make(map[string]struct{}, n)
	jtis := make(map[string]struct{}, n)
	var sidOnes, jtiOnes [128]int
	count := func(ones *[128]int, b64 string, what string) {
		raw, err := base64.RawURLEncoding.DecodeString(b64)
		require.NoError(t, err, what)
		require.Len(t, raw, 16, what)
		for i := range ones {
			ones[i] += int(raw[i/8] >> (i % 8) & 1)
		}
	}
	for _, p := range pairs {
		tokens[p.RefreshToken] = struct{}{}
		sids[p.SessionID] = struct{}{}
		count(&sidOnes, p.SessionID, "session id")
		c, err := e.iss.Verify(bg, p.AccessToken)
		require.NoError(t, err)
		jtis[c.ID] = struct{}{}
		count(&jtiOnes, c.ID, "jti")
	}
	assert.Len(t, tokens, n)
	assert.Len(t, sids, n)
	assert.Len(t, jtis, n)
	for i := range 128 {
		assert.InDelta(t, n/2, sidOnes[i], tolerance, "bit %d of the session ids", i)
		assert.InDelta(t, n/2, jtiOnes[i], tolerance, "bit %d of the jtis", i)
	}
}

// recordingStore remembers every byte it is given.
type recordingStore struct {
	refresh.Store
	mu   sync.Mutex // guards seen
	seen []string
}

func (r *recordingStore) record(parts ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seen = append(r.seen, parts...)
}

func (r *recordingStore) Create(ctx context.Context, s *refresh.Session) error {
	r.record(s.ID, s.Subject, s.ClientID, string(s.Seed), string(s.Claims), strings.Join(s.Scope, " "))
	for k, v := range s.Meta {
		r.record(k, v)
	}
	return r.Store.Create(ctx, s)
}
func (r *recordingStore) Get(ctx context.Context, id string) (*refresh.Session, error) {
	r.record(id)
	return r.Store.Get(ctx, id)
}
func (r *recordingStore) Advance(ctx context.Context, id string, from uint64, at time.Time) error {
	r.record(id)
	return r.Store.Advance(ctx, id, from, at)
}
func (r *recordingStore) Revoke(ctx context.Context, id string, at time.Time, reason string) error {
	r.record(id, reason)
	return r.Store.Revoke(ctx, id, at, reason)
}

// R2: the store never receives a token, its MAC, or anything a token can be
// rebuilt from without the server key.
func TestR2_StoreNeverSeesTokens(t *testing.T) {
	rec := &recordingStore{Store: refresh.NewMemoryStore(refresh.WithSweepInterval(0))}
	e := newEnv(t, func(c *refresh.Config) { c.Store = rec })
	p := e.issue(t, "alice", refresh.WithMeta(map[string]string{"ua": "x"}))
	p2, err := e.iss.Rotate(bg, p.RefreshToken)
	require.NoError(t, err)
	_, err = e.iss.Rotate(bg, p.RefreshToken) // reuse: revokes
	require.ErrorIs(t, err, refresh.ErrReused)

	for _, tok := range []string{p.RefreshToken, p2.RefreshToken} {
		raw, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(tok, "rt_"))
		require.NoError(t, err)
		tag, check := string(raw[len(raw)-16:]), string(raw[18:26])
		for _, s := range rec.seen {
			assert.NotContains(t, s, tok)
			assert.NotContains(t, s, tag, "the store saw a token's MAC")
			assert.NotContains(t, s, check, "the store saw a session check")
		}
	}
	// Everything the store holds, without the server key, mints nothing: an
	// Issuer with another refresh key over the same store refuses the token.
	other := newEnv(t, func(c *refresh.Config) {
		c.Store = rec
		c.RefreshKeys = []refresh.RefreshKey{{ID: 1, Secret: []byte("another-mac-key-another-mac-key-")}}
	})
	q := e.issue(t, "bob")
	_, err = other.iss.Rotate(bg, q.RefreshToken)
	require.ErrorIs(t, err, refresh.ErrInvalidToken)
	s, err := rec.Get(bg, q.SessionID)
	require.NoError(t, err)
	assert.Equal(t, uint64(0), s.Generation)
}

// R2 as the thief of a copy of the database would try it, over HTTP: with
// every row of the store (ids, subjects, generations, seeds and the rest),
// mint each victim's current and next refresh token in the genuine format
// under the keys one might guess (another secret, the HS256 signing key
// that every resource server verifying HS256 holds, the session's own
// seed) and present them to the token and revocation endpoints: each is
// 400 invalid_grant (the revocation 200, as for any unknown token), no
// session changes, and each victim's own token still rotates.
func TestR2_LeakedStoreMintsNothing(t *testing.T) {
	e := newEnv(t)
	srv, _ := e.server(t, refresh.HandlerConfig{})
	victims := []*refresh.Pair{e.issue(t, "alice"), e.issue(t, "bob", refresh.WithScope("admin"), refresh.WithClaims(map[string]any{"role": "admin"}))}
	var dump []*refresh.Session
	for _, p := range victims {
		dump = append(dump, e.session(t, p.SessionID))
	}
	tried := 0
	for _, s := range dump {
		for _, key := range [][]byte{[]byte("another-mac-key-another-mac-key-"), hsSecret, s.Seed} {
			thief := newEnv(t, func(c *refresh.Config) {
				c.Keys = []refresh.Key{{ID: "t1", Algorithm: refresh.HS256, Key: []byte("thief-signing-key-thief-signing-")}}
				c.RefreshKeys = []refresh.RefreshKey{{ID: 1, Secret: key}} // the victim's key id
			})
			for _, gen := range []uint64{s.Generation, s.Generation + 1} {
				tok := refresh.MintRefresh(thief.iss, s, gen)
				r := postForm(t, nil, srv.URL+"/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok}}, nil)
				require.Equal(t, 400, r.status, "%s's token under a guessed key", s.Subject)
				require.Equal(t, "invalid_grant", r.body["error"])
				r = postForm(t, nil, srv.URL+"/revoke", url.Values{"token": {tok}}, nil)
				require.Equal(t, 200, r.status)
				tried++
			}
		}
	}
	require.Equal(t, 12, tried)
	for i, p := range victims {
		s := e.session(t, p.SessionID)
		require.False(t, s.Revoked(), "a minted token revoked %s's session", s.Subject)
		require.Equal(t, dump[i].Generation, s.Generation)
		r := postForm(t, nil, srv.URL+"/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {p.RefreshToken}}, nil)
		require.Equal(t, 200, r.status, "%s's own token", s.Subject)
	}
}

// The refresh MAC key alone mints nothing, over HTTP: a thief holding
// RefreshKeys and the victim's access token (which names the session) but
// not the store guesses the seed. Even given every other field of the row
// exactly, tokens of the current and next generation minted under the
// real key with a guessed seed (zeros, random, the session id, the key
// itself) are 400 invalid_grant and change nothing; with the real seed the
// same minting passes, so the seed is what the thief lacks.
func TestRefreshKeyAloneMintsNothing(t *testing.T) {
	e := newEnv(t)
	srv, _ := e.server(t, refresh.HandlerConfig{})
	victim := e.issue(t, "alice")
	row := e.session(t, victim.SessionID)
	random := make([]byte, 32)
	_, _ = rand.Read(random)
	for _, seed := range [][]byte{make([]byte, 32), random, []byte(row.ID + row.ID)[:32], macSecret} {
		guess := row.Clone()
		guess.Seed = seed
		for _, gen := range []uint64{row.Generation, row.Generation + 1} {
			tok := refresh.MintRefresh(e.iss, guess, gen)
			r := postForm(t, nil, srv.URL+"/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok}}, nil)
			require.Equal(t, 400, r.status, "a token with a guessed seed")
			require.Equal(t, "invalid_grant", r.body["error"])
		}
	}
	s := e.session(t, victim.SessionID)
	require.False(t, s.Revoked())
	require.Equal(t, row.Generation, s.Generation)
	// The control: the real seed, the same minting.
	r := postForm(t, nil, srv.URL+"/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {refresh.MintRefresh(e.iss, row, row.Generation)}}, nil)
	require.Equal(t, 200, r.status, "minted with the real seed")
}

// R3: every refresh returns a new refresh token; the old one stops working.
func TestR3_RotationReturnsNewToken(t *testing.T) {
	e := newEnv(t, func(c *refresh.Config) { c.Grace = 10 * time.Second })
	p := e.issue(t, "alice")
	seen := map[string]bool{p.RefreshToken: true}
	cur := p
	for i := 0; i < 20; i++ {
		e.clock.Advance(time.Minute)
		next, err := e.iss.Rotate(bg, cur.RefreshToken)
		require.NoError(t, err)
		require.False(t, seen[next.RefreshToken], "rotation %d returned a used refresh token", i)
		require.NotEqual(t, cur.AccessToken, next.AccessToken)
		seen[next.RefreshToken] = true
		cur = next
	}
	e.clock.Advance(11 * time.Second) // past the grace window of the last rotation
	_, err := e.iss.Rotate(bg, p.RefreshToken)
	require.ErrorIs(t, err, refresh.ErrReused)
}

// R4: reuse outside the grace window revokes the session; its current token
// then fails too.
func TestR4_ReuseRevokesSession(t *testing.T) {
	var events []refresh.Event
	e := newEnv(t, func(c *refresh.Config) {
		c.OnEvent = func(_ context.Context, ev refresh.Event) { events = append(events, ev) }
	})
	p := e.issue(t, "alice")
	p2, err := e.iss.Rotate(bg, p.RefreshToken)
	require.NoError(t, err)
	_, err = e.iss.Rotate(bg, p.RefreshToken)
	require.ErrorIs(t, err, refresh.ErrReused)
	assert.True(t, refresh.IsClientError(err))
	s := e.session(t, p.SessionID)
	require.True(t, s.Revoked())
	assert.Equal(t, "reuse", s.RevokeReason)

	_, err = e.iss.Rotate(bg, p2.RefreshToken)
	require.ErrorIs(t, err, refresh.ErrRevoked, "the thief's or the victim's current token dies with the session")

	kinds := []refresh.EventKind{}
	for _, ev := range events {
		kinds = append(kinds, ev.Kind)
	}
	assert.Equal(t, []refresh.EventKind{refresh.EventIssued, refresh.EventRotated, refresh.EventReused}, kinds)
	assert.Equal(t, uint64(0), events[2].Generation, "the event names the reused generation")
}

// R5: reuse revokes that one session, not the user's other sessions.
func TestR5_ReuseRevokesOnlyItsSession(t *testing.T) {
	e := newEnv(t)
	laptop := e.issue(t, "alice")
	phone := e.issue(t, "alice")
	_, err := e.iss.Rotate(bg, laptop.RefreshToken)
	require.NoError(t, err)
	_, err = e.iss.Rotate(bg, laptop.RefreshToken)
	require.ErrorIs(t, err, refresh.ErrReused)
	_, err = e.iss.Rotate(bg, phone.RefreshToken)
	require.NoError(t, err, "the phone's session must survive the laptop's reuse")
	assert.False(t, e.session(t, phone.SessionID).Revoked())
}

// rotateConcurrently presents one refresh token from n goroutines at once.
func rotateConcurrently(e *env, tok string, n int) ([]*refresh.Pair, []error) {
	pairs := make([]*refresh.Pair, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			pairs[i], errs[i] = e.iss.Rotate(bg, tok)
		}()
	}
	close(start)
	wg.Wait()
	return pairs, errs
}

// R6, grace 0: of 64 concurrent refreshes with one token exactly one
// succeeds; the others are reuse and the family is revoked.
func TestR6_ConcurrentStrict(t *testing.T) {
	e := newEnv(t)
	p := e.issue(t, "alice")
	pairs, errs := rotateConcurrently(e, p.RefreshToken, 64)
	wins := 0
	for i, err := range errs {
		if err == nil {
			wins++
			require.NotNil(t, pairs[i])
			continue
		}
		require.True(t, errors.Is(err, refresh.ErrReused) || errors.Is(err, refresh.ErrRevoked), "racer %d: %v", i, err)
	}
	assert.Equal(t, 1, wins)
	assert.True(t, e.session(t, p.SessionID).Revoked())
}

// R6, grace > 0: all 64 succeed and all receive the same refresh token.
func TestR6_ConcurrentGrace(t *testing.T) {
	e := newEnv(t, func(c *refresh.Config) { c.Grace = 5 * time.Second; c.MaxGraceUses = 64 })
	p := e.issue(t, "alice")
	pairs, errs := rotateConcurrently(e, p.RefreshToken, 64)
	for i, err := range errs {
		require.NoError(t, err, "racer %d", i)
	}
	jtis := map[string]bool{}
	for _, q := range pairs {
		assert.Equal(t, pairs[0].RefreshToken, q.RefreshToken, "every racer receives the same successor")
		_, c := decodeJWT(t, q.AccessToken)
		jtis[c["jti"].(string)] = true
	}
	assert.Len(t, jtis, 64, "each racer still gets its own access token")
	s := e.session(t, p.SessionID)
	assert.Equal(t, uint64(1), s.Generation, "the family advanced exactly once")
	assert.Equal(t, uint32(63), s.GraceUses)
	assert.False(t, s.Revoked())
	_, err := e.iss.Rotate(bg, pairs[0].RefreshToken)
	require.NoError(t, err, "the shared successor rotates normally")
}

// R6: the grace window, one nanosecond either side.
func TestR6_GraceBoundary(t *testing.T) {
	const grace = 30 * time.Second
	for _, tc := range []struct {
		after time.Duration
		want  error
	}{
		{grace - time.Nanosecond, nil},
		{grace, nil},
		{grace + time.Nanosecond, refresh.ErrReused},
	} {
		t.Run(tc.after.String(), func(t *testing.T) {
			e := newEnv(t, func(c *refresh.Config) { c.Grace = grace })
			p := e.issue(t, "alice")
			e.clock.Advance(time.Hour)
			next, err := e.iss.Rotate(bg, p.RefreshToken)
			require.NoError(t, err)
			e.clock.Advance(tc.after)
			retry, err := e.iss.Rotate(bg, p.RefreshToken)
			if tc.want != nil {
				require.ErrorIs(t, err, tc.want)
				assert.True(t, e.session(t, p.SessionID).Revoked())
				return
			}
			require.NoError(t, err)
			assert.Equal(t, next.RefreshToken, retry.RefreshToken)
			assert.Equal(t, next.RefreshExpiresAt, retry.RefreshExpiresAt, "a retry does not renew the idle lifetime twice")
		})
	}
}

// R6: only the immediate parent is covered by grace, and retries are bounded.
func TestR6_GraceOnlyParentAndBounded(t *testing.T) {
	e := newEnv(t, func(c *refresh.Config) { c.Grace = time.Minute; c.MaxGraceUses = 2 })
	p0 := e.issue(t, "alice")
	p1, err := e.iss.Rotate(bg, p0.RefreshToken)
	require.NoError(t, err)
	_, err = e.iss.Rotate(bg, p1.RefreshToken)
	require.NoError(t, err)
	_, err = e.iss.Rotate(bg, p0.RefreshToken) // grandparent, within the window
	require.ErrorIs(t, err, refresh.ErrReused)

	e2 := newEnv(t, func(c *refresh.Config) { c.Grace = time.Minute; c.MaxGraceUses = 2 })
	q0 := e2.issue(t, "alice")
	_, err = e2.iss.Rotate(bg, q0.RefreshToken)
	require.NoError(t, err)
	for i := 0; i < 2; i++ {
		_, err = e2.iss.Rotate(bg, q0.RefreshToken)
		require.NoError(t, err, "grace retry %d", i+1)
	}
	_, err = e2.iss.Rotate(bg, q0.RefreshToken)
	require.ErrorIs(t, err, refresh.ErrInvalidToken, "a third retry exceeds MaxGraceUses")
	require.NotErrorIs(t, err, refresh.ErrReused)
	assert.False(t, e2.session(t, q0.SessionID).Revoked(), "refused within the window, but not revoked")
	e2.clock.Advance(time.Minute + time.Nanosecond)
	_, err = e2.iss.Rotate(bg, q0.RefreshToken)
	require.ErrorIs(t, err, refresh.ErrReused, "after the window the parent is reuse")
	assert.True(t, e2.session(t, q0.SessionID).Revoked())
}

// R7: the idle lifetime, one nanosecond either side; rotation renews it.
func TestR7_IdleExpiry(t *testing.T) {
	const idle = 24 * time.Hour
	for _, tc := range []struct {
		after time.Duration
		want  error
	}{
		{idle - time.Nanosecond, nil},
		{idle, refresh.ErrExpired},
		{idle + time.Nanosecond, refresh.ErrExpired},
	} {
		t.Run(tc.after.String(), func(t *testing.T) {
			e := newEnv(t, func(c *refresh.Config) { c.IdleTTL = idle })
			p := e.issue(t, "alice")
			e.clock.Advance(idle / 2)
			p, err := e.iss.Rotate(bg, p.RefreshToken)
			require.NoError(t, err)
			assert.Equal(t, e.clock.Now().Add(idle), p.RefreshExpiresAt, "rotation renews the idle lifetime")
			e.clock.Advance(tc.after)
			_, err = e.iss.Rotate(bg, p.RefreshToken)
			if tc.want == nil {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, tc.want)
			assert.False(t, e.session(t, p.SessionID).Revoked(), "expiry is not revocation")
		})
	}
}

// R7: the absolute lifetime is never extended by rotation.
func TestR7_AbsoluteExpiry(t *testing.T) {
	const idle, life = 10 * time.Hour, 48 * time.Hour
	e := newEnv(t, func(c *refresh.Config) { c.IdleTTL, c.SessionTTL = idle, life })
	start := e.clock.Now()
	p := e.issue(t, "alice")
	for e.clock.Now().Add(idle).Before(start.Add(life)) {
		e.clock.Advance(idle - time.Hour)
		var err error
		p, err = e.iss.Rotate(bg, p.RefreshToken)
		require.NoError(t, err)
		assert.False(t, p.RefreshExpiresAt.After(start.Add(life)), "refresh expiry capped at the session's end")
	}
	assert.Equal(t, start.Add(life), e.session(t, p.SessionID).ExpiresAt)
	e.clock.Set(start.Add(life - time.Nanosecond))
	p, err := e.iss.Rotate(bg, p.RefreshToken)
	require.NoError(t, err)
	assert.Equal(t, start.Add(life), p.RefreshExpiresAt)
	e.clock.Set(start.Add(life))
	_, err = e.iss.Rotate(bg, p.RefreshToken)
	require.ErrorIs(t, err, refresh.ErrExpired)
}

// R8: every single-bit flip of a refresh token is refused and changes nothing.
func TestR8_BitFlipsAreInvalidAndHarmless(t *testing.T) {
	e := newEnv(t, func(c *refresh.Config) { c.Grace = time.Minute })
	p := e.issue(t, "alice")
	before := e.session(t, p.SessionID)
	tok := []byte(p.RefreshToken)
	for i := range tok {
		for bit := 0; bit < 8; bit++ {
			forged := append([]byte(nil), tok...)
			forged[i] ^= 1 << bit
			_, err := e.iss.Rotate(bg, string(forged))
			require.ErrorIs(t, err, refresh.ErrInvalidToken, "byte %d bit %d", i, bit)
			require.ErrorIs(t, e.iss.Revoke(bg, string(forged)), refresh.ErrInvalidToken)
		}
	}
	after := e.session(t, p.SessionID)
	assert.Equal(t, before, after, "forgeries changed the session")
	_, err := e.iss.Rotate(bg, p.RefreshToken)
	require.NoError(t, err, "the genuine token still works")
}

// R8: truncation, extension, other keys and other sessions' ids.
func TestR8_Forgeries(t *testing.T) {
	e := newEnv(t)
	victim := e.issue(t, "victim")
	attacker := e.issue(t, "attacker")
	raw := func(tok string) []byte {
		b, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(tok, "rt_"))
		require.NoError(t, err)
		return b
	}
	enc := func(b []byte) string { return "rt_" + base64.RawURLEncoding.EncodeToString(b) }
	a := raw(attacker.RefreshToken)
	v := raw(victim.RefreshToken)
	swapped := append([]byte(nil), a...)
	copy(swapped[2:18], v[2:18]) // the victim's session id with the attacker's check and tag
	swappedCheck := append([]byte(nil), a...)
	copy(swappedCheck[2:26], v[2:26]) // the victim's id and check with the attacker's tag

	wrongKey := newEnv(t, func(c *refresh.Config) {
		c.RefreshKeys = []refresh.RefreshKey{{ID: 1, Secret: []byte("a-different-refresh-mac-key-here")}}
	})
	forgedElsewhere := wrongKey.issue(t, "victim").RefreshToken

	unknownKey := append([]byte(nil), a...)
	unknownKey[1] = 9
	badVersion := append([]byte(nil), a...)
	badVersion[0] = 4
	asV1 := append([]byte(nil), a...)
	asV1[0] = 1 // the unreleased format before the check
	asV2 := append([]byte(nil), a...)
	asV2[0] = 2 // the unreleased format before the binding
	for name, tok := range map[string]string{
		"empty":              "",
		"prefix only":        "rt_",
		"no prefix":          strings.TrimPrefix(victim.RefreshToken, "rt_"),
		"truncated":          victim.RefreshToken[:len(victim.RefreshToken)-1],
		"extended":           victim.RefreshToken + "A",
		"padded":             victim.RefreshToken + "==",
		"other session's id": enc(swapped),
		"other id and check": enc(swappedCheck),
		"as version 1":       enc(asV1),
		"as version 2":       enc(asV2),
		"wrong server key":   forgedElsewhere,
		"unknown key id":     enc(unknownKey),
		"unknown version":    enc(badVersion),
		"unicode":            "rt_ÄÖÜ" + victim.RefreshToken[6:],
		"control chars":      victim.RefreshToken[:10] + "\x00\n" + victim.RefreshToken[12:],
		"access token":       victim.AccessToken,
		"huge":               "rt_" + strings.Repeat("A", 1<<20),
	} {
		t.Run(name, func(t *testing.T) {
			_, err := e.iss.Rotate(bg, tok)
			require.ErrorIs(t, err, refresh.ErrInvalidToken)
			require.ErrorIs(t, e.iss.Revoke(bg, tok), refresh.ErrInvalidToken)
		})
	}
	for _, p := range []*refresh.Pair{victim, attacker} {
		s := e.session(t, p.SessionID)
		assert.False(t, s.Revoked(), "a forgery revoked a session")
		assert.Equal(t, uint64(0), s.Generation)
	}
}

// TestR8_ForgeriesNeverReachTheStore is the flood an attacker would send to
// load the database: made-up tokens, and tokens naming a real session (its
// id is in every access token) with made-up check and tag, over HTTP at the
// token and revocation endpoints. The session check needs the server key,
// so none of them costs a store call.
func TestR8_ForgeriesNeverReachTheStore(t *testing.T) {
	rec := &recordingStore{Store: refresh.NewMemoryStore(refresh.WithSweepInterval(0))}
	e := newEnv(t, func(c *refresh.Config) { c.Store = rec }) // no ActiveAdvancer: every refresh asks the store
	victim := e.issue(t, "victim")
	srv, _ := e.server(t, refresh.HandlerConfig{})
	real, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(victim.RefreshToken, "rt_"))
	require.NoError(t, err)
	calls := func() int {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		return len(rec.seen)
	}

	var forged []string
	for i := 0; i < 100; i++ {
		b := make([]byte, len(real))
		_, _ = rand.Read(b)
		b[0], b[1] = real[0], real[1] // current version, known key id
		forged = append(forged, "rt_"+base64.RawURLEncoding.EncodeToString(b))
		copy(b[2:18], real[2:18]) // the victim's session id
		forged = append(forged, "rt_"+base64.RawURLEncoding.EncodeToString(b))
		flipped := append([]byte(nil), real...)
		flipped[18+i%8] ^= 1 << (i % 8) // the victim's token, one check bit off
		forged = append(forged, "rt_"+base64.RawURLEncoding.EncodeToString(flipped))
		v1 := append([]byte{1, real[1]}, real[2:18]...) // the layout before the check
		v1 = append(v1, b[26:]...)
		forged = append(forged, "rt_"+base64.RawURLEncoding.EncodeToString(v1))
	}
	before := calls()
	for _, tok := range forged {
		r := postForm(t, nil, srv.URL+"/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok}}, nil)
		require.Equal(t, 400, r.status)
		require.Equal(t, "invalid_grant", r.body["error"])
		r = postForm(t, nil, srv.URL+"/revoke", url.Values{"token": {tok}}, nil)
		require.Equal(t, 200, r.status)
	}
	assert.Equal(t, before, calls(), "%d forged tokens cost store calls", len(forged))

	r := postForm(t, nil, srv.URL+"/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {victim.RefreshToken}}, nil)
	require.Equal(t, 200, r.status, "the genuine token")
	assert.Greater(t, calls(), before, "the genuine token is looked up (the count counts)")
}

// R9: a family bound to a client refuses a refresh from another client.
func TestR9_ClientBinding(t *testing.T) {
	e := newEnv(t)
	p := e.issue(t, "alice", refresh.WithClientID("mobile"))
	for _, other := range []string{"web", "", "MOBILE"} {
		_, err := e.iss.Rotate(bg, p.RefreshToken, refresh.WithClientID(other))
		require.ErrorIs(t, err, refresh.ErrInvalidToken, "client %q", other)
	}
	s := e.session(t, p.SessionID)
	assert.Equal(t, uint64(0), s.Generation)
	assert.False(t, s.Revoked(), "another client's attempt must not revoke the family")
	q, err := e.iss.Rotate(bg, p.RefreshToken, refresh.WithClientID("mobile"))
	require.NoError(t, err)
	_, c := decodeJWT(t, q.AccessToken)
	assert.Equal(t, "mobile", c["client_id"])

	// An unbound session accepts any client and names the default client.
	u := e.issue(t, "alice")
	_, c = decodeJWT(t, u.AccessToken)
	assert.Equal(t, "https://api.example.com", c["client_id"])
	_, err = e.iss.Rotate(bg, u.RefreshToken, refresh.WithClientID("anything"))
	require.NoError(t, err)
}

// R10: RevokeSubject revokes every session of the user and nothing else.
func TestR10_RevokeSubject(t *testing.T) {
	e := newEnv(t, func(c *refresh.Config) { c.CheckSession = true })
	var alice []*refresh.Pair
	for i := 0; i < 3; i++ {
		alice = append(alice, e.issue(t, "alice"))
	}
	bob := e.issue(t, "bob")
	_, err := e.iss.Verify(bg, alice[0].AccessToken)
	require.NoError(t, err) // cached as live
	n, err := e.iss.RevokeSubject(bg, "alice")
	require.NoError(t, err)
	assert.Equal(t, 3, n)
	for _, p := range alice {
		_, err := e.iss.Rotate(bg, p.RefreshToken)
		require.ErrorIs(t, err, refresh.ErrRevoked)
		_, err = e.iss.Verify(bg, p.AccessToken)
		require.ErrorIs(t, err, refresh.ErrRevoked, "logout everywhere is immediate for access tokens too")
	}
	_, err = e.iss.Rotate(bg, bob.RefreshToken)
	require.NoError(t, err)
	list, err := e.iss.Sessions(bg, "alice")
	require.NoError(t, err)
	assert.Empty(t, list)
}

// TestRevokeSessionOf: the id of a "sign out this device" request is the
// attacker's to choose; only the subject's own sessions end, and the answer
// for another user's session is the answer for an unknown one.
func TestRevokeSessionOf(t *testing.T) {
	e := newEnv(t, func(c *refresh.Config) { c.CheckSession, c.IdleTTL = true, time.Hour })
	alice := e.issue(t, "alice")
	bob := e.issue(t, "bob")
	for name, sub := range map[string]string{"another user": "bob", "case": "Alice", "prefix": "alic", "space": "alice ", "empty": ""} {
		err := e.iss.RevokeSessionOf(bg, sub, alice.SessionID)
		require.ErrorIs(t, err, refresh.ErrSessionNotFound, name)
		assert.False(t, e.session(t, alice.SessionID).Revoked(), name)
	}
	require.ErrorIs(t, e.iss.RevokeSessionOf(bg, "alice", "no-such-session"), refresh.ErrSessionNotFound)

	require.NoError(t, e.iss.RevokeSessionOf(bg, "alice", alice.SessionID))
	_, err := e.iss.Rotate(bg, alice.RefreshToken)
	require.ErrorIs(t, err, refresh.ErrRevoked)
	_, err = e.iss.Verify(bg, alice.AccessToken)
	require.ErrorIs(t, err, refresh.ErrRevoked, "at once for access tokens too")
	require.ErrorIs(t, e.iss.RevokeSessionOf(bg, "alice", alice.SessionID), refresh.ErrSessionNotFound, "ended: no longer listed")
	_, err = e.iss.Rotate(bg, bob.RefreshToken)
	require.NoError(t, err, "bob's session untouched")

	// Expired sessions are not listed either: idle lifetime at ±1 ns.
	carol := e.issue(t, "carol")
	e.clock.Advance(e.cfg.IdleTTL - 1)
	list, err := e.iss.Sessions(bg, "carol")
	require.NoError(t, err)
	require.Len(t, list, 1)
	e.clock.Advance(1)
	require.ErrorIs(t, e.iss.RevokeSessionOf(bg, "carol", carol.SessionID), refresh.ErrSessionNotFound, "idle past IdleTTL")
	list, err = e.iss.Sessions(bg, "carol")
	require.NoError(t, err)
	require.Empty(t, list)
}

// TestMaxSessions: a subject keeps at most MaxSessions live sessions; Issue
// ends the least recently used (not the oldest), only the subject's own,
// with an event saying why; ended sessions do not count.
func TestMaxSessions(t *testing.T) {
	var (
		mu     sync.Mutex
		limits []string
	)
	e := newEnv(t, func(c *refresh.Config) {
		c.MaxSessions, c.IdleTTL = 3, time.Hour
		c.OnEvent = func(_ context.Context, ev refresh.Event) {
			if ev.Kind == refresh.EventRevoked {
				mu.Lock()
				limits = append(limits, ev.Reason+" "+ev.SessionID)
				mu.Unlock()
			}
		}
	})
	var alice []*refresh.Pair
	for i := 0; i < 3; i++ {
		alice = append(alice, e.issue(t, "alice"))
		e.clock.Advance(time.Second)
	}
	bob := e.issue(t, "bob")
	first, err := e.iss.Rotate(bg, alice[0].RefreshToken) // the oldest is now the most recently used
	require.NoError(t, err)
	e.clock.Advance(time.Second)

	fourth := e.issue(t, "alice")
	_, err = e.iss.Rotate(bg, alice[1].RefreshToken)
	require.ErrorIs(t, err, refresh.ErrRevoked, "the least recently used session ends")
	for _, p := range []*refresh.Pair{first, alice[2], fourth, bob} {
		assert.False(t, e.session(t, p.SessionID).Revoked())
	}
	list, err := e.iss.Sessions(bg, "alice")
	require.NoError(t, err)
	assert.Len(t, list, 3)
	mu.Lock()
	assert.Equal(t, []string{"session-limit " + alice[1].SessionID}, limits)
	mu.Unlock()

	// Sessions that ended on their own are not counted: after an idle
	// hour, alice's three are gone and a new one ends nothing.
	e.clock.Advance(time.Hour)
	e.issue(t, "alice")
	mu.Lock()
	assert.Len(t, limits, 1)
	mu.Unlock()

	one := newEnv(t, func(c *refresh.Config) { c.MaxSessions = 1 })
	a := one.issue(t, "carol")
	one.issue(t, "carol")
	_, err = one.iss.Rotate(bg, a.RefreshToken)
	require.ErrorIs(t, err, refresh.ErrRevoked, "MaxSessions 1: a new sign-in ends the previous one")

	// The bound is enforced or the sign-in fails: a store that cannot list
	// the subject's sessions, or cannot end the one beyond the bound, fails
	// Issue as a system error, with no pair handed out, and the previous
	// session lives on.
	for _, method := range []string{"Sessions", "Revoke"} {
		b := one.issue(t, "dave")
		one.fx.FailStore(errors.New("store down"), method)
		p, err := one.iss.Issue(bg, "dave")
		one.fx.FailStore(nil)
		require.Error(t, err, method)
		assert.Nil(t, p, method)
		assert.False(t, refresh.IsClientError(err), method)
		assert.False(t, one.session(t, b.SessionID).Revoked(), method)
	}

	_, err = refresh.NewIssuer(refresh.Config{Issuer: "i", Audience: "a", Store: refresh.NewMemoryStore(),
		Keys: e.cfg.Keys, RefreshKeys: e.cfg.RefreshKeys, MaxSessions: -1})
	require.ErrorContains(t, err, "MaxSessions")

	// A bound lowered by a new configuration ends every session beyond it
	// at the next sign-in, least recently used first and, among those used
	// last at one instant, the oldest sign-in first.
	many := newEnv(t)
	var erin []*refresh.Pair
	for range 4 {
		erin = append(erin, many.issue(t, "erin"))
		many.clock.Advance(time.Second)
	}
	_, err = many.iss.Rotate(bg, erin[0].RefreshToken) // used now: as recently as erin[3] will be
	require.NoError(t, err)
	erin = append(erin, many.issue(t, "erin")) // signed in at the same instant
	many.clock.Advance(time.Second)
	lowered := newEnv(t, func(c *refresh.Config) { c.Store, c.MaxSessions = many.store, 2 })
	lowered.clock.Set(many.clock.Now())
	last := lowered.issue(t, "erin")
	for i, wantLive := range []bool{false, false, false, false, true} {
		assert.Equal(t, !wantLive, many.session(t, erin[i].SessionID).Revoked(), "erin's session %d", i)
	}
	assert.False(t, many.session(t, last.SessionID).Revoked())
	// The tie broken by sign-in time even against the ids' order.
	now := lowered.clock.Now()
	for id, signedIn := range map[string]time.Time{"zzzzzzzzzzzzzzzzzzzzzw": now.Add(-time.Hour), "AAAAAAAAAAAAAAAAAAAAAA": now.Add(-time.Minute)} {
		require.NoError(t, many.store.Create(bg, &refresh.Session{ID: id, Subject: "frank", Seed: make([]byte, 32),
			CreatedAt: signedIn, RotatedAt: now.Add(-time.Second), ExpiresAt: now.Add(time.Hour)}))
	}
	lowered.issue(t, "frank")
	assert.True(t, many.session(t, "zzzzzzzzzzzzzzzzzzzzzw").Revoked(), "the older sign-in ends")
	assert.False(t, many.session(t, "AAAAAAAAAAAAAAAAAAAAAA").Revoked())
}

// R11: tokens minted under a previous refresh key still rotate; new tokens
// use the new key; dropping the old key retires its tokens.
func TestR11_RefreshKeyRotation(t *testing.T) {
	e := newEnv(t)
	old := e.issue(t, "alice")
	newKey := refresh.RefreshKey{ID: 2, Secret: []byte("the-new-refresh-mac-key-32-bytes")}
	rotated := newEnv(t, func(c *refresh.Config) {
		c.Store = e.store
		c.RefreshKeys = []refresh.RefreshKey{newKey, c.RefreshKeys[0]}
	})
	p, err := rotated.iss.Rotate(bg, old.RefreshToken)
	require.NoError(t, err)
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(p.RefreshToken, "rt_"))
	require.NoError(t, err)
	assert.Equal(t, byte(2), raw[1], "new tokens carry the new key id")
	// The same instance rotates on, on its one-round-trip path, from what
	// it kept of the session when it checked the old key's token: every
	// successor's session check is under the new key.
	for range 2 {
		p, err = rotated.iss.Rotate(bg, p.RefreshToken)
		require.NoError(t, err)
	}

	stale := e.issue(t, "bob")
	retired := newEnv(t, func(c *refresh.Config) {
		c.Store = e.store
		c.RefreshKeys = []refresh.RefreshKey{newKey}
	})
	_, err = retired.iss.Rotate(bg, stale.RefreshToken)
	require.ErrorIs(t, err, refresh.ErrInvalidToken)
	_, err = retired.iss.Rotate(bg, p.RefreshToken)
	require.NoError(t, err)

	// With grace, that instance answers a retry of the old key's token
	// within the window with the same successor, from its cache too.
	g := newEnv(t, func(c *refresh.Config) { c.Grace = 5 * time.Second })
	gp := g.issue(t, "gina")
	gRot := newEnv(t, func(c *refresh.Config) {
		c.Store, c.Grace = g.store, 5*time.Second
		c.RefreshKeys = []refresh.RefreshKey{newKey, c.RefreshKeys[0]}
	})
	gRot.clock.Set(g.clock.Now())
	first, err := gRot.iss.Rotate(bg, gp.RefreshToken)
	require.NoError(t, err)
	retry, err := gRot.iss.Rotate(bg, gp.RefreshToken)
	require.NoError(t, err, "a grace retry of the old key's token")
	assert.Equal(t, first.RefreshToken, retry.RefreshToken)
}

// H3 at the library level: narrower scope for one access token; wider is
// refused and changes nothing.
func TestRotateScope(t *testing.T) {
	e := newEnv(t)
	p := e.issue(t, "alice", refresh.WithScope("read", "write"))
	_, err := e.iss.Rotate(bg, p.RefreshToken, refresh.WithScope("read", "admin"))
	require.ErrorIs(t, err, refresh.ErrInvalidScope)
	assert.Equal(t, uint64(0), e.session(t, p.SessionID).Generation)
	q, err := e.iss.Rotate(bg, p.RefreshToken, refresh.WithScope("read"))
	require.NoError(t, err)
	assert.Equal(t, []string{"read"}, q.Scope)
	c, err := e.iss.Verify(bg, q.AccessToken)
	require.NoError(t, err)
	assert.Equal(t, []string{"read"}, c.Scope)
	r, err := e.iss.Rotate(bg, q.RefreshToken)
	require.NoError(t, err)
	assert.Equal(t, []string{"read", "write"}, r.Scope, "omitted scope means the original grant")
}

// A scope is a set (RFC 6749 §3.3): a repeated token means nothing, and
// a store may keep scope as a Redis set, which drops repeats. Issue and a
// narrowing refresh keep each token once, in the order it first appears,
// so that such a store keeps what the session's tokens are bound to.
// Before, a sign-in with "write read write" stored the repeat, a store
// keeping a set read back two tokens, and every refresh of that session
// on an instance reading it was invalid_grant.
func TestScopeIsASet(t *testing.T) {
	st := &editedStore{MemoryStore: refresh.NewMemoryStore(refresh.WithSweepInterval(0))}
	e := newEnv(t, func(c *refresh.Config) { c.Store = st })
	stored := func(id string) []string {
		s, err := st.MemoryStore.Get(bg, id)
		require.NoError(t, err)
		return s.Scope
	}
	p := e.issue(t, "alice", refresh.WithScope("write", "read", "write", "read"))
	assert.Equal(t, []string{"write", "read"}, p.Scope)
	assert.Equal(t, []string{"write", "read"}, stored(p.SessionID))
	_, c := decodeJWT(t, p.AccessToken)
	assert.Equal(t, "write read", c["scope"])

	// A store that keeps scope as a set (unordered, each token once),
	// refreshed over HTTP by an instance that reads the session from it.
	st.set(p.SessionID, 0, func(s *refresh.Session) {
		s.Scope = slices.Compact(slices.Sorted(slices.Values(s.Scope)))
	})
	other, err := refresh.NewIssuer(e.cfg)
	require.NoError(t, err)
	srv := httptest.NewServer(refresh.NewHandlers(other, refresh.HandlerConfig{}).RefreshHandler())
	t.Cleanup(srv.Close)
	r := postForm(t, nil, srv.URL, refreshForm(p.RefreshToken, "scope", "read read"), nil)
	require.Equal(t, 200, r.status, r.raw)
	assert.Equal(t, "read", r.body["scope"], "a narrowing refresh keeps each token once too")
	_, c = decodeJWT(t, r.body["access_token"].(string))
	assert.Equal(t, "read", c["scope"])

	// Past the first few tokens the repeats are found by a map; the order
	// is still that of first appearance.
	var many, want []string
	for i := range 40 {
		want = append(want, fmt.Sprintf("s%02d", 39-i))
	}
	many = append(append(many, want...), want...)
	q := e.issue(t, "bob", refresh.WithScope(many...))
	assert.Equal(t, want, q.Scope)
	assert.Equal(t, want, stored(q.SessionID))
	q, err = e.iss.Rotate(bg, q.RefreshToken, refresh.WithScope(append(many[20:], many[:20]...)...))
	require.NoError(t, err)
	assert.Equal(t, append(want[20:], want[:20]...), q.Scope)
}

func TestOnRefreshHook(t *testing.T) {
	disabled := errors.New("user disabled")
	var refuse atomic.Bool
	e := newEnv(t, func(c *refresh.Config) {
		c.OnRefresh = func(_ context.Context, info *refresh.RefreshInfo) error {
			if refuse.Load() {
				return disabled
			}
			assert.Equal(t, "alice", info.Subject)
			if info.Claims == nil {
				info.Claims = map[string]any{} // a session without claims
			} else {
				assert.Equal(t, []any{"user"}, info.Claims["roles"])
			}
			info.Claims["roles"] = []string{"admin"}
			return nil
		}
	})
	p := e.issue(t, "alice", refresh.WithClaims(map[string]any{"roles": []string{"user"}}))
	q, err := e.iss.Rotate(bg, p.RefreshToken)
	require.NoError(t, err)
	c, err := e.iss.Verify(bg, q.AccessToken)
	require.NoError(t, err)
	assert.Equal(t, []string{"admin"}, c.Roles(), "the hook reloaded the claims")

	// A session without claims: the hook sees none and may add some.
	bare, err := e.iss.Issue(bg, "alice")
	require.NoError(t, err)
	r, err := e.iss.Rotate(bg, bare.RefreshToken)
	require.NoError(t, err, "a session without claims")
	c, err = e.iss.Verify(bg, r.AccessToken)
	require.NoError(t, err)
	assert.Equal(t, []string{"admin"}, c.Roles())

	refuse.Store(true)
	_, err = e.iss.Rotate(bg, q.RefreshToken)
	require.ErrorIs(t, err, refresh.ErrRefused)
	require.ErrorIs(t, err, disabled)
	assert.Equal(t, uint64(1), e.session(t, p.SessionID).Generation, "a refusal changes nothing")
}

func TestRevokeAndSessions(t *testing.T) {
	e := newEnv(t, func(c *refresh.Config) { c.CheckSession = true })
	a := e.issue(t, "alice", refresh.WithMeta(map[string]string{"device": "laptop"}), refresh.WithClientID("web"))
	e.clock.Advance(time.Second)
	b := e.issue(t, "alice", refresh.WithMeta(map[string]string{"device": "phone"}))
	list, err := e.iss.Sessions(bg, "alice")
	require.NoError(t, err)
	require.Len(t, list, 2)
	assert.Equal(t, a.SessionID, list[0].ID)
	assert.Equal(t, "laptop", list[0].Meta["device"])
	assert.Equal(t, "web", list[0].ClientID)

	require.ErrorIs(t, e.iss.Revoke(bg, a.RefreshToken), refresh.ErrInvalidToken, "bound to the web client")
	require.ErrorIs(t, e.iss.Revoke(bg, a.RefreshToken, refresh.WithClientID("ios")), refresh.ErrInvalidToken)
	assert.False(t, e.session(t, a.SessionID).Revoked())
	require.NoError(t, e.iss.Revoke(bg, a.RefreshToken, refresh.WithClientID("web")))
	require.NoError(t, e.iss.Revoke(bg, a.RefreshToken, refresh.WithClientID("web")), "revoking twice is fine")
	_, err = e.iss.Rotate(bg, a.RefreshToken, refresh.WithClientID("web"))
	require.ErrorIs(t, err, refresh.ErrRevoked)
	_, err = e.iss.Verify(bg, a.AccessToken)
	require.ErrorIs(t, err, refresh.ErrRevoked)

	require.NoError(t, e.iss.RevokeSession(bg, b.SessionID))
	require.ErrorIs(t, e.iss.RevokeSession(bg, "nope"), refresh.ErrSessionNotFound)
	list, err = e.iss.Sessions(bg, "alice")
	require.NoError(t, err)
	assert.Empty(t, list)
}

func TestSweep(t *testing.T) {
	const idle, life, keep = time.Hour, 4 * time.Hour, 30 * time.Minute
	e := newEnv(t, func(c *refresh.Config) { c.IdleTTL, c.SessionTTL, c.RevokedRetention = idle, life, keep })
	start := e.clock.Now()
	mk := func(at time.Time) *refresh.Pair {
		e.clock.Set(at)
		return e.issue(t, "alice")
	}
	revokeAt := func(p *refresh.Pair, at time.Time) {
		e.clock.Set(at)
		require.NoError(t, e.iss.RevokeSession(bg, p.SessionID))
	}
	now := start.Add(2 * time.Hour)
	// Sweep removes a session idle since exactly IdleTTL, keeps one a
	// nanosecond younger; removes one revoked exactly RevokedRetention ago,
	// keeps one revoked a nanosecond later; and keeps a live, used one.
	idleGone := mk(now.Add(-idle))
	idleKept := mk(now.Add(-idle + time.Nanosecond))
	revGone, revKept := mk(start.Add(90*time.Minute)), mk(start.Add(90*time.Minute))
	revokeAt(revGone, now.Add(-keep))
	revokeAt(revKept, now.Add(-keep+time.Nanosecond))
	used := mk(now.Add(-30 * time.Minute))
	e.clock.Set(now.Add(-time.Minute))
	_, err := e.iss.Rotate(bg, used.RefreshToken)
	require.NoError(t, err)
	e.clock.Set(now)
	n, err := e.iss.Sweep(bg, 1)
	require.NoError(t, err)
	assert.Equal(t, 2, n)
	for p, wantGone := range map[*refresh.Pair]bool{idleGone: true, revGone: true, idleKept: false, revKept: false, used: false} {
		_, err := e.store.Get(bg, p.SessionID)
		if wantGone {
			require.ErrorIs(t, err, refresh.ErrSessionNotFound)
		} else {
			require.NoError(t, err)
		}
	}
	// Past the absolute lifetime everything goes, used or not.
	e.clock.Set(start.Add(life))
	n, err = e.iss.Sweep(bg, 0)
	require.NoError(t, err)
	assert.Equal(t, 3, n)

	// RevokedRetention < 0 keeps revoked sessions until they expire or idle.
	k := newEnv(t, func(c *refresh.Config) { c.RevokedRetention = -1 })
	p := k.issue(t, "alice")
	require.NoError(t, k.iss.RevokeSession(bg, p.SessionID))
	k.clock.Advance(24 * time.Hour)
	n, err = k.iss.Sweep(bg, 0)
	require.NoError(t, err)
	assert.Equal(t, 0, n)
}

// lyingSweeper reports every batch full and deletes nothing: a store bug
// that once kept Sweep looping for ever.
type lyingSweeper struct {
	*refresh.MemoryStore
	calls  int
	cancel func() // called at the fifth call, if set
}

func (l *lyingSweeper) DeleteStale(_ context.Context, _, _, _ time.Time, limit int) (int, error) {
	if l.calls++; l.calls == 5 && l.cancel != nil {
		l.cancel()
	}
	return limit, nil
}

// TestSweepBounded: a store that keeps reporting full batches without
// deleting anything costs one Sweep call at most MaxSweepBatches store
// calls, and a cancelled context stops it at once.
func TestSweepBounded(t *testing.T) {
	st := &lyingSweeper{MemoryStore: refresh.NewMemoryStore(refresh.WithSweepInterval(0))}
	e := newEnv(t, func(c *refresh.Config) { c.Store = st })
	n, err := e.iss.Sweep(bg, 10)
	require.NoError(t, err)
	assert.Equal(t, refresh.MaxSweepBatches, st.calls)
	assert.Equal(t, 10*refresh.MaxSweepBatches, n)

	cctx, cancel := context.WithCancel(bg)
	defer cancel()
	st.calls, st.cancel = 0, cancel
	_, err = e.iss.Sweep(cctx, 10)
	require.ErrorIs(t, err, context.Canceled)
	assert.False(t, refresh.IsClientError(err))
	assert.Equal(t, 5, st.calls, "no store call after the context ended")
}

// A store failure is a system fault: wrapped, not a client error.
func TestStoreFailureIsSystemFault(t *testing.T) {
	boom := errors.New("connection refused")
	e := newEnv(t, func(c *refresh.Config) { c.Store = failingStore{boom} })
	_, err := e.iss.Issue(bg, "alice")
	require.ErrorIs(t, err, boom)
	assert.False(t, refresh.IsClientError(err))
	assert.Contains(t, err.Error(), "refresh: store create")
}

type failingStore struct{ err error }

func (f failingStore) Create(context.Context, *refresh.Session) error { return f.err }
func (f failingStore) Get(context.Context, string) (*refresh.Session, error) {
	return nil, f.err
}
func (f failingStore) Advance(context.Context, string, uint64, time.Time) error { return f.err }
func (f failingStore) UseGrace(context.Context, string, uint64, uint32) error   { return f.err }
func (f failingStore) Revoke(context.Context, string, time.Time, string) error  { return f.err }
func (f failingStore) RevokeSubject(context.Context, string, time.Time, string) (int, error) {
	return 0, f.err
}
func (f failingStore) Sessions(context.Context, string) ([]*refresh.Session, error) {
	return nil, f.err
}
func (f failingStore) DeleteExpired(context.Context, time.Time, int) (int, error) { return 0, f.err }

// sweepingStore deletes the session between the Issuer's read and its
// compare-and-swap, as a concurrent sweep would.
type sweepingStore struct{ *refresh.MemoryStore }

func (s sweepingStore) Advance(ctx context.Context, id string, from uint64, at time.Time) error {
	_, _ = s.MemoryStore.DeleteExpired(ctx, time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC), 1000)
	return s.MemoryStore.Advance(ctx, id, from, at)
}

func (s sweepingStore) AdvanceActive(ctx context.Context, id string, from uint64, at, activeAfter time.Time) error {
	_, _ = s.MemoryStore.DeleteExpired(ctx, time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC), 1000)
	return s.MemoryStore.AdvanceActive(ctx, id, from, at, activeAfter)
}

// A session that disappears mid-rotation is the client's problem (its token
// is no longer valid), not a system fault.
func TestRotateSessionSweptMidway(t *testing.T) {
	mem := refresh.NewMemoryStore(refresh.WithSweepInterval(0))
	e := newEnv(t, func(c *refresh.Config) { c.Store = sweepingStore{mem} })
	p := e.issue(t, "alice")
	_, err := e.iss.Rotate(bg, p.RefreshToken)
	require.ErrorIs(t, err, refresh.ErrInvalidToken)
	assert.True(t, refresh.IsClientError(err))
}

// Revocation events name the session and its subject, for audit logs.
func TestRevokeEvents(t *testing.T) {
	var got []refresh.Event
	e := newEnv(t, func(c *refresh.Config) {
		c.OnEvent = func(_ context.Context, ev refresh.Event) {
			if ev.Kind == refresh.EventRevoked {
				got = append(got, ev)
			}
		}
	})
	a := e.issue(t, "alice")
	b := e.issue(t, "alice")
	require.NoError(t, e.iss.RevokeSession(bg, a.SessionID))
	require.NoError(t, e.iss.Revoke(bg, b.RefreshToken))
	_, err := e.iss.RevokeSubject(bg, "alice")
	require.NoError(t, err)
	require.Len(t, got, 3)
	for i, sid := range []string{a.SessionID, b.SessionID, ""} {
		assert.Equal(t, sid, got[i].SessionID)
		assert.Equal(t, "alice", got[i].Subject)
	}
	assert.Equal(t, "revoked-all: 0 sessions", got[2].Reason)
}

// TestRotateAllocations: a rotation allocates what it hands out and nothing
// more: the access token, the refresh token and the Pair's own copy of the
// scope. Rotate is small enough to be inlined, so the Pair itself lives on
// the stack of a caller that does not keep it; if Rotate grows past the
// inliner's budget this fails with 4.
func TestRotateAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates; .ci/run runs this without -race")
	}
	e := newEnv(t)
	tok := e.issue(t, "alice", refresh.WithScope("read")).RefreshToken
	ctx := context.Background()
	allocs := testing.AllocsPerRun(200, func() {
		p, err := e.iss.Rotate(ctx, tok)
		if err != nil {
			t.Fatal(err)
		}
		tok = p.RefreshToken
	})
	require.Equal(t, 3.0, allocs)
}

// The refresh token's format is stable: a token minted by an earlier build
// (these constants) still rotates, to exactly the successor it did then.
// A change to the format, the MAC's input or the binding retires every
// token in the field at the upgrade; it must come with a new version byte
// (refreshVersion) and a note in the README, not by accident.
func TestRefreshTokenFormatIsStable(t *testing.T) {
	const (
		gen7 = "rt_AwMAAQIDBAUGBwgJCgsMDQ4Pi9T0priP4zcH1m0yswkR5NWaDB1d-peH5w"
		gen8 = "rt_AwMAAQIDBAUGBwgJCgsMDQ4Pi9T0priP4zcIA2Qz5TCt-aiu-qqStKdLew"
	)
	signedIn := time.Date(2026, 12, 1, 9, 30, 15, 123456789, time.UTC)
	e := newEnv(t, func(c *refresh.Config) {
		c.RefreshKeys = []refresh.RefreshKey{{ID: 3, Secret: bytes.Repeat([]byte{0x5a}, 32)}}
	})
	e.clock.Set(signedIn.Add(2 * time.Hour))
	seed := make([]byte, 32)
	for i := range seed {
		seed[i] = byte(i)
	}
	require.NoError(t, e.store.Create(bg, &refresh.Session{
		ID: "AAECAwQFBgcICQoLDA0ODw", Subject: "alice", ClientID: "web", Generation: 7, Seed: seed,
		Scope: []string{"write", "read"}, Claims: []byte(`{"roles":["admin"],"tenant":42}`),
		CreatedAt: signedIn, RotatedAt: signedIn.Add(time.Hour), ExpiresAt: signedIn.Add(90 * 24 * time.Hour),
	}))
	p, err := e.iss.Rotate(bg, gen7, refresh.WithClientID("web"))
	require.NoError(t, err, "a refresh token of an earlier build")
	assert.Equal(t, gen8, p.RefreshToken, "its successor")
	assert.EqualValues(t, 8, e.session(t, "AAECAwQFBgcICQoLDA0ODw").Generation)

	// The successor cut short at every byte, or one byte longer, is
	// refused as malformed (no panic on a short one), and changes nothing.
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(gen8, "rt_"))
	require.NoError(t, err)
	for n := 0; n <= len(raw)+1; n++ {
		if n == len(raw) {
			continue
		}
		b := append(append([]byte{}, raw...), 0)[:n]
		_, err := e.iss.Rotate(bg, "rt_"+base64.RawURLEncoding.EncodeToString(b), refresh.WithClientID("web"))
		require.ErrorIs(t, err, refresh.ErrInvalidToken, "%d of %d bytes", n, len(raw))
	}
	// Its generation spelled as a longer varint (0x88 0x00 for 8): a token
	// has one spelling.
	require.Equal(t, byte(8), raw[26], "version, key id, 16-byte session id, 8-byte check, then the generation")
	long := append(append(append([]byte{}, raw[:26]...), 0x88, 0x00), raw[27:]...)
	_, err = e.iss.Rotate(bg, "rt_"+base64.RawURLEncoding.EncodeToString(long), refresh.WithClientID("web"))
	require.ErrorIs(t, err, refresh.ErrInvalidToken, "a non-minimal varint")
	assert.EqualValues(t, 8, e.session(t, "AAECAwQFBgcICQoLDA0ODw").Generation)
}

// A session's generation never wraps. Its token of generation 2^64 − 1
// (73 bytes, the longest a refresh token can be) is well formed, but has no
// successor: rotating it would make generation 0 current again, and with it
// the session's first token, long since spent. No session rotates that
// often, and a store writer who sets a generation there holds no token of
// it; the check makes the wrap impossible instead of improbable.
func TestGenerationsDoNotWrap(t *testing.T) {
	e := newEnv(t, func(c *refresh.Config) { c.Grace = 0 })
	s := e.session(t, e.issue(t, "alice").SessionID)
	s.ID, s.Generation = "AAECAwQFBgcICQoLDA0ODw", math.MaxUint64-1
	require.NoError(t, e.store.Create(bg, s))
	last, err := e.iss.Rotate(bg, refresh.MintRefresh(e.iss, s, math.MaxUint64-1))
	require.NoError(t, err, "the generation before the last rotates")
	assert.Len(t, last.RefreshToken, 73, "a 10-byte varint: the longest token")
	_, err = e.iss.Rotate(bg, last.RefreshToken)
	require.ErrorIs(t, err, refresh.ErrInvalidToken)
	assert.ErrorContains(t, err, "no successor", "refused for its generation, not its length")
	got := e.session(t, s.ID)
	assert.EqualValues(t, uint64(math.MaxUint64), got.Generation)
	assert.False(t, got.Revoked(), "refused, not reuse")
	// The session's first token is still spent.
	_, err = e.iss.Rotate(bg, refresh.MintRefresh(e.iss, s, 0))
	require.ErrorIs(t, err, refresh.ErrReused)
}

// A session whose stored claims are an empty object ({}, as a store may
// keep "no claims" in a JSON column) mints a well-formed access token
// without application claims.
func TestEmptyClaimsObject(t *testing.T) {
	e := newEnv(t)
	s := e.session(t, e.issue(t, "alice").SessionID)
	s.ID, s.Claims = "AAECAwQFBgcICQoLDA0ODw", []byte(`{}`)
	require.NoError(t, e.store.Create(bg, s))
	p, err := e.iss.Rotate(bg, refresh.MintRefresh(e.iss, s, 0))
	require.NoError(t, err)
	c, err := e.iss.Verify(bg, p.AccessToken)
	require.NoError(t, err)
	assert.Equal(t, "alice", c.Subject)
	assert.Empty(t, c.Extra)
}

// conflictingStore answers every swap with ErrConflict, as a store would
// whose session some other writer changes each time, and counts them; past
// a hundred it fails, so that a Rotate that never gives up ends.
type conflictingStore struct {
	*refresh.MemoryStore
	swaps atomic.Int32
}

func (c *conflictingStore) swap() error {
	if c.swaps.Add(1) > 100 {
		return errors.New("a hundred conflicts")
	}
	return refresh.ErrConflict
}

func (c *conflictingStore) Advance(context.Context, string, uint64, time.Time) error { return c.swap() }

func (c *conflictingStore) AdvanceActive(context.Context, string, uint64, time.Time, time.Time) error {
	return c.swap()
}

// A session that some other writer changes at every swap: Rotate gives
// up after a bounded number of attempts, as a system fault, instead of
// spinning, and changes nothing.
func TestRotateGivesUpOnEndlessConflicts(t *testing.T) {
	st := &conflictingStore{MemoryStore: refresh.NewMemoryStore(refresh.WithSweepInterval(0))}
	e := newEnv(t, func(c *refresh.Config) { c.Store = st })
	p := e.issue(t, "alice")
	_, err := e.iss.Rotate(bg, p.RefreshToken)
	require.ErrorContains(t, err, "gave up after 8 concurrent modifications")
	assert.False(t, refresh.IsClientError(err))
	assert.EqualValues(t, 1+8, st.swaps.Load(), "the one-round-trip swap, then eight on fresh reads")
	s, err := st.Get(bg, p.SessionID)
	require.NoError(t, err)
	assert.EqualValues(t, 0, s.Generation)
}

// proofSweepStore counts the expired DPoP proof records Sweep removes, and
// fails DeleteStale on demand.
type proofSweepStore struct {
	*refresh.MemoryStore
	proofsDeleted atomic.Int32
	staleFails    atomic.Bool
}

func (p *proofSweepStore) DeleteExpiredProofs(ctx context.Context, before time.Time, limit int) (int, error) {
	n, err := p.MemoryStore.DeleteExpiredProofs(ctx, before, limit)
	p.proofsDeleted.Add(int32(n))
	return n, err
}

func (p *proofSweepStore) DeleteStale(ctx context.Context, expiredBy, idleBy, revokedBy time.Time, limit int) (int, error) {
	if p.staleFails.Load() {
		return 0, errors.New("store down")
	}
	return p.MemoryStore.DeleteStale(ctx, expiredBy, idleBy, revokedBy, limit)
}

// Sweep removes the store's expired DPoP proof records with its expired
// sessions, and reports a failure to remove sessions rather than going on.
func TestSweepRemovesExpiredProofs(t *testing.T) {
	st := &proofSweepStore{MemoryStore: refresh.NewMemoryStore(refresh.WithSweepInterval(0))}
	e := newEnv(t, func(c *refresh.Config) { c.Store = st })
	alice := newDPoPClient(t)
	proof, err := e.iss.VerifyDPoPProof(alice.proof("POST", tokenURL, "", e.clock.Now()), "POST", tokenURL, "")
	require.NoError(t, err)
	e.issue(t, "alice", refresh.WithDPoPProof(proof))
	_, err = e.iss.Sweep(bg, 10)
	require.NoError(t, err)
	require.Zero(t, st.proofsDeleted.Load(), "a proof record still within its life stays")

	e.clock.Advance(10 * time.Minute)
	st.staleFails.Store(true)
	_, err = e.iss.Sweep(bg, 10)
	require.ErrorContains(t, err, "store down")
	st.staleFails.Store(false)
	_, err = e.iss.Sweep(bg, 10)
	require.NoError(t, err)
	assert.EqualValues(t, 1, st.proofsDeleted.Load(), "the expired proof record is removed")
}
