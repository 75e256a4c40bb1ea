package refresh_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/refreshkit/refresh"
	"github.com/refreshkit/refresh/refreshtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// stepUpAPI mounts /me behind the middleware alone and /password behind
// RequireRecentAuth(10m), /mfa behind RequireACR("mfa", "hwk"): routes a
// refresh token alone must not reach.
func stepUpAPI(t *testing.T, mw func(http.Handler) http.Handler) *httptest.Server {
	me := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, _ := refresh.ClaimsFromContext(r.Context())
		_, _ = w.Write([]byte(c.Subject))
	})
	mux := http.NewServeMux()
	mux.Handle("/me", mw(me))
	mux.Handle("/password", mw(refresh.RequireRecentAuth(10*time.Minute)(me)))
	mux.Handle("/mfa", mw(refresh.RequireACR("mfa", "hwk")(me)))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

// refreshOverHTTP presents rt at the refresh endpoint and returns the new
// pair's tokens.
func refreshOverHTTP(t *testing.T, endpoint, rt string) (access, refreshToken string) {
	t.Helper()
	r := postForm(t, nil, endpoint, refreshForm(rt), nil)
	require.Equal(t, 200, r.status, r.raw)
	access, _ = r.body["access_token"].(string)
	refreshToken, _ = r.body["refresh_token"].(string)
	return access, refreshToken
}

// insufficientAuth asserts the RFC 9470 §3 answer.
func insufficientAuth(t *testing.T, resp *http.Response, challenge string) {
	t.Helper()
	assert.Equal(t, 401, resp.StatusCode)
	assert.Equal(t, challenge, resp.Header.Get("WWW-Authenticate"))
	var body map[string]any
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
	assert.Equal(t, map[string]any{"error": "insufficient_user_authentication"}, body, "no detail on the wire")
}

const recentAuthChallenge = `Bearer realm="api", error="insufficient_user_authentication", max_age="600"`

// The attacker's test: a thief holding a user's refresh token (and so
// fresh access tokens for as long as the session lives: every refresh
// mints one with a new iat) cannot pass a route that wants a recent
// sign-in, because auth_time is the session's start and a refresh keeps
// it; nor can the thief move it, since it is signed. The user, signing in
// again, passes. Boundaries at ±1 ns on the injected clock, through real
// HTTP: the refresh endpoint, then the API.
func TestStolenRefreshTokenCannotStepUp(t *testing.T) {
	e := newEnv(t)
	t0 := e.clock.Now()
	api := stepUpAPI(t, e.iss.Middleware())
	token := e.refreshServer(t, false).URL

	victim := e.issue(t, "alice")
	_, claims := decodeJWT(t, victim.AccessToken)
	require.EqualValues(t, t0.Unix(), claims["auth_time"], "auth_time is the sign-in (RFC 9068 §2.2.1)")
	c, err := e.iss.Verify(bg, victim.AccessToken)
	require.NoError(t, err)
	require.True(t, c.AuthTime.Equal(t0), "Claims.AuthTime: %v, want %v", c.AuthTime, t0)
	assert.Equal(t, 200, get(t, api.URL+"/password", bearer(victim.AccessToken)).StatusCode)

	// Ten minutes on, the thief refreshes with the stolen token: a new
	// access token, fresh iat, the old auth_time. At exactly max_age it
	// still passes; one nanosecond later it does not, however fresh.
	e.clock.Set(t0.Add(10 * time.Minute))
	at, rt := refreshOverHTTP(t, token, victim.RefreshToken)
	_, claims = decodeJWT(t, at)
	require.EqualValues(t, t0.Add(10*time.Minute).Unix(), claims["iat"])
	require.EqualValues(t, t0.Unix(), claims["auth_time"], "a refresh keeps auth_time")
	assert.Equal(t, 200, get(t, api.URL+"/password", bearer(at)).StatusCode, "age == max_age")
	e.clock.Set(t0.Add(10*time.Minute + time.Nanosecond))
	insufficientAuth(t, get(t, api.URL+"/password", bearer(at)), recentAuthChallenge)
	assert.Equal(t, 200, get(t, api.URL+"/me", bearer(at)).StatusCode, "the token itself is good")

	// An hour on, refreshed again on another instance (which reads the
	// session from the store, not from its own copy): still refused.
	e.clock.Set(t0.Add(time.Hour))
	at, _ = refreshOverHTTP(t, e.refreshServer(t, true).URL, rt)
	_, claims = decodeJWT(t, at)
	require.EqualValues(t, t0.Unix(), claims["auth_time"], "the store's CreatedAt")
	insufficientAuth(t, get(t, api.URL+"/password", bearer(at)), recentAuthChallenge)

	// Moving auth_time forward breaks the signature.
	parts := strings.Split(at, ".")
	_, claims = decodeJWT(t, at)
	claims["auth_time"] = e.clock.Now().Unix()
	forged := parts[0] + "." + b64json(claims) + "." + parts[2]
	resp := get(t, api.URL+"/password", bearer(forged))
	assert.Equal(t, 401, resp.StatusCode)
	assert.Equal(t, `Bearer realm="api", error="invalid_token"`, resp.Header.Get("WWW-Authenticate"))

	// Nor can a login handler's claims set it: the Issuer writes it.
	_, err = e.iss.Issue(bg, "alice", refresh.WithClaims(map[string]any{"auth_time": e.clock.Now().Unix()}))
	require.ErrorIs(t, err, refresh.ErrInvalidRequest)

	// A token without auth_time (minted elsewhere with the key, or before
	// the claim existed) is refused: the guard fails closed.
	noAuthTime := forgeHS(goodHeader(), e.goodClaims(), hsSecret)
	require.Equal(t, 200, get(t, api.URL+"/me", bearer(noAuthTime)).StatusCode)
	insufficientAuth(t, get(t, api.URL+"/password", bearer(noAuthTime)), recentAuthChallenge)

	// The user signs in again: a new session, a new auth_time.
	again := e.issue(t, "alice")
	assert.Equal(t, 200, get(t, api.URL+"/password", bearer(again.AccessToken)).StatusCode)
}

