package refresh_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/refreshkit/refresh"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/oauth2"
)

// server mounts the token, revocation and JWKS endpoints and a protected
// /me behind the middleware.
func (e *env) server(t *testing.T, cfg refresh.HandlerConfig) (*httptest.Server, *refresh.Handlers) {
	h := refresh.NewHandlers(e.iss, cfg)
	mux := http.NewServeMux()
	mux.Handle("/token", h.RefreshHandler())
	mux.Handle("/revoke", h.RevocationHandler())
	mux.Handle("/jwks", h.JWKSHandler())
	mux.HandleFunc("POST /login", func(w http.ResponseWriter, r *http.Request) {
		p, err := e.iss.Issue(r.Context(), r.FormValue("username"), refresh.WithScope("read", "write"))
		if err != nil {
			http.Error(w, "fail", 500)
			return
		}
		h.WriteTokenResponse(w, r, p)
	})
	mux.Handle("/me", e.iss.Middleware()(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, _ := refresh.ClaimsFromContext(r.Context())
		_, _ = io.WriteString(w, c.Subject)
	})))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv, h
}

type reply struct {
	status int
	header http.Header
	body   map[string]any
	raw    string
}

func postForm(t *testing.T, client *http.Client, u string, form url.Values, header map[string]string) reply {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, u, strings.NewReader(form.Encode()))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	return do(t, client, req)
}

func do(t *testing.T, client *http.Client, req *http.Request) reply {
	t.Helper()
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	r := reply{status: resp.StatusCode, header: resp.Header, raw: string(b)}
	_ = json.Unmarshal(b, &r.body)
	return r
}

func refreshForm(tok string, kv ...string) url.Values {
	v := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok}}
	for i := 0; i+1 < len(kv); i += 2 {
		v.Set(kv[i], kv[i+1])
	}
	return v
}

func noStoreHeaders(t *testing.T, r reply) {
	t.Helper()
	assert.Equal(t, "no-store", r.header.Get("Cache-Control"))
	assert.Equal(t, "no-cache", r.header.Get("Pragma"))
	assert.True(t, strings.HasPrefix(r.header.Get("Content-Type"), "application/json"))
}

// H1: a successful refresh is a §5.1 JSON response that must not be cached.
func TestH1_RefreshSuccess(t *testing.T) {
	e := newEnv(t)
	srv, _ := e.server(t, refresh.HandlerConfig{})
	p := e.issue(t, "alice", refresh.WithScope("read", "write"))
	r := postForm(t, nil, srv.URL+"/token", refreshForm(p.RefreshToken), nil)
	require.Equal(t, 200, r.status, r.raw)
	noStoreHeaders(t, r)
	assert.Equal(t, "Bearer", r.body["token_type"])
	assert.Equal(t, float64(900), r.body["expires_in"])
	assert.NotEqual(t, p.RefreshToken, r.body["refresh_token"])
	assert.Equal(t, "read write", r.body["scope"])
	resp := get(t, srv.URL+"/me", bearer(r.body["access_token"].(string)))
	assert.Equal(t, 200, resp.StatusCode)

	// H3: narrower scope; wider is invalid_scope.
	r2 := postForm(t, nil, srv.URL+"/token", refreshForm(r.body["refresh_token"].(string), "scope", "read"), nil)
	require.Equal(t, 200, r2.status)
	assert.Equal(t, "read", r2.body["scope"])
	r3 := postForm(t, nil, srv.URL+"/token", refreshForm(r2.body["refresh_token"].(string), "scope", "read admin"), nil)
	assert.Equal(t, 400, r3.status)
	assert.Equal(t, map[string]any{"error": "invalid_scope"}, r3.body)
	noStoreHeaders(t, r3)
}

