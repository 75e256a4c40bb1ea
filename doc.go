// Package refresh issues short-lived JWT access tokens and rotating refresh
// tokens for Go services, and protects net/http routes with them.
//
// After its own login check, a service calls [Issuer.Issue] to start a
// session and hand out a [Pair]: an RFC 9068 access token (a JWS with typ
// "at+jwt") and an opaque refresh token. [Issuer.Rotate] exchanges a refresh
// token for a new pair and retires the old token; presenting a retired token
// again is reuse, which revokes that session ([ErrReused]). A short grace
// window ([Config].Grace) lets racing tabs and retried requests receive the
// same successor instead. [Issuer.Revoke], [Issuer.RevokeSession],
// [Issuer.RevokeSessionOf] (a user's own device) and [Issuer.RevokeSubject]
// end one session or all of a user's.
//
// [Issuer.Verify] checks access tokens, refusing every known JWT attack;
// [Issuer.Middleware] wraps it as RFC 6750 bearer middleware with
// [ClaimsFromContext], [RequireScope] and [RequireRole], and
// [RequireRecentAuth] and [RequireACR] for what a refresh token alone must
// not reach: every access token carries the sign-in time of its session
// ([Claims].AuthTime), which refreshes keep. [NewHandlers]
// serves the refresh grant (RFC 6749 §6), token revocation (RFC 7009), the
// JWKS document and RFC 8414 metadata, with an optional cookie mode for
// browser apps. Sessions can
// be bound to a client's DPoP key (RFC 9449, [WithDPoPProof], with optional
// server nonces: [Config].DPoPNonceLifetime, and a resource server's own,
// [VerifierConfig].DPoPNonceLifetime), so that stolen tokens are
// useless without it, and confidential clients are authenticated
// on every request by [HandlerConfig].ClientAuth.
//
// # Resource servers
//
// Services that only accept the tokens (APIs beside the auth service) use a
// [Verifier] from [NewVerifier]: the same checks and middleware as the
// Issuer, with keys fixed or fetched from the Issuer's JWKS URL, and
// optionally RFC 7662 introspection ([Handlers.IntrospectionHandler]) so
// that a revoked session's tokens are refused there too.
//
// # Sessions and the store
//
// A session is one login on one device: a family of refresh tokens of which
// one, the current generation, is valid. A [Store] keeps one record per
// session and applies changes atomically; every security decision is made by
// the Issuer, so a store cannot get rotation, reuse or expiry wrong.
// [MemoryStore] ships here; PostgreSQL, Redis and SQLite stores are the
// modules github.com/refreshkit/refresh/pgstore, .../redisstore and
// .../sqlitestore, and the package storetest checks any implementation
// against the contract. Optional capabilities a store may offer:
// [ActiveAdvancer] (one round trip per rotation), [StaleDeleter] (bounded
// tables) and [ProofRecorder] (DPoP replays caught across instances).
//
// # Refresh tokens
//
// A refresh token is "rt_" followed by base64url of its version, the server
// key id, the session id, a 64-bit session check (HMAC-SHA256 of the session
// id under the server key), the generation and a 128-bit HMAC-SHA256 tag
// over them and a hash of the session's secret seed and of every field that
// never changes after Issue (subject, client, DPoP key, scope, claims,
// sign-in time, absolute end). The store holds the seed but no token and no
// hash of one: a copy of the database mints no tokens without the server
// key, a token whose check does not verify is refused before the store is
// asked anything, a token whose tag does not verify changes nothing, and a
// session whose row someone edited refuses its tokens.
//
// # Errors
//
// Expected outcomes are sentinel errors, compared with errors.Is:
// [ErrInvalidToken], [ErrExpired], [ErrRevoked], [ErrReused],
// [ErrInvalidScope], [ErrRefused], [ErrInvalidClient], [ErrInvalidRequest]
// (a value Issue cannot store; answer with [Handlers.WriteIssueError]); a [*TokenError]
// carries a fixed reason for logs. [ErrKeysUnavailable] is a Verifier's
// system fault. [IsClientError] tells them from system faults such as a failing
// store, which are wrapped with their cause. HTTP handlers never write error
// text to clients.
//
// # Concurrency
//
// An [Issuer], a [Verifier], a [MemoryStore] and [Handlers] are safe for
// concurrent use by multiple goroutines; several processes may share one
// Store.
package refresh