// RequireACR: the acr claim a login handler sets at Issue, for the whole
// session.
func TestRequireACR(t *testing.T) {
	e := newEnv(t)
	api := stepUpAPI(t, e.iss.Middleware())
	const challenge = `Bearer realm="api", error="insufficient_user_authentication", acr_values="mfa hwk"`
	for name, acr := range map[string]any{"none": nil, "password only": "pwd", "a number": 2, "a list": []string{"mfa"}, "case": "MFA"} {
		var opts []refresh.Option
		if acr != nil {
			opts = append(opts, refresh.WithClaims(map[string]any{"acr": acr}))
		}
		p := e.issue(t, "alice", opts...)
		t.Run(name, func(t *testing.T) { insufficientAuth(t, get(t, api.URL+"/mfa", bearer(p.AccessToken)), challenge) })
	}
	for _, acr := range []string{"mfa", "hwk"} {
		p := e.issue(t, "alice", refresh.WithClaims(map[string]any{"acr": acr}))
		assert.Equal(t, 200, get(t, api.URL+"/mfa", bearer(p.AccessToken)).StatusCode, acr)
		// A refresh keeps it.
		q, err := e.iss.Rotate(bg, p.RefreshToken)
		require.NoError(t, err)
		assert.Equal(t, 200, get(t, api.URL+"/mfa", bearer(q.AccessToken)).StatusCode, acr)
	}
}

