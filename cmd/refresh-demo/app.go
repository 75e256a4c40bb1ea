package main

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/refreshkit/refresh"
)

// user is a built-in account of the demo, as it starts: the name and roles
// are fixed, the password is the one a passwordStore seeds and POST
// /password changes. Passwords are held only as bcrypt hashes.
type user struct {
	hash  []byte
	roles []string
}

// users: alice/wonderland (admin) and bob/builder (user).
var users = map[string]user{
	"alice": {hash: []byte("$2a$10$Le7TWkK9yALglO2NialDQuTv.rJ.oXSdQvDyCZg5hJhjxnjY.jKOW"), roles: []string{"admin"}},
	"bob":   {hash: []byte("$2a$10$a4U4vrjLkcr3XE7XQOMRMetC8t0nKW73jBr6KrckX.8Z2RhIfYXX2"), roles: []string{"user"}},
}

// dummyHash is compared against when the user does not exist, so that a
// wrong user name costs as much time as a wrong password.
var dummyHash = []byte("$2a$10$Le7TWkK9yALglO2NialDQuTv.rJ.oXSdQvDyCZg5hJhjxnjY.jKOX")

const maxLoginBody = 4 << 10

// newMux wires the demo's routes around an Issuer.
func newMux(iss *refresh.Issuer) http.Handler { return newAuthMux(iss, authConfig{}) }

// authConfig is what the auth service offers beyond the basics.
type authConfig struct {
	// introspectionSecret, if set, opens /introspect (RFC 7662) to the
	// client "resource-server" with this secret.
	introspectionSecret string
	log                 *slog.Logger // logs JWKS requests; nil: none
	// loginFailures, if positive, is how many failed sign-ins one client
	// IP may make per loginWindow (see loginThrottle); now is its clock
	// (nil: time.Now).
	loginFailures int
	loginWindow   time.Duration
	now           func() time.Time
	// recentAuth is how recent a sign-in /admin and signing out another
	// device want (0: 15 minutes).
	recentAuth time.Duration
	// passwords keeps the accounts' passwords (openStore's, beside the
	// sessions); nil: a memory one of this mux's own.
	passwords passwordStore
}

// The scopes a sign-in grants; a client may narrow them at the refresh
// grant. profile: GET /me, /admin (with the admin role) and POST /password;
// sessions: the devices list, signing one out, and signing out everywhere.
const (
	scopeProfile  = "profile"
	scopeSessions = "sessions"
)

// resourceClient is the client id resource servers introspect with.
const resourceClient = "resource-server"

// clientAuth admits public clients (a bare client_id, or none: the demo's
// browsers and curl) and the resource server with its secret.
func (c authConfig) clientAuth(_ context.Context, cc refresh.ClientCredentials) error {
	if cc.ID == resourceClient {
		if cc.Method != refresh.ClientAuthNone && subtle.ConstantTimeCompare([]byte(cc.Secret), []byte(c.introspectionSecret)) == 1 {
			return nil
		}
		return refresh.ErrInvalidClient
	}
	if cc.Method == refresh.ClientAuthNone {
		return nil
	}
	return refresh.ErrInvalidClient // no other confidential clients
}