// H2, H4: every malformed request gets the right status and a §5.2 code,
// never a 500 and never detail.
func TestH2H4_RefreshErrors(t *testing.T) {
	e := newEnv(t)
	srv, _ := e.server(t, refresh.HandlerConfig{MaxBodyBytes: 1024})
	p := e.issue(t, "alice")
	rotated := e.issue(t, "alice")
	_, err := e.iss.Rotate(bg, rotated.RefreshToken)
	require.NoError(t, err)
	bound := e.issue(t, "alice", refresh.WithClientID("mobile"))

	form := func(v url.Values) string { return v.Encode() }
	cases := []struct {
		name, method, ctype, body string
		status                    int
		code                      string
	}{
		{"GET", "GET", "", "", 405, "invalid_request"},
		{"JSON body", "POST", "application/json", `{"grant_type":"refresh_token"}`, 400, "invalid_request"},
		{"no content type", "POST", "", form(refreshForm(p.RefreshToken)), 400, "invalid_request"},
		// A form body is refused under any other media type, one a
		// cross-site form can send (text/plain) among them.
		{"form body as text/plain", "POST", "text/plain", form(refreshForm(p.RefreshToken)), 400, "invalid_request"},
		{"form body as JSON", "POST", "application/json", form(refreshForm(p.RefreshToken)), 400, "invalid_request"},
		{"form body as multipart", "POST", "multipart/form-data; boundary=x", form(refreshForm(p.RefreshToken)), 400, "invalid_request"},
		{"malformed media type", "POST", "application/x-www-form-urlencoded; charset", form(refreshForm(p.RefreshToken)), 400, "invalid_request"},
		{"oversized", "POST", "application/x-www-form-urlencoded", "grant_type=refresh_token&pad=" + strings.Repeat("x", 2000), 413, "invalid_request"},
		{"no grant_type", "POST", "application/x-www-form-urlencoded", "refresh_token=" + p.RefreshToken, 400, "invalid_request"},
		{"password grant", "POST", "application/x-www-form-urlencoded", "grant_type=password&username=a&password=b", 400, "unsupported_grant_type"},
		{"no refresh_token", "POST", "application/x-www-form-urlencoded", "grant_type=refresh_token", 400, "invalid_request"},
		{"repeated parameter", "POST", "application/x-www-form-urlencoded", form(refreshForm(p.RefreshToken)) + "&grant_type=refresh_token", 400, "invalid_request"},
		{"bad encoding", "POST", "application/x-www-form-urlencoded", "grant_type=refresh_token&refresh_token=%zz", 400, "invalid_request"},
		{"garbage token", "POST", "application/x-www-form-urlencoded", form(refreshForm("rt_garbage")), 400, "invalid_grant"},
		{"access token", "POST", "application/x-www-form-urlencoded", form(refreshForm(p.AccessToken)), 400, "invalid_grant"},
		{"reused token", "POST", "application/x-www-form-urlencoded", form(refreshForm(rotated.RefreshToken)), 400, "invalid_grant"},
		{"other client", "POST", "application/x-www-form-urlencoded", form(refreshForm(bound.RefreshToken, "client_id", "web")), 400, "invalid_grant"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, srv.URL+"/token", strings.NewReader(tc.body))
			require.NoError(t, err)
			if tc.ctype != "" {
				req.Header.Set("Content-Type", tc.ctype)
			}
			r := do(t, nil, req)
			assert.Equal(t, tc.status, r.status, r.raw)
			assert.Equal(t, map[string]any{"error": tc.code}, r.body, "only the code, no detail")
			noStoreHeaders(t, r)
		})
	}
	// The session of the genuine token was not disturbed by any of it.
	r := postForm(t, nil, srv.URL+"/token", refreshForm(p.RefreshToken), nil)
	assert.Equal(t, 200, r.status)
	r = postForm(t, nil, srv.URL+"/token", refreshForm(bound.RefreshToken, "client_id", "mobile"), nil)
	assert.Equal(t, 200, r.status, "another client's attempt did not revoke the bound family")
	// The query string is never read.
	r = postForm(t, nil, srv.URL+"/token?grant_type=refresh_token&refresh_token="+url.QueryEscape(p.RefreshToken), url.Values{}, nil)
	assert.Equal(t, 400, r.status)
}

// R4 and R5 on the wire: reuse is invalid_grant and kills the session's
// current token, and only that session's: the user's other device and
// other users refresh on.
func TestR4_ReuseOnTheWire(t *testing.T) {
	e := newEnv(t)
	srv, _ := e.server(t, refresh.HandlerConfig{})
	p := e.issue(t, "alice")
	laptop, bob := e.issue(t, "alice"), e.issue(t, "bob")
	r1 := postForm(t, nil, srv.URL+"/token", refreshForm(p.RefreshToken), nil)
	require.Equal(t, 200, r1.status)
	r2 := postForm(t, nil, srv.URL+"/token", refreshForm(p.RefreshToken), nil)
	assert.Equal(t, 400, r2.status)
	assert.Equal(t, "invalid_grant", r2.body["error"])
	r3 := postForm(t, nil, srv.URL+"/token", refreshForm(r1.body["refresh_token"].(string)), nil)
	assert.Equal(t, "invalid_grant", r3.body["error"])
	for _, other := range []*refresh.Pair{laptop, bob} {
		r := postForm(t, nil, srv.URL+"/token", refreshForm(other.RefreshToken), nil)
		assert.Equal(t, 200, r.status, "%s's other session after the reuse", other.Subject)
		assert.False(t, e.session(t, other.SessionID).Revoked())
	}
}

func TestRefreshStoreDownIs503(t *testing.T) {
	e := newEnv(t)
	p := e.issue(t, "alice")
	down := newEnv(t, func(c *refresh.Config) { c.Store = failingStore{errors.New("pq: secret detail")} })
	var logged error
	srv, _ := down.server(t, refresh.HandlerConfig{OnError: func(_ *http.Request, err error) { logged = err }})
	r := postForm(t, nil, srv.URL+"/token", refreshForm(p.RefreshToken), nil)
	assert.Equal(t, 503, r.status)
	assert.Equal(t, map[string]any{"error": "temporarily_unavailable"}, r.body)
	assert.NotContains(t, r.raw, "secret detail")
	require.Error(t, logged)
}