// The guards on a resource server: a Verifier's clock and its tokens'
// auth_time; the error handler hook sees the refusal with what it asks.
func TestRecentAuthOnVerifier(t *testing.T) {
	clock := refreshtest.NewClock(time.Date(2026, 12, 2, 9, 0, 0, 0, time.UTC))
	store := refresh.NewMemoryStore(refresh.WithStoreClock(clock.Now))
	defer store.Close()
	auth := authIssuer(t, clock, store, edKeyPair(t, "k1"))
	v := newVerifier(t, clock, func(c *refresh.VerifierConfig) { c.JWKSURL = newJWKSServer(t, auth).URL })
	var seen *refresh.BearerError
	api := stepUpAPI(t, v.Middleware(refresh.WithErrorHandler(func(w http.ResponseWriter, r *http.Request, err *refresh.BearerError) {
		seen = err
		w.WriteHeader(err.Status)
	})))
	p, err := auth.Issue(bg, "alice")
	require.NoError(t, err)
	c, err := v.Verify(bg, p.AccessToken)
	require.NoError(t, err)
	require.True(t, c.AuthTime.Equal(clock.Now()))

	clock.Advance(10 * time.Minute)
	assert.Equal(t, 200, get(t, api.URL+"/password", bearer(p.AccessToken)).StatusCode)
	clock.Advance(time.Nanosecond)
	assert.Equal(t, 401, get(t, api.URL+"/password", bearer(p.AccessToken)).StatusCode)
	require.NotNil(t, seen)
	assert.Equal(t, "insufficient_user_authentication", seen.Code)
	assert.Equal(t, 10*time.Minute, seen.MaxAge)
	assert.Equal(t, "Bearer", seen.Scheme)
	assert.False(t, errors.Is(seen, refresh.ErrInvalidToken), "the token is good; the sign-in is old")
}

func TestStepUpGuardsRefuseNonsense(t *testing.T) {
	assert.Panics(t, func() { refresh.RequireRecentAuth(time.Second - 1) })
	assert.NotPanics(t, func() { refresh.RequireRecentAuth(time.Second) })
	assert.Panics(t, func() { refresh.RequireACR() })
}

// A guard keeps what it was built with: the caller's slice changing later
// (a config reloaded into the same backing array) changes no rule.
func TestGuardsCopyTheirArguments(t *testing.T) {
	e := newEnv(t)
	mw := e.iss.Middleware()
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})
	scopes, roles, acrs := []string{"write"}, []string{"admin"}, []string{"mfa"}
	mux := http.NewServeMux()
	mux.Handle("/scope", mw(refresh.RequireScope(scopes...)(ok)))
	mux.Handle("/role", mw(refresh.RequireRole(roles...)(ok)))
	mux.Handle("/acr", mw(refresh.RequireACR(acrs...)(ok)))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	scopes[0], roles[0], acrs[0] = "read", "user", "pwd"
	p := e.issue(t, "bob", refresh.WithScope("read"), refresh.WithClaims(map[string]any{"roles": []string{"user"}, "acr": "pwd"}))
	assert.Equal(t, 403, get(t, srv.URL+"/scope", bearer(p.AccessToken)).StatusCode)
	assert.Equal(t, 403, get(t, srv.URL+"/role", bearer(p.AccessToken)).StatusCode)
	assert.Equal(t, 401, get(t, srv.URL+"/acr", bearer(p.AccessToken)).StatusCode)
}