func newAuthMux(iss *refresh.Issuer, ac authConfig) http.Handler {
	var hc refresh.HandlerConfig
	if ac.introspectionSecret != "" {
		hc.ClientAuth = ac.clientAuth
	}
	h := refresh.NewHandlers(iss, hc)
	auth := iss.Middleware(refresh.WithRealm("refresh-demo"))
	// Each route asks for the scope that grants it: a token narrowed at the
	// refresh grant (scope=profile) cannot list or end sessions.
	profile := func(h http.Handler) http.Handler { return auth(refresh.RequireScope(scopeProfile)(h)) }
	sessions := func(h http.Handler) http.Handler { return auth(refresh.RequireScope(scopeSessions)(h)) }
	mux := http.NewServeMux()
	throttle := newLoginThrottle(ac.loginFailures, ac.loginWindow, ac.now)
	accts := accounts{ac.passwords}
	if accts.st == nil {
		accts.st = newMemoryPasswords()
	}
	mux.Handle("/login", loginHandler(iss, h, throttle, accts))
	mux.Handle("/token", h.RefreshHandler())
	mux.Handle("/revoke", h.RevocationHandler())
	jwks := h.JWKSHandler()
	mux.Handle("/.well-known/jwks.json", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ac.log != nil {
			ac.log.Info("jwks served", "remote", r.RemoteAddr)
		}
		jwks.ServeHTTP(w, r)
	}))
	ep := refresh.Endpoints{TokenEndpoint: "/token", RevocationEndpoint: "/revoke", JWKSURI: "/.well-known/jwks.json"}
	if ac.introspectionSecret != "" {
		mux.Handle("/introspect", h.IntrospectionHandler())
		ep.IntrospectionEndpoint = "/introspect"
	}
	// RFC 8414 metadata, for clients that discover the endpoints.
	if meta, err := h.MetadataHandler(ep); err == nil {
		mux.Handle("GET "+h.MetadataPath(), meta)
	}
	mux.Handle("GET /me", profile(http.HandlerFunc(me)))
	recent := recentSignIn(ac.recentAuth)
	mux.Handle("GET /admin", profile(adminOnly(recent)))
	mux.Handle("GET /sessions", sessions(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, _ := refresh.ClaimsFromContext(r.Context())
		list, err := iss.Sessions(r.Context(), c.Subject)
		if err != nil {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "temporarily_unavailable"})
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"sessions": list})
	})))
	// Sign out one of the user's own devices. Another user's session, or
	// one that has ended, is 404 either way (RevokeSessionOf): the answer
	// tells nothing about sessions the caller does not own. It wants a
	// recent sign-in: otherwise a thief holding a stolen refresh token could
	// sign the user's other devices out, while the user, signing in again,
	// can always sign the thief's session out.
	mux.Handle("DELETE /sessions/{id}", sessions(recent(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, _ := refresh.ClaimsFromContext(r.Context())
		switch err := iss.RevokeSessionOf(r.Context(), c.Subject, r.PathValue("id")); {
		case err == nil:
			w.WriteHeader(http.StatusNoContent)
		case errors.Is(err, refresh.ErrSessionNotFound):
			writeJSON(w, http.StatusNotFound, map[string]string{"error": "not_found"})
		default:
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "temporarily_unavailable"})
		}
	}))))
	mux.Handle("POST /password", profile(recent(passwordHandler(iss, accts, throttle))))
	mux.Handle("POST /logout-all", sessions(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, _ := refresh.ClaimsFromContext(r.Context())
		if _, err := iss.RevokeSubject(r.Context(), c.Subject); err != nil {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "temporarily_unavailable"})
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})))
	mountApp(mux, iss, hc, throttle, accts)
	return mux
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// passwordHandler changes the caller's password (a form of
// current_password and password, the new one), then signs the user out
// everywhere: every session ends, the caller's too, and every device signs
// in again with the new password. Mounted behind a recent sign-in, and it
// wants the current password as well: an access token stolen in the
// minutes after a sign-in must not be enough to take the account over (and
// guesses of the current password count against the client like failed
// sign-ins). The new password is in place before RevokeSubject runs, and a
// sign-in that checked the old one and creates its session after
// RevokeSubject listed the sessions notices (loginHandler), so no session
// outlives the change.
func passwordHandler(iss *refresh.Issuer, accts accounts, throttle *loginThrottle) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, _ := refresh.ClaimsFromContext(r.Context())
		r.Body = http.MaxBytesReader(w, r.Body, maxLoginBody)
		mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
		if mt != "application/x-www-form-urlencoded" {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_request"})
			return
		}
		if err := r.ParseForm(); err != nil {
			badBody(w, err)
			return
		}
		if len(r.PostForm["password"]) != 1 || len(r.PostForm["current_password"]) != 1 {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_request"})
			return
		}
		done := throttle.admit(w, r) // 429 when this client has used up its guesses
		if done == nil {
			return
		}
		_, _, ok, err := accts.check(r.Context(), c.Subject, r.PostForm.Get("current_password"))
		if err != nil {
			done(false)
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "temporarily_unavailable"})
			return
		}
		if !ok {
			done(true)
			// 403, not 401: the token is good, and a client that refreshes
			// on 401 would only ask again.
			writeJSON(w, http.StatusForbidden, map[string]string{"error": "invalid_credentials"})
			return
		}
		done(false)
		switch err := accts.setPassword(r.Context(), c.Subject, r.PostForm.Get("password")); {
		case errors.Is(err, errWeakPassword):
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_request", "error_description": "the new password must be 8 to 72 bytes"})
			return
		case errors.Is(err, errNoAccount): // a token of a subject that is no account here
			writeJSON(w, http.StatusNotFound, map[string]string{"error": "not_found"})
			return
		case err != nil:
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "temporarily_unavailable"})
			return
		}
		n, err := iss.RevokeSubject(r.Context(), c.Subject)
		if err != nil {
			// The password changed; the sessions did not all end. Saying
			// so lets the user finish it (POST /logout-all).
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "temporarily_unavailable",
				"error_description": "the password was changed, but signing out everywhere failed: sign out everywhere again"})
			return
		}
		writeJSON(w, http.StatusOK, map[string]int{"sessions_ended": n})
	})
}

