// Package bench measures refresh against its peers in one run, so that the
// ratios in BENCHMARKS.md compare numbers taken on the same machine at the
// same time. It is its own module: the peers (golang-jwt, fosite) never
// enter the core's dependencies.
//
//	cd bench && go test -run '^$' -bench . -benchmem -count 6 | tee new.txt
package bench

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	gjwt "github.com/golang-jwt/jwt/v5"
	"github.com/lestrrat-go/jwx/v3/jwa"
	jjwt "github.com/lestrrat-go/jwx/v3/jwt"
	"github.com/ory/fosite"
	"github.com/ory/fosite/compose"
	"github.com/ory/fosite/storage"
	"github.com/refreshkit/refresh"
)

var (
	ctx         = context.Background()
	hsSecret    = []byte("0123456789abcdef0123456789abcdef")
	macSecret   = []byte("refresh-mac-key-refresh-mac-key-")
	ecKey, _    = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, edKey, _ = ed25519.GenerateKey(rand.Reader)
)

const (
	issuer   = "https://auth.example.com"
	audience = "https://api.example.com"
)

func keyFor(alg string) refresh.Key {
	switch alg {
	case "ES256":
		return refresh.Key{ID: "k", Algorithm: refresh.ES256, Key: ecKey}
	case "EdDSA":
		return refresh.Key{ID: "k", Algorithm: refresh.EdDSA, Key: edKey}
	}
	return refresh.Key{ID: "k", Algorithm: refresh.HS256, Key: hsSecret}
}