// TestRefreshStoreDownWarmInstance: the store fails under an instance that
// knows the session, so the refresh takes the one-round-trip path and its
// single store call (AdvanceActive) is what fails. The answer is 503 with
// nothing of the cause, and nothing changed: once the store is back, the
// same refresh token rotates. (Only AdvanceActive fails: a fault taken for
// a refusal would fall back to Get and Advance, which work, and answer 200.)
func TestRefreshStoreDownWarmInstance(t *testing.T) {
	e := newEnv(t)
	var logged error
	srv, _ := e.server(t, refresh.HandlerConfig{OnError: func(_ *http.Request, err error) { logged = err }})
	p := e.issue(t, "alice")

	e.fx.FailStore(errSecretDetail, "AdvanceActive")
	r := postForm(t, nil, srv.URL+"/token", refreshForm(p.RefreshToken), nil)
	assert.Equal(t, 503, r.status)
	assert.Equal(t, map[string]any{"error": "temporarily_unavailable"}, r.body)
	assert.NotContains(t, r.raw, "secret detail")
	require.ErrorIs(t, logged, errSecretDetail, "the cause goes to OnError")
	assert.Zero(t, e.session(t, p.SessionID).Generation, "the failed swap changed nothing")

	e.fx.FailStore(nil)
	r = postForm(t, nil, srv.URL+"/token", refreshForm(p.RefreshToken), nil)
	require.Equal(t, 200, r.status, r.raw)
	assert.NotEqual(t, p.RefreshToken, r.body["refresh_token"])
}

var errSecretDetail = errors.New("dial tcp 10.0.0.7:5432: secret detail")

// refreshServer serves the refresh grant of e's Issuer or, cold, of a
// second Issuer on the same store that has seen no session (so a rotation
// takes the two-round-trip path: Get, then Advance).
func (e *env) refreshServer(t *testing.T, cold bool) *httptest.Server {
	t.Helper()
	iss := e.iss
	if cold {
		var err error
		iss, err = refresh.NewIssuer(e.cfg)
		require.NoError(t, err)
	}
	srv := httptest.NewServer(refresh.NewHandlers(iss, refresh.HandlerConfig{}).RefreshHandler())
	t.Cleanup(srv.Close)
	return srv
}

// swapThiefStore lets another rotation of the token win while the
// caller's own swap fails without taking effect: armed, its next swap
// advances the session as that other rotation (a nanosecond later) and
// returns a fault.
type swapThiefStore struct {
	*refresh.MemoryStore
	armed atomic.Bool
}

func (s *swapThiefStore) Advance(ctx context.Context, id string, from uint64, at time.Time) error {
	if s.armed.CompareAndSwap(true, false) {
		_ = s.MemoryStore.Advance(ctx, id, from, at.Add(time.Nanosecond))
		return errSecretDetail
	}
	return s.MemoryStore.Advance(ctx, id, from, at)
}

func (s *swapThiefStore) AdvanceActive(ctx context.Context, id string, from uint64, at, activeAfter time.Time) error {
	if s.armed.CompareAndSwap(true, false) {
		_ = s.MemoryStore.Advance(ctx, id, from, at.Add(time.Nanosecond))
		return errSecretDetail
	}
	return s.MemoryStore.AdvanceActive(ctx, id, from, at, activeAfter)
}

// TestLostStoreReplyNotOurs, over HTTP: a swap that failed is taken for a
// lost reply only when the session shows this very swap (its RotatedAt to
// the nanosecond). When another rotation of the token won meanwhile, the
// failed one answers 503 and gets no successor, so that a thief's and a
// victim's presentations of one token still meet as reuse.
func TestLostStoreReplyNotOurs(t *testing.T) {
	for _, cold := range []bool{false, true} {
		st := &swapThiefStore{MemoryStore: refresh.NewMemoryStore(refresh.WithSweepInterval(0))}
		e := newEnv(t, func(c *refresh.Config) { c.Store = st })
		srv := e.refreshServer(t, cold)
		p := e.issue(t, "alice")
		st.armed.Store(true)
		r := postForm(t, nil, srv.URL, refreshForm(p.RefreshToken), nil)
		assert.Equal(t, 503, r.status, "cold %v: %s", cold, r.raw)
		assert.Nil(t, r.body["refresh_token"])
		s, err := st.Get(context.Background(), p.SessionID)
		require.NoError(t, err)
		assert.Equal(t, uint64(1), s.Generation, "the other rotation won")
		r = postForm(t, nil, srv.URL, refreshForm(p.RefreshToken), nil)
		assert.Equal(t, 400, r.status, "cold %v: presented again, the token is reuse", cold)
		assert.Equal(t, "invalid_grant", r.body["error"])
		s, err = st.Get(context.Background(), p.SessionID)
		require.NoError(t, err)
		assert.True(t, s.Revoked(), "cold %v: reuse ended the session", cold)
	}
}

