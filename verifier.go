package refresh

// Verifier: access-token verification for resource servers, services that
// accept the tokens an Issuer elsewhere mints and hold no store and no
// refresh keys. Keys come from the configuration or from the Issuer's JWKS
// URL, fetched and cached by jwx's jwk.Cache; revocation can reach it
// through RFC 7662 introspection. The checks are the Issuer's own
// (verify.go): one implementation, two owners.

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lestrrat-go/httprc/v3"
	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
)

// VerifierConfig configures NewVerifier.
type VerifierConfig struct {
	// Issuer and Audience are required: tokens must carry this iss and
	// include this aud, as the Issuer's Config says.
	Issuer, Audience string
	// Keys verifies with fixed keys (public keys, or the HMAC secret shared
	// with the Issuer). Give Keys or JWKSURL, not both.
	Keys []Key
	// JWKSURL is the Issuer's JWKS document (Handlers.JWKSHandler). It must
	// be https, or http to a loopback address. It is fetched at start and
	// refreshed in the background as its Cache-Control allows, within
	// [JWKSMinRefresh, JWKSMaxRefresh]; a token naming an unknown kid
	// causes at most one extra fetch per JWKSRefetchInterval, so a flood of
	// made-up kids is not a flood of fetches. Symmetric keys in the set are
	// ignored, as are keys not for signatures; RSA keys need an alg.
	JWKSURL string
	// JWKSMinRefresh and JWKSMaxRefresh bound the background refresh
	// (defaults 5 minutes and 1 hour); JWKSRefetchInterval bounds the
	// fetches unknown kids may cause (default 1 minute).
	JWKSMinRefresh, JWKSMaxRefresh, JWKSRefetchInterval time.Duration
	// Introspection, if set, asks the Issuer's introspection endpoint (RFC
	// 7662) whether each token is still active, so that a revoked session's
	// tokens are refused here within Introspection.CacheTTL.
	Introspection *IntrospectionConfig
	// HTTPClient fetches the JWKS and calls introspection. Default: a
	// client with a 10-second timeout. The Verifier uses a copy that
	// follows no redirect unless the client has a CheckRedirect of its
	// own, and then only to URLs the rule for JWKSURL allows (https, http
	// only to loopback), so that no redirect downgrades a fetch to plain
	// http; a client without a Timeout is given the 10 seconds, so that
	// a hung auth service holds no request for ever.
	HTTPClient *http.Client
	// Leeway, MaxTokenSize, VerifyCacheSize, PublicURL and Now mean what
	// they mean in Config.
	Leeway          time.Duration
	MaxTokenSize    int
	VerifyCacheSize int
	PublicURL       string
	Now             func() time.Time
	// DPoPNonceLifetime, if above zero, makes the Verifier require nonces
	// of its own in DPoP proofs (RFC 9449 §9), as Config.DPoPNonceLifetime
	// does for an Issuer: its middleware answers a proof without a current
	// nonce with 401 error="use_dpop_nonce" and a fresh DPoP-Nonce header,
	// and VerifyDPoPProof refuses it with ErrUseDPoPNonce. Between 2 s and
	// 24 h; zero (the default): no nonces.
	DPoPNonceLifetime time.Duration
	// DPoPNonceKeys are the secrets nonces are MACs under, each at least 32
	// random bytes, required with DPoPNonceLifetime. The first mints, all
	// are accepted: every instance behind one URL needs the same keys, or
	// a client sent from one instance to another is refused the other's
	// nonce. To change the key, put the new one first and keep the old
	// one for a lifetime. They are not the Issuer's keys: the auth
	// service's nonces are not accepted here, nor these there.
	DPoPNonceKeys [][]byte
	// Proofs, if set, records the DPoP proofs this resource server accepts
	// in a store shared by all its instances, so that a proof replayed to
	// another instance is refused too (RFC 9449 §11.1), as an Issuer does
	// with a store that is a ProofRecorder. Every shipped store is one: a
	// resource server can open redisstore or pgstore on a database of its
	// own for it and need nothing else from it. Without it each instance
	// remembers proofs in its own memory. The Verifier removes expired
	// records every ProofSweepInterval until Close (stores that expire
	// them by themselves, Redis's, have none to remove).
	Proofs ProofRecorder
	// ProofSweepInterval is how often expired proof records are removed
	// from Proofs (default 1 minute).
	ProofSweepInterval time.Duration
	// Logger receives what the Verifier has to say about its keys (fetch
	// failures, key sets loaded). Default slog.Default().
	Logger *slog.Logger
}