// loginHandler checks a password (form or JSON) and answers with the same
// token response as the refresh grant.
func loginHandler(iss *refresh.Issuer, h *refresh.Handlers, throttle *loginThrottle, accts accounts) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"error": "invalid_request"})
			return
		}
		// In cookie mode (the browser app), a cross-site page must not sign
		// the browser in (login CSRF): same checks as the refresh endpoint.
		if h.CheckCSRF(r) != nil {
			writeJSON(w, http.StatusForbidden, map[string]string{"error": "invalid_request"})
			return
		}
		done := throttle.admit(w, r) // 429 when this client has used up its guesses
		if done == nil {
			return
		}
		failed := false // only a wrong password counts against the client
		defer func() { done(failed) }()
		r.Body = http.MaxBytesReader(w, r.Body, maxLoginBody)
		var in url.Values // username, password, client_id, client_secret
		mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
		switch mt {
		case "application/json":
			var err error
			if in, err = decodeLoginJSON(r.Body); err != nil {
				badBody(w, err)
				return
			}
		case "application/x-www-form-urlencoded":
			if err := r.ParseForm(); err != nil {
				badBody(w, err)
				return
			}
			for _, k := range []string{"username", "password"} {
				if len(r.PostForm[k]) > 1 { // which one would be meant? (RFC 6749 §3.2 asks the same)
					writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_request"})
					return
				}
			}
			in = r.PostForm
		default:
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_request"})
			return
		}
		username, password := in.Get("username"), in.Get("password")
		if username == "" || password == "" {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_request"})
			return
		}
		// The client the session will be bound to proves it is that client
		// (HTTP Basic, client_secret, or a bare client_id ClientAuth accepts
		// as public), as at the token endpoint: otherwise anyone with a
		// user's password could hold a session in a confidential client's
		// name.
		clientID, err := h.AuthenticateClient(r, in)
		if err != nil {
			h.WriteIssueError(w, r, err) // 400, 401 invalid_client, or 503
			return
		}
		roles, version, ok, err := accts.check(r.Context(), username, password)
		if err != nil { // the password store is down: fail closed
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "temporarily_unavailable"})
			return
		}
		if !ok {
			failed = true
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "invalid_credentials"})
			return
		}
		// A client holding a DPoP key (RFC 9449) gets a session bound to it.
		proof, err := h.DPoPProof(r)
		if err != nil {
			h.WriteDPoPError(w, err) // invalid_dpop_proof, or use_dpop_nonce with a fresh nonce
			return
		}
		opts := []refresh.Option{
			refresh.WithDPoPProof(proof),
			refresh.WithScope(scopeProfile, scopeSessions),
			refresh.WithClaims(map[string]any{"roles": roles}),
			refresh.WithMeta(map[string]string{"user_agent": truncate(r.UserAgent(), 200), "ip": r.RemoteAddr}),
		}
		if clientID != "" {
			opts = append(opts, refresh.WithClientID(clientID))
		}
		p, err := iss.Issue(r.Context(), username, opts...)
		if err != nil {
			// 400 for a client_id no store keeps or a replayed DPoP proof,
			// 503 for a store fault.
			h.WriteIssueError(w, r, err)
			return
		}
		// The password may have changed since it was checked: then the
		// change's "log out everywhere" may have run before Issue created
		// this session, and missed it. Whoever knows the old password
		// and keeps sign-ins in flight (each one a bcrypt check long)
		// would always have one there, and keep a session through every
		// password change. So the session lives only if the password it
		// was checked against is still the account's, read after Issue
		// (the change stores the password before it signs out
		// everywhere): otherwise it ends here, unseen.
		current, checkErr := accts.current(r.Context(), username, version)
		if checkErr != nil || !current {
			// Changed, or the store cannot say: the session ends and its
			// tokens are not handed out.
			if err := iss.RevokeSession(r.Context(), p.SessionID); err != nil && !errors.Is(err, refresh.ErrSessionNotFound) {
				h.WriteIssueError(w, r, err) // 503
				return
			}
			if checkErr != nil {
				writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "temporarily_unavailable"})
				return
			}
			failed = true
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "invalid_credentials"})
			return
		}
		h.WriteTokenResponse(w, r, p)
	})
}

