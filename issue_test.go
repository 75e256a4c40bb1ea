package refresh_test

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/refreshkit/refresh"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Issue refuses what no token and no store carry as given, before the
// store sees anything: Postgres answers NUL and invalid UTF-8 in a text
// column with an error (a 503 for the user), and a JWT carries U+FFFD in
// their place, which makes two subjects or clients one.
func TestIssueRefusesUnstorableValues(t *testing.T) {
	mem := refresh.NewMemoryStore(refresh.WithSweepInterval(0))
	rec := &recordingStore{Store: mem}
	e := newEnv(t, func(c *refresh.Config) { c.Store = rec })
	big := map[string]any{"pad": strings.Repeat("x", refresh.DefaultMaxTokenSize)}
	for name, c := range map[string]struct {
		sub  string
		opts []refresh.Option
	}{
		"empty subject":                {"", nil},
		"subject not UTF-8":            {"a\xffb", nil},
		"subject with NUL":             {"a\x00b", nil},
		"subject of 1025 bytes":        {strings.Repeat("s", 1025), nil},
		"client id of 1025 bytes":      {"alice", []refresh.Option{refresh.WithClientID(strings.Repeat("é", 512) + "c")}},
		"client id NUL":                {"alice", []refresh.Option{refresh.WithClientID("\x00")}},
		"client id not UTF-8":          {"alice", []refresh.Option{refresh.WithClientID("web\xc3")}},
		"scope token with a space":     {"alice", []refresh.Option{refresh.WithScope("read write")}},
		"empty scope token":            {"alice", []refresh.Option{refresh.WithScope("read", "")}},
		"scope token not ASCII":        {"alice", []refresh.Option{refresh.WithScope("lire-é")}},
		"scope token with a quote":     {"alice", []refresh.Option{refresh.WithScope(`a"b`)}},
		"scope token with a backslash": {"alice", []refresh.Option{refresh.WithScope(`a\b`)}},
		"scope token with a tab":       {"alice", []refresh.Option{refresh.WithScope("a\tb")}},
		"claims over MaxTokenSize":     {"alice", []refresh.Option{refresh.WithClaims(big)}},
		"scope token with DEL":         {"alice", []refresh.Option{refresh.WithScope("a\x7f")}},
		// A Postgres jsonb column refuses \u0000: a store keeping claims
		// there would fail every such sign-in with a 503.
		"claim value with NUL":           {"alice", []refresh.Option{refresh.WithClaims(map[string]any{"note": "a\x00b"})}},
		"nested claim name with NUL":     {"alice", []refresh.Option{refresh.WithClaims(map[string]any{"x": map[string]any{"k\x00": 1}})}},
		"raw JSON claim with NUL":        {"alice", []refresh.Option{refresh.WithClaims(map[string]any{"r": json.RawMessage(`["\\\u0000"]`)})}},
		"raw JSON claim, lone surrogate": {"alice", []refresh.Option{refresh.WithClaims(map[string]any{"r": json.RawMessage(`"\ud800"`)})}},
		"client id NUL with good scope":  {"alice", []refresh.Option{refresh.WithScope("read"), refresh.WithClientID("a\x00")}},
		"DPoP thumbprint not one":        {"alice", []refresh.Option{refresh.WithDPoP("jkt\x00")}},
		"DPoP thumbprint too short":      {"alice", []refresh.Option{refresh.WithDPoP(strings.Repeat("A", 42))}},
		"metadata of MaxMetaBytes + 1":   {"alice", []refresh.Option{refresh.WithMeta(map[string]string{"ua": strings.Repeat("u", refresh.MaxMetaBytes-3), "i": "p"})}},
		"a megabyte user agent":          {"alice", []refresh.Option{refresh.WithMeta(map[string]string{"ua": strings.Repeat("u", 1<<20)})}},
		// Counted once made text: 1365 NUL bytes become 4095 (U+FFFD each).
		"metadata over it once text": {"alice", []refresh.Option{refresh.WithMeta(map[string]string{"ua": strings.Repeat("\x00", 1365)})}},
	} {
		p, err := e.iss.Issue(bg, c.sub, c.opts...)
		require.ErrorIs(t, err, refresh.ErrInvalidRequest, name)
		assert.True(t, refresh.IsClientError(err), name)
		assert.Nil(t, p, name)
	}
	assert.Empty(t, rec.seen, "a refused Issue reached the store")
	assert.Zero(t, mem.Len())

	// What is text is kept exactly: any Unicode, both normalisations,
	// every printable ASCII scope character RFC 6749 allows, 1024 bytes.
	long := e.issue(t, strings.Repeat("s", 1024), refresh.WithClientID(strings.Repeat("é", 512)),
		refresh.WithMeta(map[string]string{"ua": strings.Repeat("u", refresh.MaxMetaBytes-5), "ip": "x"}))
	assert.Equal(t, strings.Repeat("s", 1024), long.Subject)
	if s, err := mem.Get(bg, long.SessionID); assert.NoError(t, err) {
		assert.Len(t, s.Meta["ua"], refresh.MaxMetaBytes-5, "metadata of MaxMetaBytes is kept whole")
	}
	p := e.issue(t, "Zoë 😀 e\u0301", refresh.WithClientID("app ✓"), refresh.WithScope("!", "~", "a:b/c", "urn:x#[]"),
		refresh.WithMeta(map[string]string{"ua": "x\xff\x00y", "\xfe": "ok"}))
	_, claims := decodeJWT(t, p.AccessToken)
	assert.Equal(t, "Zoë 😀 e\u0301", claims["sub"])
	assert.Equal(t, "app ✓", claims["client_id"])
	assert.Equal(t, "! ~ a:b/c urn:x#[]", claims["scope"])
	// The text \u0000 (a backslash, then u0000) is no NUL.
	q := e.issue(t, "alice", refresh.WithClaims(map[string]any{"re": `\u0000`, "r": json.RawMessage(`"\\\\u0000"`),
		"pair": json.RawMessage(`"\ud83d\ude00"`)}))
	_, claims = decodeJWT(t, q.AccessToken)
	assert.Equal(t, `\u0000`, claims["re"])
	assert.Equal(t, `\\u0000`, claims["r"])
	assert.Equal(t, "😀", claims["pair"])
	// Metadata comes from requests (a user agent): made text, not refused.
	s, err := mem.Get(bg, p.SessionID)
	require.NoError(t, err)
	assert.Equal(t, map[string]string{"ua": "x\uFFFD\uFFFDy", "\uFFFD": "ok"}, s.Meta)
}