// A DPoP-bound token whose sign-in is too old gets the step-up challenge in
// the DPoP scheme (RFC 9449 §7.1 with RFC 9470's parameters), after its
// proof was checked: the refusal is about the sign-in, not the key.
func TestStepUpChallengeForDPoPTokens(t *testing.T) {
	e := newEnv(t)
	api := stepUpAPI(t, e.iss.Middleware())
	alice := newDPoPClient(t)
	p := e.issue(t, "alice", refresh.WithDPoP(alice.thumbprint))
	call := func(path string) *http.Response {
		req, _ := http.NewRequest(http.MethodGet, api.URL+path, nil)
		req.Header.Set("Authorization", "DPoP "+p.AccessToken)
		req.Header.Set("DPoP", alice.proof("GET", api.URL+path, p.AccessToken, e.clock.Now()))
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	require.Equal(t, 200, call("/password").StatusCode)
	e.clock.Advance(10*time.Minute + time.Nanosecond)
	require.Equal(t, 200, call("/me").StatusCode)
	resp := call("/password")
	assert.Equal(t, 401, resp.StatusCode)
	assert.Regexp(t, `^DPoP realm="api", error="insufficient_user_authentication", max_age="600", algs="[^"]+"$`, resp.Header.Get("WWW-Authenticate"))
}

// auth_time is a NumericDate like exp and iat: anything else in a signed
// token makes the token invalid, rather than an unknown sign-in time.
func TestAuthTimeMustBeANumericDate(t *testing.T) {
	e := newEnv(t)
	for _, v := range []any{"2026-12-02T09:00:00Z", -1, 1e20, nil, true, map[string]any{}} {
		claims := e.goodClaims()
		claims["auth_time"] = v
		_, err := e.iss.Verify(bg, forgeHS(goodHeader(), claims, hsSecret))
		assert.ErrorIs(t, err, refresh.ErrInvalidToken, "auth_time %v", v)
	}
	claims := e.goodClaims()
	claims["auth_time"] = 1796200000.5
	c, err := e.iss.Verify(bg, forgeHS(goodHeader(), claims, hsSecret))
	require.NoError(t, err)
	assert.True(t, c.AuthTime.Equal(time.Unix(1796200000, 5e8)))
}

// WithAuthTime, the attacker's way round: a login that signs users in on
// an identity provider's word (single sign-on) runs Issue now, but the
// user authenticated when the provider says. Were auth_time the Issue's
// time, anyone holding a day-old provider session (a shared computer's
// browser, a stolen provider cookie) would get a brand-new auth_time from
// a relay and pass every step-up guard. With WithAuthTime the tokens carry
// the provider's time: refused by RequireRecentAuth at max_age + 1 ns,
// across refreshes on a warm and a cold instance, whatever Rotate is told.
// Through real HTTP: the relay login, the refresh endpoint, the API.
func TestWithAuthTimeRelaysTheRealSignIn(t *testing.T) {
	e := newEnv(t)
	t0 := e.clock.Now()
	api := stepUpAPI(t, e.iss.Middleware())
	h := refresh.NewHandlers(e.iss, refresh.HandlerConfig{})
	sso := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// What an OIDC relying party takes from the provider's verified
		// ID token.
		sec, err := strconv.ParseInt(r.FormValue("auth_time"), 10, 64)
		if err != nil {
			http.Error(w, "bad auth_time", 400)
			return
		}
		p, err := e.iss.Issue(r.Context(), r.FormValue("sub"), refresh.WithAuthTime(time.Unix(sec, 0)))
		if err != nil {
			h.WriteIssueError(w, r, err)
			return
		}
		h.WriteTokenResponse(w, r, p)
	}))
	t.Cleanup(sso.Close)
	signIn := func(sub string, authTime time.Time) reply {
		t.Helper()
		return postForm(t, nil, sso.URL, url.Values{"sub": {sub}, "auth_time": {strconv.FormatInt(authTime.Unix(), 10)}}, nil)
	}

	// A provider session an hour old: the session just started, the
	// authentication did not.
	r := signIn("alice", t0.Add(-time.Hour))
	require.Equal(t, 200, r.status, r.raw)
	at := r.body["access_token"].(string)
	_, claims := decodeJWT(t, at)
	assert.EqualValues(t, t0.Add(-time.Hour).Unix(), claims["auth_time"])
	assert.EqualValues(t, t0.Unix(), claims["iat"])
	insufficientAuth(t, get(t, api.URL+"/password", bearer(at)), recentAuthChallenge)
	assert.Equal(t, 200, get(t, api.URL+"/me", bearer(at)).StatusCode)
	infos, err := e.iss.Sessions(bg, "alice")
	require.NoError(t, err)
	require.Len(t, infos, 1)
	assert.True(t, infos[0].CreatedAt.Equal(t0.Add(-time.Hour)), "the session's CreatedAt is the authentication: %v", infos[0].CreatedAt)

	// Ten minutes old: admitted at exactly max_age, refused 1 ns later.
	r = signIn("bob", t0.Add(-10*time.Minute))
	require.Equal(t, 200, r.status, r.raw)
	at, rt := r.body["access_token"].(string), r.body["refresh_token"].(string)
	assert.Equal(t, 200, get(t, api.URL+"/password", bearer(at)).StatusCode, "age == max_age")
	e.clock.Set(t0.Add(time.Nanosecond))
	insufficientAuth(t, get(t, api.URL+"/password", bearer(at)), recentAuthChallenge)

	// Refreshes keep it, on this instance and on a cold one reading the
	// store, and Rotate ignores a WithAuthTime of its own.
	at, rt = refreshOverHTTP(t, e.refreshServer(t, false).URL, rt)
	_, claims = decodeJWT(t, at)
	assert.EqualValues(t, t0.Add(-10*time.Minute).Unix(), claims["auth_time"])
	at, rt = refreshOverHTTP(t, e.refreshServer(t, true).URL, rt)
	_, claims = decodeJWT(t, at)
	assert.EqualValues(t, t0.Add(-10*time.Minute).Unix(), claims["auth_time"], "cold instance")
	p, err := e.iss.Rotate(bg, rt, refresh.WithAuthTime(e.clock.Now()))
	require.NoError(t, err)
	_, claims = decodeJWT(t, p.AccessToken)
	assert.EqualValues(t, t0.Add(-10*time.Minute).Unix(), claims["auth_time"], "Rotate ignores WithAuthTime")
	insufficientAuth(t, get(t, api.URL+"/password", bearer(p.AccessToken)), recentAuthChallenge)

	// A fresh authentication at the provider passes.
	r = signIn("alice", e.clock.Now())
	require.Equal(t, 200, r.status, r.raw)
	assert.Equal(t, 200, get(t, api.URL+"/password", bearer(r.body["access_token"].(string))).StatusCode)

	// A time no authentication can have is refused, 400 invalid_request,
	// and nothing is stored.
	r = signIn("carol", e.clock.Now().Add(time.Second))
	assert.Equal(t, 400, r.status, r.raw)
	assert.Equal(t, map[string]any{"error": "invalid_request"}, r.body)
	infos, err = e.iss.Sessions(bg, "carol")
	require.NoError(t, err)
	assert.Empty(t, infos)
}

