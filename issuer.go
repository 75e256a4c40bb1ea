package refresh

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"
)

// Defaults and limits of Config.
const (
	DefaultAccessTTL       = 15 * time.Minute
	MaxAccessTTL           = time.Hour
	DefaultIdleTTL         = 14 * 24 * time.Hour
	DefaultSessionTTL      = 90 * 24 * time.Hour
	DefaultMaxTokenSize    = 8 << 10
	DefaultSessionCheckTTL = 2 * time.Second
	// DefaultRevokedRetention: revoked sessions stay a week for support
	// questions ("why was I logged out?") before Sweep removes them.
	DefaultRevokedRetention = 7 * 24 * time.Hour
	DefaultVerifyCacheSize  = 4096
	MaxLeeway               = 5 * time.Minute
)

// RefreshKey is a server secret that MACs refresh tokens. Its ID is written
// into every token so that keys can be rotated: Config.RefreshKeys[0] mints,
// all of them verify.
type RefreshKey struct {
	ID     uint8
	Secret []byte // at least 32 random bytes
}

// Config configures an Issuer. Zero durations take the documented defaults.
// NewIssuer copies it (keys included), so changing a Config afterwards does
// not affect the Issuer.
type Config struct {
	// Issuer is the iss claim, typically your service's URL. Required.
	Issuer string
	// Audience is the aud claim: the resource servers that accept the
	// access tokens. Verify requires it in aud. Required.
	Audience string
	// ClientID is the client_id claim of sessions that are not bound to a
	// client (issued without WithClientID). Default: Audience.
	ClientID string

	// Keys sign and verify access tokens. Keys[0] signs and must hold a
	// private key or secret; all verify. Give old keys after the new one to
	// rotate signing keys without logging anyone out. Required.
	Keys []Key
	// RefreshKeys MAC refresh tokens. RefreshKeys[0] mints; all verify.
	// Required.
	RefreshKeys []RefreshKey
	// Store keeps the sessions. Required.
	Store Store

	// AccessTTL is the lifetime of access tokens. Default 15 minutes, at
	// most one hour. A token minted less than AccessTTL before its
	// session's absolute end (SessionTTL) expires with the session.
	AccessTTL time.Duration
	// IdleTTL: a session whose refresh token is not used for this long
	// expires. Each rotation renews it. Default 14 days.
	IdleTTL time.Duration
	// SessionTTL is the absolute lifetime of a session from login. Rotation
	// never extends it, and no access token outlives it. An access token's
	// exp is whole seconds, so when the end falls within a second, the
	// session cannot be refreshed from that second's start on (a token
	// minted then would be expired already). Default 90 days.
	SessionTTL time.Duration
	// Grace is how long after a rotation the previous refresh token may
	// still be presented (a second tab, a lost response) and receives the
	// same successor. Zero (the default) is strict RFC 9700 rotation: any
	// second use is reuse and revokes the session. Within the window the
	// previous token never revokes the session, however many requests
	// present it. A thief holding the previous token can ride along within
	// the window too (SECURITY.md): bind sessions to a client or a DPoP key
	// when you turn grace on. The window is counted on either side of the
	// rotation's time, for instances whose clocks differ: keep them within
	// Grace of each other (NTP does). A rotation that looks later than now
	// by more than Grace is outside the window, and its previous token is
	// reuse.
	Grace time.Duration
	// RevokedRetention is how long Sweep keeps a revoked session before
	// deleting it, with a Store that is a StaleDeleter. Default 7 days;
	// negative keeps revoked sessions until they expire or go idle. A
	// deleted session's tokens are refused as unknown (invalid_grant), as
	// they were while revoked; only the reuse event is no longer emitted
	// for them. Keep audit trails from OnEvent, not from the store.
	RevokedRetention time.Duration
	// MaxGraceUses, if above zero, bounds the grace retries per rotation:
	// further retries are refused (ErrInvalidToken) without revoking the
	// session. Zero (the default) sets no bound, so a burst of any size
	// (many tabs waking up together) receives the successor; a bound adds
	// little security, since a thief needs only one retry, and costs a
	// store write per retry.
	MaxGraceUses int
	// MaxSessions, if above zero, bounds the live sessions of one subject:
	// Issue revokes the least recently used beyond it (event reason
	// "session-limit"), so that neither a user nor someone with their
	// password can pile up sessions, and store rows, without bound. Zero
	// (the default) sets no bound. It costs Issue one Sessions call on the
	// store. Sign-ins of one subject at the same instant may each see the
	// others' sessions as new and leave the bound exceeded by as many until
	// the next Issue.
	MaxSessions int
	// Leeway tolerates clock skew in exp and nbf checks. Default 0, at
	// most 5 minutes.
	Leeway time.Duration
	// MaxTokenSize: longer access tokens are refused before parsing.
	// Default 8 KiB.
	MaxTokenSize int
	// VerifyCacheSize bounds a cache of access tokens that passed every
	// check of Verify, so that a token presented again skips the signature
	// and parsing; expiry and the session check still run on every hit.
	// Default 4096 tokens; negative disables it.
	VerifyCacheSize int

	// CheckSession makes Verify also reject access tokens whose session is
	// revoked or gone, so that logout takes effect at once instead of when
	// the access token expires. Answers are cached per session for
	// SessionCheckTTL (default 2 s); revocations through this Issuer
	// bypass the cache immediately.
	CheckSession    bool
	SessionCheckTTL time.Duration

	// DPoPNonceLifetime, if above zero, makes the Issuer require a server
	// nonce in DPoP proofs (RFC 9449 §8, §9), in its handlers, its
	// middleware and VerifyDPoPProof: a proof without a current one is
	// answered use_dpop_nonce with a fresh nonce in the DPoP-Nonce header,
	// and the client retries with it; token responses carry the current
	// nonce too, and so does an API answer to a proof whose nonce is
	// about to expire. This bounds how long a proof made in advance (by
	// injected script, say) stays usable.
	// Nonces change every half lifetime and are accepted for at least half
	// and at most the whole of it; every instance with the same
	// RefreshKeys mints and accepts the same ones, without a store. Zero
	// (the default): no nonces. Between 2 s and 24 h. A Verifier requires
	// nonces of its own with VerifierConfig.DPoPNonceLifetime.
	DPoPNonceLifetime time.Duration

	// PublicURL is scheme://host of this service as clients see it, for the
	// htu check of DPoP proofs behind proxies. Default: taken from each
	// request (its TLS state and Host header).
	PublicURL string

	// OnRefresh, if set, runs before every successful refresh with the
	// session's details. It may replace info.Claims (reloading roles, say)
	// for the new access token, or return an error to refuse: Rotate then
	// returns an error wrapping both ErrRefused and the hook's error and
	// changes nothing. Claims Issue would refuse (a registered name in any
	// spelling, say) fail the refresh as a system error, not the client's
	// (503 at the endpoint), and change nothing. It must be safe for
	// concurrent use.
	OnRefresh func(ctx context.Context, info *RefreshInfo) error
	// OnEvent, if set, receives every issue, rotation, grace retry, reuse,
	// revocation and expiry, synchronously, for audit logs and metrics.
	// Event implements slog.LogValuer. It must be safe for concurrent use
	// and should be quick.
	OnEvent func(ctx context.Context, e Event)

	// Now is the clock. Default time.Now. Tests inject their own. The
	// Issuer reads it in UTC: every time it hands a Store is UTC, so that
	// a store keeping wall clocks without their zone (a Postgres
	// timestamp without time zone) still keeps the right instants on a
	// host whose local zone is not UTC.
	Now func() time.Time
}

