package refresh

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// BearerError is what the bearer middleware and its guards refuse a request
// with. It is given to the error handler (WithErrorHandler); the default
// handler writes the RFC 6750 §3 response for it. Err, the cause, is for
// logs only and is never written to the client.
type BearerError struct {
	Scheme string // "Bearer", or "DPoP" for DPoP-bound tokens (RFC 9449 §7.1)
	Status int    // 400, 401, 403, or 503 when the session store failed
	Code   string // "invalid_request", "invalid_token", "insufficient_scope", "insufficient_user_authentication", or "" when no credentials were sent
	Scope  string // the scope a 403 requires, space-separated
	// MaxAge and ACRValues, with Code "insufficient_user_authentication",
	// are what the route requires (RFC 9470 §3): a sign-in at most MaxAge
	// ago (RequireRecentAuth), one of the space-separated ACRValues
	// (RequireACR).
	MaxAge    time.Duration
	ACRValues string
	Nonce     string // with Code "use_dpop_nonce": the DPoP-Nonce header to send
	Err       error  // the cause
}

// Error describes the refusal and its cause, for logs.
func (e *BearerError) Error() string {
	msg := "refresh: bearer: " + http.StatusText(e.Status)
	if e.Code != "" {
		msg += " (" + e.Code + ")"
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

// Unwrap returns the cause.
func (e *BearerError) Unwrap() error { return e.Err }

// ErrorHandler answers a refused request.
type ErrorHandler func(w http.ResponseWriter, r *http.Request, err *BearerError)

// MiddlewareOption configures Middleware.
type MiddlewareOption func(*middleware)

// WithRealm sets the realm of WWW-Authenticate challenges (default "api").
func WithRealm(realm string) MiddlewareOption {
	return func(m *middleware) { m.realm = realm }
}

// WithErrorHandler replaces the RFC 6750 answer to refused requests, for
// applications that answer differently or want to log. The guards
// RequireScope, RequireRole, RequireRecentAuth and RequireACR use it too.
func WithErrorHandler(h ErrorHandler) MiddlewareOption {
	return func(m *middleware) { m.onError = h }
}

type middleware struct {
	rs      *resourceServer
	verify  func(context.Context, string) (*Claims, error) // Issuer.Verify or Verifier.Verify
	realm   string
	onError ErrorHandler
}

type ctxKey struct{}

type authInfo struct {
	claims *Claims
	scheme string
	mw     *middleware
}

// ClaimsFromContext returns the claims of the verified access token of the
// request, as stored by Middleware. They are this request's own copy: a
// handler may change them without affecting any other request.
func ClaimsFromContext(ctx context.Context) (*Claims, bool) {
	a, ok := ctx.Value(ctxKey{}).(*authInfo)
	if !ok {
		return nil, false
	}
	return a.claims, true
}

// Middleware returns net/http middleware that admits only requests with a
// valid access token in an "Authorization: Bearer" header (RFC 6750 §2.1;
// the scheme is case-insensitive), or, for tokens bound to a DPoP key, an
// "Authorization: DPoP" header with a DPoP proof from that key for this
// request (RFC 9449 §7). Tokens in the query string or form body
// are never read (RFC 9700 §4.3.2). The verified Claims are stored in the
// request context (ClaimsFromContext). Refusals follow RFC 6750 §3:
//
//   - no bearer credentials: 401 with WWW-Authenticate: Bearer realm="…";
//   - a malformed Authorization header (several, empty token, bad
//     characters): 400 invalid_request;
//   - a token that Verify refuses: 401 with error="invalid_token";
//   - a DPoP-bound token with a bad or missing proof: 401 with the DPoP
//     scheme and error="invalid_dpop_proof" (or "invalid_token" for a
//     proof from another key); with Config.DPoPNonceLifetime, a proof
//     without a current nonce: 401 error="use_dpop_nonce" and a fresh
//     DPoP-Nonce header (RFC 9449 §9), and a request admitted with a
//     nonce about to expire gets the next one in DPoP-Nonce;
//   - a failing session store (Config.CheckSession): 503.
//
// The handler it returns is safe for concurrent use.
func (iss *Issuer) Middleware(opts ...MiddlewareOption) func(http.Handler) http.Handler {
	return newMiddleware(iss.rs, iss.Verify, opts)
}

func newMiddleware(rs *resourceServer, verify func(context.Context, string) (*Claims, error), opts []MiddlewareOption) func(http.Handler) http.Handler {
	m := &middleware{rs: rs, verify: verify, realm: "api"}
	for _, o := range opts {
		o(m)
	}
	if m.onError == nil {
		m.onError = m.writeError
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			scheme, tok, berr := bearerToken(r, m.rs.vcache)
			if berr != nil {
				m.onError(w, r, berr)
				return
			}
			claims, err := m.verify(r.Context(), tok)
			if err != nil {
				if IsClientError(err) {
					m.onError(w, r, &BearerError{Scheme: scheme, Status: http.StatusUnauthorized, Code: "invalid_token", Err: err})
				} else {
					m.onError(w, r, &BearerError{Scheme: scheme, Status: http.StatusServiceUnavailable, Err: err})
				}
				return
			}
			renew, berr := m.checkDPoP(r, scheme, tok, claims)
			if berr != nil {
				m.onError(w, r, berr)
				return
			}
			if renew {
				// The proof's nonce is about to expire: the next one now
				// saves the client a refused request (RFC 9449 §8.2).
				w.Header().Set("DPoP-Nonce", m.rs.nonces.current())
			}
			ctx := context.WithValue(r.Context(), ctxKey{}, &authInfo{claims: claims, scheme: scheme, mw: m})
			next.ServeHTTP(w, r.WithContext(ctx))
		})
	}
}