// WithAuthTime's bounds, each at ±1 ns: not before 1970, not after the
// Issuer's clock plus Leeway; a time within the leeway ahead is now.
func TestWithAuthTimeBounds(t *testing.T) {
	const leeway = 30 * time.Second
	e := newEnv(t, func(c *refresh.Config) { c.Leeway = leeway })
	now := e.clock.Now()
	issue := func(at time.Time) (*refresh.Pair, error) {
		return e.iss.Issue(bg, "dave", refresh.WithAuthTime(at))
	}
	for name, at := range map[string]time.Time{
		"zero":                  {},
		"before 1970":           time.Unix(0, -1),
		"past the leeway ahead": now.Add(leeway + time.Nanosecond),
		"far future":            now.AddDate(1000, 0, 0),
	} {
		_, err := issue(at)
		assert.ErrorIs(t, err, refresh.ErrInvalidRequest, name)
	}
	infos, err := e.iss.Sessions(bg, "dave")
	require.NoError(t, err)
	require.Empty(t, infos, "a refused Issue stores nothing")

	authTime := func(p *refresh.Pair) time.Time {
		c, err := e.iss.Verify(bg, p.AccessToken)
		require.NoError(t, err)
		return c.AuthTime
	}
	p, err := issue(now.Add(leeway))
	require.NoError(t, err, "at the leeway")
	assert.True(t, authTime(p).Equal(now), "a time ahead of the clock is now, never later: %v", authTime(p))
	p, err = issue(time.Unix(0, 0))
	require.NoError(t, err, "1970")
	assert.True(t, authTime(p).Equal(time.Unix(0, 0)))
	// Whole seconds: the fraction is dropped, so the authentication looks
	// older, never fresher.
	p, err = issue(now.Add(-time.Minute + 999*time.Millisecond))
	require.NoError(t, err)
	assert.True(t, authTime(p).Equal(now.Add(-time.Minute)), "%v", authTime(p))
}