// TestLostStoreReply: the store commits a rotation's swap and its reply is
// lost (a connection reset after the commit). The Issuer looks, sees its
// own swap (the next generation, its own RotatedAt to the nanosecond) and
// answers 200, on the one-round-trip path and the two-round-trip one, with
// grace 0: before, it answered 503, and the client's retry of its token,
// rotated by then, was reuse and ended the session. When it cannot look
// (the store fails that too) it answers 503; the retry is then reuse with
// grace 0, and within grace receives the same successor.
func TestLostStoreReply(t *testing.T) {
	for _, cold := range []bool{false, true} {
		e := newEnv(t)
		srv := e.refreshServer(t, cold)
		p := e.issue(t, "alice")
		e.fx.LoseStoreReplies(errSecretDetail, "Advance", "AdvanceActive")
		r := postForm(t, nil, srv.URL, refreshForm(p.RefreshToken), nil)
		require.Equal(t, 200, r.status, "cold %v: %s", cold, r.raw)
		assert.Equal(t, uint64(1), e.session(t, p.SessionID).Generation)
		e.fx.FailStore(nil)
		next := postForm(t, nil, srv.URL, refreshForm(r.body["refresh_token"].(string)), nil)
		require.Equal(t, 200, next.status, "cold %v: the successor rotates: %s", cold, next.raw)
		assert.False(t, e.session(t, p.SessionID).Revoked())
	}

	for _, grace := range []time.Duration{0, time.Second} {
		e := newEnv(t, func(c *refresh.Config) { c.Grace = grace })
		srv, _ := e.server(t, refresh.HandlerConfig{})
		p := e.issue(t, "alice")
		e.fx.LoseStoreReplies(errSecretDetail, "AdvanceActive", "Get") // and the look fails too
		r := postForm(t, nil, srv.URL+"/token", refreshForm(p.RefreshToken), nil)
		assert.Equal(t, 503, r.status, "grace %v", grace)
		assert.Equal(t, uint64(1), e.session(t, p.SessionID).Generation, "the swap was committed")
		e.fx.FailStore(nil)
		retry := postForm(t, nil, srv.URL+"/token", refreshForm(p.RefreshToken), nil)
		if grace == 0 {
			assert.Equal(t, 400, retry.status, "strict rotation: the retry is reuse")
			assert.True(t, e.session(t, p.SessionID).Revoked())
			continue
		}
		require.Equal(t, 200, retry.status, retry.raw)
		assert.False(t, e.session(t, p.SessionID).Revoked())
	}
}

// TestReuseWhileRevokeFails: a rotated token presented again while the
// store cannot revoke is 503, not invalid_grant: the client is not told
// the session ended while it lives on, and no reuse event is emitted. Once
// the store is back, the same presentation revokes it.
func TestReuseWhileRevokeFails(t *testing.T) {
	e := newEnv(t)
	srv, _ := e.server(t, refresh.HandlerConfig{})
	p0 := e.issue(t, "alice")
	p1, err := e.iss.Rotate(context.Background(), p0.RefreshToken)
	require.NoError(t, err)
	_, err = e.iss.Rotate(context.Background(), p1.RefreshToken)
	require.NoError(t, err)

	e.fx.FailStore(errSecretDetail, "Revoke")
	r := postForm(t, nil, srv.URL+"/token", refreshForm(p0.RefreshToken), nil)
	assert.Equal(t, 503, r.status)
	assert.Equal(t, map[string]any{"error": "temporarily_unavailable"}, r.body)
	assert.False(t, e.session(t, p0.SessionID).Revoked())
	assert.Empty(t, e.fx.Events(refresh.EventReused), "no reuse event for a revocation that did not happen")

	e.fx.FailStore(nil)
	r = postForm(t, nil, srv.URL+"/token", refreshForm(p0.RefreshToken), nil)
	assert.Equal(t, 400, r.status)
	assert.Equal(t, "invalid_grant", r.body["error"])
	assert.True(t, e.session(t, p0.SessionID).Revoked())
	assert.Len(t, e.fx.Events(refresh.EventReused), 1)
}

// TestGraceWhileUseGraceFails: with MaxGraceUses the grace retry's count
// is a store write; while it fails the retry is 503, neither the successor
// nor a refusal, and the session is not revoked. Once the store is back the
// retry gets the same successor as the first answer.
func TestGraceWhileUseGraceFails(t *testing.T) {
	e := newEnv(t, func(c *refresh.Config) { c.Grace, c.MaxGraceUses = 5*time.Second, 2 })
	srv, _ := e.server(t, refresh.HandlerConfig{})
	p0 := e.issue(t, "alice")
	first := postForm(t, nil, srv.URL+"/token", refreshForm(p0.RefreshToken), nil)
	require.Equal(t, 200, first.status, first.raw)

	e.fx.FailStore(errSecretDetail, "UseGrace")
	r := postForm(t, nil, srv.URL+"/token", refreshForm(p0.RefreshToken), nil)
	assert.Equal(t, 503, r.status, r.raw)
	assert.Equal(t, map[string]any{"error": "temporarily_unavailable"}, r.body)
	assert.False(t, e.session(t, p0.SessionID).Revoked())
	assert.Zero(t, e.session(t, p0.SessionID).GraceUses)

	e.fx.FailStore(nil)
	r = postForm(t, nil, srv.URL+"/token", refreshForm(p0.RefreshToken), nil)
	require.Equal(t, 200, r.status, r.raw)
	assert.Equal(t, first.body["refresh_token"], r.body["refresh_token"], "the same successor")
}