var errNoCredentials = errors.New("no bearer credentials")

// checkDPoP enforces RFC 9449 §7: a token bound to a DPoP key is admitted
// only with the DPoP scheme and a proof from that key for this request and
// this token; an unbound token is not admitted with the DPoP scheme. renew
// reports an admitted proof whose nonce is of the previous slot.
func (m *middleware) checkDPoP(r *http.Request, scheme, tok string, c *Claims) (renew bool, _ *BearerError) {
	fail := func(code string, err error) (bool, *BearerError) {
		return false, &BearerError{Scheme: "DPoP", Status: http.StatusUnauthorized, Code: code, Err: err}
	}
	switch {
	case c.DPoPKey == "" && scheme == "DPoP":
		return fail("invalid_token", errors.New("bearer token sent with the DPoP scheme"))
	case c.DPoPKey == "":
		return false, nil
	case scheme != "DPoP":
		return fail("invalid_token", errors.New("DPoP-bound token sent as a bearer token"))
	}
	proofs := r.Header.Values("DPoP")
	if len(proofs) != 1 {
		return fail("invalid_dpop_proof", errors.New("want exactly one DPoP header"))
	}
	p, err := m.rs.verifyDPoPProof(proofs[0], r.Method, m.rs.requestURL(r), tok)
	if errors.Is(err, ErrUseDPoPNonce) {
		_, e := fail("use_dpop_nonce", err)
		e.Nonce = m.rs.nonces.current()
		return false, e
	}
	if err != nil {
		return fail("invalid_dpop_proof", err)
	}
	if p.Thumbprint != c.DPoPKey {
		return fail("invalid_token", errors.New("DPoP proof from another key"))
	}
	// Only now, with the token's signature and its key binding checked, may
	// the proof take a place in the replay cache.
	if err := m.rs.consumeDPoP(r.Context(), p); err != nil {
		if !IsClientError(err) {
			return false, &BearerError{Scheme: "DPoP", Status: http.StatusServiceUnavailable, Err: err}
		}
		return fail("invalid_dpop_proof", err)
	}
	return p.renewNonce, nil
}

