package refresh

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// DefaultMaxBodyBytes bounds the form bodies the handlers read.
const DefaultMaxBodyBytes = 16 << 10

// HandlerConfig configures the HTTP endpoints of Handlers. NewHandlers copies
// it; its hooks must be safe for concurrent use.
type HandlerConfig struct {
	// MaxBodyBytes bounds request bodies; larger ones get 413. Default 16 KiB.
	MaxBodyBytes int64
	// Cookie, if set, moves the refresh token into a cookie for browser
	// apps (see CookieConfig). Nil: the token travels in the JSON body.
	Cookie *CookieConfig
	// ClientAuth, if set, authenticates the client of every token and
	// revocation request (RFC 6749 §2.3, RFC 7009 §2.1), before any token
	// is looked at. It sees what the request says (ClientCredentials): HTTP
	// Basic (client_secret_basic), client_id and client_secret in the body
	// (client_secret_post), or a client_id alone or nothing at all (none: a
	// public client, or none named; refuse it for confidential clients). It
	// returns nil to accept, an error wrapping ErrInvalidClient to refuse
	// (401 invalid_client), or any other error for a fault of its own (503).
	// Compare secrets in constant time (crypto/subtle).
	//
	// Without ClientAuth, no client is authenticated: the client_id of the
	// request is taken as given (it still has to match the client a session
	// is bound to), and a request carrying a client secret is refused with
	// 401 invalid_client, because a secret the server cannot check must not
	// look checked.
	ClientAuth func(ctx context.Context, c ClientCredentials) error
	// OnError, if set, sees every system fault (store down) the handlers
	// answered with 503, for logging. Client faults are not reported.
	OnError func(r *http.Request, err error)
}

// Client authentication methods (RFC 7591 §2 names), as seen by
// HandlerConfig.ClientAuth.
const (
	ClientSecretBasic = "client_secret_basic" // HTTP Basic
	ClientSecretPost  = "client_secret_post"  // client_id and client_secret in the body
	ClientAuthNone    = "none"                // a client_id alone, or no client named
)

// ClientCredentials is what a token or revocation request presents to
// identify and authenticate its client. It is a plain value.
type ClientCredentials struct {
	ID     string // client_id; "" when the request names no client
	Secret string // the secret; "" with ClientAuthNone
	Method string // ClientSecretBasic, ClientSecretPost or ClientAuthNone
}

// CookieConfig is the cookie mode for browser apps: the refresh token lives in
// an HttpOnly, Secure, SameSite=Strict cookie that JavaScript cannot read,
// rotated on every refresh and cleared on revocation.
//
// Cross-site request forgery is refused twice over: every refresh and
// revocation request, whether its token is in the cookie or in the body
// (a browser client moving from body mode), must carry the CSRFHeader (a
// custom header, which a cross-site form cannot send and cross-site fetch
// can send only after a CORS preflight you do not allow), and they must
// come from the request's own origin or one of AllowedOrigins, as net/http's
// CrossOriginProtection judges it: by Sec-Fetch-Site where the browser
// sends it (so a page on another port of the same host, which SameSite does
// not stop, is refused too), else by the Origin header. Handlers.CheckCSRF
// applies the same checks to your login handler.
type CookieConfig struct {
	// Path scopes the cookie (default "/"). With "/" the cookie is named
	// "__Host-refresh_token"; with another path "__Secure-refresh_token"
	// (the __Host- prefix requires Path=/). Put the refresh and revocation
	// endpoints under it. Unlike a __Host- cookie, a __Secure- one can be
	// set for the parent domain by a sibling subdomain (cookie tossing), to
	// sign the browser into the tosser's session; so with another path the
	// session's ID also goes into a second cookie, "__Host-refresh_session"
	// (Path=/, which no other host can set), and a refresh cookie is taken
	// only beside the session cookie of its own session. A request with two
	// refresh cookies is refused too.
	Path string
	// CSRFHeader must be present, non-empty, on cookie requests. Default
	// "X-Requested-With".
	CSRFHeader string
	// AllowedOrigins lists origins (scheme://host[:port]) allowed besides the
	// request's own. A malformed entry matches nothing.
	AllowedOrigins []string
	// Insecure drops the Secure attribute and the name prefix, for
	// plain-HTTP development on localhost only.
	Insecure bool
}