// RefreshInfo is what Config.OnRefresh sees of a session being refreshed.
// Each call gets its own copy, which the hook may change.
type RefreshInfo struct {
	SessionID string
	Subject   string
	ClientID  string
	Scope     []string // the scope the new access token will carry
	// Claims are the application claims the session was issued with, as
	// Claims.Extra has them (numbers are json.Number, so that those the
	// hook leaves alone are signed again exactly as given); the hook may
	// change or replace them.
	Claims map[string]any
	Meta   map[string]string // metadata given at login
}

// EventKind names what happened to a session.
type EventKind string

// The events delivered to Config.OnEvent.
const (
	EventIssued   EventKind = "issued"   // a session started
	EventRotated  EventKind = "rotated"  // a refresh token was rotated
	EventGrace    EventKind = "grace"    // a grace retry received the current successor
	EventReused   EventKind = "reused"   // a rotated token was reused; the session was revoked
	EventRevoked  EventKind = "revoked"  // a session, or all of a subject's, was revoked
	EventExpired  EventKind = "expired"  // a refresh was refused because the session expired
	EventRejected EventKind = "rejected" // a refresh was refused by OnRefresh
)

// Event describes one thing that happened to a session. It is a plain
// value, passed by copy.
type Event struct {
	Kind       EventKind
	Time       time.Time
	SessionID  string // empty for a revocation of a whole subject
	Subject    string
	ClientID   string
	Generation uint64 // generation presented (rotations, reuse) or current
	Reason     string // revocation reason, or how many sessions (subject)
}