// TestRevocationWhileRevokeFails: the revocation endpoint answers 503 when
// the store cannot revoke, for a refresh token and for an access token, so
// that no client believes a sign-out that did not happen; once the store
// is back the same request revokes.
func TestRevocationWhileRevokeFails(t *testing.T) {
	for _, kind := range []string{"refresh_token", "access_token"} {
		t.Run(kind, func(t *testing.T) {
			e := newEnv(t)
			srv, _ := e.server(t, refresh.HandlerConfig{})
			p := e.issue(t, "alice")
			form := url.Values{"token": {p.RefreshToken}}
			if kind == "access_token" {
				form = url.Values{"token": {p.AccessToken}, "token_type_hint": {"access_token"}}
			}

			e.fx.FailStore(errSecretDetail, "Revoke")
			r := postForm(t, nil, srv.URL+"/revoke", form, nil)
			assert.Equal(t, 503, r.status, r.raw)
			assert.NotContains(t, r.raw, "secret detail")
			assert.False(t, e.session(t, p.SessionID).Revoked())

			e.fx.FailStore(nil)
			r = postForm(t, nil, srv.URL+"/revoke", form, nil)
			assert.Equal(t, 200, r.status, r.raw)
			assert.True(t, e.session(t, p.SessionID).Revoked())
		})
	}
}

// E1, E2: revocation answers 200 for anything well-formed and ends the
// session of a refresh token at once.
func TestE1E2_Revocation(t *testing.T) {
	e := newEnv(t, func(c *refresh.Config) { c.CheckSession = true })
	srv, _ := e.server(t, refresh.HandlerConfig{})
	p := e.issue(t, "alice")
	other := e.issue(t, "alice")
	for name, form := range map[string]url.Values{
		"unknown":      {"token": {"rt_AQEAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}},
		"garbage":      {"token": {"not a token at all"}},
		"unknown hint": {"token": {"garbage"}, "token_type_hint": {"id_token"}},
	} {
		r := postForm(t, nil, srv.URL+"/revoke", form, nil)
		assert.Equal(t, 200, r.status, name)
	}
	r := postForm(t, nil, srv.URL+"/revoke", url.Values{"token": {p.RefreshToken}, "token_type_hint": {"refresh_token"}}, nil)
	require.Equal(t, 200, r.status)
	assert.Equal(t, "no-store", r.header.Get("Cache-Control"))
	assert.True(t, e.session(t, p.SessionID).Revoked())
	assert.Equal(t, 401, get(t, srv.URL+"/me", bearer(p.AccessToken)).StatusCode, "its access token stops at once")
	r = postForm(t, nil, srv.URL+"/revoke", url.Values{"token": {p.RefreshToken}}, nil)
	assert.Equal(t, 200, r.status, "already revoked")
	assert.False(t, e.session(t, other.SessionID).Revoked())

	// An access token revokes its own session.
	r = postForm(t, nil, srv.URL+"/revoke", url.Values{"token": {other.AccessToken}, "token_type_hint": {"access_token"}}, nil)
	assert.Equal(t, 200, r.status)
	assert.True(t, e.session(t, other.SessionID).Revoked())

	// Malformed requests.
	assert.Equal(t, 400, postForm(t, nil, srv.URL+"/revoke", url.Values{}, nil).status)
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/revoke?token=x", nil)
	assert.Equal(t, 405, do(t, nil, req).status)
}

// TestRevokedEventOnce: an audit log counts revocations, so revoking a
// revoked session (RFC 7009 answers 200 again; RevokeSession returns nil)
// must not log a second one, and the one event names the session's client
// and generation.
func TestRevokedEventOnce(t *testing.T) {
	var (
		mu      sync.Mutex
		revoked []refresh.Event
	)
	e := newEnv(t, func(c *refresh.Config) {
		c.OnEvent = func(_ context.Context, ev refresh.Event) {
			if ev.Kind == refresh.EventRevoked {
				mu.Lock()
				revoked = append(revoked, ev)
				mu.Unlock()
			}
		}
	})
	srv, _ := e.server(t, refresh.HandlerConfig{})
	p := e.issue(t, "alice", refresh.WithClientID("app"))
	p, err := e.iss.Rotate(bg, p.RefreshToken, refresh.WithClientID("app"))
	require.NoError(t, err)
	for range 2 {
		r := postForm(t, nil, srv.URL+"/revoke", url.Values{"token": {p.RefreshToken}, "client_id": {"app"}}, nil)
		require.Equal(t, 200, r.status)
	}
	require.NoError(t, e.iss.RevokeSession(bg, p.SessionID))
	require.NoError(t, e.iss.Revoke(bg, p.RefreshToken, refresh.WithClientID("app")))
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, revoked, 1)
	assert.Equal(t, p.SessionID, revoked[0].SessionID)
	assert.Equal(t, "app", revoked[0].ClientID)
	assert.Equal(t, uint64(1), revoked[0].Generation)
	assert.Equal(t, "alice", revoked[0].Subject)
}

func TestJWKSHandler(t *testing.T) {
	e := newEnv(t, func(c *refresh.Config) {
		c.Keys = []refresh.Key{{ID: "ed", Algorithm: refresh.EdDSA, Key: edKey}, {ID: "hs", Algorithm: refresh.HS256, Key: hsSecret}}
	})
	srv, _ := e.server(t, refresh.HandlerConfig{})
	resp := get(t, srv.URL+"/jwks", nil)
	require.Equal(t, 200, resp.StatusCode)
	assert.Equal(t, "application/jwk-set+json", resp.Header.Get("Content-Type"))
	assert.Contains(t, resp.Header.Get("Cache-Control"), "max-age")
	var set struct{ Keys []map[string]any }
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&set))
	require.Len(t, set.Keys, 1)
	assert.Equal(t, "ed", set.Keys[0]["kid"])
	assert.NotContains(t, set.Keys[0], "d")
	r := postForm(t, nil, srv.URL+"/jwks", url.Values{}, nil)
	assert.Equal(t, 405, r.status)
}