func (c *CookieConfig) name() string {
	switch {
	case c.Insecure:
		return "refresh_token"
	case c.path() == "/":
		return "__Host-refresh_token"
	default:
		return "__Secure-refresh_token"
	}
}

// pinName is the cookie that pins the refresh cookie to its session when
// the refresh cookie is not __Host- (a Path other than "/"), or "".
func (c *CookieConfig) pinName() string {
	switch {
	case c.path() == "/":
		return ""
	case c.Insecure:
		return "refresh_session"
	default:
		return "__Host-refresh_session"
	}
}

func (c *CookieConfig) path() string {
	if c.Path == "" {
		return "/"
	}
	return c.Path
}

func (c *CookieConfig) csrfHeader() string {
	if c.CSRFHeader == "" {
		return "X-Requested-With"
	}
	return c.CSRFHeader
}

// Handlers serves the OAuth 2.0 endpoints of an Issuer: the refresh grant
// (RFC 6749 §6), token revocation (RFC 7009) and the JWKS document, and
// writes token responses for the application's own login handler. It is safe
// for concurrent use.
type Handlers struct {
	iss *Issuer
	cfg HandlerConfig
	cop *http.CrossOriginProtection // cookie mode only
}

// NewHandlers returns the HTTP endpoints of iss.
func NewHandlers(iss *Issuer, cfg HandlerConfig) *Handlers {
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	h := &Handlers{iss: iss, cfg: cfg}
	if c := cfg.Cookie; c != nil {
		cc := *c
		cc.AllowedOrigins = slices.Clone(c.AllowedOrigins)
		h.cfg.Cookie = &cc
		h.cop = http.NewCrossOriginProtection()
		for _, o := range cc.AllowedOrigins {
			// A malformed origin is not trusted: it can match no request.
			_ = h.cop.AddTrustedOrigin(o)
		}
	}
	return h
}

// TokenResponse is the JSON body of a successful token response (RFC 6749
// §5.1).
type TokenResponse struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int64  `json:"expires_in"`
	RefreshToken string `json:"refresh_token,omitempty"`
	Scope        string `json:"scope,omitempty"`
}

// WriteTokenResponse writes p as an RFC 6749 §5.1 token response: 200, JSON,
// Cache-Control: no-store. In cookie mode the refresh token is set as the
// cookie instead of appearing in the body, and only for a request that
// passes CheckCSRF: one that does not is answered 403 invalid_request, as
// the endpoints answer it, and no cookie is set, so that a login handler
// that forgot CheckCSRF cannot be used to sign a browser into another
// user's session (call CheckCSRF before Issue anyway, so that no session
// is created for the refused request). Use it in your login handler so
// that login and refresh answer alike.
func (h *Handlers) WriteTokenResponse(w http.ResponseWriter, r *http.Request, p *Pair) {
	if h.cfg.Cookie != nil {
		if oe := h.checkCSRF(r); oe != nil {
			h.fail(w, oe)
			return
		}
	}
	h.writeTokenResponse(w, p)
}

