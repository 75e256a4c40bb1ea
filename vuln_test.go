package refresh_test

// Regression tests for the holes an adversarial review found (issue 9) and
// our own reviews since, each written the way the attacker would try it:
// through real HTTP where the attack is over the wire. Every one of them
// failed before its fix.

import (
	"context"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
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

// clientAuth knows one confidential client ("conf", secret "s3cret") and one
// public client ("pub"); "broken" makes the client database fail.
func clientAuth(_ context.Context, c refresh.ClientCredentials) error {
	switch c.ID {
	case "conf":
		if c.Method != refresh.ClientAuthNone && subtle.ConstantTimeCompare([]byte(c.Secret), []byte("s3cret")) == 1 {
			return nil
		}
	case "pub":
		if c.Method == refresh.ClientAuthNone {
			return nil
		}
	case "broken":
		return errors.New("client database unreachable")
	}
	return refresh.ErrInvalidClient
}

func basic(id, secret string) map[string]string {
	return map[string]string{"Authorization": "Basic " + base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(id)+":"+url.QueryEscape(secret)))}
}

// 1 (HIGH): with ClientAuth set, a stolen refresh token of a confidential
// client's session could be refreshed and revoked by naming the client in
// the body without any secret, or with a wrong client_secret.
func TestVuln1_ClientAuthBypass(t *testing.T) {
	e := newEnv(t)
	var faults []error
	var mu sync.Mutex
	srv, _ := e.server(t, refresh.HandlerConfig{ClientAuth: clientAuth, OnError: func(_ *http.Request, err error) {
		mu.Lock()
		faults = append(faults, err)
		mu.Unlock()
	}})
	p := e.issue(t, "alice", refresh.WithClientID("conf"))

	refused := func(name string, status int, code string, form url.Values, hdr map[string]string) {
		t.Helper()
		r := postForm(t, nil, srv.URL+"/token", form, hdr)
		assert.Equal(t, status, r.status, name)
		assert.Equal(t, code, r.body["error"], name)
		if status == 401 {
			assert.Equal(t, `Basic realm="token"`, r.header.Get("WWW-Authenticate"), name)
		}
		s := e.session(t, p.SessionID)
		require.Equal(t, uint64(0), s.Generation, "%s: nothing rotated", name)
		require.False(t, s.Revoked(), "%s: nothing revoked", name)
	}
	tok := p.RefreshToken
	refused("bare client_id of a confidential client", 401, "invalid_client", refreshForm(tok, "client_id", "conf"), nil)
	refused("no client at all", 401, "invalid_client", refreshForm(tok), nil)
	refused("wrong client_secret_post", 401, "invalid_client", refreshForm(tok, "client_id", "conf", "client_secret", "guess"), nil)
	refused("empty client_secret_post", 401, "invalid_client", refreshForm(tok, "client_id", "conf", "client_secret", ""), nil)
	refused("wrong Basic secret", 401, "invalid_client", refreshForm(tok), basic("conf", "guess"))
	refused("Basic for another client", 401, "invalid_client", refreshForm(tok), basic("pub", ""))
	refused("another scheme", 401, "invalid_client", refreshForm(tok, "client_id", "conf"), map[string]string{"Authorization": "Bearer " + p.AccessToken})
	refused("two methods at once", 400, "invalid_request", refreshForm(tok, "client_secret", "s3cret"), basic("conf", "s3cret"))
	refused("Basic and another client_id", 400, "invalid_request", refreshForm(tok, "client_id", "pub"), basic("conf", "s3cret"))
	refused("the client database fails", 503, "temporarily_unavailable", refreshForm(tok, "client_id", "broken"), nil)
	mu.Lock()
	require.Len(t, faults, 1, "a fault of ClientAuth reaches OnError")
	mu.Unlock()
	// The public client authenticates, but the session is not its own.
	refused("another, public, client", 400, "invalid_grant", refreshForm(tok, "client_id", "pub"), nil)

	// The right secret works with each method, through x/oauth2 too.
	r := postForm(t, nil, srv.URL+"/token", refreshForm(tok, "client_id", "conf", "client_secret", "s3cret"), nil)
	require.Equal(t, 200, r.status, r.raw)
	r = postForm(t, nil, srv.URL+"/token", refreshForm(r.body["refresh_token"].(string)), basic("conf", "s3cret"))
	require.Equal(t, 200, r.status, r.raw)
	for _, style := range []oauth2.AuthStyle{oauth2.AuthStyleInParams, oauth2.AuthStyleInHeader} {
		for _, secret := range []string{"s3cret", "guess", ""} {
			q := e.issue(t, "alice", refresh.WithClientID("conf"))
			conf := &oauth2.Config{ClientID: "conf", ClientSecret: secret, Endpoint: oauth2.Endpoint{TokenURL: srv.URL + "/token", AuthStyle: style}}
			_, err := conf.TokenSource(bg, &oauth2.Token{RefreshToken: q.RefreshToken, Expiry: time.Now().Add(-time.Minute)}).Token()
			if secret == "s3cret" {
				require.NoError(t, err, "style %v", style)
				continue
			}
			var re *oauth2.RetrieveError
			require.ErrorAs(t, err, &re, "style %v secret %q", style, secret)
			assert.Equal(t, "invalid_client", re.ErrorCode)
			assert.Equal(t, 401, re.Response.StatusCode)
			assert.Equal(t, uint64(0), e.session(t, q.SessionID).Generation)
		}
	}
	// A public client with no secret is the application's to allow.
	pub := e.issue(t, "bob", refresh.WithClientID("pub"))
	conf := &oauth2.Config{ClientID: "pub", Endpoint: oauth2.Endpoint{TokenURL: srv.URL + "/token", AuthStyle: oauth2.AuthStyleInParams}}
	_, err := conf.TokenSource(bg, &oauth2.Token{RefreshToken: pub.RefreshToken, Expiry: time.Now().Add(-time.Minute)}).Token()
	require.NoError(t, err)

	// Revocation authenticates the client the same way.
	v := e.issue(t, "alice", refresh.WithClientID("conf"))
	for name, c := range map[string]struct {
		form url.Values
		hdr  map[string]string
	}{
		"bare client_id":          {url.Values{"token": {v.RefreshToken}, "client_id": {"conf"}}, nil},
		"wrong secret (post)":     {url.Values{"token": {v.RefreshToken}, "client_id": {"conf"}, "client_secret": {"x"}}, nil},
		"wrong secret (Basic)":    {url.Values{"token": {v.RefreshToken}}, basic("conf", "x")},
		"access token, no secret": {url.Values{"token": {v.AccessToken}, "client_id": {"conf"}}, nil},
	} {
		r := postForm(t, nil, srv.URL+"/revoke", c.form, c.hdr)
		assert.Equal(t, 401, r.status, name)
		assert.Equal(t, "invalid_client", r.body["error"], name)
		require.False(t, e.session(t, v.SessionID).Revoked(), name)
	}
	r = postForm(t, nil, srv.URL+"/revoke", url.Values{"token": {v.RefreshToken}}, basic("conf", "s3cret"))
	require.Equal(t, 200, r.status)
	assert.True(t, e.session(t, v.SessionID).Revoked())

	// Without ClientAuth, a secret nobody checks is refused, not ignored.
	plain := newEnv(t)
	psrv, _ := plain.server(t, refresh.HandlerConfig{})
	w := plain.issue(t, "alice", refresh.WithClientID("conf"))
	r = postForm(t, nil, psrv.URL+"/token", refreshForm(w.RefreshToken, "client_id", "conf", "client_secret", "anything"), nil)
	assert.Equal(t, 401, r.status)
	r = postForm(t, nil, psrv.URL+"/token", refreshForm(w.RefreshToken), basic("conf", "anything"))
	assert.Equal(t, 401, r.status)
	assert.Equal(t, uint64(0), plain.session(t, w.SessionID).Generation)
}