// LogValue makes Event print as a group of attributes with log/slog.
func (e Event) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("kind", string(e.Kind)),
		slog.Time("time", e.Time),
		slog.String("sid", e.SessionID),
		slog.String("sub", e.Subject),
		slog.String("client_id", e.ClientID),
		slog.Uint64("generation", e.Generation),
		slog.String("reason", e.Reason),
	)
}

// Pair is what a login or a refresh returns: a new access token and the
// refresh token that must be presented next time. It is a plain value that
// nothing modifies after it is returned, safe to read from several
// goroutines, and the caller's own: changing it, Scope included, changes
// nothing in the Issuer.
type Pair struct {
	AccessToken      string
	TokenType        string // "Bearer", or "DPoP" for a session bound with WithDPoP
	AccessExpiresAt  time.Time
	RefreshToken     string
	RefreshExpiresAt time.Time // when the refresh token expires if unused
	SessionID        string
	Subject          string
	Scope            []string // scope of the access token
}

// Issuer mints, rotates, verifies and revokes tokens. Create it with
// NewIssuer; it is safe for concurrent use by multiple goroutines, and
// several processes may share one Store.
type Issuer struct {
	cfg       Config
	now       func() time.Time
	store     Store
	signer    *accessKey
	rs        *resourceServer // verification of access tokens and DPoP proofs
	jwks      []byte
	mintKey   *refreshKey
	macKeys   [256]*refreshKey
	maxGrace  uint32
	sessCache sessionCache
	active    ActiveAdvancer // the store's one-round-trip swap, or nil
	frozen    *frozenCache   // non-nil with active
}