func newIssuer(tb testing.TB, alg string, mod ...func(*refresh.Config)) *refresh.Issuer {
	st := refresh.NewMemoryStore(refresh.WithSweepInterval(0))
	cfg := refresh.Config{
		Issuer: issuer, Audience: audience,
		Keys:        []refresh.Key{keyFor(alg)},
		RefreshKeys: []refresh.RefreshKey{{ID: 1, Secret: macSecret}},
		Store:       st,
	}
	for _, m := range mod {
		m(&cfg)
	}
	iss, err := refresh.NewIssuer(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return iss
}

// --- refresh --------------------------------------------------------------

func BenchmarkRefreshRotate(b *testing.B) {
	for _, alg := range []string{"HS256", "ES256", "EdDSA"} {
		b.Run(alg, func(b *testing.B) { rotateSerial(b, alg) })
	}
}

// rotateSerial rotates one session's token, one rotation at a time.
func rotateSerial(b *testing.B, alg string) {
	iss := newIssuer(b, alg)
	p, _ := iss.Issue(ctx, "alice", refresh.WithScope("read"))
	rotateLoop(b, iss, p.RefreshToken)
}

// rotateOp signs in a session on iss and returns one rotation of it: each
// call rotates the token the previous call received.
func rotateOp(tb testing.TB, iss *refresh.Issuer) op {
	p, err := iss.Issue(ctx, "alice", refresh.WithScope("read"))
	if err != nil {
		tb.Fatal(err)
	}
	tok := p.RefreshToken
	return func() error {
		p, err := iss.Rotate(ctx, tok)
		if err != nil {
			return err
		}
		tok = p.RefreshToken
		return nil
	}
}

// rotateLoop is the measured loop: rotate tok, then its successor, and so
// on, one at a time.
func rotateLoop(b *testing.B, iss *refresh.Issuer, tok string) {
	b.ReportAllocs()
	start := cpuNow()
	for b.Loop() {
		p, err := iss.Rotate(ctx, tok)
		if err != nil {
			b.Fatal(err)
		}
		tok = p.RefreshToken
	}
	reportCPU(b, start)
}

// BenchmarkRefreshRotateParallel: independent sessions from every P; compare
// ns/op with BenchmarkRefreshRotate/HS256 for the parallel speed-up.
func BenchmarkRefreshRotateParallel(b *testing.B) {
	iss := newIssuer(b, "HS256")
	b.ReportAllocs()
	start := cpuNow()
	b.RunParallel(func(pb *testing.PB) {
		p, _ := iss.Issue(ctx, "alice", refresh.WithScope("read"))
		tok := p.RefreshToken
		for pb.Next() {
			p, err := iss.Rotate(ctx, tok)
			if err != nil {
				b.Error(err)
				return
			}
			tok = p.RefreshToken
		}
	})
	reportCPU(b, start)
}

// BenchmarkRefreshRotateLiveHeap is BenchmarkRefreshRotate/HS256 and
// BenchmarkRefreshRotateParallel again, in one run, while the process holds
// 16 MiB of ordinary live data (262,144 objects of 64 bytes, each behind
// its own pointer), as a service does. The two benchmarks above run in a
// process whose live heap is almost nothing, so the collector's heap goal
// stays at the runtime's 4 MB minimum and it runs about every 8,000
// rotations; its fixed cost per cycle is what keeps two goroutines from
// twice the rotations there (BENCHMARKS.md). GOGC stays at its default.
func BenchmarkRefreshRotateLiveHeap(b *testing.B) {
	type object struct {
		self *object // a pointer the collector follows, as real data has
		_    [56]byte
	}
	heap := make([]*object, (16<<20)/64)
	for i := range heap {
		o := &object{}
		o.self = o
		heap[i] = o
	}
	runtime.GC() // the heap goal now counts it
	b.Run("HS256", func(b *testing.B) { rotateSerial(b, "HS256") })
	b.Run("Parallel", BenchmarkRefreshRotateParallel)
	runtime.KeepAlive(heap)
}

// twoStepStore hides the MemoryStore's one-round-trip swap, so that every
// rotation takes the path of an instance that has not seen the session:
// Get, the binding of what it read, the tag, then Advance.
type twoStepStore struct{ refresh.Store }

// BenchmarkRefreshRotateCold is BenchmarkRefreshRotate/HS256 on that path,
// with typical application claims (a roles array and a tenant id), whose
// binding (by JSON value) it includes.
func BenchmarkRefreshRotateCold(b *testing.B) {
	iss := newIssuer(b, "HS256", func(c *refresh.Config) {
		c.Store = twoStepStore{refresh.NewMemoryStore(refresh.WithSweepInterval(0))}
	})
	p, err := iss.Issue(ctx, "alice", refresh.WithScope("read"),
		refresh.WithClaims(map[string]any{"roles": []string{"admin", "billing"}, "tenant": 9007199254740993}))
	if err != nil {
		b.Fatal(err)
	}
	rotateLoop(b, iss, p.RefreshToken)
}

func BenchmarkRefreshIssue(b *testing.B) {
	iss := newIssuer(b, "HS256")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := iss.Issue(ctx, "alice", refresh.WithScope("read")); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRefreshVerify(b *testing.B) {
	for _, alg := range []string{"HS256", "ES256", "EdDSA"} {
		b.Run(alg+"/fresh", func(b *testing.B) {
			o, _ := verifyFreshOp(b, alg)
			loop(b, o)
		})
	}
}

// verifyFreshOp verifies one access token signed with alg, checking its
// signature every time (the verified-token cache is off), and returns
// the token too.
func verifyFreshOp(tb testing.TB, alg string) (op, string) {
	iss := newIssuer(tb, alg, func(c *refresh.Config) { c.VerifyCacheSize = -1 })
	p, err := iss.Issue(ctx, "alice", refresh.WithScope("read"))
	if err != nil {
		tb.Fatal(err)
	}
	return func() error {
		_, err := iss.Verify(ctx, p.AccessToken)
		return err
	}, p.AccessToken
}

// loop is a benchmark whose operation is o.
func loop(b *testing.B, o op) {
	b.ReportAllocs()
	for b.Loop() {
		if err := o(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRefreshMiddleware: one request through the bearer middleware, with
// a token never seen before (cache off) and with one seen before (cached).
func BenchmarkRefreshMiddleware(b *testing.B) {
	for _, tc := range []struct {
		name  string
		cache int
	}{{"fresh", -1}, {"seen", 0}} {
		b.Run(tc.name, func(b *testing.B) {
			iss := newIssuer(b, "HS256", func(c *refresh.Config) { c.VerifyCacheSize = tc.cache })
			p, _ := iss.Issue(ctx, "alice", refresh.WithScope("read"))
			h := iss.Middleware()(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			r.Header.Set("Authorization", "Bearer "+p.AccessToken)
			w := httptest.NewRecorder()
			b.ReportAllocs()
			for b.Loop() {
				h.ServeHTTP(w, r)
			}
			if w.Code != 200 {
				b.Fatal(w.Code)
			}
		})
	}
}

// BenchmarkRefreshHandler: a whole refresh grant through the HTTP handler.
func BenchmarkRefreshHandler(b *testing.B) {
	iss := newIssuer(b, "HS256")
	h := refresh.NewHandlers(iss, refresh.HandlerConfig{}).RefreshHandler()
	p, _ := iss.Issue(ctx, "alice", refresh.WithScope("read"))
	tok := p.RefreshToken
	b.ReportAllocs()
	for b.Loop() {
		r := httptest.NewRequest(http.MethodPost, "/token", strings.NewReader("grant_type=refresh_token&refresh_token="+tok))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != 200 {
			b.Fatal(w.Code, w.Body.String())
		}
		body := w.Body.String()
		i := strings.Index(body, `"refresh_token":"`) + 17
		tok = body[i : i+strings.IndexByte(body[i:], '"')]
	}
}

// BenchmarkRefreshMemoryStoreScale: Rotate with 1,000 and 1,000,000 live
// sessions, and the heap each session costs.
func BenchmarkRefreshMemoryStoreScale(b *testing.B) {
	for _, n := range []int{1_000, 1_000_000} {
		b.Run(itoa(n), func(b *testing.B) {
			if n > 1000 && raceEnabled {
				b.Skip("a million sessions under the race detector take minutes and gigabytes; run without -race")
			}
			st := refresh.NewMemoryStore(refresh.WithSweepInterval(0))
			iss := newIssuer(b, "HS256", func(c *refresh.Config) { c.Store = st })
			runtime.GC()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			var last string
			for i := 0; i < n; i++ {
				p, err := iss.Issue(ctx, "user"+itoa(i%100_000), refresh.WithScope("read"))
				if err != nil {
					b.Fatal(err)
				}
				last = p.RefreshToken
			}
			runtime.GC()
			runtime.ReadMemStats(&after)
			perSession := float64(after.HeapAlloc-before.HeapAlloc) / float64(n)
			rotateLoop(b, iss, last) // b.Loop resets the timer
			b.ReportMetric(perSession, "heapB/session")
			runtime.KeepAlive(st)
		})
	}
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b [20]byte
	i := len(b)
	for ; n > 0; n /= 10 {
		i--
		b[i] = byte('0' + n%10)
	}
	return string(b[i:])
}

// --- golang-jwt v5 -------------------------------------------------------

func gjwtClaims() gjwt.MapClaims {
	now := time.Now()
	return gjwt.MapClaims{
		"iss": issuer, "sub": "alice", "aud": audience, "exp": now.Add(15 * time.Minute).Unix(),
		"iat": now.Unix(), "jti": "3q2-7wAAAAAAAAAAAAAAAA", "client_id": audience, "sid": "hK5GtKTKUsAE-50cAL47Pg", "scope": "read",
	}
}

func BenchmarkGolangJWTSignHS256(b *testing.B) { loop(b, gjwtSignOp()) }

func gjwtSignOp() op {
	c := gjwtClaims()
	return func() error {
		t := gjwt.NewWithClaims(gjwt.SigningMethodHS256, c)
		t.Header["kid"] = "k"
		t.Header["typ"] = "at+jwt"
		_, err := t.SignedString(hsSecret)
		return err
	}
}

func BenchmarkGolangJWTParseHS256(b *testing.B) { loop(b, gjwtParseOp()) }

func gjwtParseOp() op {
	t := gjwt.NewWithClaims(gjwt.SigningMethodHS256, gjwtClaims())
	t.Header["kid"] = "k"
	s, _ := t.SignedString(hsSecret)
	p := gjwt.NewParser(gjwt.WithValidMethods([]string{"HS256"}), gjwt.WithIssuer(issuer), gjwt.WithAudience(audience), gjwt.WithExpirationRequired())
	key := func(*gjwt.Token) (any, error) { return hsSecret, nil }
	return func() error {
		_, err := p.Parse(s, key)
		return err
	}
}

// --- jwx v3 high level -----------------------------------------------------

func jwxToken() jjwt.Token {
	now := time.Now()
	t, _ := jjwt.NewBuilder().Issuer(issuer).Subject("alice").Audience([]string{audience}).
		Expiration(now.Add(15*time.Minute)).IssuedAt(now).JwtID("3q2-7wAAAAAAAAAAAAAAAA").
		Claim("client_id", audience).Claim("sid", "hK5GtKTKUsAE-50cAL47Pg").Claim("scope", "read").Build()
	return t
}

func BenchmarkJWXSignHS256(b *testing.B) {
	t := jwxToken()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := jjwt.Sign(t, jjwt.WithKey(jwa.HS256(), hsSecret)); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkJWXParseHS256(b *testing.B) {
	s, _ := jjwt.Sign(jwxToken(), jjwt.WithKey(jwa.HS256(), hsSecret))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := jjwt.Parse(s, jjwt.WithKey(jwa.HS256(), hsSecret), jjwt.WithIssuer(issuer), jjwt.WithAudience(audience)); err != nil {
			b.Fatal(err)
		}
	}
}

// --- fosite ----------------------------------------------------------------

// BenchmarkFositeRefreshGrant: fosite v0.49's refresh grant (compose with the
// refresh-token factory, opaque HMAC tokens, its memory store, a public
// client so that no bcrypt runs), request parsing and response included.
func BenchmarkFositeRefreshGrant(b *testing.B) { loop(b, fositeOp(b)) }

// fositeOp signs in a session with fosite and returns one refresh grant of
// it, each call presenting the refresh token the previous one received.
func fositeOp(tb testing.TB) op {
	store := storage.NewExampleStore()
	store.Clients["public"] = &fosite.DefaultClient{
		ID: "public", Public: true,
		GrantTypes: []string{"password", "refresh_token"}, ResponseTypes: []string{"token"},
		Scopes: []string{"offline", "read"},
	}
	config := &fosite.Config{GlobalSecret: []byte("some-cool-secret-that-is-32bytes"), AccessTokenLifespan: 15 * time.Minute}
	// The password grant only mints the first refresh token; the measured
	// loop is the refresh grant alone.
	//lint:ignore SA1019 ROPC is deprecated for applications, fine for seeding a benchmark
	ropc := compose.OAuth2ResourceOwnerPasswordCredentialsFactory
	provider := compose.Compose(config, store, compose.NewOAuth2HMACStrategy(config),
		ropc, compose.OAuth2RefreshTokenGrantFactory)
	grant := func(form url.Values) (map[string]any, error) {
		r := httptest.NewRequest(http.MethodPost, "/token", strings.NewReader(form.Encode()))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		ar, err := provider.NewAccessRequest(ctx, r, &fosite.DefaultSession{Username: "peter"})
		if err != nil {
			return nil, errors.New(fosite.ErrorToRFC6749Error(err).WithExposeDebug(true).GetDescription())
		}
		if ar.GetRequestedScopes().Has("offline") {
			ar.GrantScope("offline")
			ar.GrantScope("read")
		}
		resp, err := provider.NewAccessResponse(ctx, ar)
		if err != nil {
			return nil, errors.New(fosite.ErrorToRFC6749Error(err).WithExposeDebug(true).GetDescription())
		}
		return resp.ToMap(), nil
	}
	first, err := grant(url.Values{"grant_type": {"password"}, "username": {"peter"}, "password": {"secret"}, "client_id": {"public"}, "scope": {"offline read"}})
	if err != nil {
		tb.Fatal(err)
	}
	tok := first["refresh_token"].(string)
	return func() error {
		m, err := grant(url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok}, "client_id": {"public"}})
		if err == nil {
			tok = m["refresh_token"].(string)
		}
		return err
	}
}

// --- raw primitives (the floor) ------------------------------------------

func BenchmarkPrimitiveHMACSHA256(b *testing.B) {
	msg := make([]byte, 300)
	b.ReportAllocs()
	for b.Loop() {
		m := hmac.New(sha256.New, hsSecret)
		m.Write(msg)
		m.Sum(nil)
	}
}

func BenchmarkPrimitiveEd25519(b *testing.B) {
	msg := make([]byte, 300)
	b.Run("Sign", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			ed25519.Sign(edKey, msg)
		}
	})
	b.Run("Verify", func(b *testing.B) { loop(b, ed25519VerifyOp(msg, ed25519.Sign(edKey, msg))) })
}

// ed25519VerifyOp verifies sig, edKey's signature of msg.
func ed25519VerifyOp(msg, sig []byte) op {
	pub := edKey.Public().(ed25519.PublicKey)
	return func() error {
		if !ed25519.Verify(pub, msg, sig) {
			return errors.New("ed25519: signature refused")
		}
		return nil
	}
}

func BenchmarkPrimitiveECDSAP256(b *testing.B) {
	h := sha256.Sum256(make([]byte, 300))
	sig, _ := ecdsa.SignASN1(rand.Reader, ecKey, h[:])
	b.Run("Sign", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, _ = ecdsa.SignASN1(rand.Reader, ecKey, h[:])
		}
	})
	b.Run("Verify", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			ecdsa.VerifyASN1(&ecKey.PublicKey, h[:], sig)
		}
	})
}