// 2 (MEDIUM): proofs made with any key were recorded before the refresh
// token was looked at, so an unauthenticated client could fill the replay
// cache and lock every DPoP client out.
func TestVuln2_DPoPReplayCacheExhaustion(t *testing.T) {
	e := newEnv(t)
	refresh.SetDPoPReplayBounds(e.iss, 100, 40)
	srv, _ := e.server(t, refresh.HandlerConfig{})
	alice, mallory := newDPoPClient(t), newDPoPClient(t)
	proof := func(c *dpopClient, path, at string) map[string]string {
		return map[string]string{"DPoP": c.proof("POST", srv.URL+path, at, e.clock.Now())}
	}
	p := e.issue(t, "alice", refresh.WithDPoP(alice.thumbprint))
	m := e.issue(t, "mallory", refresh.WithDPoP(mallory.thumbprint))
	// A forged token naming alice's real session (its id is in every access
	// token's sid claim) must not count as authenticated either.
	forged := []byte(p.RefreshToken)
	forged[len(forged)-2] ^= 1

	// The flood: more valid proofs than the cache holds, each with a token
	// the attacker does not have.
	for i := 0; i < 150; i++ {
		r := postForm(t, nil, srv.URL+"/token", refreshForm("rt_junk"), proof(mallory, "/token", ""))
		require.Equal(t, 400, r.status)
		r = postForm(t, nil, srv.URL+"/token", refreshForm(string(forged)), proof(mallory, "/token", ""))
		require.Equal(t, 400, r.status)
		r = postForm(t, nil, srv.URL+"/revoke", url.Values{"token": {"rt_junk"}}, proof(mallory, "/revoke", ""))
		require.Equal(t, 200, r.status)
	}
	assert.Equal(t, 0, refresh.DPoPReplayLen(e.iss), "unauthenticated proofs take no place in the cache")

	// Legitimate clients are unaffected, and a replay is still a replay.
	hdr := proof(alice, "/token", "")
	r := postForm(t, nil, srv.URL+"/token", refreshForm(p.RefreshToken), hdr)
	require.Equal(t, 200, r.status, r.raw)
	next := r.body["refresh_token"].(string)
	r = postForm(t, nil, srv.URL+"/token", refreshForm(next), hdr)
	assert.Equal(t, "invalid_grant", r.body["error"], "the same proof again is a replay")
	assert.False(t, e.session(t, p.SessionID).Revoked(), "a replayed proof revokes nothing")

	// An authenticated client flooding with its own key reaches only its
	// own bound, not everyone's.
	tok := m.RefreshToken
	refusedAt := -1
	for i := 0; i < 50 && refusedAt < 0; i++ {
		r := postForm(t, nil, srv.URL+"/token", refreshForm(tok), proof(mallory, "/token", ""))
		if r.status != 200 {
			refusedAt = i
			break
		}
		tok = r.body["refresh_token"].(string)
	}
	assert.Equal(t, 40, refusedAt, "one key holds at most its own bound")
	r = postForm(t, nil, srv.URL+"/token", refreshForm(next), proof(alice, "/token", ""))
	require.Equal(t, 200, r.status, "alice still refreshes: %s", r.raw)
	at := r.body["access_token"].(string)

	// The middleware records a proof only for a valid token bound to its key.
	before := refresh.DPoPReplayLen(e.iss)
	for i := 0; i < 20; i++ {
		resp := get(t, srv.URL+"/me", map[string][]string{
			"Authorization": {"DPoP " + p.AccessToken[:len(p.AccessToken)-4] + "AAAA"},
			"DPoP":          {mallory.proof("GET", srv.URL+"/me", p.AccessToken, e.clock.Now())},
		})
		require.Equal(t, 401, resp.StatusCode)
	}
	assert.Equal(t, before, refresh.DPoPReplayLen(e.iss))
	me := map[string][]string{"Authorization": {"DPoP " + at}, "DPoP": {alice.proof("GET", srv.URL+"/me", at, e.clock.Now())}}
	assert.Equal(t, 200, get(t, srv.URL+"/me", me).StatusCode)
	assert.Equal(t, 401, get(t, srv.URL+"/me", me).StatusCode, "a replayed proof at the middleware")
}

// 3: with grace on, a burst of more racers than MaxGraceUses revoked the
// session: the multi-tab logout storm grace exists to prevent.
func TestVuln3_GraceBurstRevokesSession(t *testing.T) {
	for _, racers := range []int{32, 64} {
		e := newEnv(t, func(c *refresh.Config) { c.Grace = 10 * time.Second })
		srv, _ := e.server(t, refresh.HandlerConfig{})
		p := e.issue(t, "alice")
		replies := raceHTTP(t, srv.URL+"/token", refreshForm(p.RefreshToken), racers)
		for i, r := range replies {
			require.Equal(t, 200, r.status, "racer %d of %d: %s", i, racers, r.raw)
			require.Equal(t, replies[0].body["refresh_token"], r.body["refresh_token"], "racer %d: every racer gets the same successor", i)
		}
		s := e.session(t, p.SessionID)
		assert.False(t, s.Revoked())
		assert.Equal(t, uint64(1), s.Generation)
	}

	// With a bound configured, the excess is refused, and still nothing is
	// revoked.
	e := newEnv(t, func(c *refresh.Config) { c.Grace = 10 * time.Second; c.MaxGraceUses = 3 })
	srv, _ := e.server(t, refresh.HandlerConfig{})
	p := e.issue(t, "alice")
	ok := 0
	var successor any
	for i, r := range raceHTTP(t, srv.URL+"/token", refreshForm(p.RefreshToken), 64) {
		switch r.status {
		case 200:
			ok++
			if successor == nil {
				successor = r.body["refresh_token"]
			}
			require.Equal(t, successor, r.body["refresh_token"], "racer %d", i)
		default:
			require.Equal(t, "invalid_grant", r.body["error"], "racer %d", i)
		}
	}
	assert.Equal(t, 4, ok, "one rotation and three grace retries")
	assert.False(t, e.session(t, p.SessionID).Revoked())
	r := postForm(t, nil, srv.URL+"/token", refreshForm(successor.(string)), nil)
	assert.Equal(t, 200, r.status, "the session goes on")
}