// The standard Go OAuth 2.0 client refreshes through the handler, sees the
// rotated refresh token, and surfaces reuse as *oauth2.RetrieveError.
func TestOAuth2ClientInterop(t *testing.T) {
	e := newEnv(t)
	srv, _ := e.server(t, refresh.HandlerConfig{})
	p := e.issue(t, "alice", refresh.WithClientID("cli"))
	for _, style := range []oauth2.AuthStyle{oauth2.AuthStyleInParams, oauth2.AuthStyleInHeader} {
		p := e.issue(t, "alice", refresh.WithClientID("cli"))
		conf := &oauth2.Config{ClientID: "cli", Endpoint: oauth2.Endpoint{TokenURL: srv.URL + "/token", AuthStyle: style}}
		start := &oauth2.Token{AccessToken: p.AccessToken, RefreshToken: p.RefreshToken, Expiry: time.Now().Add(-time.Minute)}
		tok, err := conf.TokenSource(context.Background(), start).Token()
		require.NoError(t, err, "auth style %v", style)
		assert.NotEqual(t, p.RefreshToken, tok.RefreshToken, "the client sees the rotated refresh token")
		assert.Equal(t, "Bearer", tok.TokenType)
		assert.WithinDuration(t, time.Now().Add(15*time.Minute), tok.Expiry, time.Minute)
		// The new access token works on a protected route.
		client := conf.Client(context.Background(), tok)
		resp, err := client.Get(srv.URL + "/me")
		require.NoError(t, err)
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		assert.Equal(t, "alice", string(body))
	}

	conf := &oauth2.Config{ClientID: "cli", Endpoint: oauth2.Endpoint{TokenURL: srv.URL + "/token", AuthStyle: oauth2.AuthStyleInParams}}
	stale := &oauth2.Token{RefreshToken: p.RefreshToken, Expiry: time.Now().Add(-time.Minute)}
	_, err := conf.TokenSource(context.Background(), stale).Token()
	require.NoError(t, err)
	_, err = conf.TokenSource(context.Background(), stale).Token() // the same token again
	var re *oauth2.RetrieveError
	require.ErrorAs(t, err, &re)
	assert.Equal(t, "invalid_grant", re.ErrorCode)
	assert.Equal(t, 400, re.Response.StatusCode)
}