// IntrospectionConfig points a Verifier at an RFC 7662 endpoint
// (Handlers.IntrospectionHandler) and the client credentials it
// authenticates with (client_secret_basic).
type IntrospectionConfig struct {
	URL                    string
	ClientID, ClientSecret string
	// CacheTTL is how long an answer is reused for the same token, and so
	// how late a revocation may be seen here. Default 5 seconds; negative
	// asks for every request.
	CacheTTL time.Duration
}

// Verifier verifies access tokens minted by an Issuer in another service:
// Verify, Middleware and VerifyDPoPProof do exactly what the Issuer's do
// (RequireScope, RequireRole and ClaimsFromContext work with its
// middleware), without a store. It is safe for concurrent use. Close stops
// its background JWKS refresh.
type Verifier struct {
	rs     *resourceServer
	cfg    VerifierConfig
	log    *slog.Logger
	intro  *introspector
	cancel context.CancelFunc
	// stopSweep ends the removal of expired proof records (with Proofs).
	stopSweep context.CancelFunc

	// With JWKSURL:
	cache    *jwk.Cache
	resource *httprc.ResourceBase[jwk.Set]
	setMu    sync.Mutex   // guards set changes, lastFetch, inflight
	set      atomic.Value // setBox: the set the current keys were made from
	// lastFetch is when unknown kids last caused a fetch; inflight, closed
	// when that fetch ends, is non-nil while it runs.
	lastFetch time.Time
	inflight  chan struct{}
}

