package refresh

import (
	"errors"
	"fmt"
)

// Sentinel errors for the expected outcomes of verifying, rotating and
// revoking tokens. Compare with errors.Is: the errors returned by this package
// wrap them, usually inside a *TokenError that says why.
//
// All of them except ErrSessionExists and ErrConflict are client faults: the
// presented token or request is not acceptable, and an HTTP handler answers
// 400 or 401. Anything else (a store that is down, a cancelled context) is a
// system fault; see IsClientError.
var (
	// ErrInvalidToken: the token is malformed, forged, signed by an unknown
	// key, bound to another client, or names a session that does not exist.
	ErrInvalidToken = errors.New("refresh: invalid token")
	// ErrExpired: the token or its session has passed its lifetime (access
	// token exp, refresh idle lifetime or absolute session lifetime).
	ErrExpired = errors.New("refresh: token expired")
	// ErrRevoked: the token's session has been revoked.
	ErrRevoked = errors.New("refresh: session revoked")
	// ErrReused: a refresh token that was already rotated was presented again
	// outside the grace window. Its session has been revoked.
	ErrReused = errors.New("refresh: refresh token reused; session revoked")
	// ErrInvalidScope: a refresh asked for a scope the session was not
	// granted.
	ErrInvalidScope = errors.New("refresh: scope exceeds the granted scope")
	// ErrRefused: the application's Config.OnRefresh hook refused the
	// refresh (user disabled or deleted). The hook's own error is wrapped too.
	ErrRefused = errors.New("refresh: refused by application")
	// ErrInvalidClient: client authentication failed. HandlerConfig.ClientAuth
	// returns an error wrapping it to refuse a client (401 invalid_client).
	ErrInvalidClient = errors.New("refresh: invalid client")
	// ErrInvalidRequest: Issue was given a value no token or store can carry
	// as given: an empty subject; a subject or client ID that is not valid
	// UTF-8 or holds a NUL byte (Postgres refuses both in text, and a JWT
	// would carry U+FFFD instead, another subject), or is longer than 1024
	// bytes (more than a database index entry may hold); a scope token outside
	// RFC 6749 §3.3 (printable ASCII without space, '"' or '\'); a DPoP
	// key that is not a SHA-256 JWK thumbprint; claims
	// with a registered name, that JSON cannot encode, or that make the
	// access token longer than Config.MaxTokenSize. Nothing
	// is stored. When the value came from the request (a client_id at
	// sign-in) it is the client's fault: answer 400 invalid_request
	// (Handlers.WriteIssueError).
	ErrInvalidRequest = errors.New("refresh: invalid request")

	// ErrKeysUnavailable: a Verifier has no verification keys yet (its JWKS
	// endpoint has not answered) or its introspection endpoint failed. A
	// system fault, not the client's: the middleware answers 503.
	ErrKeysUnavailable = errors.New("refresh: verification unavailable")

	// ErrSessionNotFound is returned by a Store when no session has the id.
	ErrSessionNotFound = errors.New("refresh: session not found")
	// ErrSessionExists is returned by Store.Create when the id is taken.
	ErrSessionExists = errors.New("refresh: session already exists")
	// ErrConflict is returned by Store.Advance and Store.UseGrace when the
	// session is no longer in the state the caller expected: another
	// request rotated it first, or it was revoked. Nothing was changed.
	ErrConflict = errors.New("refresh: concurrent modification")
	// ErrProofReplayed is returned by ProofRecorder.RecordProof when the
	// proof is recorded already: a replay.
	ErrProofReplayed = errors.New("refresh: DPoP proof already used")
	// ErrCrossSite is returned by Handlers.CheckCSRF for a cookie-mode
	// request without the CSRF header or from another origin.
	ErrCrossSite = errors.New("refresh: cross-site request refused")
	// ErrUseDPoPNonce: with Config.DPoPNonceLifetime set, a DPoP proof
	// without a current server nonce (RFC 9449 §8, §9). It comes wrapped
	// together with ErrInvalidToken; answer it with use_dpop_nonce and a
	// DPoP-Nonce header (Handlers.DPoPNonce), and the client retries.
	ErrUseDPoPNonce = errors.New("refresh: DPoP proof needs the server's nonce")
)

// TokenError describes why a token was refused. Err is one of the sentinel
// errors above and Reason a short, fixed, human-readable cause such as
// "bad signature" or "unknown key id". Reason never contains token bytes or
// other attacker-chosen input, but it is meant for logs: HTTP handlers of this
// package never send it to clients. It is immutable once returned.
type TokenError struct {
	Err    error  // the sentinel: ErrInvalidToken, ErrExpired, ...
	Reason string // fixed description of the cause
}

// Error returns the sentinel's message and the reason.
func (e *TokenError) Error() string {
	if e.Reason == "" {
		return e.Err.Error()
	}
	return e.Err.Error() + ": " + e.Reason
}

// Unwrap returns the sentinel error.
func (e *TokenError) Unwrap() error { return e.Err }

func tokenErr(sentinel error, reason string) error {
	return &TokenError{Err: sentinel, Reason: reason}
}

// IsClientError reports whether err is the client's fault: a token or request
// that is invalid, expired, revoked, reused, over-scoped or refused, or a
// value Issue cannot store (ErrInvalidRequest). Such
// errors are expected and are answered with 4xx statuses. Any other non-nil
// error is a fault of the system (store, context, configuration).
func IsClientError(err error) bool {
	for _, s := range []error{ErrInvalidToken, ErrExpired, ErrRevoked, ErrReused, ErrInvalidScope, ErrRefused, ErrInvalidClient, ErrInvalidRequest} {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

// requestErr is an ErrInvalidRequest saying what was refused.
func requestErr(what string) error {
	return fmt.Errorf("%w: %s", ErrInvalidRequest, what)
}

// storeErr wraps a failure of the Store so that callers see where it came
// from without losing the cause.
func storeErr(op string, err error) error {
	return fmt.Errorf("refresh: store %s: %w", op, err)
}
