package refreshtest_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/refreshkit/refresh"
	"github.com/refreshkit/refresh/refreshtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func serve(h http.Handler, header string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	if header != "" {
		r.Header.Set("Authorization", header)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func TestHelpers(t *testing.T) {
	t.Parallel()
	iss := refreshtest.New(t)
	h := iss.Middleware()(refresh.RequireRole("admin")(me))

	admin := iss.LoginHeader("alice", refresh.WithClaims(map[string]any{"roles": []string{"admin"}}))
	assert.Equal(t, 200, serve(h, admin).Code)
	assert.Equal(t, 403, serve(h, iss.LoginHeader("bob")).Code)
	assert.Equal(t, 401, serve(h, "").Code)

	expired := iss.ExpiredLogin("alice", refresh.WithClaims(map[string]any{"roles": []string{"admin"}}))
	assert.Equal(t, 401, serve(h, refreshtest.AuthHeader(expired)).Code, "expired access token")
	fresh := iss.Refresh(expired.RefreshToken)
	assert.Equal(t, 200, serve(h, refreshtest.AuthHeader(fresh)).Code, "its refresh token is live")

	revoked := iss.RevokedLogin("alice", refresh.WithClaims(map[string]any{"roles": []string{"admin"}}))
	assert.Equal(t, 401, serve(h, refreshtest.AuthHeader(revoked)).Code, "revoked session")
	_, err := iss.Rotate(context.Background(), revoked.RefreshToken)
	require.ErrorIs(t, err, refresh.ErrRevoked)
	assert.True(t, iss.Session(revoked.SessionID).Revoked())
	assert.Len(t, iss.Events(refresh.EventRevoked), 1)
	assert.Len(t, iss.Events(refresh.EventIssued), 4)
	assert.Len(t, iss.Events(), 6)
}

// The clock drives the Issuer and the store: idle expiry one nanosecond
// either side, without sleeping.
func TestClockDrivesExpiry(t *testing.T) {
	t.Parallel()
	start := time.Date(2031, 1, 2, 3, 4, 5, 0, time.UTC)
	iss := refreshtest.New(t, refreshtest.WithStart(start),
		refreshtest.WithConfig(func(c *refresh.Config) { c.IdleTTL = time.Hour; c.AccessTTL = time.Minute }))
	assert.Equal(t, start, iss.Now())
	p := iss.Login("alice")
	iss.Clock.Advance(time.Hour - time.Nanosecond)
	p = iss.Refresh(p.RefreshToken)
	iss.Clock.Advance(time.Hour)
	_, err := iss.Rotate(context.Background(), p.RefreshToken)
	require.ErrorIs(t, err, refresh.ErrExpired)
	iss.Clock.Set(start)
	assert.Equal(t, start, iss.Clock.Now())
}

// A user's OnEvent still runs; WithConfig may turn CheckSession off.
func TestWithConfig(t *testing.T) {
	t.Parallel()
	var seen []refresh.EventKind
	iss := refreshtest.New(t, refreshtest.WithConfig(func(c *refresh.Config) {
		c.CheckSession = false
		c.OnEvent = func(_ context.Context, e refresh.Event) { seen = append(seen, e.Kind) }
	}))
	p := iss.RevokedLogin("alice")
	_, err := iss.Verify(context.Background(), p.AccessToken)
	require.NoError(t, err, "without CheckSession a revoked session's access token lives to exp")
	assert.Equal(t, []refresh.EventKind{refresh.EventIssued, refresh.EventRevoked}, seen)
	assert.True(t, strings.HasPrefix(refreshtest.AuthHeader(p), "Bearer "))
}

// recorder is a testing.TB that records failures instead of stopping.
type recorder struct {
	testing.TB
	failed string
}

func (r *recorder) Helper() {}
func (r *recorder) Fatalf(format string, args ...any) {
	r.failed = format
	panic(r)
}

// Helpers fail the test with a message naming what failed.
func TestHelpersFailTheTest(t *testing.T) {
	for name, f := range map[string]func(rt *refreshtest.Issuer){
		"Login":   func(rt *refreshtest.Issuer) { rt.Login("") },
		"Refresh": func(rt *refreshtest.Issuer) { rt.Refresh("rt_nope") },
		"Session": func(rt *refreshtest.Issuer) { rt.Session("nope") },
	} {
		rec := &recorder{TB: t}
		rt := refreshtest.New(rec)
		func() {
			defer func() { _ = recover() }()
			f(rt)
		}()
		assert.Contains(t, rec.failed, "refreshtest: "+name, name)
	}
}