// NewIssuer checks cfg and returns an Issuer. It refuses a missing issuer,
// audience, store, key or refresh key; an HMAC secret shorter than its hash;
// an RSA key under 2048 bits; a refresh key under 32 bytes; duplicate key
// ids; a key without an algorithm; and lifetimes that contradict each other
// (an access token outliving the idle lifetime, an idle lifetime longer
// than the session).
func NewIssuer(cfg Config) (*Issuer, error) {
	if cfg.Issuer == "" {
		return nil, errors.New("refresh: Config.Issuer is required")
	}
	if cfg.Audience == "" {
		return nil, errors.New("refresh: Config.Audience is required")
	}
	if cfg.Store == nil {
		return nil, errors.New("refresh: Config.Store is required")
	}
	if cfg.ClientID == "" {
		cfg.ClientID = cfg.Audience
	}
	setDefault(&cfg.AccessTTL, DefaultAccessTTL)
	setDefault(&cfg.IdleTTL, DefaultIdleTTL)
	setDefault(&cfg.SessionTTL, DefaultSessionTTL)
	setDefault(&cfg.SessionCheckTTL, DefaultSessionCheckTTL)
	setDefault(&cfg.RevokedRetention, DefaultRevokedRetention)
	if cfg.MaxTokenSize == 0 {
		cfg.MaxTokenSize = DefaultMaxTokenSize
	}
	cfg.Now = utcClock(cfg.Now)
	switch {
	case cfg.AccessTTL < 0 || cfg.IdleTTL < 0 || cfg.SessionTTL < 0 || cfg.Grace < 0 || cfg.Leeway < 0 || cfg.SessionCheckTTL < 0:
		return nil, errors.New("refresh: durations must not be negative")
	case cfg.AccessTTL > MaxAccessTTL:
		return nil, fmt.Errorf("refresh: AccessTTL %v is over the maximum of %v", cfg.AccessTTL, MaxAccessTTL)
	case cfg.AccessTTL < time.Second:
		return nil, errors.New("refresh: AccessTTL must be at least one second")
	case cfg.AccessTTL > cfg.IdleTTL:
		return nil, fmt.Errorf("refresh: AccessTTL %v is longer than IdleTTL %v", cfg.AccessTTL, cfg.IdleTTL)
	case cfg.IdleTTL > cfg.SessionTTL:
		return nil, fmt.Errorf("refresh: IdleTTL %v is longer than SessionTTL %v", cfg.IdleTTL, cfg.SessionTTL)
	case cfg.Grace >= cfg.IdleTTL:
		return nil, fmt.Errorf("refresh: Grace %v must be shorter than IdleTTL %v", cfg.Grace, cfg.IdleTTL)
	case cfg.Leeway > MaxLeeway:
		return nil, fmt.Errorf("refresh: Leeway %v is over the maximum of %v", cfg.Leeway, MaxLeeway)
	case cfg.MaxGraceUses < 0 || cfg.MaxGraceUses > 1<<20:
		return nil, errors.New("refresh: MaxGraceUses out of range")
	case cfg.MaxSessions < 0:
		return nil, errors.New("refresh: MaxSessions must not be negative")
	case cfg.DPoPNonceLifetime != 0 && (cfg.DPoPNonceLifetime < 2*time.Second || cfg.DPoPNonceLifetime > 24*time.Hour):
		return nil, errors.New("refresh: DPoPNonceLifetime must be 0 or between 2s and 24h")
	case cfg.MaxTokenSize < 256:
		return nil, errors.New("refresh: MaxTokenSize must be at least 256 bytes")
	}

	iss := &Issuer{cfg: cfg, now: cfg.Now, store: cfg.Store, maxGrace: uint32(cfg.MaxGraceUses)}
	if len(cfg.Keys) == 0 {
		return nil, errors.New("refresh: Config.Keys needs at least one key")
	}
	all, err := compileKeys(cfg.Keys)
	if err != nil {
		return nil, err
	}
	if iss.signer = all[0]; iss.signer.sign == nil {
		return nil, errors.New("refresh: Config.Keys[0] signs and needs a private key or secret")
	}
	jwks, err := buildJWKS(all)
	if err != nil {
		return nil, fmt.Errorf("refresh: JWKS: %w", err)
	}
	iss.jwks = jwks

	if len(cfg.RefreshKeys) == 0 {
		return nil, errors.New("refresh: Config.RefreshKeys needs at least one key")
	}
	for i, rk := range cfg.RefreshKeys {
		if len(rk.Secret) < 32 {
			return nil, fmt.Errorf("refresh: refresh key %d: secret of %d bytes is under the 32 bytes required", rk.ID, len(rk.Secret))
		}
		if iss.macKeys[rk.ID] != nil {
			return nil, fmt.Errorf("refresh: duplicate refresh key id %d", rk.ID)
		}
		for _, k := range cfg.Keys {
			// An HMAC signing secret is shared with every resource server
			// that verifies with it; as a refresh key it would let each of
			// them (with a copy of the store) mint refresh tokens and this
			// Issuer's DPoP nonces.
			if secret, ok := k.Key.([]byte); ok && bytes.Equal(secret, rk.Secret) {
				return nil, fmt.Errorf("refresh: refresh key %d has the secret of signing key %q: give refresh tokens a secret of their own", rk.ID, k.ID)
			}
		}
		k := newRefreshKey(rk)
		iss.macKeys[rk.ID] = k
		if i == 0 {
			iss.mintKey = k
		}
	}
	iss.sessCache.init(cfg.SessionCheckTTL)
	if cfg.VerifyCacheSize == 0 {
		cfg.VerifyCacheSize = DefaultVerifyCacheSize
	}
	iss.rs = newResourceServer(cfg.Issuer, cfg.Audience, cfg.PublicURL, cfg.Leeway, cfg.MaxTokenSize, cfg.VerifyCacheSize, cfg.Now)
	iss.rs.setKeys(newKeySet(all))
	if cfg.DPoPNonceLifetime > 0 {
		secrets := make([][]byte, len(cfg.RefreshKeys))
		for i, rk := range cfg.RefreshKeys {
			secrets[i] = rk.Secret
		}
		iss.rs.nonces = newNonceSource(cfg.DPoPNonceLifetime, secrets, cfg.Now)
	}
	if pr, ok := cfg.Store.(ProofRecorder); ok {
		iss.rs.proofs = pr
	}
	if a, ok := cfg.Store.(ActiveAdvancer); ok {
		iss.active = a
		iss.frozen = newFrozenCache()
	}
	return iss, nil
}