// BenchmarkPrimitiveSHA256 and its Parallel twin are the machine's own
// ceiling for parallel speed-up: pure CPU work with no allocation and no
// shared state, serially and from every P.
func BenchmarkPrimitiveSHA256(b *testing.B) {
	msg := make([]byte, 300)
	b.ReportAllocs()
	for b.Loop() {
		sha256.Sum256(msg)
	}
}

func BenchmarkPrimitiveSHA256Parallel(b *testing.B) {
	msg := make([]byte, 300)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			sha256.Sum256(msg)
		}
	})
}

// shapeMsg sizes the hashing of BenchmarkShapeOfRotate so that one call
// costs about what Rotate costs on this machine's kind of core.
var shapeMsg = make([]byte, 2750)

var (
	shapeSum  [32]byte
	shapePair *refresh.Pair
	shapeSink *[2]uint64
)

// shapes do what Rotate does to the machine without anything Rotate
// shares: CPU work (SHA-256 here) and allocations, and nothing else.
var shapes = []struct {
	name string
	op   func(p *refresh.Pair)
}{
	// Rotate's allocations until it was inlined: the 406-byte access
	// token, a *Pair holding it, the refresh token, 16 bytes.
	{"656B", func(p *refresh.Pair) {
		q := shapeOp(p, true)
		shapeSink = new([2]uint64)
		shapePair = &q
	}},
	// Rotate's allocations now (TestRotateAllocations): the two tokens
	// and the Pair's own copy of the scope; the Pair is on the stack.
	{"496B", func(p *refresh.Pair) {
		q := shapeOp(p, true)
		q.Scope = slices.Clone(q.Scope)
		*p = q
	}},
	// The CPU work alone, allocating nothing: what two goroutines reach
	// when the collector has nothing to do.
	{"0B", func(p *refresh.Pair) { shapeSum = sha256.Sum256(shapeMsg) }},
	// Only the refresh token: no access token.
	{"64B", func(p *refresh.Pair) { *p = shapeOp(p, false) }},
}