// A subject or client ID holding what JSON must escape (quotes,
// backslashes, control characters, HTML's <>&, U+2028 and U+2029, which
// end a line in older JavaScript) is written escaped into the access token,
// which then says exactly that subject and client, and nothing more: a
// subject written as a quote and a member of its own would sign a second
// sub into the token, and decoders disagree on which of two wins.
func TestIssuedStringsEscaped(t *testing.T) {
	e := newEnv(t)
	for _, s := range []string{
		`mallory","sub":"alice`, `x\","sub":"alice","y":"`, `a"b\c`, "tab\tcr\rnl\n", "\x01\x1f\x7f",
		"<script>&amp;</script>", "\u2028\u2029", "\\u0000", `\`, `"`, "é\\\"😀",
	} {
		p, err := e.iss.Issue(bg, s, refresh.WithClientID(s+"-client"))
		require.NoError(t, err, "%q", s)
		_, claims := decodeJWT(t, p.AccessToken)
		assert.Equal(t, s, claims["sub"], "%q", s)
		assert.Equal(t, s+"-client", claims["client_id"], "%q", s)
		members := slices.Sorted(maps.Keys(claims))
		assert.Equal(t, []string{"aud", "auth_time", "client_id", "exp", "iat", "iss", "jti", "sid", "sub"}, members, "%q", s)
		c, err := e.iss.Verify(bg, p.AccessToken)
		require.NoError(t, err, "%q", s)
		assert.Equal(t, s, c.Subject, "%q", s)
		assert.Equal(t, s+"-client", c.ClientID, "%q", s)
		payload, err := base64.RawURLEncoding.DecodeString(strings.Split(p.AccessToken, ".")[1])
		require.NoError(t, err)
		for _, raw := range []string{"<", ">", "&", "\u2028", "\u2029"} {
			assert.NotContains(t, string(payload), raw, "%q: escaped as encoding/json escapes it", s)
		}
		q, err := e.iss.Rotate(bg, p.RefreshToken, refresh.WithClientID(s+"-client"))
		require.NoError(t, err, "%q: the session's client, as given", s)
		c, err = e.iss.Verify(bg, q.AccessToken)
		require.NoError(t, err)
		assert.Equal(t, s, c.Subject, "%q after a refresh", s)
	}
}

// The access token's size is checked at Issue, to the byte: a session
// whose tokens Verify would refuse for their length is never started.
func TestIssueMaxTokenSizeBoundary(t *testing.T) {
	length := func(n int) int {
		e := newEnv(t)
		return len(e.issue(t, "alice", refresh.WithClaims(map[string]any{"pad": strings.Repeat("x", n)})).AccessToken)
	}
	n := 1000
	for length(n+1) == length(n) { // base64 grows by 1 or 2 characters per byte, or none
		n++
	}
	e := newEnv(t, func(c *refresh.Config) { c.MaxTokenSize = length(n) })
	p, err := e.iss.Issue(bg, "alice", refresh.WithClaims(map[string]any{"pad": strings.Repeat("x", n)}))
	require.NoError(t, err)
	assert.Len(t, p.AccessToken, length(n))
	_, err = e.iss.Verify(bg, p.AccessToken)
	require.NoError(t, err, "a token of exactly MaxTokenSize verifies")
	_, err = e.iss.Issue(bg, "alice", refresh.WithClaims(map[string]any{"pad": strings.Repeat("x", n+1)}))
	require.ErrorIs(t, err, refresh.ErrInvalidRequest, "one character more")
	assert.Equal(t, 1, e.store.Len())
}