// NewVerifier checks cfg and returns a Verifier. With JWKSURL it fetches
// the set once, waiting at most 3 seconds; when that fails
// it still returns the Verifier, logs the failure, and answers every token
// with ErrKeysUnavailable (503) until a fetch succeeds: a resource server
// starts even while its auth service is briefly down. Ready says whether
// keys are loaded.
func NewVerifier(cfg VerifierConfig) (*Verifier, error) {
	switch {
	case cfg.Issuer == "" || cfg.Audience == "":
		return nil, errors.New("refresh: VerifierConfig.Issuer and Audience are required")
	case len(cfg.Keys) == 0 && cfg.JWKSURL == "":
		return nil, errors.New("refresh: VerifierConfig needs Keys or a JWKSURL")
	case len(cfg.Keys) > 0 && cfg.JWKSURL != "":
		return nil, errors.New("refresh: VerifierConfig takes Keys or a JWKSURL, not both")
	case cfg.Leeway < 0 || cfg.Leeway > MaxLeeway:
		return nil, fmt.Errorf("refresh: Leeway must be between 0 and %v", MaxLeeway)
	case cfg.DPoPNonceLifetime != 0 && (cfg.DPoPNonceLifetime < 2*time.Second || cfg.DPoPNonceLifetime > 24*time.Hour):
		return nil, errors.New("refresh: VerifierConfig.DPoPNonceLifetime must be 0 or between 2s and 24h")
	case cfg.DPoPNonceLifetime > 0 && len(cfg.DPoPNonceKeys) == 0:
		return nil, errors.New("refresh: VerifierConfig.DPoPNonceLifetime needs DPoPNonceKeys")
	case cfg.DPoPNonceLifetime == 0 && len(cfg.DPoPNonceKeys) > 0:
		return nil, errors.New("refresh: VerifierConfig.DPoPNonceKeys without DPoPNonceLifetime")
	case cfg.ProofSweepInterval < 0 || cfg.JWKSMinRefresh < 0 || cfg.JWKSMaxRefresh < 0 || cfg.JWKSRefetchInterval < 0:
		return nil, errors.New("refresh: VerifierConfig intervals must not be negative")
	}
	for i, k := range cfg.DPoPNonceKeys {
		if len(k) < 32 {
			return nil, fmt.Errorf("refresh: VerifierConfig.DPoPNonceKeys[%d] must be at least 32 bytes", i)
		}
	}
	if cfg.MaxTokenSize == 0 {
		cfg.MaxTokenSize = DefaultMaxTokenSize
	}
	if cfg.MaxTokenSize < 256 {
		return nil, errors.New("refresh: MaxTokenSize must be at least 256 bytes")
	}
	if cfg.VerifyCacheSize == 0 {
		cfg.VerifyCacheSize = DefaultVerifyCacheSize
	}
	cfg.Now = utcClock(cfg.Now) // UTC, as the Issuer's, for the ProofRecorder
	setDefault(&cfg.JWKSMinRefresh, 5*time.Minute)
	setDefault(&cfg.JWKSMaxRefresh, time.Hour)
	setDefault(&cfg.JWKSRefetchInterval, time.Minute)
	cfg.HTTPClient = fetchClient(cfg.HTTPClient)
	v := &Verifier{cfg: cfg, log: cfg.Logger}
	if v.log == nil {
		v.log = slog.Default()
	}
	v.rs = newResourceServer(cfg.Issuer, cfg.Audience, cfg.PublicURL, cfg.Leeway, cfg.MaxTokenSize, cfg.VerifyCacheSize, cfg.Now)
	v.rs.proofs = cfg.Proofs
	setDefault(&v.cfg.ProofSweepInterval, time.Minute)
	if cfg.DPoPNonceLifetime > 0 {
		v.rs.nonces = newNonceSource(cfg.DPoPNonceLifetime, cfg.DPoPNonceKeys, cfg.Now)
	}
	if in := cfg.Introspection; in != nil {
		if err := checkFetchURL(in.URL); err != nil {
			return nil, fmt.Errorf("refresh: Introspection.URL: %w", err)
		}
		if in.ClientID == "" || in.ClientSecret == "" {
			return nil, errors.New("refresh: Introspection needs ClientID and ClientSecret")
		}
		ttl := in.CacheTTL
		if ttl == 0 {
			ttl = 5 * time.Second
		}
		v.intro = &introspector{cfg: *in, ttl: ttl, client: cfg.HTTPClient, now: cfg.Now, max: introCacheMax, cache: map[[32]byte]introAnswer{}}
	}
	if len(cfg.Keys) > 0 {
		keys, err := compileKeys(cfg.Keys)
		if err != nil {
			return nil, err
		}
		v.rs.setKeys(newKeySet(keys))
		v.startProofSweep()
		return v, nil
	}
	if err := checkFetchURL(cfg.JWKSURL); err != nil {
		return nil, fmt.Errorf("refresh: JWKSURL: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	v.cancel = cancel
	cache, err := jwk.NewCache(ctx, httprc.NewClient())
	if err != nil {
		cancel()
		return nil, fmt.Errorf("refresh: JWKS cache: %w", err)
	}
	v.cache = cache
	err = cache.Register(ctx, cfg.JWKSURL,
		jwk.WithHTTPClient(cfg.HTTPClient),
		jwk.WithWaitReady(false),
		jwk.WithMinInterval(cfg.JWKSMinRefresh),
		jwk.WithMaxInterval(cfg.JWKSMaxRefresh),
		jwk.WithMaxFetchBodySize(1<<20),
	)
	if err == nil {
		v.resource, err = cache.LookupResource(ctx, cfg.JWKSURL)
	}
	if err != nil {
		cancel()
		return nil, fmt.Errorf("refresh: JWKS cache: %w", err)
	}
	v.rs.missingKid = v.refetch
	// The first fetch, waited for at most 3 seconds (or the client's
	// timeout, if shorter): a down auth service must not stall start-up.
	wctx, wcancel := context.WithTimeout(ctx, fetchWait(cfg.HTTPClient))
	defer wcancel()
	if err := v.resource.Ready(wctx); err != nil {
		v.log.Warn("refresh: JWKS not available yet; tokens are answered 503 until it is", "url", cfg.JWKSURL, "err", err)
	} else {
		v.sync()
	}
	v.startProofSweep()
	return v, nil
}

// startProofSweep removes expired records from VerifierConfig.Proofs every
// ProofSweepInterval until Close. The Issuer's Sweep does this for its
// store; a Verifier has no Sweep for its users to call.
func (v *Verifier) startProofSweep() {
	if v.rs.proofs == nil {
		return
	}
	ctx, stop := context.WithCancel(context.Background())
	v.stopSweep = stop
	go func() {
		t := time.NewTicker(v.cfg.ProofSweepInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if _, err := v.sweepProofs(ctx); err != nil && ctx.Err() == nil {
					v.log.Warn("refresh: removing expired DPoP proof records failed", "err", err)
				}
			}
		}
	}()
}

// proofSweepBatch is how many proof records one DeleteExpiredProofs call
// of a Verifier's sweep may remove.
const proofSweepBatch = 1000

// sweepProofs removes the expired records of VerifierConfig.Proofs, in
// batches, and returns how many.
func (v *Verifier) sweepProofs(ctx context.Context) (int, error) {
	total := 0
	for {
		n, err := v.rs.proofs.DeleteExpiredProofs(ctx, v.cfg.Now(), proofSweepBatch)
		total += n
		if err != nil || n < proofSweepBatch {
			return total, err
		}
	}
}

// fetchWait is how long a caller waits for a JWKS fetch: 3 seconds, or
// the client's timeout if shorter.
func fetchWait(c *http.Client) time.Duration {
	if c.Timeout > 0 && c.Timeout < 3*time.Second {
		return c.Timeout
	}
	return 3 * time.Second
}

// fetchClient returns the client a Verifier fetches with: a copy of c (by
// default of the zero client), with a Timeout of fetchTimeout if it has
// none, whose redirects, if its own CheckRedirect allows any, must pass
// checkFetchURL as the configured URLs do; without a CheckRedirect it
// follows none. A JWKS URL answering with a redirect elsewhere (an open
// redirect on the auth service's host) then lends the Verifier no other
// server's keys.
func fetchClient(c *http.Client) *http.Client {
	var client http.Client
	if c != nil {
		client = *c
	}
	if client.Timeout <= 0 {
		// No fetch and no introspection call may wait for ever: a hung
		// auth service would hold every request that asks it.
		client.Timeout = fetchTimeout
	}
	allow := client.CheckRedirect
	client.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if allow == nil {
			return http.ErrUseLastResponse
		}
		if err := checkFetchURL(req.URL.String()); err != nil {
			return fmt.Errorf("redirect refused: %w", err)
		}
		return allow(req, via)
	}
	return &client
}