// decodeLoginJSON reads exactly one JSON object of string members named
// exactly username, password, client_id and client_secret (each optional,
// none twice) and nothing after it, and returns them as parameters.
// encoding/json alone would match names case-insensitively, ignore unknown
// members, keep the last of a repeated member and stop reading after the
// object, so that {"USERNAME":…}garbage would sign in, and
// {"username":"bob","username":"alice",…} would show bob to anything that
// reads the first and sign in alice.
func decodeLoginJSON(body io.Reader) (url.Values, error) {
	dec := json.NewDecoder(body)
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, errors.New("login: not an object")
	}
	in := url.Values{}
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			return nil, err
		}
		name, _ := k.(string)
		v, err := dec.Token()
		if err != nil {
			return nil, err
		}
		val, ok := v.(string)
		if !ok {
			return nil, errors.New("login: a member that is not a string")
		}
		switch name {
		case "username", "password", "client_id", "client_secret":
		default:
			return nil, errors.New("login: unknown member")
		}
		if _, seen := in[name]; seen {
			return nil, errors.New("login: a repeated member")
		}
		in.Set(name, val)
	}
	if t, err := dec.Token(); err != nil || t != json.Delim('}') {
		return nil, errors.New("login: unterminated object")
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("login: data after the object")
	}
	return in, nil
}

// badBody answers a login body that could not be read: 413 when too large,
// 400 otherwise.
func badBody(w http.ResponseWriter, err error) {
	status := http.StatusBadRequest
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		status = http.StatusRequestEntityTooLarge
	}
	writeJSON(w, status, map[string]string{"error": "invalid_request"})
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

func me(w http.ResponseWriter, r *http.Request) {
	c, _ := refresh.ClaimsFromContext(r.Context())
	writeJSON(w, http.StatusOK, map[string]any{
		"sub": c.Subject, "sid": c.SessionID, "scope": strings.Join(c.Scope, " "),
		"roles": c.Roles(), "client_id": c.ClientID, "expires_at": c.ExpiresAt, "auth_time": c.AuthTime,
	})
}

// defaultRecentAuth is how recent a sign-in /admin and signing out another
// device want ("sudo mode", RFC 9470) unless -recent-auth says otherwise: a
// refreshed token keeps its session's auth_time, so after this long the
// holder of a refresh token must sign in again to get in, and a stolen
// refresh token alone never does.
const defaultRecentAuth = 15 * time.Minute

// recentSignIn is RequireRecentAuth(maxAge) (0: defaultRecentAuth).
func recentSignIn(maxAge time.Duration) func(http.Handler) http.Handler {
	if maxAge == 0 {
		maxAge = defaultRecentAuth
	}
	return refresh.RequireRecentAuth(maxAge)
}

// adminOnly is /admin behind its guards: the admin role, and recent.
func adminOnly(recent func(http.Handler) http.Handler) http.Handler {
	return refresh.RequireRole("admin")(recent(http.HandlerFunc(admin)))
}

func admin(w http.ResponseWriter, r *http.Request) {
	c, _ := refresh.ClaimsFromContext(r.Context())
	writeJSON(w, http.StatusOK, map[string]any{"hello": c.Subject, "area": "admin"})
}

// walkthrough is the curl session printed at start-up and shown in the
// README; a test runs it against the demo.
func walkthrough(base string) string {
	return strings.ReplaceAll(`BASE=http://127.0.0.1:8080
# 1. Log in: a 15-minute access token and a rotating refresh token
PAIR=$(curl -s $BASE/login -d username=alice -d password=wonderland); echo "$PAIR"
AT=$(echo "$PAIR" | jq -r .access_token); RT=$(echo "$PAIR" | jq -r .refresh_token)
# 2. Call protected routes with the access token
curl -s $BASE/me -H "Authorization: Bearer $AT"
curl -s $BASE/admin -H "Authorization: Bearer $AT"
# 3. Refresh: a new pair; the old refresh token is now spent
NEW=$(curl -s $BASE/token -d grant_type=refresh_token -d refresh_token=$RT); echo "$NEW"
# 4. Replay the spent token: invalid_grant, and the session is revoked...
curl -s $BASE/token -d grant_type=refresh_token -d refresh_token=$RT
# ...so even the newest refresh token of that session is refused now
curl -s $BASE/token -d grant_type=refresh_token -d refresh_token=$(echo "$NEW" | jq -r .refresh_token)
# 5. Log in as bob on two devices, list them, log out everywhere
curl -s $BASE/login -d username=bob -d password=builder >/dev/null
BOB=$(curl -s $BASE/login -d username=bob -d password=builder | jq -r .access_token)
curl -s $BASE/sessions -H "Authorization: Bearer $BOB" | jq '.sessions | length'
curl -s $BASE/admin -H "Authorization: Bearer $BOB" -o /dev/null -w '%{http_code}\n'
curl -s -X POST $BASE/logout-all -H "Authorization: Bearer $BOB" -w '%{http_code}\n'
curl -s $BASE/me -H "Authorization: Bearer $BOB" -o /dev/null -w '%{http_code}\n'
`, "http://127.0.0.1:8080", base)
}