// raceHTTP posts form to u from n goroutines released together.
func raceHTTP(t *testing.T, u string, form url.Values, n int) []reply {
	out := make([]reply, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			req, _ := http.NewRequest(http.MethodPost, u, strings.NewReader(form.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			out[i] = do(t, nil, req)
		}()
	}
	close(start)
	wg.Wait()
	return out
}

// 4: /revoke with an access token ignored the session's client, and a
// DPoP-bound token revoked its session without any proof.
func TestVuln4_RevocationIgnoresBindings(t *testing.T) {
	e := newEnv(t)
	srv, _ := e.server(t, refresh.HandlerConfig{})
	revoke := func(tok string, hdr map[string]string, kv ...string) {
		t.Helper()
		form := url.Values{"token": {tok}}
		for i := 0; i+1 < len(kv); i += 2 {
			form.Set(kv[i], kv[i+1])
		}
		r := postForm(t, nil, srv.URL+"/revoke", form, hdr)
		require.Equal(t, 200, r.status, r.raw)
	}

	bound := e.issue(t, "alice", refresh.WithClientID("app"))
	for _, tok := range []string{bound.AccessToken, bound.RefreshToken} {
		revoke(tok, nil, "client_id", "other")
		revoke(tok, nil)
		require.False(t, e.session(t, bound.SessionID).Revoked(), "a foreign client never revokes a bound family")
	}
	revoke(bound.AccessToken, nil, "client_id", "app")
	assert.True(t, e.session(t, bound.SessionID).Revoked())

	alice, mallory := newDPoPClient(t), newDPoPClient(t)
	hdr := func(c *dpopClient) map[string]string {
		return map[string]string{"DPoP": c.proof("POST", srv.URL+"/revoke", "", e.clock.Now())}
	}
	d := e.issue(t, "alice", refresh.WithDPoP(alice.thumbprint))
	for _, tok := range []string{d.AccessToken, d.RefreshToken} {
		revoke(tok, nil)
		revoke(tok, hdr(mallory))
		require.False(t, e.session(t, d.SessionID).Revoked(), "no proof from the bound key, no revocation")
	}
	r := postForm(t, nil, srv.URL+"/revoke", url.Values{"token": {d.RefreshToken}}, map[string]string{"DPoP": "garbage"})
	assert.Equal(t, 400, r.status)
	assert.Equal(t, "invalid_dpop_proof", r.body["error"])
	revoke(d.RefreshToken, hdr(alice))
	assert.True(t, e.session(t, d.SessionID).Revoked())

	d2 := e.issue(t, "alice", refresh.WithDPoP(alice.thumbprint))
	revoke(d2.AccessToken, hdr(alice))
	assert.True(t, e.session(t, d2.SessionID).Revoked(), "a bound access token with its proof")

	// The API honours the same bindings.
	d3 := e.issue(t, "alice", refresh.WithDPoP(alice.thumbprint))
	require.ErrorIs(t, e.iss.Revoke(bg, d3.RefreshToken), refresh.ErrInvalidToken)
	assert.False(t, e.session(t, d3.SessionID).Revoked())
}

// blockingStore holds the first Get of an armed session id after reading it,
// until released: a read that races a revocation, made deterministic.
type blockingStore struct {
	*refresh.MemoryStore
	mu      sync.Mutex
	armed   string
	read    chan struct{}
	release chan struct{}
}

func (b *blockingStore) arm(id string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.armed, b.read, b.release = id, make(chan struct{}), make(chan struct{})
}

func (b *blockingStore) Get(ctx context.Context, id string) (*refresh.Session, error) {
	s, err := b.MemoryStore.Get(ctx, id)
	b.mu.Lock()
	hold := b.armed == id
	if hold {
		b.armed = ""
	}
	read, release := b.read, b.release
	b.mu.Unlock()
	if hold {
		close(read)
		<-release
	}
	return s, err
}

// 5: a Verify that read the session before a concurrent revocation cached
// it as live afterwards, so the revoking instance accepted the revoked
// session's access tokens for SessionCheckTTL.
func TestVuln5_RevokedSessionRecached(t *testing.T) {
	st := &blockingStore{MemoryStore: refresh.NewMemoryStore(refresh.WithSweepInterval(0))}
	e := newEnv(t, func(c *refresh.Config) {
		c.Store = st
		c.CheckSession = true
		c.SessionCheckTTL = time.Hour
	})
	srv, _ := e.server(t, refresh.HandlerConfig{})
	p := e.issue(t, "alice")

	st.arm(p.SessionID)
	done := make(chan int)
	go func() {
		resp, err := http.DefaultClient.Do(mustRequest(t, srv.URL+"/me", p.AccessToken))
		if err != nil {
			done <- 0
			return
		}
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	<-st.read // the middleware has read the live session...
	released := false
	defer func() {
		if !released {
			close(st.release)
		}
	}()
	r := postForm(t, nil, srv.URL+"/revoke", url.Values{"token": {p.RefreshToken}}, nil)
	require.Equal(t, 200, r.status) // ...and the session is revoked meanwhile
	s, err := st.MemoryStore.Get(bg, p.SessionID)
	require.NoError(t, err)
	require.True(t, s.Revoked())
	close(st.release)
	released = true
	assert.Equal(t, 200, <-done, "the racing request read the session before the revocation")
	assert.Equal(t, 401, get(t, srv.URL+"/me", bearer(p.AccessToken)).StatusCode, "revoked at once on the revoking instance")
}

func mustRequest(t *testing.T, u, tok string) *http.Request {
	req, err := http.NewRequest(http.MethodGet, u, nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+tok)
	return req
}

// 6: Go's base64 decoders skip CR and LF even in Strict mode, so tokens
// with line breaks inserted still verified, each a new spelling.
func TestVuln6_LineBreaksInTokens(t *testing.T) {
	e := newEnv(t)
	srv, _ := e.server(t, refresh.HandlerConfig{})
	p := e.issue(t, "alice")
	for _, brk := range []string{"\r\n", "\n", "\r"} {
		for _, at := range []int{3, 10, len(p.RefreshToken) - 1} {
			bent := p.RefreshToken[:at] + brk + p.RefreshToken[at:]
			r := postForm(t, nil, srv.URL+"/token", refreshForm(bent), nil)
			require.Equal(t, 400, r.status, "%q at %d", brk, at)
			assert.Equal(t, "invalid_grant", r.body["error"])
			_ = postForm(t, nil, srv.URL+"/revoke", url.Values{"token": {bent}}, nil)
			_, err := e.iss.Verify(bg, p.AccessToken[:len(p.AccessToken)-at]+brk+p.AccessToken[len(p.AccessToken)-at:])
			require.ErrorIs(t, err, refresh.ErrInvalidToken)
		}
	}
	s := e.session(t, p.SessionID)
	require.Equal(t, uint64(0), s.Generation, "no bent token rotated the session")
	require.False(t, s.Revoked(), "no bent token revoked it")
	r := postForm(t, nil, srv.URL+"/token", refreshForm(p.RefreshToken), nil)
	require.Equal(t, 200, r.status, "the real token still rotates once, not as reuse")

	// DPoP proofs too.
	c := newDPoPClient(t)
	proof := c.proof("GET", "https://api.example.com/me", "", e.clock.Now())
	dot := strings.LastIndexByte(proof, '.')
	_, err := e.iss.VerifyDPoPProof(proof[:dot+5]+"\n"+proof[dot+5:], "GET", "https://api.example.com/me", "")
	require.ErrorIs(t, err, refresh.ErrInvalidToken)
}

// 7: work before any signature check was unbounded: a quadratic duplicate
// check over thousands of header members, and DPoP proofs with huge RSA
// keys or exponents. (BenchmarkWorstCase shows the costs stay in line.)
func TestVuln7_PreAuthWorkBounded(t *testing.T) {
	e := newEnv(t)
	h := goodHeader()
	for i := range 40 {
		h["x"+string(rune('a'+i%26))+strings.Repeat("y", i/26)] = i
	}
	e.refused(t, forgeHS(h, e.goodClaims(), hsSecret), "a header of 43 members")
	// The bound (32) at its edge: 32 members verify, 33 do not.
	h = goodHeader()
	for i := range 29 {
		h[fmt.Sprint("n", i)] = i
	}
	_, err := e.iss.Verify(bg, forgeHS(h, e.goodClaims(), hsSecret))
	require.NoError(t, err, "32 members")
	h["n29"] = 29
	e.refused(t, forgeHS(h, e.goodClaims(), hsSecret), "33 members")
	h = goodHeader()
	for i := range 28 {
		h["m"+string(rune('a'+i%26))+strings.Repeat("z", i/26)] = i
	}
	tok := forgeHS(h, e.goodClaims(), hsSecret)
	_, err = e.iss.Verify(bg, tok)
	require.NoError(t, err, "31 members are fine")
	hdr, _ := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[0])
	dup := base64.RawURLEncoding.EncodeToString(append(hdr[:len(hdr)-1], []byte(`,"mz":1}`)...))
	e.refused(t, dup+tok[strings.IndexByte(tok, '.'):], "a duplicate past the 16th member")

	// DPoP keys: RSA from 2048 to 4096 bits, exponent from 3 to 2^32-1,
	// each edge and one past it. (Only the modulus's length is checked
	// before the signature, so modulusOf(bits) stands for a modulus of
	// that many bits.)
	rsaProof := func(bits int, exp int) string {
		n := modulusOf(bits)
		ex := big.NewInt(int64(exp)).Bytes()
		jwkJSON := `{"kty":"RSA","n":"` + base64.RawURLEncoding.EncodeToString(n.Bytes()) + `","e":"` + base64.RawURLEncoding.EncodeToString(ex) + `"}`
		hd := `{"typ":"dpop+jwt","alg":"RS256","jwk":` + jwkJSON + `}`
		cl := `{"jti":"x","htm":"GET","htu":"https://api.example.com/me","iat":` + jsonNumber(e.clock.Now().Unix()) + `}`
		sig := make([]byte, (bits+7)/8)
		return base64.RawURLEncoding.EncodeToString([]byte(hd)) + "." + base64.RawURLEncoding.EncodeToString([]byte(cl)) + "." + base64.RawURLEncoding.EncodeToString(sig)
	}
	for name, proof := range map[string]string{
		"4097-bit modulus":     rsaProof(4097, 65537),
		"4160-bit modulus":     rsaProof(4160, 65537),
		"exponent 2^32+1":      rsaProof(2048, 1<<32+1),
		"exponent over 2^32-1": rsaProof(2048, 1<<33+1),
	} {
		_, err := e.iss.VerifyDPoPProof(proof, "GET", "https://api.example.com/me", "")
		require.ErrorIs(t, err, refresh.ErrInvalidToken, name)
		assert.Contains(t, err.Error(), "RSA key size or exponent", name)
	}
	_, err = e.iss.VerifyDPoPProof(rsaProof(2047, 65537), "GET", "https://api.example.com/me", "")
	require.ErrorIs(t, err, refresh.ErrInvalidToken, "a 2047-bit modulus")
	assert.NotContains(t, err.Error(), "bad signature", "a 2047-bit modulus is refused before its signature")
	for name, proof := range map[string]string{
		"2048 bits": rsaProof(2048, 65537), "4096 bits": rsaProof(4096, 65537),
		"exponent 3": rsaProof(2048, 3), "exponent 2^32-1": rsaProof(2048, 1<<32-1),
	} {
		_, err = e.iss.VerifyDPoPProof(proof, "GET", "https://api.example.com/me", "")
		assert.Contains(t, err.Error(), "bad signature", "%s: an ordinary RSA key gets as far as the signature", name)
	}
}

// 9 (found in our own review after issue 10): cookie mode took a refresh
// token from the form body without its CSRF checks, and answered with the
// cookie. A cross-site page could make the victim's browser post the
// attacker's own refresh token (a top-level form POST, which may set even a
// SameSite=Strict cookie): the victim's browser got the attacker's session
// (login CSRF through the token endpoint, a session swap), and whatever the
// victim then saved went to the attacker's account.
func TestVuln9_CookieModeSessionSwap(t *testing.T) {
	e := newEnv(t)
	srv, _ := e.server(t, refresh.HandlerConfig{Cookie: &refresh.CookieConfig{Insecure: true}})
	u, _ := url.Parse(srv.URL)
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	browser := &http.Client{Jar: jar}
	require.Equal(t, 200, postForm(t, browser, srv.URL+"/login", url.Values{"username": {"alice"}}, map[string]string{"X-Requested-With": "x"}).status)
	victims := jar.Cookies(u)[0].Value
	mallory := e.issue(t, "mallory") // her own session; her browser shows her its cookie

	// What a browser sends for a form on another site, old and new.
	for name, hdr := range map[string]map[string]string{
		"cross-site form":            {"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"},
		"browser without Fetch-Site": {"Origin": "https://evil.example"},
		"same-site, another port":    {"Sec-Fetch-Site": "same-site", "Origin": "http://" + u.Hostname() + ":1"},
		"with the header, cross-site": {"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example",
			"X-Requested-With": "x"}, // a cross-site fetch that got past a lax CORS policy
	} {
		r := postForm(t, browser, srv.URL+"/token", refreshForm(mallory.RefreshToken), hdr)
		assert.Equal(t, 403, r.status, name)
		assert.Empty(t, r.header.Values("Set-Cookie"), name)
		assert.NotContains(t, r.raw, "access_token", name)
		assert.Equal(t, victims, jar.Cookies(u)[0].Value, name+": the victim keeps her own session")
		r = postForm(t, browser, srv.URL+"/revoke", url.Values{"token": {mallory.RefreshToken}}, hdr)
		assert.Equal(t, 403, r.status, name+": revocation")
		assert.Empty(t, r.header.Values("Set-Cookie"), name+": revocation")
	}
	assert.Zero(t, e.session(t, mallory.SessionID).Generation, "her token was never rotated")
	assert.False(t, e.session(t, mallory.SessionID).Revoked())

	// The app's own script may still send a token in the body (moving a
	// browser client from body mode to cookie mode), with the header.
	r := postForm(t, nil, srv.URL+"/token", refreshForm(mallory.RefreshToken),
		map[string]string{"X-Requested-With": "x", "Sec-Fetch-Site": "same-origin", "Origin": srv.URL})
	require.Equal(t, 200, r.status, r.raw)
	assert.NotEmpty(t, r.header.Values("Set-Cookie"))
}

// 10 (our own review, later): with a cookie Path other than "/" the cookie
// is __Secure-, which, unlike __Host-, a sibling subdomain may set for the
// parent domain (cookie tossing). The browser then sends the attacker's
// cookie, on a longer path first, beside the victim's; the endpoint took
// the first, rotated the attacker's session and set its successor as the
// victim's cookie; and a browser holding only the tossed cookie refreshed
// into the attacker's session. Now the refresh cookie is taken only beside
// a __Host- session cookie naming its session (which no other host can
// set), and never when two refresh cookies come.
func TestVuln10_CookieTossing(t *testing.T) {
	e := newEnv(t)
	mux := http.NewServeMux() // the endpoints under /auth, as that Path wants
	h := refresh.NewHandlers(e.iss, refresh.HandlerConfig{Cookie: &refresh.CookieConfig{Path: "/auth"}})
	mux.Handle("/auth/token", h.RefreshHandler())
	mux.Handle("/auth/revoke", h.RevocationHandler())
	mux.HandleFunc("/auth/login", func(w http.ResponseWriter, r *http.Request) {
		p, _ := e.iss.Issue(r.Context(), r.FormValue("username"))
		h.WriteTokenResponse(w, r, p)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	same := map[string]string{"X-Requested-With": "x", "Sec-Fetch-Site": "same-origin", "Origin": srv.URL}

	// The victim signs in: a refresh cookie at /auth and a session cookie
	// at /, as the browser keeps them.
	r := postForm(t, nil, srv.URL+"/auth/login", url.Values{"username": {"alice"}}, same)
	require.Equal(t, 200, r.status)
	cookies := map[string]string{}
	for _, c := range (&http.Response{Header: r.header}).Cookies() {
		cookies[c.Name] = c.Value
		assert.True(t, c.HttpOnly && c.Secure && c.SameSite == http.SameSiteStrictMode, c.Name)
	}
	victimRT, victimSID := cookies["__Secure-refresh_token"], cookies["__Host-refresh_session"]
	require.NotEmpty(t, victimRT)
	require.NotEmpty(t, victimSID)
	victim := e.session(t, victimSID)
	mallory := e.issue(t, "mallory") // her own session, and her own session cookie's value

	type cookie struct{ name, value string }
	rt := func(v string) cookie { return cookie{"__Secure-refresh_token", v} }
	sid := func(v string) cookie { return cookie{"__Host-refresh_session", v} }
	send := func(path, body string, cs ...cookie) reply {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		for k, v := range same {
			req.Header.Set(k, v)
		}
		for _, c := range cs {
			req.AddCookie(&http.Cookie{Name: c.name, Value: c.value})
		}
		return do(t, nil, req)
	}
	for name, cs := range map[string][]cookie{
		"tossed first, then the victim's":     {rt(mallory.RefreshToken), rt(victimRT), sid(victimSID)},
		"the victim's, then tossed":           {rt(victimRT), rt(mallory.RefreshToken), sid(victimSID)},
		"only the tossed cookie":              {rt(mallory.RefreshToken)},
		"the tossed cookie, the victim's pin": {rt(mallory.RefreshToken), sid(victimSID)},
		"the victim's cookie, no pin":         {rt(victimRT)},
		"the victim's cookie, two pins":       {rt(victimRT), sid(victimSID), sid(mallory.SessionID)},
	} {
		r := send("/auth/token", "grant_type=refresh_token", cs...)
		assert.Equal(t, 400, r.status, name)
		assert.Equal(t, "invalid_request", r.body["error"], name)
		assert.Empty(t, r.header.Values("Set-Cookie"), name+": no cookie set, none cleared")
		r = send("/auth/revoke", "", cs...)
		assert.Equal(t, 400, r.status, name+": revocation")
	}
	for _, s := range []*refresh.Session{e.session(t, mallory.SessionID), e.session(t, victim.ID)} {
		assert.Zero(t, s.Generation, s.Subject)
		assert.False(t, s.Revoked(), s.Subject)
	}

	// The genuine pair refreshes, and the pin follows the session.
	r = send("/auth/token", "grant_type=refresh_token", rt(victimRT), sid(victimSID))
	require.Equal(t, 200, r.status, r.raw)
	for _, c := range (&http.Response{Header: r.header}).Cookies() {
		cookies[c.Name] = c.Value
	}
	assert.NotEqual(t, victimRT, cookies["__Secure-refresh_token"], "rotated")
	assert.Equal(t, victimSID, cookies["__Host-refresh_session"])
	// A token in the body (the app's own script) needs no pin.
	assert.Equal(t, 200, send("/auth/token", "grant_type=refresh_token&refresh_token="+url.QueryEscape(cookies["__Secure-refresh_token"])).status)
}

// 11 (same review): a cookie-mode login handler that forgot CheckCSRF let a
// cross-site form sign the victim's browser into the attacker's account
// (login CSRF): WriteTokenResponse set the cookie for any request. It now
// applies the cookie mode's checks itself. (The test server's /login calls
// Issue and WriteTokenResponse and nothing else, the forgetful handler.)
func TestVuln11_LoginHandlerWithoutCheckCSRF(t *testing.T) {
	e := newEnv(t)
	srv, _ := e.server(t, refresh.HandlerConfig{Cookie: &refresh.CookieConfig{Insecure: true}})
	for name, hdr := range map[string]map[string]string{
		"cross-site form":            {"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"},
		"browser without Fetch-Site": {"Origin": "https://evil.example"},
		"no custom header":           {"Sec-Fetch-Site": "same-origin", "Origin": srv.URL},
	} {
		r := postForm(t, nil, srv.URL+"/login", url.Values{"username": {"mallory"}}, hdr)
		assert.Equal(t, 403, r.status, name)
		assert.Empty(t, r.header.Values("Set-Cookie"), name)
		assert.NotContains(t, r.raw, "access_token", name)
	}
	r := postForm(t, nil, srv.URL+"/login", url.Values{"username": {"alice"}},
		map[string]string{"X-Requested-With": "fetch", "Sec-Fetch-Site": "same-origin", "Origin": srv.URL})
	require.Equal(t, 200, r.status)
	assert.NotEmpty(t, r.header.Values("Set-Cookie"))
}

// TestVuln12_CachedClaimsShared: the Claims a verification returns are the
// caller's to keep, so changing them must change nothing for the next
// request. They were a shallow copy of the verified-token cache's entry:
// Scope, Audience and Extra were the cache's own, so a handler that
// adjusted the claims of one request (a role granted for one call, a scope
// rewritten) changed them for every later request with that token, on that
// instance, until it expired: here, bob became admin.
func TestVuln12_CachedClaimsShared(t *testing.T) {
	for _, tc := range []struct {
		name                   string
		checkSession, verifier bool
	}{{"Issuer", false, false}, {"Issuer with CheckSession", true, false}, {"Verifier", false, true}} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, func(c *refresh.Config) { c.CheckSession = tc.checkSession })
			auth, verify := e.iss.Middleware(), e.iss.Verify
			if tc.verifier {
				v, err := refresh.NewVerifier(refresh.VerifierConfig{Issuer: e.cfg.Issuer, Audience: e.cfg.Audience,
					Keys: e.cfg.Keys, Now: e.clock.Now})
				require.NoError(t, err)
				t.Cleanup(func() { _ = v.Close() })
				auth, verify = v.Middleware(), v.Verify
			}
			mux := http.NewServeMux()
			// A handler that adjusts the claims of its own request.
			mux.Handle("/preview", auth(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				c, _ := refresh.ClaimsFromContext(r.Context())
				c.Extra["roles"] = []any{"admin"}
				c.Extra["team"].(map[string]any)["name"] = "admins"
				c.Scope[0] = "write"
				c.Audience[0] = "https://elsewhere.example"
			})))
			mux.Handle("/admin", auth(refresh.RequireRole("admin")(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))))
			mux.Handle("/write", auth(refresh.RequireScope("write")(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))))
			srv := httptest.NewServer(mux)
			defer srv.Close()

			p := e.issue(t, "bob", refresh.WithScope("read"),
				refresh.WithClaims(map[string]any{"roles": []string{"user"}, "team": map[string]any{"name": "builders"}}))
			get := func(path string) int {
				resp, err := http.DefaultClient.Do(mustRequest(t, srv.URL+path, p.AccessToken))
				require.NoError(t, err)
				resp.Body.Close()
				return resp.StatusCode
			}
			require.Equal(t, 403, get("/admin"))
			require.Equal(t, 200, get("/preview"))
			assert.Equal(t, 403, get("/admin"), "a role one handler granted itself outlived its request")
			assert.Equal(t, 403, get("/write"), "a scope one handler rewrote outlived its request")

			c, err := verify(context.Background(), p.AccessToken)
			require.NoError(t, err)
			assert.Equal(t, []any{"user"}, c.Extra["roles"])
			assert.Equal(t, map[string]any{"name": "builders"}, c.Extra["team"])
			assert.Equal(t, []string{"read"}, c.Scope)
			assert.Equal(t, []string{e.cfg.Audience}, c.Audience)
			// And what Verify returns is the caller's too.
			c.Scope = append(c.Scope[:0], "write")
			c.Extra["roles"].([]any)[0] = "admin"
			again, err := verify(context.Background(), p.AccessToken)
			require.NoError(t, err)
			assert.Equal(t, []string{"read"}, again.Scope)
			assert.Equal(t, []string{"user"}, again.Roles())
		})
	}
}