// fetchTimeout bounds a Verifier's every HTTP exchange, unless the
// application's client has a timeout of its own.
const fetchTimeout = 10 * time.Second

// checkFetchURL allows https, and http only to loopback addresses.
func checkFetchURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" {
		return fmt.Errorf("%q is not an absolute URL", s)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		host := u.Hostname()
		if ip := net.ParseIP(host); host == "localhost" || ip != nil && ip.IsLoopback() {
			return nil
		}
		return fmt.Errorf("%q: http is allowed only to loopback addresses; use https", s)
	}
	return fmt.Errorf("%q: scheme must be https", s)
}

// Close stops the background JWKS refresh and the removal of expired proof
// records. Verify keeps working with the keys it has.
func (v *Verifier) Close() error {
	if v.cancel != nil {
		v.cancel()
	}
	if v.stopSweep != nil {
		v.stopSweep()
	}
	return nil
}

// Ready reports whether the Verifier has keys to verify with.
func (v *Verifier) Ready() bool {
	if v.resource != nil {
		v.sync()
	}
	return v.rs.keys.Load() != nil
}

// sync turns the cache's current set, if it changed, into the keys in use.
//
// It runs on every Verify: the common case, an unchanged set, is two
// atomic loads and takes no lock.
func (v *Verifier) sync() {
	set := v.resource.Resource()
	if set == nil || v.loadedSet() == set {
		return
	}
	v.setMu.Lock()
	defer v.setMu.Unlock()
	if v.loadedSet() == set {
		return
	}
	keys := v.keysOf(set)
	v.set.Store(setBox{set})
	if len(keys) == 0 {
		v.log.Warn("refresh: the JWKS holds no usable signature key", "url", v.cfg.JWKSURL)
	}
	v.rs.setKeys(newKeySet(keys))
}