func setDefault(d *time.Duration, def time.Duration) {
	if *d == 0 {
		*d = def
	}
}

func (iss *Issuer) emit(ctx context.Context, e Event) {
	if iss.cfg.OnEvent != nil {
		iss.cfg.OnEvent(ctx, e)
	}
}

// Grace returns the configured grace window.
func (iss *Issuer) Grace() time.Duration { return iss.cfg.Grace }

// AccessTTL returns the configured access-token lifetime.
func (iss *Issuer) AccessTTL() time.Duration { return iss.cfg.AccessTTL }

// utcClock returns now (time.Now if nil) read in UTC.
func utcClock(now func() time.Time) func() time.Time {
	if now == nil {
		now = time.Now
	}
	return func() time.Time { return now().UTC() }
}

// Now returns the Issuer's clock reading, in UTC.
func (iss *Issuer) Now() time.Time { return iss.now() }

// Option varies one call of Issue or Rotate.
type Option func(*callOptions)

type callOptions struct {
	dpop     string
	proof    *DPoPProof
	clientID string
	scope    []string
	scopeSet bool
	claims   map[string]any
	meta     map[string]string
	// WithAuthTime's, or nil: a pointer, so that the options every
	// refresh request allocates stay in their size class.
	authTime *time.Time
}

// WithClientID: for Issue, binds the session to a client, so that only that
// client may refresh it (RFC 6749 §10.4). For Rotate, the client presenting
// the refresh token; a bound session refuses any other.
func WithClientID(id string) Option { return func(o *callOptions) { o.clientID = id } }

// WithDPoP: for Issue, binds the session to the DPoP key with this RFC 7638
// thumbprint (DPoPProof.Thumbprint): its refresh tokens then rotate only
// with a proof from that key, and its access tokens carry cnf.jkt and are
// of type "DPoP" (RFC 9449). For Rotate, the thumbprint of the verified
// proof that came with the request; a bound session refuses any other, or
// none, without being revoked.
//
// WithDPoP does not guard against a replayed proof: prefer WithDPoPProof,
// which does, and use WithDPoP only with a thumbprint known some other way
// (for Issue) or a proof whose replay you have ruled out yourself.
func WithDPoP(thumbprint string) Option { return func(o *callOptions) { o.dpop = thumbprint } }