// TestVuln14_PairScopeShared: a Pair's Scope is the caller's, so changing it
// must not change the scope of the session's later access tokens. Issue's
// Pair, and the Pair of a rotation that read the session from the store (a
// cold instance, a grace retry), held the very slice the Issuer kept in its
// cache of sessions: an application trimming or rewriting p.Scope after
// sign-in widened every later access token of the session.
func TestVuln14_PairScopeShared(t *testing.T) {
	e := newEnv(t, func(c *refresh.Config) { c.Grace = time.Minute })
	cold := func() *refresh.Issuer { // another instance on the same store: nothing cached
		cfg := e.cfg
		iss, err := refresh.NewIssuer(cfg)
		require.NoError(t, err)
		return iss
	}
	scopeOf := func(p *refresh.Pair) any {
		_, c := decodeJWT(t, p.AccessToken)
		return c["scope"]
	}
	rotate := func(iss *refresh.Issuer, rt string) *refresh.Pair {
		t.Helper()
		p, err := iss.Rotate(bg, rt)
		require.NoError(t, err)
		require.Equal(t, "read", scopeOf(p), "an access token carries a scope the session was never granted")
		require.Equal(t, []string{"read"}, p.Scope)
		return p
	}
	p := e.issue(t, "bob", refresh.WithScope("read"))
	p.Scope[0] = "admin" // Issue's Pair
	p = rotate(e.iss, p.RefreshToken)

	other := cold()
	p2 := rotate(other, p.RefreshToken) // read from the store
	p2.Scope[0] = "admin"
	p3 := rotate(other, p2.RefreshToken)

	retry := rotate(other, p2.RefreshToken) // a grace retry: p3 again
	require.Equal(t, p3.RefreshToken, retry.RefreshToken)
	retry.Scope[0] = "admin"
	p3.Scope[0] = "admin"
	p4 := rotate(cold(), p3.RefreshToken)
	p4.Scope[0] = "admin"
	again := rotate(e.iss, p3.RefreshToken) // grace again, on the first instance
	require.Equal(t, p4.RefreshToken, again.RefreshToken)
	again.Scope[0] = "admin"
	rotate(e.iss, p4.RefreshToken) // the one-round-trip path, from the cache
}