// setBox lets an atomic.Value hold a jwk.Set, an interface.
type setBox struct{ s jwk.Set }

func (v *Verifier) loadedSet() jwk.Set {
	b, _ := v.set.Load().(setBox)
	return b.s
}

// keysOf converts the usable keys of a JWKS: public signature keys with a
// kid, of an algorithm we verify. Secrets and private parts are never taken
// from the network.
func (v *Verifier) keysOf(set jwk.Set) []*accessKey {
	var out []*accessKey
	for i := 0; i < set.Len(); i++ {
		k, ok := set.Key(i)
		if !ok {
			continue
		}
		kid, _ := k.KeyID()
		if use, ok := k.KeyUsage(); kid == "" || ok && use != "sig" || k.KeyType() == jwa.OctetSeq() {
			continue
		}
		pub, err := jwk.PublicKeyOf(k)
		if err != nil {
			continue
		}
		var raw any
		if err := jwk.Export(pub, &raw); err != nil {
			continue
		}
		alg := defaultAlgorithm(raw)
		if a, ok := k.Algorithm(); ok {
			alg = Algorithm(a.String())
		} else if k.KeyType() == jwa.RSA() {
			continue // RS256 or PS256: the set must say
		}
		ak, err := compileKey(Key{ID: kid, Algorithm: alg, Key: raw})
		if err != nil || ak.hmac {
			v.log.Warn("refresh: JWKS key skipped", "kid", kid, "err", err)
			continue
		}
		out = append(out, ak)
	}
	return out
}

// refetch is called for a kid the keys lack: it fetches the set again
// unless unknown kids caused a fetch less than JWKSRefetchInterval ago,
// and reports that the keys are worth looking at again. Callers that
// arrive while that fetch runs wait for it (at most fetchWait), so that
// the first requests with a newly published kid are not refused.
func (v *Verifier) refetch(string) bool {
	v.sync()
	now := v.rs.now()
	v.setMu.Lock()
	if ch := v.inflight; ch != nil {
		v.setMu.Unlock()
		<-ch
		return true
	}
	if !v.lastFetch.IsZero() && now.Before(v.lastFetch.Add(v.cfg.JWKSRefetchInterval)) {
		v.setMu.Unlock()
		return true
	}
	ch := make(chan struct{})
	v.lastFetch, v.inflight = now, ch
	v.setMu.Unlock()
	defer func() {
		v.setMu.Lock()
		v.inflight = nil
		v.setMu.Unlock()
		close(ch)
	}()
	// A request waits for this fetch; bound it like the first one.
	ctx, cancel := context.WithTimeout(context.Background(), fetchWait(v.cfg.HTTPClient))
	defer cancel()
	if _, err := v.cache.Refresh(ctx, v.cfg.JWKSURL); err != nil {
		v.log.Warn("refresh: JWKS fetch failed", "url", v.cfg.JWKSURL, "err", err)
	}
	v.sync()
	return true
}