// writeTokenResponse is WriteTokenResponse for a request whose CSRF checks
// have passed already (the refresh grant's, in credentials).
func (h *Handlers) writeTokenResponse(w http.ResponseWriter, p *Pair) {
	resp := TokenResponse{
		AccessToken:  p.AccessToken,
		TokenType:    p.TokenType,
		ExpiresIn:    expiresIn(p.AccessExpiresAt.Sub(h.iss.now())),
		RefreshToken: p.RefreshToken,
		Scope:        strings.Join(p.Scope, " "),
	}
	if c := h.cfg.Cookie; c != nil {
		set := func(name, value, path string) {
			http.SetCookie(w, &http.Cookie{
				Name:     name,
				Value:    value,
				Path:     path,
				Expires:  p.RefreshExpiresAt,
				MaxAge:   int(p.RefreshExpiresAt.Sub(h.iss.now()) / time.Second),
				HttpOnly: true,
				Secure:   !c.Insecure,
				SameSite: http.SameSiteStrictMode,
			})
		}
		set(c.name(), p.RefreshToken, c.path())
		if pin := c.pinName(); pin != "" {
			set(pin, p.SessionID, "/")
		}
		resp.RefreshToken = ""
	}
	if n := h.DPoPNonce(); n != "" {
		w.Header().Set("DPoP-Nonce", n) // the next proof's (RFC 9449 §8.2)
	}
	writeJSON(w, http.StatusOK, resp)
}

// expiresIn is a token response's expires_in for a token with left to
// live: whole seconds, and never under 1, because clients read 0 as "no
// expiry" (x/oauth2 then never refreshes) where it means "expired".
func expiresIn(left time.Duration) int64 {
	return max(int64(left/time.Second), 1)
}

func (h *Handlers) clearCookie(w http.ResponseWriter) {
	c := h.cfg.Cookie
	expire := func(name, path string) {
		http.SetCookie(w, &http.Cookie{
			Name: name, Value: "", Path: path, MaxAge: -1,
			HttpOnly: true, Secure: !c.Insecure, SameSite: http.SameSiteStrictMode,
		})
	}
	expire(c.name(), c.path())
	if pin := c.pinName(); pin != "" {
		expire(pin, "/")
	}
}

func noStore(w http.ResponseWriter) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Pragma", "no-cache")
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	noStore(w)
	w.Header().Set("Content-Type", "application/json;charset=UTF-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// writeJSONError writes an RFC 6749 §5.2 error body. code is always one of
// the fixed codes of this package, never text derived from an error.
func writeJSONError(w http.ResponseWriter, status int, code string) {
	writeJSON(w, status, struct {
		Error string `json:"error"`
	}{code})
}

// oauthError is a refusal of the token or revocation endpoint.
type oauthError struct {
	status int
	code   string
}

var (
	errMethod       = &oauthError{http.StatusMethodNotAllowed, "invalid_request"}
	errContentType  = &oauthError{http.StatusBadRequest, "invalid_request"}
	errTooLarge     = &oauthError{http.StatusRequestEntityTooLarge, "invalid_request"}
	errRequest      = &oauthError{http.StatusBadRequest, "invalid_request"}
	errCSRF         = &oauthError{http.StatusForbidden, "invalid_request"}
	errDPoPProof    = &oauthError{http.StatusBadRequest, "invalid_dpop_proof"}
	errUseDPoPNonce = &oauthError{http.StatusBadRequest, "use_dpop_nonce"}
)

// readForm reads an application/x-www-form-urlencoded POST body, refusing
// other methods, media types, oversized bodies and repeated parameters
// (RFC 6749 §3.2). It never reads the query string.
func (h *Handlers) readForm(w http.ResponseWriter, r *http.Request) (url.Values, *oauthError) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return nil, errMethod
	}
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/x-www-form-urlencoded" {
		return nil, errContentType
	}
	buf, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.cfg.MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, errTooLarge
		}
		return nil, errRequest
	}
	form, err := url.ParseQuery(string(buf))
	if err != nil {
		return nil, errRequest
	}
	for _, v := range form {
		if len(v) > 1 {
			return nil, errRequest
		}
	}
	return form, nil
}

// CheckCSRF applies the cookie mode's cross-site request forgery defences
// to r, as the refresh and revocation handlers do before they read the
// cookie: the CSRFHeader must be present and non-empty, and the request
// must come from its own origin or one of AllowedOrigins (net/http's
// CrossOriginProtection: Sec-Fetch-Site, else Origin against Host). It
// returns nil or ErrCrossSite (answer 403). Call it in
// a cookie-mode login handler before it sets the cookie (login CSRF: a
// cross-site page signing the victim into the attacker's account).
// Without cookie mode it checks nothing and returns nil.
func (h *Handlers) CheckCSRF(r *http.Request) error {
	if h.cfg.Cookie == nil {
		return nil
	}
	if h.checkCSRF(r) != nil {
		return ErrCrossSite
	}
	return nil
}