// bearerToken extracts the scheme ("Bearer" or "DPoP") and the token of the
// Authorization header. A token in seen, the cache of tokens that passed
// every check, is known to be well formed; the scan of every other one
// is a fifth of what a seen token costs the middleware.
func bearerToken(r *http.Request, seen *verifyCache) (string, string, *BearerError) {
	vals := r.Header.Values("Authorization")
	if len(vals) == 0 {
		return "", "", &BearerError{Scheme: "Bearer", Status: http.StatusUnauthorized, Err: errNoCredentials}
	}
	if len(vals) > 1 {
		return "", "", &BearerError{Scheme: "Bearer", Status: http.StatusBadRequest, Code: "invalid_request", Err: errors.New("several Authorization headers")}
	}
	scheme, tok, _ := strings.Cut(vals[0], " ")
	switch {
	case strings.EqualFold(scheme, "Bearer"):
		scheme = "Bearer"
	case strings.EqualFold(scheme, "DPoP"):
		scheme = "DPoP"
	default:
		// Another scheme (Basic...) is not bearer credentials.
		return "", "", &BearerError{Scheme: "Bearer", Status: http.StatusUnauthorized, Err: errNoCredentials}
	}
	tok = strings.TrimLeft(tok, " ")
	if seen.get(tok) == nil && !isB64Token(tok) {
		return "", "", &BearerError{Scheme: scheme, Status: http.StatusBadRequest, Code: "invalid_request", Err: errors.New("malformed bearer token")}
	}
	return scheme, tok, nil
}

// isB64Token reports whether s matches RFC 6750's b64token:
// 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
func isB64Token(s string) bool {
	i := 0
	for ; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			c == '-' || c == '.' || c == '_' || c == '~' || c == '+' || c == '/') {
			break
		}
	}
	if i == 0 {
		return false
	}
	for ; i < len(s); i++ {
		if s[i] != '=' {
			return false
		}
	}
	return true
}

// writeError is the default ErrorHandler: RFC 6750 §3.
func (m *middleware) writeError(w http.ResponseWriter, r *http.Request, e *BearerError) {
	h := w.Header()
	if e.Status == http.StatusServiceUnavailable {
		writeJSONError(w, e.Status, "temporarily_unavailable")
		return
	}
	scheme := e.Scheme
	if scheme == "" {
		scheme = "Bearer"
	}
	challenge := scheme + ` realm="` + quoteEscape(m.realm) + `"`
	if e.Code != "" {
		challenge += `, error="` + e.Code + `"`
	}
	if e.Scope != "" {
		challenge += `, scope="` + quoteEscape(e.Scope) + `"`
	}
	if e.MaxAge > 0 {
		challenge += `, max_age="` + strconv.FormatInt(int64(e.MaxAge/time.Second), 10) + `"`
	}
	if e.ACRValues != "" {
		challenge += `, acr_values="` + quoteEscape(e.ACRValues) + `"`
	}
	if scheme == "DPoP" {
		challenge += `, algs="` + dpopAlgs + `"`
	}
	h.Set("WWW-Authenticate", challenge)
	if e.Nonce != "" {
		h.Set("DPoP-Nonce", e.Nonce)
	}
	if e.Code == "" {
		h.Set("Cache-Control", "no-store")
		w.WriteHeader(e.Status)
		return
	}
	writeJSONError(w, e.Status, e.Code)
}

func quoteEscape(s string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\r", "", "\n", "").Replace(s)
}