// Cookie mode through a real cookie jar: the refresh token is an HttpOnly
// cookie scoped to its path, rotated on refresh, cleared on revocation, and
// refused without the CSRF header or from a foreign origin.
func TestCookieMode(t *testing.T) {
	e := newEnv(t)
	srv, _ := e.server(t, refresh.HandlerConfig{Cookie: &refresh.CookieConfig{Insecure: true, AllowedOrigins: []string{"https://app.example.com"}}})
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	client := &http.Client{Jar: jar}
	u, _ := url.Parse(srv.URL)

	r := postForm(t, client, srv.URL+"/login", url.Values{"username": {"alice"}}, map[string]string{"X-Requested-With": "x"})
	require.Equal(t, 200, r.status)
	assert.NotContains(t, r.body, "refresh_token", "the body never carries the cookie's token")
	setCookie := r.header.Get("Set-Cookie")
	for _, attr := range []string{"HttpOnly", "SameSite=Strict", "Path=/", "refresh_token=rt_"} {
		assert.Contains(t, setCookie, attr)
	}
	first := jar.Cookies(u)[0].Value

	csrf := map[string]string{"X-Requested-With": "fetch"}
	r = postForm(t, client, srv.URL+"/token", url.Values{"grant_type": {"refresh_token"}}, nil)
	assert.Equal(t, 403, r.status, "no CSRF header")
	r = postForm(t, client, srv.URL+"/token", url.Values{"grant_type": {"refresh_token"}},
		map[string]string{"X-Requested-With": "fetch", "Origin": "https://evil.example.com"})
	assert.Equal(t, 403, r.status, "foreign origin")
	assert.Equal(t, first, jar.Cookies(u)[0].Value, "refused requests leave the cookie alone")

	r = postForm(t, client, srv.URL+"/token", url.Values{"grant_type": {"refresh_token"}},
		map[string]string{"X-Requested-With": "fetch", "Origin": "https://app.example.com"})
	require.Equal(t, 200, r.status, r.raw)
	second := jar.Cookies(u)[0].Value
	assert.NotEqual(t, first, second, "rotated on every refresh")
	assert.NotContains(t, r.body, "refresh_token")

	// A dead token in the body is refused and leaves the cookie alone.
	dead := e.issue(t, "bob")
	require.NoError(t, e.iss.RevokeSession(bg, dead.SessionID))
	r = postForm(t, client, srv.URL+"/token", refreshForm(dead.RefreshToken), csrf)
	assert.Equal(t, 400, r.status, r.raw)
	assert.Empty(t, r.header.Values("Set-Cookie"), "a body token's refusal does not touch the cookie")
	assert.Equal(t, second, jar.Cookies(u)[0].Value)

	r = postForm(t, client, srv.URL+"/revoke", url.Values{}, csrf)
	require.Equal(t, 200, r.status)
	assert.Empty(t, jar.Cookies(u), "cleared on revocation")
	_, err = e.iss.Rotate(bg, second)
	require.ErrorIs(t, err, refresh.ErrRevoked)

	// A dead cookie (another tab revoked it) is refused and cleared, so
	// that the browser stops sending it.
	jar.SetCookies(u, []*http.Cookie{{Name: "refresh_token", Value: second, Path: "/"}})
	r = postForm(t, client, srv.URL+"/token", url.Values{"grant_type": {"refresh_token"}}, csrf)
	assert.Equal(t, 400, r.status, r.raw)
	assert.Equal(t, "invalid_grant", r.body["error"])
	assert.Empty(t, jar.Cookies(u), "the dead cookie is cleared")
}

// The cookie's name and attributes outside development mode.
func TestCookieAttributes(t *testing.T) {
	e := newEnv(t)
	for path, name := range map[string]string{"": "__Host-refresh_token", "/auth": "__Secure-refresh_token"} {
		h := refresh.NewHandlers(e.iss, refresh.HandlerConfig{Cookie: &refresh.CookieConfig{Path: path}})
		w := httptest.NewRecorder()
		req := httptest.NewRequest("POST", "/login", nil)
		req.Header.Set("X-Requested-With", "fetch")
		h.WriteTokenResponse(w, req, e.issue(t, "alice"))
		c := w.Result().Cookies()[0]
		assert.Equal(t, name, c.Name)
		assert.True(t, c.Secure && c.HttpOnly)
		assert.Equal(t, http.SameSiteStrictMode, c.SameSite)
		if path == "" {
			path = "/"
		}
		assert.Equal(t, path, c.Path)
		assert.Equal(t, int(refresh.DefaultIdleTTL/time.Second), c.MaxAge)
		// With another path, a __Host- session cookie pins the refresh
		// cookie to its session (TestVuln10_CookieTossing).
		if path == "/" {
			assert.Len(t, w.Result().Cookies(), 1)
			continue
		}
		require.Len(t, w.Result().Cookies(), 2)
		pin := w.Result().Cookies()[1]
		assert.Equal(t, "__Host-refresh_session", pin.Name)
		assert.Equal(t, "/", pin.Path)
		assert.Empty(t, pin.Domain)
		assert.True(t, pin.Secure && pin.HttpOnly)
		assert.Equal(t, http.SameSiteStrictMode, pin.SameSite)
		assert.Equal(t, c.MaxAge, pin.MaxAge)
	}
	// Revocation clears every cookie the response set, at its own path.
	for path, want := range map[string][]string{"": {"__Host-refresh_token /"}, "/auth": {"__Secure-refresh_token /auth", "__Host-refresh_session /"}} {
		h := refresh.NewHandlers(e.iss, refresh.HandlerConfig{Cookie: &refresh.CookieConfig{Path: path}})
		login := httptest.NewRequest("POST", "/login", nil)
		login.Header.Set("X-Requested-With", "fetch")
		w := httptest.NewRecorder()
		h.WriteTokenResponse(w, login, e.issue(t, "alice"))
		req := httptest.NewRequest("POST", "/auth/revoke", strings.NewReader(""))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("X-Requested-With", "fetch")
		for _, c := range w.Result().Cookies() {
			req.AddCookie(c)
		}
		w = httptest.NewRecorder()
		h.RevocationHandler().ServeHTTP(w, req)
		require.Equal(t, 200, w.Code, path)
		var cleared []string
		for _, c := range w.Result().Cookies() {
			assert.Negative(t, c.MaxAge, "%s: %s is expired", path, c.Name)
			assert.Empty(t, c.Value)
			assert.True(t, c.Secure && c.HttpOnly)
			cleared = append(cleared, c.Name+" "+c.Path)
		}
		assert.Equal(t, want, cleared, "path %q", path)
	}
}