// Verify checks an access token as Issuer.Verify does (every check but the
// session store's) and, with Introspection, asks the Issuer whether it is
// still active. Errors: the sentinels of Issuer.Verify (client errors:
// 401), ErrRevoked for a token introspection calls inactive, and
// ErrKeysUnavailable (a system fault: 503) while no keys are loaded or
// introspection fails.
func (v *Verifier) Verify(ctx context.Context, token string) (*Claims, error) {
	if v.resource != nil {
		v.sync()
		if v.rs.keys.Load() == nil {
			v.refetch("") // rate-limited like unknown kids
			if v.rs.keys.Load() == nil {
				return nil, fmt.Errorf("%w: no keys from %s yet", ErrKeysUnavailable, v.cfg.JWKSURL)
			}
		}
	}
	c, err := v.rs.verify(token)
	if err != nil {
		return nil, err
	}
	if v.intro != nil {
		if err := v.intro.check(ctx, token, c); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// Middleware is Issuer.Middleware over this Verifier.
func (v *Verifier) Middleware(opts ...MiddlewareOption) func(http.Handler) http.Handler {
	return newMiddleware(v.rs, v.Verify, opts)
}

// VerifyDPoPProof is Issuer.VerifyDPoPProof, with
// VerifierConfig.DPoPNonceLifetime for nonces.
func (v *Verifier) VerifyDPoPProof(proof, method, requestURL, accessToken string) (*DPoPProof, error) {
	return v.rs.verifyDPoPProof(proof, method, requestURL, accessToken)
}

// DPoPNonce returns the current DPoP nonce for a DPoP-Nonce header, or ""
// when VerifierConfig.DPoPNonceLifetime is not set. The middleware sends it
// itself; DPoPNonce is for answers written by hand.
func (v *Verifier) DPoPNonce() string { return v.rs.nonces.current() }

// RequestURL is Issuer.RequestURL, with VerifierConfig.PublicURL.
func (v *Verifier) RequestURL(r *http.Request) string { return v.rs.requestURL(r) }

// introspector asks an RFC 7662 endpoint, caching answers briefly.
type introspector struct {
	cfg    IntrospectionConfig
	ttl    time.Duration
	client *http.Client
	now    func() time.Time
	max    int        // cached answers; introCacheMax but in tests
	mu     sync.Mutex // guards cache
	cache  map[[32]byte]introAnswer
}

type introAnswer struct {
	active bool
	until  time.Time
}

const introCacheMax = 10000

func (in *introspector) check(ctx context.Context, token string, c *Claims) error {
	key := sha256.Sum256([]byte(token))
	now := in.now()
	if in.ttl > 0 {
		in.mu.Lock()
		a, ok := in.cache[key]
		in.mu.Unlock()
		if ok && now.Before(a.until) {
			if !a.active {
				return tokenErr(ErrRevoked, "introspection: token not active")
			}
			return nil
		}
	}
	active, err := in.ask(ctx, token)
	if err != nil {
		return fmt.Errorf("%w: introspection: %v", ErrKeysUnavailable, err)
	}
	if in.ttl > 0 {
		until := now.Add(in.ttl)
		if c.ExpiresAt.Before(until) {
			until = c.ExpiresAt
		}
		in.mu.Lock()
		if len(in.cache) >= in.max {
			clear(in.cache)
		}
		in.cache[key] = introAnswer{active: active, until: until}
		in.mu.Unlock()
	}
	if !active {
		return tokenErr(ErrRevoked, "introspection: token not active")
	}
	return nil
}

func (in *introspector) ask(ctx context.Context, token string) (bool, error) {
	form := url.Values{"token": {token}, "token_type_hint": {"access_token"}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, in.cfg.URL, strings.NewReader(form.Encode()))
	if err != nil {
		return false, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	req.SetBasicAuth(url.QueryEscape(in.cfg.ClientID), url.QueryEscape(in.cfg.ClientSecret))
	resp, err := in.client.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false, fmt.Errorf("status %d", resp.StatusCode)
	}
	var body struct {
		Active *bool `json:"active"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<16)).Decode(&body); err != nil || body.Active == nil {
		return false, errors.New("malformed response")
	}
	return *body.Active, nil
}