// checkCSRF applies the cookie mode's CSRF defences: the custom header, and
// net/http's CrossOriginProtection (Sec-Fetch-Site from browsers that send
// it, else Origin against Host), trusting AllowedOrigins.
func (h *Handlers) checkCSRF(r *http.Request) *oauthError {
	if r.Header.Get(h.cfg.Cookie.csrfHeader()) == "" || h.cop.Check(r) != nil {
		return errCSRF
	}
	return nil
}

// pinned reports whether a refresh cookie may be taken: always for a
// __Host- cookie, which only this host can set; for a __Secure- one only
// beside exactly one session cookie naming the token's session, which a
// sibling subdomain tossing its own refresh cookie cannot set. A token that
// does not parse is let through, to be refused as invalid_grant.
func (h *Handlers) pinned(r *http.Request, tok string) bool {
	pin := h.cfg.Cookie.pinName()
	if pin == "" {
		return true
	}
	rc, err := h.iss.parseRefresh(tok)
	if err != nil {
		return true
	}
	pins := r.CookiesNamed(pin)
	return len(pins) == 1 && pins[0].Value == rc.sessionID()
}

var (
	errInvalidClient = &oauthError{http.StatusUnauthorized, "invalid_client"}
	errClientFault   = &oauthError{http.StatusServiceUnavailable, "temporarily_unavailable"}
)

// client authenticates the client of a token, revocation or introspection
// request and returns its id, answering a refusal as the endpoints do; a
// fault of ClientAuth goes to OnError.
func (h *Handlers) client(r *http.Request, form url.Values) (string, *oauthError) {
	id, oe, fault := h.authClient(r, form)
	if fault != nil && h.cfg.OnError != nil {
		h.cfg.OnError(r, fault)
	}
	return id, oe
}

// authClient authenticates the client named by r's Authorization header and
// the client_id and client_secret of params. Exactly one authentication
// method may be used (RFC 6749 §2.3): HTTP Basic, or client_secret in the
// parameters; a client_id beside Basic must name the same client. fault is
// ClientAuth's own error (oe is then errClientFault), for OnError.
func (h *Handlers) authClient(r *http.Request, params url.Values) (id string, oe *oauthError, fault error) {
	if len(params["client_id"]) > 1 || len(params["client_secret"]) > 1 {
		return "", errRequest, nil // which one would be meant? (RFC 6749 §3.2)
	}
	cc := ClientCredentials{ID: params.Get("client_id"), Method: ClientAuthNone}
	_, hasSecret := params["client_secret"]
	if hasSecret {
		cc.Secret, cc.Method = params.Get("client_secret"), ClientSecretPost
	}
	authz := r.Header.Values("Authorization")
	if len(authz) > 1 {
		return "", errRequest, nil
	}
	if user, pass, basic := r.BasicAuth(); basic {
		// RFC 6749 §2.3.1: the credentials are form-encoded before Basic.
		u, err1 := url.QueryUnescape(user)
		p, err2 := url.QueryUnescape(pass)
		if err1 != nil || err2 != nil || hasSecret || cc.ID != "" && cc.ID != u {
			return "", errRequest, nil // malformed, or two methods at once
		}
		cc = ClientCredentials{ID: u, Secret: p, Method: ClientSecretBasic}
	} else if len(authz) == 1 && h.cfg.ClientAuth != nil {
		// Another scheme, or a malformed Basic header, authenticates no
		// client. (Without ClientAuth it is ignored: a browser app may send
		// its bearer header everywhere, and nobody checks clients anyway.)
		return "", errInvalidClient, nil
	}
	if h.cfg.ClientAuth == nil {
		if cc.Secret != "" {
			return "", errInvalidClient, nil // a secret nobody checks
		}
		return cc.ID, nil, nil
	}
	if err := h.cfg.ClientAuth(r.Context(), cc); err != nil {
		if errors.Is(err, ErrInvalidClient) {
			return "", errInvalidClient, nil
		}
		return "", errClientFault, fmt.Errorf("refresh: client authentication: %w", err)
	}
	return cc.ID, nil, nil
}