// 16 (our own review, later): with client authentication on, the demo's
// sign-in bound the session to whatever client_id the request named, and
// the library offered a login handler no way to authenticate its client as
// the endpoints do: anyone with a user's password could sign in as the
// confidential client "conf" without its secret and hold a session, and
// access tokens whose client_id is "conf". AuthenticateClient applies the
// token endpoint's rules to a sign-in; this login handler uses it the way
// the README's does.
func TestVuln16_SignInAsAnyClient(t *testing.T) {
	e := newEnv(t)
	var faults []error
	var mu sync.Mutex
	h := refresh.NewHandlers(e.iss, refresh.HandlerConfig{ClientAuth: clientAuth, OnError: func(_ *http.Request, err error) {
		mu.Lock()
		faults = append(faults, err)
		mu.Unlock()
	}})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil {
			http.Error(w, "bad form", http.StatusBadRequest)
			return
		}
		// (the user's password is checked here)
		client, err := h.AuthenticateClient(r, r.PostForm)
		if err != nil {
			h.WriteIssueError(w, r, err)
			return
		}
		p, err := e.iss.Issue(r.Context(), "alice", refresh.WithClientID(client))
		if err != nil {
			h.WriteIssueError(w, r, err)
			return
		}
		h.WriteTokenResponse(w, r, p)
	}))
	t.Cleanup(srv.Close)

	refused := func(name string, status int, code string, form url.Values, hdr map[string]string) {
		t.Helper()
		r := postForm(t, nil, srv.URL, form, hdr)
		assert.Equal(t, status, r.status, name)
		assert.Equal(t, map[string]any{"error": code}, r.body, name)
		if status == 401 {
			assert.Equal(t, `Basic realm="token"`, r.header.Get("WWW-Authenticate"), name)
		}
		assert.Zero(t, e.store.Len(), "%s: a refused sign-in created a session", name)
	}
	refused("bare client_id of a confidential client", 401, "invalid_client", url.Values{"client_id": {"conf"}}, nil)
	refused("wrong client_secret_post", 401, "invalid_client", url.Values{"client_id": {"conf"}, "client_secret": {"guess"}}, nil)
	refused("empty client_secret_post", 401, "invalid_client", url.Values{"client_id": {"conf"}, "client_secret": {""}}, nil)
	refused("wrong Basic secret", 401, "invalid_client", nil, basic("conf", "guess"))
	refused("Basic for the public client", 401, "invalid_client", nil, basic("pub", ""))
	refused("another scheme", 401, "invalid_client", url.Values{"client_id": {"conf"}}, map[string]string{"Authorization": "Bearer x"})
	refused("no client, which clientAuth does not accept", 401, "invalid_client", nil, nil)
	refused("two methods at once", 400, "invalid_request", url.Values{"client_secret": {"s3cret"}}, basic("conf", "s3cret"))
	refused("Basic and another client_id", 400, "invalid_request", url.Values{"client_id": {"pub"}}, basic("conf", "s3cret"))
	refused("client_id twice", 400, "invalid_request", url.Values{"client_id": {"pub", "conf"}}, nil)
	refused("client_secret twice", 400, "invalid_request", url.Values{"client_id": {"conf"}, "client_secret": {"guess", "s3cret"}}, nil)
	rawBasic := func(s string) map[string]string {
		return map[string]string{"Authorization": "Basic " + base64.StdEncoding.EncodeToString([]byte(s))}
	}
	refused("a malformed escape in the Basic secret only", 400, "invalid_request", nil, rawBasic("conf:s3cret%zz"))
	refused("a malformed escape in the Basic id only", 400, "invalid_request", nil, rawBasic("conf%zz:s3cret"))
	refused("the client database fails", 503, "temporarily_unavailable", url.Values{"client_id": {"broken"}}, nil)
	mu.Lock()
	require.Len(t, faults, 1, "ClientAuth's failure reaches OnError")
	assert.ErrorContains(t, faults[0], "client database unreachable")
	mu.Unlock()

	// The clients themselves sign in, each session bound to its client.
	for _, c := range []struct {
		name, client string
		form         url.Values
		hdr          map[string]string
	}{
		{"client_secret_post", "conf", url.Values{"client_id": {"conf"}, "client_secret": {"s3cret"}}, nil},
		{"client_secret_basic", "conf", nil, basic("conf", "s3cret")},
		{"Basic beside the same client_id", "conf", url.Values{"client_id": {"conf"}}, basic("conf", "s3cret")},
		{"public client", "pub", url.Values{"client_id": {"pub"}}, nil},
	} {
		r := postForm(t, nil, srv.URL, c.form, c.hdr)
		require.Equal(t, 200, r.status, "%s: %s", c.name, r.raw)
		claims, err := e.iss.Verify(bg, r.body["access_token"].(string))
		require.NoError(t, err)
		assert.Equal(t, c.client, claims.ClientID, c.name)
		assert.Equal(t, c.client, e.session(t, claims.SessionID).ClientID, c.name)
	}
}

// TestAuthenticateClientWithoutClientAuth: without ClientAuth no client is
// authenticated, as at the endpoints: the id named comes back as given,
// and a secret nobody would check is refused rather than taken as proof.
func TestAuthenticateClientWithoutClientAuth(t *testing.T) {
	e := newEnv(t)
	h := refresh.NewHandlers(e.iss, refresh.HandlerConfig{})
	req := func(params url.Values, authz string) (string, error) {
		r := httptest.NewRequest(http.MethodPost, "/login", nil)
		if authz != "" {
			r.Header.Set("Authorization", authz)
		}
		return h.AuthenticateClient(r, params)
	}
	id, err := req(url.Values{"client_id": {"web"}}, "")
	require.NoError(t, err)
	assert.Equal(t, "web", id)
	id, err = req(nil, "")
	require.NoError(t, err)
	assert.Empty(t, id)
	id, err = req(nil, "Bearer x") // a browser app's bearer header: ignored
	require.NoError(t, err)
	assert.Empty(t, id)
	_, err = req(url.Values{"client_id": {"web"}, "client_secret": {"s"}}, "")
	assert.ErrorIs(t, err, refresh.ErrInvalidClient)
	_, err = req(nil, basic("web", "s")["Authorization"])
	assert.ErrorIs(t, err, refresh.ErrInvalidClient)
	_, err = req(url.Values{"client_id": {"a", "b"}}, "")
	assert.ErrorIs(t, err, refresh.ErrInvalidRequest)
}