// guard builds middleware that checks the claims stored by Middleware:
// refuse returns nil to admit the request, or the refusal, which goes to the
// middleware's error handler with the request's scheme.
func guard(refuse func(c *Claims, now time.Time) *BearerError) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			a, found := r.Context().Value(ctxKey{}).(*authInfo)
			if !found {
				// Mounted without Middleware in front: refuse, never admit.
				def := &middleware{realm: "api"}
				def.writeError(w, r, &BearerError{Scheme: "Bearer", Status: http.StatusUnauthorized, Err: errNoCredentials})
				return
			}
			if e := refuse(a.claims, a.mw.rs.now()); e != nil {
				e.Scheme = a.scheme
				a.mw.onError(w, r, e)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

func insufficientScope(required string) *BearerError {
	return &BearerError{Status: http.StatusForbidden, Code: "insufficient_scope", Scope: required, Err: errors.New("insufficient scope or role")}
}

// RequireScope returns middleware, to be mounted after Middleware, that
// admits only tokens granted every one of the scopes; others get 403 with
// error="insufficient_scope" (RFC 6750 §3.1).
func RequireScope(scopes ...string) func(http.Handler) http.Handler {
	scopes = slices.Clone(scopes) // the caller's slice may change later
	required := strings.Join(scopes, " ")
	return guard(func(c *Claims, _ time.Time) *BearerError {
		for _, s := range scopes {
			if !c.HasScope(s) {
				return insufficientScope(required)
			}
		}
		return nil
	})
}

// RequireRole returns middleware, to be mounted after Middleware, that
// admits only tokens whose roles claim (Claims.Roles) holds at least one of
// roles; others get 403 with error="insufficient_scope".
func RequireRole(roles ...string) func(http.Handler) http.Handler {
	roles = slices.Clone(roles) // the caller's slice may change later
	return guard(func(c *Claims, _ time.Time) *BearerError {
		for _, role := range roles {
			if c.HasRole(role) {
				return nil
			}
		}
		return insufficientScope("")
	})
}

// RequireRecentAuth returns middleware, to be mounted after Middleware,
// that admits only tokens whose user signed in at most maxAge ago
// (Claims.AuthTime: when Issue started the session). It is the step-up
// check for what a stolen refresh token alone must not do, such as
// changing a password or an e-mail address, adding a device or a key, or a
// large payment: a refresh mints a new access token but keeps AuthTime, so
// the holder of a refresh token must know the user's password (or whatever
// the login checks) again to pass. Other tokens, and tokens without
// auth_time, get 401 with error="insufficient_user_authentication" and
// max_age="<seconds>" (RFC 9470 §3): the client signs the user in again and
// retries with the new session's token. AuthTime is when Issue ran, or the
// earlier authentication a login relaying one (an identity provider's
// session, a "remember me" cookie) passed with WithAuthTime. A token is
// admitted while its age, the middleware's clock minus AuthTime, is at
// most maxAge. It panics if maxAge is less than a second, the precision of
// auth_time.
//
// The handler it returns is safe for concurrent use.
func RequireRecentAuth(maxAge time.Duration) func(http.Handler) http.Handler {
	if maxAge < time.Second {
		panic("refresh: RequireRecentAuth: maxAge under a second")
	}
	return guard(func(c *Claims, now time.Time) *BearerError {
		if c.AuthTime.IsZero() || now.Sub(c.AuthTime) > maxAge {
			return &BearerError{Status: http.StatusUnauthorized, Code: "insufficient_user_authentication", MaxAge: maxAge,
				Err: errors.New("authentication older than max_age, or its time unknown")}
		}
		return nil
	})
}

// RequireACR returns middleware, to be mounted after Middleware, that admits
// only tokens whose "acr" claim (Authentication Context Class Reference,
// RFC 9068 §2.2.1: a string the login handler sets with WithClaims, such as
// "mfa" after a second factor) is one of values. Others get 401 with
// error="insufficient_user_authentication" and acr_values (RFC 9470 §3).
// Like every claim set at Issue it stays the same for the whole session.
// It panics without values.
//
// The handler it returns is safe for concurrent use.
func RequireACR(values ...string) func(http.Handler) http.Handler {
	if len(values) == 0 {
		panic("refresh: RequireACR: no values")
	}
	values = slices.Clone(values) // the caller's slice may change later
	wanted := strings.Join(values, " ")
	return guard(func(c *Claims, _ time.Time) *BearerError {
		if acr, ok := c.Extra["acr"].(string); ok && slices.Contains(values, acr) {
			return nil
		}
		return &BearerError{Status: http.StatusUnauthorized, Code: "insufficient_user_authentication", ACRValues: wanted,
			Err: errors.New("acr not among the values required")}
	})
}