// AuthenticateClient authenticates the client of a sign-in request the way
// the token, revocation and introspection endpoints authenticate theirs,
// and returns its id, to bind the session with WithClientID: HTTP Basic
// from r's Authorization header, client_secret_post from params, or a bare
// client_id (none), each decided by HandlerConfig.ClientAuth. params holds
// the request's own parameters: r.PostForm for a form body, the client_id
// and client_secret members of a JSON body (a member present, even empty,
// is a parameter present), or nil. A login handler that binds sessions to
// the client_id a request names, without this, lets anyone with a user's
// password sign in as any client, a confidential one included, and hold a
// session and access tokens in its name.
//
// The error wraps ErrInvalidRequest for two methods at once, a malformed
// or repeated credential (answer 400 invalid_request), is ErrInvalidClient
// for a client ClientAuth refuses (401 invalid_client with
// WWW-Authenticate: Basic), and wraps ClientAuth's own error otherwise
// (503); WriteIssueError answers each. Without ClientAuth no client is
// authenticated: the id named is returned as given, and a request that
// carries a secret is refused (ErrInvalidClient), as the endpoints refuse
// it. Safe for concurrent use.
func (h *Handlers) AuthenticateClient(r *http.Request, params url.Values) (string, error) {
	id, oe, fault := h.authClient(r, params)
	switch {
	case fault != nil:
		return "", fault
	case oe == errRequest:
		return "", requestErr("client credentials repeated, malformed, or sent by two methods at once")
	case oe != nil:
		return "", ErrInvalidClient
	}
	return id, nil
}

// credentials finds the token of a request, in the form parameter param or,
// in cookie mode, in the cookie, and the client. In cookie mode every
// request passes the CSRF checks first, wherever its token is: a token in
// the body is answered with the cookie too, so a cross-site form posting
// the attacker's own token would otherwise sign the victim's browser into
// the attacker's session (TestVuln9_CookieModeSessionSwap).
func (h *Handlers) credentials(r *http.Request, form url.Values, param string) (tok, client string, fromCookie bool, oe *oauthError) {
	if h.cfg.Cookie != nil {
		if oe := h.checkCSRF(r); oe != nil {
			return "", "", false, oe
		}
	}
	tok = form.Get(param)
	if tok == "" && h.cfg.Cookie != nil {
		switch cs := r.CookiesNamed(h.cfg.Cookie.name()); len(cs) {
		case 0:
		case 1:
			if !h.pinned(r, cs[0].Value) {
				return "", "", false, errRequest
			}
			tok, fromCookie = cs[0].Value, true
		default:
			// Ours is host-only, one per path; a second was set by someone
			// else: a sibling subdomain may set a __Secure- cookie for the
			// parent domain (cookie tossing), and taking its token would
			// answer with that session's cookie (TestVuln10_CookieTossing).
			return "", "", false, errRequest
		}
	}
	if tok == "" {
		return "", "", false, errRequest
	}
	client, oe = h.client(r, form)
	return tok, client, fromCookie, oe
}

func (h *Handlers) fail(w http.ResponseWriter, e *oauthError) {
	if e.code == "invalid_client" {
		w.Header().Set("WWW-Authenticate", `Basic realm="token"`)
	}
	writeJSONError(w, e.status, e.code)
}

func (h *Handlers) systemFault(w http.ResponseWriter, r *http.Request, err error) {
	if h.cfg.OnError != nil {
		h.cfg.OnError(r, err)
	}
	writeJSONError(w, http.StatusServiceUnavailable, "temporarily_unavailable")
}