func shapeOp(prev *refresh.Pair, access bool) refresh.Pair {
	sum := sha256.Sum256(shapeMsg)
	var tok [406]byte
	var rt [59]byte
	copy(tok[:], sum[:])
	copy(rt[:], sum[:])
	q := refresh.Pair{RefreshToken: string(rt[:]), TokenType: "Bearer", Scope: prev.Scope, SessionID: prev.SessionID, Subject: prev.Subject}
	if access {
		q.AccessToken = string(tok[:])
	}
	return q
}

// BenchmarkShapeOfRotate and BenchmarkShapeOfRotateParallel bound
// BenchmarkRefreshRotateParallel's speed-up: each shape allocates what its
// name says per operation, around CPU work of about Rotate's length, and
// shares no state at all. Two goroutines cannot speed Rotate up more than
// they speed up the shape with Rotate's allocations (496B); what the shapes
// lose is the Go runtime's, the collector and the scavenger, which run on
// the idle core of a single-goroutine benchmark, and it grows with the
// bytes allocated.
func BenchmarkShapeOfRotate(b *testing.B) {
	for _, sh := range shapes {
		b.Run(sh.name, func(b *testing.B) {
			p := &refresh.Pair{Subject: "alice", SessionID: "s", Scope: []string{"read"}}
			b.ReportAllocs()
			start := cpuNow()
			for b.Loop() {
				sh.op(p)
			}
			reportCPU(b, start)
		})
	}
}

func BenchmarkShapeOfRotateParallel(b *testing.B) {
	for _, sh := range shapes {
		b.Run(sh.name, func(b *testing.B) {
			b.ReportAllocs()
			start := cpuNow()
			b.RunParallel(func(pb *testing.PB) {
				p := &refresh.Pair{Subject: "alice", SessionID: "s", Scope: []string{"read"}}
				for pb.Next() {
					sh.op(p)
				}
			})
			reportCPU(b, start)
		})
	}
}