// WithDPoPProof is WithDPoP with the verified proof of the request
// (Handlers.DPoPProof or VerifyDPoPProof): Issue binds the session to its
// key; Rotate and Revoke require it to be from the session's key. The proof
// is consumed, and a replayed one refused, only once the call has checked
// everything else it can (for Rotate and Revoke, the token's MAC), so that
// unauthenticated requests never fill the replay cache. A nil proof is
// ignored: the request came without one.
func WithDPoPProof(p *DPoPProof) Option {
	return func(o *callOptions) {
		if p != nil {
			o.proof, o.dpop = p, p.Thumbprint
		}
	}
}

// WithScope: for Issue, the scope granted to the session. For Rotate, a
// narrower scope for the new access token only (RFC 6749 §6); asking for
// more than granted fails with ErrInvalidScope. A scope is a set (RFC 6749
// §3.3): a token given more than once is kept once, where it first
// appears.
func WithScope(scope ...string) Option {
	return func(o *callOptions) { o.scope, o.scopeSet = scope, true }
}

// WithClaims (Issue only) adds application claims, such as roles, to every
// access token of the session. Registered claim names (iss, sub, aud, exp,
// nbf, iat, auth_time, jti, client_id, sid, scope, cnf) are refused: the
// Issuer writes them. So are names that Go's encoding/json would read as
// one of them or as each other: it matches names to struct fields ignoring
// case (Unicode folding: "SUB", "ſub"), its v2 ignores '-' and '_' too,
// and the last member wins, so a claim named "EXP" or "Sub" would set the
// expiry or subject that a resource server decoding into a struct
// (golang-jwt's RegisteredClaims) reads. Mind this where claim names come
// from users (profile attributes): nest those under one claim of yours.
// Authentication claims the Issuer cannot know, such as acr and amr (RFC
// 9068 §2.2.1), are the login handler's to set here; RequireACR reads
// acr. They are encoded with encoding/json once, at Issue,
// and signed into every later token exactly so; Verify hands their numbers
// back as json.Number (Claims.Extra).
func WithClaims(claims map[string]any) Option { return func(o *callOptions) { o.claims = claims } }

// WithAuthTime (Issue only) says when the user authenticated, for a login
// that accepts an earlier authentication instead of checking credentials
// now: an identity provider's auth_time (OpenID Connect ID token), a single
// sign-on session, a "remember me" cookie. The session's access tokens then
// carry t as auth_time, and the session's CreatedAt is t, so that
// RequireRecentAuth measures from the authentication that really happened,
// not from the Issue that relayed it. Without it, auth_time is when Issue
// runs, which is right only for a login that has just checked the user's
// credentials itself. Take t only from what authenticated the user (the
// provider's signed ID token, your own record of the remembered sign-in),
// never from the request: whoever controls t passes every step-up guard.
//
// Issue refuses with ErrInvalidRequest, before anything is stored or a
// DPoP proof consumed, a zero t (an identity provider that did not say
// when: ask it for auth_time, with OIDC max_age, rather than claim now), a
// t before 1970, and a t after its clock plus Config.Leeway; a t within
// the leeway ahead of its clock (an identity provider's clock a little
// fast) is taken as now. auth_time has a precision of one second: tokens
// carry t's whole seconds, which make the authentication look older by
// less than a second, never fresher. Rotate ignores it: a refresh never
// changes auth_time.
func WithAuthTime(t time.Time) Option {
	return func(o *callOptions) { o.authTime = &t }
}

// WithMeta (Issue only) records metadata of the session, such as device,
// user agent or IP address, shown by Sessions. It never enters a token.
// Keys and values together may hold at most MaxMetaBytes once made valid
// text; Issue refuses more with ErrInvalidRequest. Values often come from
// the request (a User-Agent header can be a megabyte): cut them to what a
// devices page shows.
func WithMeta(meta map[string]string) Option { return func(o *callOptions) { o.meta = meta } }