// DPoPProof verifies the DPoP proof of a token request (RFC 9449 §5) and
// returns it, or nil when the request has none. Use it in a login handler
// after checking the user's credentials: pass the proof to Issue with
// WithDPoPProof, which binds the session to its key and consumes the proof.
// The error wraps ErrInvalidToken; answer it with 400
// {"error":"invalid_dpop_proof"}, or, when it also wraps ErrUseDPoPNonce
// (Config.DPoPNonceLifetime), with 400 {"error":"use_dpop_nonce"} and the
// header DPoP-Nonce: DPoPNonce() (WriteDPoPError does either).
func (h *Handlers) DPoPProof(r *http.Request) (*DPoPProof, error) {
	proofs := r.Header.Values("DPoP")
	switch len(proofs) {
	case 0:
		return nil, nil
	case 1:
	default:
		return nil, tokenErr(ErrInvalidToken, "several DPoP headers")
	}
	return h.iss.VerifyDPoPProof(proofs[0], r.Method, h.iss.RequestURL(r), "")
}

// DPoPNonce returns the current DPoP nonce for a DPoP-Nonce header, or ""
// when Config.DPoPNonceLifetime is not set.
func (h *Handlers) DPoPNonce() string { return h.iss.rs.nonces.current() }

// WriteDPoPError answers a token request whose DPoP proof DPoPProof
// refused: 400 use_dpop_nonce with a fresh DPoP-Nonce header when err
// wraps ErrUseDPoPNonce, else 400 invalid_dpop_proof.
func (h *Handlers) WriteDPoPError(w http.ResponseWriter, err error) {
	if errors.Is(err, ErrUseDPoPNonce) {
		w.Header().Set("DPoP-Nonce", h.DPoPNonce())
		h.fail(w, errUseDPoPNonce)
		return
	}
	h.fail(w, errDPoPProof)
}

// WriteIssueError answers a sign-in whose Issue or AuthenticateClient
// failed the way the token endpoint answers its own failures, with only an
// error code in the body: 400 invalid_request when a value was refused
// (ErrInvalidRequest: a client_id from the request that is not valid UTF-8
// or holds NUL, say, or client credentials sent twice); 401
// invalid_client with WWW-Authenticate: Basic for a client that did not
// authenticate (ErrInvalidClient); 400 invalid_dpop_proof, or
// use_dpop_nonce with a fresh DPoP-Nonce, when Issue refused the DPoP
// proof (a replayed one); 503 temporarily_unavailable for anything else (a
// store fault, ClientAuth's own failure), which HandlerConfig.OnError sees.
func (h *Handlers) WriteIssueError(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, ErrInvalidClient):
		h.fail(w, errInvalidClient)
	case errors.Is(err, ErrInvalidRequest):
		h.fail(w, errRequest)
	case errors.Is(err, ErrInvalidToken): // the only token Issue checks is the DPoP proof
		h.WriteDPoPError(w, err)
	default:
		h.systemFault(w, r, err)
	}
}

// RefreshHandler serves the refresh grant (RFC 6749 §6): a POST of
// grant_type=refresh_token&refresh_token=…, optionally scope (narrower only)
// and client_id, as application/x-www-form-urlencoded. Answers:
//
//   - 200 with a §5.1 JSON token response and Cache-Control: no-store;
//   - 400 invalid_grant for a reused, revoked, expired, unknown, forged or
//     other client's refresh token, or one bound to another DPoP key (or
//     to one, without a proof); invalid_dpop_proof for a bad DPoP proof
//     (RFC 9449 §5); use_dpop_nonce, with a DPoP-Nonce header, for a
//     proof without a current nonce (Config.DPoPNonceLifetime, §8);
//     invalid_scope for a wider scope,
//     invalid_request for missing or repeated parameters,
//     unsupported_grant_type for other grants;
//   - 401 invalid_client when HandlerConfig.ClientAuth refuses the client,
//     or a client secret is sent and no ClientAuth is set; 400
//     invalid_request when two authentication methods are used at once;
//   - 403 when the cookie mode's CSRF checks fail; 405 for other methods;
//     413 for oversized bodies; 400 for other media types (RFC 6749 §5.2);
//   - 503 temporarily_unavailable when the store fails.
//
// Error bodies carry only the error code, never internal detail.
func (h *Handlers) RefreshHandler() http.Handler {
	return http.HandlerFunc(h.serveRefresh)
}

