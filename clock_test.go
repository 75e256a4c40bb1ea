package refresh_test

import (
	"context"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/refreshkit/refresh"
	"github.com/refreshkit/refresh/refreshtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// zoneDroppingStore keeps every time it is given as its wall clock without
// the zone, read back as UTC: a Postgres timestamp (without time zone)
// column written through pgx, which storetest refuses (its mutant
// "time-wallclock"). It is a plain Store, so every rotation reads the
// session and the Issuer decides grace from the RotatedAt it reads.
type zoneDroppingStore struct{ refresh.Store }

func wallClock(t time.Time) time.Time {
	return time.Date(t.Year(), t.Month(), t.Day(), t.Hour(), t.Minute(), t.Second(), t.Nanosecond(), time.UTC)
}

func (s zoneDroppingStore) Create(ctx context.Context, in *refresh.Session) error {
	c := in.Clone()
	c.CreatedAt, c.RotatedAt, c.ExpiresAt, c.RevokedAt = wallClock(c.CreatedAt), wallClock(c.RotatedAt), wallClock(c.ExpiresAt), wallClock(c.RevokedAt) // the zero Time stays zero
	return s.Store.Create(ctx, c)
}

func (s zoneDroppingStore) Advance(ctx context.Context, id string, from uint64, at time.Time) error {
	return s.Store.Advance(ctx, id, from, wallClock(at))
}

func (s zoneDroppingStore) Revoke(ctx context.Context, id string, at time.Time, reason string) error {
	return s.Store.Revoke(ctx, id, wallClock(at), reason)
}

// TestIssuerHandsStoresUTC, over HTTP: on a host whose local zone is not
// UTC, a store that drops zones would move every time it keeps by the
// zone's offset. East of UTC (Tokyo) a rotation would look hours later
// than it was: a thief presenting the victim's previous token an hour on
// would get the successor as a grace retry, and an idle session would
// live hours past IdleTTL. West (New York) it would look hours earlier:
// a second tab a second after a rotation would be reuse, and sign the user
// out. The Issuer reads its clock in UTC, so such a store keeps the right
// instants (and storetest refuses it all the same). That includes a
// WithAuthTime given in another zone.
func TestIssuerHandsStoresUTC(t *testing.T) {
	const grace, idle = 10 * time.Second, time.Hour
	for _, zone := range []*time.Location{time.FixedZone("Tokyo", 9*3600), time.FixedZone("New York", -5*3600)} {
		t.Run(zone.String(), func(t *testing.T) {
			clock := refreshtest.NewClock(time.Date(2026, 12, 2, 10, 0, 0, 0, zone))
			e := newEnv(t, func(c *refresh.Config) {
				c.Store = zoneDroppingStore{refresh.NewMemoryStore(refresh.WithSweepInterval(0))}
				c.Now, c.Grace, c.IdleTTL = clock.Now, grace, idle
			})
			srv := e.refreshServer(t, false)
			refreshAt := func(tok string) reply {
				return postForm(t, nil, srv.URL, refreshForm(tok), nil)
			}

			// The victim's two tabs: the second, a second later, gets the
			// same successor.
			signIn := clock.Now().Add(-time.Minute) // at an identity provider, in the zone
			p0 := e.issue(t, "alice", refresh.WithAuthTime(signIn))
			r1 := refreshAt(p0.RefreshToken)
			require.Equal(t, 200, r1.status, r1.raw)
			_, claims := decodeJWT(t, r1.body["access_token"].(string))
			assert.EqualValues(t, signIn.Unix(), claims["auth_time"], "auth_time after a refresh that read the session")
			clock.Advance(time.Second)
			r2 := refreshAt(p0.RefreshToken)
			require.Equal(t, 200, r2.status, "a second tab a second after the rotation: %s", r2.raw)
			assert.Equal(t, r1.body["refresh_token"], r2.body["refresh_token"])

			// The thief, an hour later, with the previous token: reuse,
			// and the session ends.
			clock.Advance(idle - time.Minute)
			r3 := refreshAt(p0.RefreshToken)
			assert.Equal(t, 400, r3.status, "the previous token an hour after its rotation: %s", r3.raw)
			r4 := refreshAt(r1.body["refresh_token"].(string))
			assert.Equal(t, 400, r4.status, "the session survived the reuse: %s", r4.raw)

			// Idle expiry at IdleTTL, to the nanosecond.
			q := e.issue(t, "bob")
			clock.Advance(idle - time.Nanosecond)
			r5 := refreshAt(q.RefreshToken)
			require.Equal(t, 200, r5.status, "at IdleTTL - 1ns: %s", r5.raw)
			clock.Advance(idle)
			r6 := refreshAt(r5.body["refresh_token"].(string))
			assert.Equal(t, 400, r6.status, "at IdleTTL: %s", r6.raw)
		})
	}
}

// TestGraceWindowBothWays, over HTTP: the previous token is a grace retry
// only within Grace of its rotation on either side. Instances' clocks may
// differ by less than Grace (a rotation on an instance whose clock is
// ahead looks later than now to the others), but a rotation that looks
// later than now by more than Grace (a clock set wrong, a store that moves
// times) does not make the previous token good for as long: it is reuse.
func TestGraceWindowBothWays(t *testing.T) {
	const grace = 10 * time.Second
	for _, tc := range []struct {
		behind time.Duration
		status int
	}{{grace, 200}, {grace + time.Nanosecond, 400}} {
		t.Run(tc.behind.String(), func(t *testing.T) {
			e := newEnv(t, func(c *refresh.Config) { c.Grace = grace })
			ahead := e.refreshServer(t, false) // rotates at e.clock
			behindCfg := e.cfg
			behindCfg.Now = func() time.Time { return e.clock.Now().Add(-tc.behind) }
			iss, err := refresh.NewIssuer(behindCfg)
			require.NoError(t, err)
			srv := httptest.NewServer(refresh.NewHandlers(iss, refresh.HandlerConfig{}).RefreshHandler())
			t.Cleanup(srv.Close)

			p0 := e.issue(t, "alice")
			r1 := postForm(t, nil, ahead.URL, refreshForm(p0.RefreshToken), nil)
			require.Equal(t, 200, r1.status, r1.raw)
			r2 := postForm(t, nil, srv.URL, refreshForm(p0.RefreshToken), nil)
			require.Equal(t, tc.status, r2.status, r2.raw)
			s := e.session(t, p0.SessionID)
			if tc.status == 200 {
				assert.Equal(t, r1.body["refresh_token"], r2.body["refresh_token"], "a grace retry gets the same successor")
				assert.False(t, s.Revoked())
			} else {
				assert.Equal(t, "invalid_grant", r2.body["error"])
				assert.True(t, s.Revoked(), "reuse revokes the session")
			}
		})
	}
}

// TestClaimsTimesAreUTC: Verify's times, and so the middleware's and a
// Verifier's, are in UTC, so that what an application prints or compares
// does not depend on the host's zone (the demo's /me printed auth_time in
// it).
func TestClaimsTimesAreUTC(t *testing.T) {
	e := newEnv(t)
	p := e.issue(t, "alice")
	c, err := e.iss.Verify(context.Background(), p.AccessToken)
	require.NoError(t, err)
	for name, tm := range map[string]time.Time{"ExpiresAt": c.ExpiresAt, "IssuedAt": c.IssuedAt, "AuthTime": c.AuthTime, "Pair.AccessExpiresAt": p.AccessExpiresAt, "Pair.RefreshExpiresAt": p.RefreshExpiresAt, "Issuer.Now": e.iss.Now()} {
		assert.Same(t, time.UTC, tm.Location(), name)
	}
}