// Revoking by an id that Issue never mints (a devices page passes ids
// from requests) is ErrSessionNotFound without asking the store.
func TestRevokeSessionMalformedID(t *testing.T) {
	rec := &recordingStore{Store: refresh.NewMemoryStore(refresh.WithSweepInterval(0))}
	e := newEnv(t, func(c *refresh.Config) { c.Store = rec })
	p := e.issue(t, "alice")
	rec.seen = nil
	for _, id := range []string{"", "\x00", "%00", p.SessionID[:21], p.SessionID + "A", p.SessionID[:21] + "\x00",
		p.SessionID[:21] + "=", strings.Repeat("A", 10<<10), "\xff" + p.SessionID[1:], p.SessionID[:21] + "é"} {
		require.ErrorIs(t, e.iss.RevokeSessionOf(bg, "alice", id), refresh.ErrSessionNotFound, "%q", id)
		require.ErrorIs(t, e.iss.RevokeSession(bg, id), refresh.ErrSessionNotFound, "%q", id)
	}
	assert.Empty(t, rec.seen, "malformed ids reached the store")
	require.NoError(t, e.iss.RevokeSessionOf(bg, "alice", p.SessionID))
}

// WriteIssueError over HTTP: a sign-in whose client_id no store keeps is
// 400 invalid_request, a replayed DPoP proof 400 invalid_dpop_proof, a
// store fault 503, each with only the error code and no session started.
func TestWriteIssueError(t *testing.T) {
	login := func(iss *refresh.Issuer, h *refresh.Handlers) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			proof, err := h.DPoPProof(r)
			if err != nil {
				h.WriteDPoPError(w, err)
				return
			}
			p, err := iss.Issue(r.Context(), "alice", refresh.WithClientID(r.FormValue("client_id")), refresh.WithDPoPProof(proof),
				refresh.WithMeta(map[string]string{"ua": r.UserAgent()}),        // as a naive login handler records it
				refresh.WithClaims(map[string]any{"name": r.FormValue("name")})) // and a display name from the form
			if err != nil {
				h.WriteIssueError(w, r, err)
				return
			}
			h.WriteTokenResponse(w, r, p)
		})
	}
	e := newEnv(t)
	srv := httptest.NewServer(login(e.iss, refresh.NewHandlers(e.iss, refresh.HandlerConfig{})))
	defer srv.Close()
	u := srv.URL + "/login"
	for _, cid := range []string{"\x00", "web\xff"} {
		r := postForm(t, nil, u, url.Values{"client_id": {cid}}, nil)
		assert.Equal(t, 400, r.status, "%q", cid)
		assert.Equal(t, map[string]any{"error": "invalid_request"}, r.body)
		assert.Equal(t, "no-store", r.header.Get("Cache-Control"))
	}
	// A sign-in with a 64 KiB User-Agent, which the handler records as it
	// comes: refused, nothing stored (MaxMetaBytes), so that one sign-in
	// cannot make the store keep whatever a request carries.
	r := postForm(t, nil, u, url.Values{"client_id": {"web"}}, map[string]string{"User-Agent": strings.Repeat("M", 64<<10)})
	assert.Equal(t, 400, r.status, r.raw)
	assert.Equal(t, map[string]any{"error": "invalid_request"}, r.body)
	assert.Zero(t, e.store.Len())
	// A display name holding NUL, which encoding/json writes as \u0000 and
	// a Postgres jsonb column refuses (a third-party store answered 503):
	// refused before the store is asked.
	r = postForm(t, nil, u, url.Values{"client_id": {"web"}, "name": {"eve\x00"}}, nil)
	assert.Equal(t, 400, r.status, r.raw)
	assert.Equal(t, map[string]any{"error": "invalid_request"}, r.body)
	assert.Zero(t, e.store.Len())

	c := newDPoPClient(t)
	proof := c.proof("POST", u, "", e.clock.Now())
	r = postForm(t, nil, u, url.Values{"client_id": {"web"}}, map[string]string{"DPoP": proof})
	require.Equal(t, 200, r.status, r.raw)
	assert.Equal(t, "DPoP", r.body["token_type"])
	r = postForm(t, nil, u, url.Values{"client_id": {"web"}}, map[string]string{"DPoP": proof})
	assert.Equal(t, 400, r.status, "a replayed proof")
	assert.Equal(t, map[string]any{"error": "invalid_dpop_proof"}, r.body)
	assert.Equal(t, 1, e.store.Len())

	var logged error
	down := newEnv(t, func(c *refresh.Config) { c.Store = failingStore{errors.New("pq: secret detail")} })
	dsrv := httptest.NewServer(login(down.iss, refresh.NewHandlers(down.iss, refresh.HandlerConfig{
		OnError: func(_ *http.Request, err error) { logged = err }})))
	defer dsrv.Close()
	r = postForm(t, nil, dsrv.URL, url.Values{"client_id": {"web"}}, nil)
	assert.Equal(t, 503, r.status)
	assert.Equal(t, map[string]any{"error": "temporarily_unavailable"}, r.body)
	assert.NotContains(t, r.raw, "secret detail")
	require.Error(t, logged)
}