// serveRefresh is RefreshHandler's. A method rather than a closure:
// RefreshHandler is inlined into its callers, and a closure would be
// compiled there too, where Rotate is not inlined into it, so the Pair
// would be on the heap rather than on this function's stack.
func (h *Handlers) serveRefresh(w http.ResponseWriter, r *http.Request) {
	form, oe := h.readForm(w, r)
	if oe != nil {
		h.fail(w, oe)
		return
	}
	switch gt := form.Get("grant_type"); gt {
	case "refresh_token":
	case "":
		h.fail(w, errRequest)
		return
	default:
		h.fail(w, &oauthError{http.StatusBadRequest, "unsupported_grant_type"})
		return
	}
	tok, client, _, proof, ok := h.tokenRequest(w, r, form, "refresh_token")
	if !ok {
		return
	}
	opts := []Option{WithClientID(client), WithDPoPProof(proof)}
	if s, ok := form["scope"]; ok && strings.TrimSpace(s[0]) != "" {
		opts = append(opts, WithScope(strings.Fields(s[0])...))
	}
	p, err := h.iss.Rotate(r.Context(), tok, opts...)
	switch {
	case err == nil:
		h.writeTokenResponse(w, p) // credentials ran the CSRF checks
	case errors.Is(err, ErrInvalidScope):
		h.fail(w, &oauthError{http.StatusBadRequest, "invalid_scope"})
	case IsClientError(err):
		if h.cfg.Cookie != nil && form.Get("refresh_token") == "" {
			h.clearCookie(w) // the cookie's token is dead: stop sending it
		}
		h.fail(w, &oauthError{http.StatusBadRequest, "invalid_grant"})
	default:
		h.systemFault(w, r, err)
	}
}

// tokenRequest reads what both token endpoints need after the form: the
// token (the param, or the cookie in cookie mode), the authenticated
// client and the request's DPoP proof. When one of them is refused it
// answers the request itself and reports ok=false.
func (h *Handlers) tokenRequest(w http.ResponseWriter, r *http.Request, form url.Values, param string) (tok, client string, fromCookie bool, proof *DPoPProof, ok bool) {
	tok, client, fromCookie, oe := h.credentials(r, form, param)
	if oe != nil {
		h.fail(w, oe)
		return "", "", false, nil, false
	}
	proof, err := h.DPoPProof(r)
	if err != nil {
		h.WriteDPoPError(w, err)
		return "", "", false, nil, false
	}
	return tok, client, fromCookie, proof, true
}