func collect(opts []Option) callOptions {
	if len(opts) == 0 {
		return callOptions{} // without escaping to the heap
	}
	o := new(callOptions)
	for _, f := range opts {
		f(o)
	}
	return *o
}

// sessionCache remembers, per session id, whether Verify may accept its
// access tokens, for a short time.
//
// A revocation through this Issuer forgets the session's entry and advances
// epoch; an answer read from the store is cached only if no revocation
// happened since the read began (put's epoch), so that a read racing a
// revocation cannot put the session back as live.
type sessionCache struct {
	ttl   time.Duration
	max   int        // entries; sessionCacheMax but in tests
	mu    sync.Mutex // guards m and epoch
	m     map[string]cacheEntry
	epoch uint64
}

type cacheEntry struct {
	err     error // nil: live
	checked time.Time
}

const sessionCacheMax = 1 << 16

func (c *sessionCache) init(ttl time.Duration) {
	c.ttl, c.max = ttl, sessionCacheMax
	c.m = make(map[string]cacheEntry)
}

func (c *sessionCache) get(sid string, now time.Time) (error, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[sid]
	if !ok || now.Sub(e.checked) >= c.ttl || now.Before(e.checked) {
		return nil, false
	}
	return e.err, true
}

// begin returns the epoch to give put for an answer about to be read.
func (c *sessionCache) begin() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.epoch
}

// put caches the answer read since begin returned epoch, unless a
// revocation came in between.
func (c *sessionCache) put(sid string, err error, now time.Time, epoch uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.epoch != epoch {
		return // a revocation happened during the read: the answer may be stale
	}
	if len(c.m) >= c.max {
		clear(c.m) // bounded: start over rather than grow
	}
	c.m[sid] = cacheEntry{err: err, checked: now}
}

func (c *sessionCache) forget(sid string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.epoch++
	if sid == "" {
		clear(c.m)
		return
	}
	delete(c.m, sid)
}

// errStoreContract is the system fault a store's answer that breaks the
// Store contract becomes, rather than a panic or a wrong decision.
var errStoreContract = errors.New("refresh: the store broke its contract")

// getSession is store.Get, refusing an answer no correct store gives: no
// session and no error, or another session than the one asked for. A store
// with such a bug makes its calls fail as an outage does (503), instead of
// crashing the request or judging one session by another's record.
func (iss *Issuer) getSession(ctx context.Context, id string) (*Session, error) {
	s, err := iss.store.Get(ctx, id)
	switch {
	case err != nil:
		return nil, err
	case s == nil:
		return nil, fmt.Errorf("%w: Get(%q) returned neither a session nor an error", errStoreContract, id)
	case s.ID != id:
		return nil, fmt.Errorf("%w: Get(%q) returned session %q", errStoreContract, id, s.ID)
	}
	return s, nil
}

// sessionsOf is store.Sessions without what no correct store returns: nil
// entries and other subjects' sessions (a store matching subjects loosely).
func (iss *Issuer) sessionsOf(ctx context.Context, subject string) ([]*Session, error) {
	all, err := iss.store.Sessions(ctx, subject)
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(all, func(s *Session) bool { return s == nil || s.Subject != subject }), nil
}

// checkSession rejects access tokens of sessions that are revoked, expired
// or gone.
func (iss *Issuer) checkSession(ctx context.Context, sid string) error {
	if sid == "" {
		return tokenErr(ErrInvalidToken, "no sid claim")
	}
	now := iss.now()
	if err, ok := iss.sessCache.get(sid, now); ok {
		return err
	}
	epoch := iss.sessCache.begin()
	s, err := iss.getSession(ctx, sid)
	var verdict error
	switch {
	case errors.Is(err, ErrSessionNotFound):
		verdict = tokenErr(ErrRevoked, "session gone")
	case err != nil:
		return storeErr("get", err)
	case s.Revoked():
		verdict = tokenErr(ErrRevoked, "session revoked")
	case !now.Before(s.ExpiresAt):
		verdict = tokenErr(ErrRevoked, "session expired")
	}
	iss.sessCache.put(sid, verdict, now, epoch)
	return verdict
}