// TestVuln23_NumericClaimsRounded: an application claim that is a 64-bit
// number (a user or tenant id) must reach the resource server exactly, on
// every access token of the session. Two places decoded claims into
// float64, which holds integers exactly only up to 2^53: with any
// Config.OnRefresh hook set, even one that only checks the user is still
// active, every refresh re-signed the session's claims from that float64,
// so bob's tenant 2^53+1 became alice's tenant 2^53 from his first refresh
// on; and Claims.Extra handed the resource server the float64 itself, in
// which the two tenants are one. Both now keep numbers as json.Number.
func TestVuln23_NumericClaimsRounded(t *testing.T) {
	const aliceTenant, bobTenant = "9007199254740992", "9007199254740993" // 2^53, 2^53+1
	var (
		hookSaw sync.Map // what the hook sees, by round
		hookRan atomic.Int32
	)
	e := newEnv(t, func(c *refresh.Config) {
		c.OnRefresh = func(_ context.Context, info *refresh.RefreshInfo) error {
			hookSaw.Store(hookRan.Add(1), info.Claims["tenant"])
			return nil // the user is still active; the claims are left alone
		}
	})
	v, err := refresh.NewVerifier(refresh.VerifierConfig{Issuer: e.cfg.Issuer, Audience: e.cfg.Audience,
		Keys: e.cfg.Keys, Now: e.clock.Now})
	require.NoError(t, err)
	t.Cleanup(func() { _ = v.Close() })
	tenant := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, _ := refresh.ClaimsFromContext(r.Context())
		n, ok := c.Extra["tenant"].(json.Number)
		if !ok {
			http.Error(w, fmt.Sprintf("tenant %#v", c.Extra["tenant"]), http.StatusForbidden)
			return
		}
		_, _ = io.WriteString(w, n.String())
	})
	srv, _ := e.server(t, refresh.HandlerConfig{})
	mux := http.NewServeMux()
	mux.Handle("/issuer/tenant", e.iss.Middleware()(tenant))
	mux.Handle("/verifier/tenant", v.Middleware()(tenant))
	api := httptest.NewServer(mux)
	t.Cleanup(api.Close)

	p := e.issue(t, "bob", refresh.WithClaims(map[string]any{"tenant": uint64(1<<53 + 1)}))
	at, rt := p.AccessToken, p.RefreshToken
	for round := range 3 {
		_, c := decodeJWTExact(t, at)
		require.Equal(t, json.Number(bobTenant), c["tenant"], "round %d: the token's own claim", round)
		for _, path := range []string{"/issuer/tenant", "/verifier/tenant"} {
			r := do(t, nil, mustRequest(t, api.URL+path, at))
			require.Equal(t, 200, r.status, "round %d %s: %s", round, path, r.raw)
			require.Equal(t, bobTenant, r.raw, "round %d %s: bob's tenant (alice's is %s)", round, path, aliceTenant)
		}
		r := postForm(t, nil, srv.URL+"/token", refreshForm(rt), nil)
		require.Equal(t, 200, r.status, r.raw)
		at, rt = r.body["access_token"].(string), r.body["refresh_token"].(string)
	}
	require.Equal(t, int32(3), hookRan.Load())
	for round := int32(1); round <= 3; round++ {
		saw, _ := hookSaw.Load(round)
		assert.Equal(t, json.Number(bobTenant), saw, "what OnRefresh sees, round %d", round)
	}
}

// TestVuln26_AccessTokenOutlivesSession: no access token outlives its
// session's absolute lifetime (Config.SessionTTL, "rotation never extends
// it"). A refresh in the session's last minutes minted a token good for
// a whole AccessTTL more, so a user made to sign in again every hour kept
// access for up to an hour and a quarter, and a resource server that reads
// only the token (a Verifier, or the Issuer without CheckSession) could not
// know. The last tokens now expire with the session.
func TestVuln26_AccessTokenOutlivesSession(t *testing.T) {
	e := newEnv(t, func(c *refresh.Config) { c.SessionTTL, c.IdleTTL, c.AccessTTL = time.Hour, time.Hour, 15*time.Minute })
	e.clock.Set(e.clock.Now().Truncate(time.Second)) // so that the session ends on a whole second, as exp does
	v, err := refresh.NewVerifier(refresh.VerifierConfig{Issuer: e.cfg.Issuer, Audience: e.cfg.Audience,
		Keys: e.cfg.Keys, Now: e.clock.Now})
	require.NoError(t, err)
	t.Cleanup(func() { _ = v.Close() })
	srv, _ := e.server(t, refresh.HandlerConfig{})
	mux := http.NewServeMux()
	ok := http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})
	mux.Handle("/issuer", e.iss.Middleware()(ok))
	mux.Handle("/verifier", v.Middleware()(ok))
	api := httptest.NewServer(mux)
	t.Cleanup(api.Close)

	p := e.issue(t, "alice")
	end := e.clock.Now().Add(time.Hour)
	e.clock.Advance(59 * time.Minute)
	r := postForm(t, nil, srv.URL+"/token", refreshForm(p.RefreshToken), nil)
	require.Equal(t, 200, r.status, r.raw)
	assert.EqualValues(t, 60, r.body["expires_in"], "a minute of the session is left")
	at := r.body["access_token"].(string)
	_, c := decodeJWT(t, at)
	assert.EqualValues(t, end.Unix(), c["exp"])

	for _, tc := range []struct {
		at   time.Time
		want int
	}{{end.Add(-time.Nanosecond), 200}, {end, 401}, {end.Add(14 * time.Minute), 401}} {
		e.clock.Set(tc.at)
		for _, path := range []string{"/issuer", "/verifier"} {
			r := do(t, nil, mustRequest(t, api.URL+path, at))
			assert.Equal(t, tc.want, r.status, "%s at the session's end %+v", path, tc.at.Sub(end))
		}
	}
	// Tokens of a session far from its end keep their AccessTTL.
	e.clock.Set(end)
	q := e.issue(t, "bob")
	assert.Equal(t, e.clock.Now().Add(15*time.Minute), q.AccessExpiresAt)
}

// Finding 31: a session's last access token expires with it (finding 26),
// and exp is whole seconds, so a refresh in the last fraction of a second
// of a session that ends off a whole second (its sign-in was) was answered
// 200 with an access token already expired and expires_in 0, which
// x/oauth2 reads as "never expires": the client kept a dead token, never
// refreshed, and every API call failed until it restarted. Now the last
// fraction of a second refuses the refresh as the end does (invalid_grant,
// nothing changed), on the one-round-trip path and on a cold instance, and
// expires_in is never under 1.
func TestVuln31_DeadTokenInTheLastSecond(t *testing.T) {
	e := newEnv(t, func(c *refresh.Config) { c.SessionTTL, c.IdleTTL, c.AccessTTL = time.Hour, time.Hour, 15*time.Minute })
	e.clock.Set(e.clock.Now().Truncate(time.Second).Add(500 * time.Millisecond))
	warm, _ := e.server(t, refresh.HandlerConfig{})
	coldIss, err := refresh.NewIssuer(e.cfg) // reads every session from the store
	require.NoError(t, err)
	cold := httptest.NewServer(refresh.NewHandlers(coldIss, refresh.HandlerConfig{}).RefreshHandler())
	t.Cleanup(cold.Close)
	client := func(tokenURL string) *oauth2.Config {
		return &oauth2.Config{ClientID: e.cfg.ClientID, Endpoint: oauth2.Endpoint{TokenURL: tokenURL, AuthStyle: oauth2.AuthStyleInParams}}
	}

	for _, tc := range []struct{ name, url string }{{"one round trip", warm.URL + "/token"}, {"cold instance", cold.URL}} {
		p := e.issue(t, "alice")
		end := e.clock.Now().Add(time.Hour) // half a second past a whole second
		last := end.Truncate(time.Second)

		// A nanosecond before the last whole second: a token good for a
		// nanosecond, which x/oauth2 must see as expiring, not as eternal.
		e.clock.Set(last.Add(-time.Nanosecond))
		tok, err := client(tc.url).TokenSource(bg, &oauth2.Token{RefreshToken: p.RefreshToken, Expiry: time.Now().Add(-time.Minute)}).Token()
		require.NoError(t, err, tc.name)
		assert.False(t, tok.Expiry.IsZero(), "%s: expires_in 0 is \"no expiry\" to x/oauth2", tc.name)
		assert.False(t, tok.Valid(), "%s: x/oauth2 refreshes a token with a second left", tc.name)
		_, c := decodeJWT(t, tok.AccessToken)
		assert.EqualValues(t, last.Unix(), c["exp"], tc.name)
		gen := e.session(t, p.SessionID).Generation

		// In the last fraction of a second: refused as at the end, and
		// nothing changes (before: 200, exp equal to now, expires_in 0).
		for _, at := range []time.Time{last, end.Add(-time.Nanosecond), end} {
			e.clock.Set(at)
			_, err := client(tc.url).TokenSource(bg, &oauth2.Token{RefreshToken: tok.RefreshToken, Expiry: time.Now().Add(-time.Minute)}).Token()
			var re *oauth2.RetrieveError
			require.ErrorAs(t, err, &re, "%s at end%+v", tc.name, at.Sub(end))
			assert.Equal(t, "invalid_grant", re.ErrorCode)
			s := e.session(t, p.SessionID)
			assert.Equal(t, gen, s.Generation, "%s: nothing changed", tc.name)
			assert.False(t, s.Revoked(), tc.name)
		}
		e.clock.Set(end.Add(time.Minute).Truncate(time.Second).Add(500 * time.Millisecond))
	}
}