// The cookie mode's origin checks, request by request: what a browser
// sends from the app's own page, from another port of the same host (same
// site: SameSite=Strict lets the cookie through, so these checks are what
// refuses it), from a trusted origin and from elsewhere. Every refusal is a
// 403 that leaves the cookie and the session as they were.
func TestCookieModeCrossOrigin(t *testing.T) {
	e := newEnv(t)
	srv, _ := e.server(t, refresh.HandlerConfig{Cookie: &refresh.CookieConfig{Insecure: true, AllowedOrigins: []string{"https://app.example.com", "not an origin"}}})
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	client := &http.Client{Jar: jar}
	u, _ := url.Parse(srv.URL)
	require.Equal(t, 200, postForm(t, client, srv.URL+"/login", url.Values{"username": {"alice"}}, map[string]string{"X-Requested-With": "x"}).status)
	grant := url.Values{"grant_type": {"refresh_token"}}
	own := srv.URL
	otherPort := "http://" + u.Hostname() + ":1"
	for _, c := range []struct {
		name    string
		headers map[string]string
		want    int
	}{
		{"same-site other port", map[string]string{"X-Requested-With": "x", "Sec-Fetch-Site": "same-site", "Origin": otherPort}, 403},
		{"same-site without Origin", map[string]string{"X-Requested-With": "x", "Sec-Fetch-Site": "same-site"}, 403},
		{"cross-site", map[string]string{"X-Requested-With": "x", "Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example.com"}, 403},
		{"old browser, other port", map[string]string{"X-Requested-With": "x", "Origin": otherPort}, 403},
		{"opaque origin", map[string]string{"X-Requested-With": "x", "Origin": "null"}, 403},
		{"own origin without the header", map[string]string{"Sec-Fetch-Site": "same-origin", "Origin": own}, 403},
		{"header empty", map[string]string{"X-Requested-With": "", "Sec-Fetch-Site": "same-origin"}, 403},
		{"malformed trusted entry trusts nothing", map[string]string{"X-Requested-With": "x", "Sec-Fetch-Site": "cross-site", "Origin": "not an origin"}, 403},
	} {
		before := jar.Cookies(u)[0].Value
		r := postForm(t, client, srv.URL+"/token", grant, c.headers)
		assert.Equal(t, c.want, r.status, c.name)
		assert.NotContains(t, r.body, "access_token", c.name)
		assert.Equal(t, before, jar.Cookies(u)[0].Value, c.name)
	}
	list, err := e.iss.Sessions(bg, "alice")
	require.NoError(t, err)
	require.Len(t, list, 1)
	assert.Zero(t, list[0].Generation, "no refused request rotated the session")

	for i, h := range []map[string]string{
		{"X-Requested-With": "x", "Sec-Fetch-Site": "same-origin", "Origin": own},
		{"X-Requested-With": "x", "Origin": own},                                                       // a browser without Sec-Fetch-Site
		{"X-Requested-With": "x"},                                                                      // not a browser
		{"X-Requested-With": "x", "Sec-Fetch-Site": "cross-site", "Origin": "https://app.example.com"}, // trusted
	} {
		r := postForm(t, client, srv.URL+"/token", grant, h)
		require.Equal(t, 200, r.status, "%d: %v", i, h)
	}
	list, err = e.iss.Sessions(bg, "alice")
	require.NoError(t, err)
	assert.EqualValues(t, 4, list[0].Generation)
}

// CheckCSRF gives a login handler the cookie mode's checks, and is a no-op
// without cookie mode.
func TestCheckCSRF(t *testing.T) {
	e := newEnv(t)
	h := refresh.NewHandlers(e.iss, refresh.HandlerConfig{Cookie: &refresh.CookieConfig{CSRFHeader: "X-CSRF"}})
	req := func(hdr ...string) *http.Request {
		r := httptest.NewRequest("POST", "http://app.example.com/login", nil)
		for i := 0; i < len(hdr); i += 2 {
			r.Header.Set(hdr[i], hdr[i+1])
		}
		return r
	}
	assert.NoError(t, h.CheckCSRF(req("X-CSRF", "1", "Sec-Fetch-Site", "same-origin")))
	assert.ErrorIs(t, h.CheckCSRF(req("X-Requested-With", "1")), refresh.ErrCrossSite, "the configured header, not the default")
	assert.ErrorIs(t, h.CheckCSRF(req("X-CSRF", "1", "Sec-Fetch-Site", "same-site")), refresh.ErrCrossSite)
	assert.ErrorIs(t, h.CheckCSRF(req("X-CSRF", "1", "Origin", "http://app.example.com:8443")), refresh.ErrCrossSite)
	plain := refresh.NewHandlers(e.iss, refresh.HandlerConfig{})
	assert.NoError(t, plain.CheckCSRF(req()))
}