// frozenMax bounds the sessions whose immutable part an Issuer remembers
// for one-round-trip rotation (about 400 bytes each with typical claims).
const frozenMax = 1 << 16

// frozenCache remembers, per session, what never changes after Issue: the
// seed, subject, bindings, scope, claims, metadata and lifetimes, and the
// session check under the minting key. With a Store that is an
// ActiveAdvancer it lets Rotate check a token's MAC and absolute expiry
// locally and leave only what can change (generation, revocation, idle
// lifetime) to one atomic store call. At most frozenMax sessions, in a
// genCache sharded by the session id's first byte (random: the Issuer
// mints it); a nil *frozenCache is disabled.
type frozenCache struct {
	m *genCache[[sessionIDLen]byte, *frozenSession]
}

func newFrozenCache() *frozenCache {
	return &frozenCache{m: newGenCache[[sessionIDLen]byte, *frozenSession](frozenMax, func(sid [sessionIDLen]byte) uint { return uint(sid[0]) })}
}

// frozenSession is the immutable part of a session (its mutable fields are
// never read; the seed is not kept, its binding is), its check under the
// Issuer's minting key and its binding.
type frozenSession struct {
	Session
	check   [checkLen]byte
	binding [sha256.Size]byte
}

func (c *frozenCache) get(sid *[sessionIDLen]byte) *frozenSession {
	if c == nil {
		return nil
	}
	f, _ := c.m.get(*sid)
	return f
}

// put remembers the immutable part of s, its check and its binding.
func (c *frozenCache) put(sid *[sessionIDLen]byte, s *Session, check *[checkLen]byte, bound *[sha256.Size]byte) {
	if c == nil {
		return
	}
	c.m.put(*sid, &frozenSession{Session: Session{ID: s.ID, Subject: s.Subject, ClientID: s.ClientID, DPoPKey: s.DPoPKey,
		Scope: s.Scope, Claims: s.Claims, Meta: s.Meta, CreatedAt: s.CreatedAt, ExpiresAt: s.ExpiresAt},
		check: *check, binding: *bound})
}

// Verify checks an access token and returns its claims. It refuses, with an
// error wrapping ErrInvalidToken (or ErrExpired, ErrRevoked):
//   - tokens longer than Config.MaxTokenSize, before any parsing;
//   - anything but a three-part JWS compact serialization in canonical
//     base64url, and headers or claims with duplicate members;
//   - alg "none" and every algorithm other than the selected key's; an
//     unknown kid, or no kid when several keys exist; any crit header;
//     jku, x5u, jwk and x5c headers are ignored, never fetched;
//   - typ other than "at+jwt" or "application/at+jwt" (case-insensitive);
//   - a bad signature; iss other than Config.Issuer; aud without
//     Config.Audience; missing sub, iat or jti;
//   - missing or passed exp, nbf in the future (both with Config.Leeway);
//   - with Config.CheckSession, a token whose session is revoked, expired or
//     gone (ErrRevoked).
//
// The Claims are the caller's to keep and to change, down to the values in
// Extra: a token seen before is answered from a cache, which hands out deep
// copies, so a change is seen by no other call.
//
// Verify is safe for concurrent use.
func (iss *Issuer) Verify(ctx context.Context, token string) (*Claims, error) {
	c, err := iss.rs.verify(token)
	if err != nil {
		return nil, err
	}
	if iss.cfg.CheckSession {
		if err := iss.checkSession(ctx, c.SessionID); err != nil {
			return nil, err
		}
	}
	return c, nil
}