// editedStore is a MemoryStore whose rows someone with write access to the
// database has changed (SQL injection into an UPDATE, a rogue operator, a
// compromised backup restored): every read of session id returns it as
// edit leaves it, as an UPDATE of those columns would. From the gets-th
// read on (0: every read). conflicts makes that many swaps answer
// ErrConflict first, as a concurrent change would.
type editedStore struct {
	*refresh.MemoryStore
	mu        sync.Mutex
	id        string
	edit      func(*refresh.Session)
	gets      int
	conflicts int
}

func (st *editedStore) set(id string, gets int, edit func(*refresh.Session)) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.id, st.gets, st.edit = id, gets, edit
}

func (st *editedStore) Get(ctx context.Context, id string) (*refresh.Session, error) {
	s, err := st.MemoryStore.Get(ctx, id)
	st.mu.Lock()
	defer st.mu.Unlock()
	if err == nil && id == st.id && st.edit != nil {
		if st.gets > 0 {
			st.gets--
		} else {
			st.edit(s)
		}
	}
	return s, err
}

func (st *editedStore) Advance(ctx context.Context, id string, from uint64, at time.Time) error {
	st.mu.Lock()
	if st.conflicts > 0 {
		st.conflicts--
		st.mu.Unlock()
		return refresh.ErrConflict
	}
	st.mu.Unlock()
	return st.MemoryStore.Advance(ctx, id, from, at)
}

// TestVuln28_StoreWriterEscalates: finding 28. The refresh token's MAC
// covered the session's id, generation and seed, so a token told nothing
// about who the session was for or what it granted: whoever could write to
// the sessions table (not read it: a database leak mints nothing) could
// change their own session's row, make it another user's, give it the
// admin role or scope, a fresh sign-in time that passes every step-up
// guard, another year of life, or strip a stolen session's client or DPoP
// binding, and the next refresh on an instance reading the row signed
// access tokens saying so. The tag now covers every field that never
// changes after Issue, so an edited row refuses its tokens.
func TestVuln28_StoreWriterEscalates(t *testing.T) {
	st := &editedStore{MemoryStore: refresh.NewMemoryStore(refresh.WithSweepInterval(0))}
	e := newEnv(t, func(c *refresh.Config) { c.Store, c.SessionTTL, c.IdleTTL = st, 24*time.Hour, 24*time.Hour })
	// The refresh endpoint runs on another instance, which has seen none
	// of the sessions: it reads each from the store (a restart, a
	// second process).
	cold := func() *httptest.Server {
		other, err := refresh.NewIssuer(e.cfg)
		require.NoError(t, err)
		srv := httptest.NewServer(refresh.NewHandlers(other, refresh.HandlerConfig{}).RefreshHandler())
		t.Cleanup(srv.Close)
		return srv
	}
	jkt := strings.Repeat("A", 43)
	mallory := func(opts ...refresh.Option) *refresh.Pair {
		return e.issue(t, "mallory", append([]refresh.Option{refresh.WithScope("read"),
			refresh.WithClaims(map[string]any{"roles": []string{"user"}})}, opts...)...)
	}
	later := e.clock.Now().Add(time.Hour)
	for _, tc := range []struct {
		name string
		opts []refresh.Option // how the session was issued
		edit func(*refresh.Session)
	}{
		{"the admin role in its claims", nil, func(s *refresh.Session) { s.Claims = []byte(`{"roles":["admin"]}`) }},
		{"another user's subject", nil, func(s *refresh.Session) { s.Subject = "alice" }},
		{"a wider scope", nil, func(s *refresh.Session) { s.Scope = append(s.Scope, "admin") }},
		{"a fresh sign-in time (step-up)", nil, func(s *refresh.Session) { s.CreatedAt = later }},
		{"a year more of life", nil, func(s *refresh.Session) { s.ExpiresAt = s.ExpiresAt.AddDate(1, 0, 0) }},
		{"its client binding removed", []refresh.Option{refresh.WithClientID("app")}, func(s *refresh.Session) { s.ClientID = "" }},
		{"its DPoP binding removed", []refresh.Option{refresh.WithDPoP(jkt)}, func(s *refresh.Session) { s.DPoPKey = "" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := mallory(tc.opts...)
			st.set(p.SessionID, 0, tc.edit)
			e.clock.Advance(time.Hour) // the edit, then the refresh an hour on
			r := postForm(t, nil, cold().URL, refreshForm(p.RefreshToken), nil)
			assert.Equal(t, 400, r.status, "an edited row's token: %s", r.raw)
			assert.Equal(t, "invalid_grant", r.body["error"])
			assert.Nil(t, r.body["access_token"])
			// The refusal changed nothing: with the row as it was, the
			// same token rotates once, as issued.
			st.set("", 0, nil)
			s, err := st.Get(context.Background(), p.SessionID)
			require.NoError(t, err)
			assert.False(t, s.Revoked())
			assert.Equal(t, uint64(0), s.Generation)
			if len(tc.opts) > 0 {
				return // bound: the row as it was asks for the binding
			}
			r = postForm(t, nil, cold().URL, refreshForm(p.RefreshToken), nil)
			require.Equal(t, 200, r.status, r.raw)
			_, c := decodeJWT(t, r.body["access_token"].(string))
			assert.Equal(t, "mallory", c["sub"])
			assert.Equal(t, []any{"user"}, c["roles"])
			assert.Equal(t, "read", c["scope"])
		})
	}

	// What the tag does not cover: metadata (what a devices page shows)
	// and the mutable state, whose every change the Issuer makes itself.
	t.Run("metadata is not bound", func(t *testing.T) {
		p := mallory(refresh.WithMeta(map[string]string{"ip": "192.0.2.1"}))
		st.set(p.SessionID, 0, func(s *refresh.Session) { s.Meta = map[string]string{"ip": "203.0.113.9"} })
		defer st.set("", 0, nil)
		r := postForm(t, nil, cold().URL, refreshForm(p.RefreshToken), nil)
		assert.Equal(t, 200, r.status, r.raw)
	})

	// Rewrites that keep the value verify: scope in another order (a set
	// in a store that does not keep order), claims reordered and respelled
	// as a jsonb column writes them.
	t.Run("the same values written differently", func(t *testing.T) {
		p := e.issue(t, "mallory", refresh.WithScope("write", "read"),
			refresh.WithClaims(map[string]any{"roles": []string{"user"}, "tenant": json.Number("2.50E1")}))
		st.set(p.SessionID, 0, func(s *refresh.Session) {
			s.Scope = []string{"read", "write"}
			s.Claims = []byte(`{"tenant": 25.0, "roles": ["\u0075ser"]}`)
		})
		defer st.set("", 0, nil)
		r := postForm(t, nil, cold().URL, refreshForm(p.RefreshToken), nil)
		assert.Equal(t, 200, r.status, r.raw)
	})

	// A row edited between a rotation's first read and the read after a
	// lost swap: the successor is minted from what the token's tag
	// verified, never from the second read.
	t.Run("an edit between two reads of one rotation", func(t *testing.T) {
		p := mallory()
		st.set(p.SessionID, 1, func(s *refresh.Session) { s.Claims = []byte(`{"roles":["admin"]}`) })
		defer st.set("", 0, nil)
		st.mu.Lock()
		st.conflicts = 1
		st.mu.Unlock()
		r := postForm(t, nil, cold().URL, refreshForm(p.RefreshToken), nil)
		require.Equal(t, 200, r.status, r.raw)
		_, c := decodeJWT(t, r.body["access_token"].(string))
		assert.Equal(t, []any{"user"}, c["roles"])
	})
}