// RevocationHandler serves token revocation (RFC 7009): a POST of token=…
// with an optional token_type_hint. A refresh token ends its session; a
// valid access token ends its session too. Revocation honours the same
// bindings as the refresh grant: the client is authenticated as there
// (HandlerConfig.ClientAuth), a session bound to a client is revoked only
// by that client, and one bound to a DPoP key only with a proof from that
// key (RFC 9449; a bad proof is 400 invalid_dpop_proof, one without a
// current nonce 400 use_dpop_nonce as at the token endpoint). The answer is 200
// also for unknown, malformed, expired or already revoked tokens, and for
// tokens of sessions this request may not revoke, which stay live (§2.2):
// the endpoint tells a caller nothing about tokens it does not hold.
// Malformed requests get the same 4xx answers as RefreshHandler; a failing
// store 503. In cookie mode the cookie is cleared.
func (h *Handlers) RevocationHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		form, oe := h.readForm(w, r)
		if oe != nil {
			h.fail(w, oe)
			return
		}
		tok, client, fromCookie, proof, ok := h.tokenRequest(w, r, form, "token")
		if !ok {
			return
		}
		o := collect([]Option{WithClientID(client), WithDPoPProof(proof)})
		var err error
		if strings.HasPrefix(tok, refreshPrefix) {
			_, s, verr := h.iss.verifyRefresh(r.Context(), tok)
			if err = verr; err == nil {
				err = h.iss.revokeBound(r.Context(), s, o)
			}
		} else {
			err = h.iss.revokeAccess(r.Context(), tok, o)
		}
		if err != nil && !IsClientError(err) && !errors.Is(err, ErrSessionNotFound) {
			h.systemFault(w, r, err)
			return
		}
		if fromCookie {
			h.clearCookie(w)
		}
		noStore(w)
		w.WriteHeader(http.StatusOK)
	})
}

// IntrospectionHandler serves token introspection (RFC 7662) for resource
// servers (Verifier with IntrospectionConfig). Every request must
// authenticate a client with a non-empty secret through HandlerConfig.ClientAuth
// (HTTP Basic or client_secret_post): without ClientAuth, with a bare
// client_id, or with a refused secret the answer is 401 invalid_client
// (§2.1: the endpoint must not become a token-scanning oracle). The form
// holds token (and optionally token_type_hint, which is not needed: the
// kinds cannot be confused). The answer is 200 with {"active":false} for
// malformed, forged, unknown, expired and revoked tokens, spent refresh
// tokens, and refresh tokens of other clients' sessions; for an active
// access token it carries scope, client_id, sub, aud, iss, token_type
// (Bearer or DPoP), exp, iat, nbf and jti (§2.2), and auth_time and acr
// for step-up rules (RFC 9470); for an active refresh token (only to its
// own client) scope, client_id, sub, iss, exp, iat, auth_time and
// token_type refresh_token. Either kind, when bound to a DPoP key, carries
// cnf.jkt, its thumbprint (RFC 9449 §6.2): a resource server that
// introspects must then require a proof from that key. Revocation shows at once: the session is read
// from the store, not from a cache. A failing store is 503.
func (h *Handlers) IntrospectionHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		form, oe := h.readForm(w, r)
		if oe != nil {
			h.fail(w, oe)
			return
		}
		if h.cfg.ClientAuth == nil {
			h.fail(w, errInvalidClient)
			return
		}
		// A client without a secret may not introspect, whatever ClientAuth
		// would say of it as a public client: an empty Basic password or
		// client_secret counts as none.
		if _, pass, basic := r.BasicAuth(); basic && pass == "" || !basic && form.Get("client_secret") == "" {
			h.fail(w, errInvalidClient)
			return
		}
		client, oe := h.client(r, form)
		if oe != nil {
			h.fail(w, oe)
			return
		}
		tok := form.Get("token")
		if tok == "" {
			h.fail(w, errRequest)
			return
		}
		ans, err := h.iss.introspect(r.Context(), tok, client)
		if err != nil {
			h.systemFault(w, r, err)
			return
		}
		noStore(w)
		writeJSON(w, http.StatusOK, ans)
	})
}

// JWKSHandler serves Issuer.JWKS for GET and HEAD, cacheable for five
// minutes; other methods get 405.
func (h *Handlers) JWKSHandler() http.Handler {
	return publicDocument("application/jwk-set+json", h.iss.JWKS())
}

// publicDocument serves a fixed public document for GET and HEAD, cacheable
// for five minutes; other methods get 405.
func publicDocument(contentType string, body []byte) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			writeJSONError(w, http.StatusMethodNotAllowed, "invalid_request")
			return
		}
		w.Header().Set("Content-Type", contentType)
		w.Header().Set("Cache-Control", "public, max-age=300")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(http.StatusOK)
		if r.Method == http.MethodGet {
			_, _ = w.Write(body)
		}
	})
}