// 36 (our own review, later): application claims were refused by their
// exact registered names only. Go's encoding/json matches member names to
// struct fields case-insensitively (Unicode simple folding, so "ſub" with
// U+017F too; its v2 also ignores '-' and '_'), and the last member wins;
// the application's claims follow the Issuer's own in the token. A login
// copying a user's profile attributes into claims let mallory name one
// "ſub" or "EXP": a resource server decoding the payload into a struct, as
// golang-jwt's RegisteredClaims does, read alice's subject or an expiry of
// 2100 from a token this package verified as mallory's, expiring in 15
// minutes. Issue now refuses such names, and two names such a decoder
// takes for one; an OnRefresh hook returning them fails the refresh as the
// application's fault (503), which changes nothing.
func TestVuln36_ClaimNamesDecodersFold(t *testing.T) {
	var reload atomic.Value // the profile OnRefresh reloads, when set
	var faults atomic.Int32
	e := newEnv(t, func(c *refresh.Config) {
		c.OnRefresh = func(_ context.Context, info *refresh.RefreshInfo) error {
			if p, ok := reload.Load().(map[string]any); ok && p != nil {
				info.Claims = p
			}
			return nil
		}
	})
	h := refresh.NewHandlers(e.iss, refresh.HandlerConfig{OnError: func(*http.Request, error) { faults.Add(1) }})
	mux := http.NewServeMux()
	mux.HandleFunc("POST /login", func(w http.ResponseWriter, r *http.Request) {
		var in struct {
			User    string         `json:"user"`
			Profile map[string]any `json:"profile"`
		}
		if json.NewDecoder(r.Body).Decode(&in) != nil {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		// (mallory's password is checked here)
		p, err := e.iss.Issue(r.Context(), in.User, refresh.WithClaims(in.Profile))
		if err != nil {
			h.WriteIssueError(w, r, err)
			return
		}
		h.WriteTokenResponse(w, r, p)
	})
	mux.Handle("POST /token", h.RefreshHandler())
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	login := func(profile map[string]any) reply {
		t.Helper()
		body, err := json.Marshal(map[string]any{"user": "mallory", "profile": profile})
		require.NoError(t, err)
		req, err := http.NewRequest(http.MethodPost, srv.URL+"/login", strings.NewReader(string(body)))
		require.NoError(t, err)
		req.Header.Set("Content-Type", "application/json")
		return do(t, nil, req)
	}
	// What a resource server decoding into a struct reads (golang-jwt's
	// RegisteredClaims has these fields and tags).
	type structView struct {
		Issuer   string `json:"iss"`
		Subject  string `json:"sub"`
		Expires  int64  `json:"exp"`
		IssuedAt int64  `json:"iat"`
		JTI      string `json:"jti"`
		ClientID string `json:"client_id"`
		Session  string `json:"sid"`
		Scope    string `json:"scope"`
		AuthTime int64  `json:"auth_time"`
	}
	agree := func(name, tok string) {
		t.Helper()
		c, err := e.iss.Verify(bg, tok)
		require.NoError(t, err, name)
		payload, err := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[1])
		require.NoError(t, err)
		var v structView
		require.NoError(t, json.Unmarshal(payload, &v), name)
		assert.Equal(t, structView{
			Issuer: c.Issuer, Subject: c.Subject, Expires: c.ExpiresAt.Unix(), IssuedAt: c.IssuedAt.Unix(),
			JTI: c.ID, ClientID: c.ClientID, Session: c.SessionID, Scope: strings.Join(c.Scope, " "), AuthTime: c.AuthTime.Unix(),
		}, v, "%s: a struct-decoding resource server reads another token than Verify", name)
	}

	const alice, y2100 = "alice", 4102444800
	for _, name := range []string{
		"SUB", "Sub", "ſub", "_sub", "s-u-b", "EXP", "Exp", "ISS", "AUD", "IAT", "NBF", "JTI", "SID", "ſid",
		"SCOPE", "ſcope", "CNF", "CLIENT_ID", "Client_Id", "client-id", "clientid", "AUTH_TIME", "auth-time", "authTime",
	} {
		r := login(map[string]any{name: alice, "roles": []string{"user"}})
		if r.status == 200 {
			agree(name, r.body["access_token"].(string)) // says what the attacker gained
		}
		assert.Equal(t, 400, r.status, "%s: %s", name, r.raw)
		assert.Equal(t, map[string]any{"error": "invalid_request"}, r.body, name)
	}
	for name, profile := range map[string]map[string]any{
		"roles and roleſ":         {"roles": []string{"user"}, "roleſ": []string{"admin"}},
		"roles and Roles":         {"roles": []string{"user"}, "Roles": []string{"admin"}},
		"tenant_id and tenantId":  {"tenant_id": 1, "tenantId": 2},
		"EXP as a number in 2100": {"EXP": y2100},
	} {
		r := login(profile)
		if r.status == 200 {
			agree(name, r.body["access_token"].(string))
		}
		assert.Equal(t, 400, r.status, "%s: %s", name, r.raw)
	}
	assert.Zero(t, e.store.Len(), "a refused sign-in created a session")

	// Names near the registered ones that no decoder confuses with them
	// are the application's: both readings of the token agree.
	near := map[string]any{"subject": alice, "subs": alice, "exp2": y2100, "expires_at": y2100, "Ｓub": alice,
		"şub": alice, "ıat": y2100, "scopes": "admin", "client": alice, "session_id": alice, "roles": []string{"user"}}
	r := login(near)
	require.Equal(t, 200, r.status, r.raw)
	agree("names near the registered ones", r.body["access_token"].(string))

	// At a refresh: the hook reloads a profile renamed meanwhile.
	rt := r.body["refresh_token"].(string)
	reload.Store(map[string]any{"ſub": alice})
	q := postForm(t, nil, srv.URL+"/token", refreshForm(rt), nil)
	assert.Equal(t, 503, q.status, q.raw)
	assert.Equal(t, map[string]any{"error": "temporarily_unavailable"}, q.body)
	assert.Equal(t, int32(1), faults.Load(), "the hook's fault reaches OnError")
	reload.Store(map[string]any{"roles": []string{"user"}})
	q = postForm(t, nil, srv.URL+"/token", refreshForm(rt), nil)
	require.Equal(t, 200, q.status, "the refused refresh changed nothing: %s", q.raw)
	agree("after the hook's fault", q.body["access_token"].(string))
}

// Other spellings of a genuine token, over HTTP: padding, the standard
// alphabet's '+' and '/', spaces and other bytes outside base64url put into
// it, and the last character changed so that only its unused bits differ
// (a lenient decoder reads the same bytes). The refresh endpoint answers
// each 400 invalid_grant without rotating or revoking the session; the
// middleware refuses each access token spelling (400 or 401, with its
// challenge). Only the genuine spellings work. (Line breaks: TestVuln6_LineBreaksInTokens.)
func TestVuln6_OtherSpellingsOfTokens(t *testing.T) {
	e := newEnv(t)
	srv, _ := e.server(t, refresh.HandlerConfig{})
	p := e.issue(t, "alice")
	// spellings returns tok with each byte put in its middle and at its
	// end, and with its last character's unused low bits set.
	spellings := func(tok string, unused uint) []string {
		var out []string
		for _, b := range []string{"=", "==", "+", "/", " ", "\t", ".", "%", "~", "!", "\x00", "\xff"} {
			out = append(out, tok[:len(tok)/2]+b+tok[len(tok)/2:], tok+b)
		}
		const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
		last := strings.IndexByte(alphabet, tok[len(tok)-1])
		for bit := range unused {
			out = append(out, tok[:len(tok)-1]+string(alphabet[last|1<<bit]))
		}
		return out
	}
	// A refresh token is 52 bytes in 70 characters (4 unused bits), an
	// HS256 signature 32 bytes in 43 (2 unused bits).
	for _, bent := range spellings(p.RefreshToken, 4) {
		r := postForm(t, nil, srv.URL+"/token", refreshForm(bent), nil)
		require.Equal(t, 400, r.status, "%q", bent)
		require.Equal(t, "invalid_grant", r.body["error"])
		r = postForm(t, nil, srv.URL+"/revoke", url.Values{"token": {bent}}, nil)
		require.Equal(t, 200, r.status)
	}
	for _, bent := range spellings(p.AccessToken, 2) {
		if strings.ContainsAny(bent, "\x00\t") || strings.IndexByte(bent, 0xff) >= 0 || strings.HasSuffix(bent, " ") {
			// Not a header value a client can send; trailing white space
			// is not part of the field value (RFC 9110 §5.5): the server
			// reads the genuine token.
			continue
		}
		// 400 invalid_request where the header breaks RFC 6750's b64token
		// grammar, 401 invalid_token where the token fails to verify.
		resp := get(t, srv.URL+"/me", map[string][]string{"Authorization": {"Bearer " + bent}})
		require.Contains(t, []int{400, 401}, resp.StatusCode, "%q", bent)
		require.Regexp(t, `error="invalid_(request|token)"`, resp.Header.Get("WWW-Authenticate"))
	}
	s := e.session(t, p.SessionID)
	require.Equal(t, uint64(0), s.Generation, "no other spelling rotated the session")
	require.False(t, s.Revoked(), "no other spelling revoked it")
	resp := get(t, srv.URL+"/me", map[string][]string{"Authorization": {"Bearer " + p.AccessToken}})
	require.Equal(t, 200, resp.StatusCode, "the genuine access token")
	r := postForm(t, nil, srv.URL+"/token", refreshForm(p.RefreshToken), nil)
	require.Equal(t, 200, r.status, "the genuine refresh token still rotates once, not as reuse")
}
