package refresh

import (
	"cmp"
	"context"
	"maps"
	"slices"
	"time"
)

// Session is one login on one device: a family of refresh tokens of which
// exactly one, the token of generation Generation, may be used now.
//
// A Session holds no token and nothing a token can be rebuilt from without the
// Issuer's refresh keys: a copy of the store gives an attacker no tokens.
// Sessions returned by a Store are copies owned by the caller, who may change
// them freely; a Session is not safe for concurrent modification.
type Session struct {
	ID         string // random 128-bit id, base64url; the sid claim of access tokens
	Subject    string // the user
	ClientID   string // client the family is bound to, or ""
	Generation uint64 // generation of the refresh token that may be used now
	GraceUses  uint32 // grace retries served for the current generation
	Seed       []byte // 32 secret random bytes, input of every token's MAC
	DPoPKey    string // thumbprint of the DPoP key the session is bound to, or ""

	Scope  []string          // scope granted at login
	Claims []byte            // application claims as a JSON object, or nil
	Meta   map[string]string // device, user agent, IP ... for the sessions list

	CreatedAt time.Time // the sign-in: when Issue ran, or the earlier authentication WithAuthTime named; access tokens carry it as auth_time; never changes
	RotatedAt time.Time // last time Generation advanced (when Issue ran, at first)
	ExpiresAt time.Time // absolute end; rotation never extends it

	RevokedAt    time.Time // zero while the session is live; set once
	RevokeReason string    // why it was revoked ("logout", "reuse", ...)
}

// Revoked reports whether the session has been revoked.
func (s *Session) Revoked() bool { return !s.RevokedAt.IsZero() }

// Clone returns a deep copy of s: no slice or map is shared. Stores use it so
// that returned sessions never alias their memory.
func (s *Session) Clone() *Session {
	if s == nil {
		return nil
	}
	c := *s
	c.Seed = slices.Clone(s.Seed)
	c.Scope = slices.Clone(s.Scope)
	c.Claims = slices.Clone(s.Claims)
	c.Meta = maps.Clone(s.Meta)
	return &c
}

// Store keeps sessions. It is a record store, not a policy engine: it never
// decides whether a token is valid, expired or reused (the Issuer does), it
// only applies each change atomically. That keeps third-party adapters simple
// and hard to get wrong. The package storetest checks an implementation
// against this contract; these comments are the contract itself.
//
// Concurrency and atomicity. Every method must be safe for concurrent use by
// multiple goroutines and by multiple processes sharing the store. Create,
// Advance, UseGrace and Revoke are each one atomic step on one session (a
// compare-and-swap where they say so): of concurrent calls, each sees the
// session either before or after every other. Each changes only the fields
// it names: a store that keeps a session as one document must not write
// back a whole copy it read, even under a compare-and-swap on the
// generation, because a revocation that landed in between (a sign-out, a
// reuse detection) would be undone and the session would live on
// (storetest's RevocationsStand). RevokeSubject is atomic per
// session, not across them: see its comment.
//
// Values. Returned sessions are copies the caller may change without
// changing the store, and the store keeps no reference to what it is given
// (Session.Clone helps). Create stores a session exactly as given, every
// field; it validates nothing but the uniqueness of the ID (the Issuer
// checks everything else) and must not normalise, trim or re-encode
// anything. Refresh tokens' tags cover the seed, subject, client, DPoP key,
// scope, claims, CreatedAt and ExpiresAt: a store that changes one of them
// makes every token of the session invalid. Claims (a JSON object) must come back as the same JSON value:
// key order, insignificant white space and string escapes may change (a
// jsonb column changes them), numbers may not: a store that decodes claims
// into float64s turns a 64-bit id above 2^53 into another id.
//
// Strings compare as exact bytes. Subjects, client IDs, scope tokens and
// metadata are valid UTF-8 without NUL (Issue refuses or replaces anything
// else, so a text column keeps them); the IDs the Issuer mints are
// unpadded base64url, and any other string names no session. Within
// that, "alice", "Alice", "alice ", "alice%", "alice_" and two Unicode
// normalisations of one name are different subjects, and a session is
// found only by its exact ID, not by another case of it or with trailing
// spaces. Never use a case-insensitive or PAD SPACE collation (MySQL's
// defaults), LIKE, a glob (Redis SCAN MATCH), a key prefix ("alice:"
// also lists "alice:1"), or a normalising comparison, and keep strings
// whole: no column that cuts a subject or a client ID (up to 1024 bytes,
// the longest Issue accepts) or metadata (up to MaxMetaBytes, keys and
// values together), and none that cuts at a 4-byte character (MySQL's
// utf8mb3). A text encoding of several values must escape what they may
// hold: a scope token may contain , ; = { } [ ], metadata anything but
// NUL, line breaks included; storetest checks all of these. A session's
// scope never repeats a token (Issue keeps each once), and its claims
// never hold the escapes a Postgres jsonb column refuses (\u0000, a lone
// surrogate; Issue refuses them).
//
// Times are instants, kept with nanosecond precision and returned so that
// Equal reports true, for the zero Time (RevokedAt of a live session) and
// every instant from 1970-01-01 to 2262-04-11 (Unix nanoseconds in an
// int64); the Issuer stores no other. Locations need not be preserved, but
// a time in any Location is that instant: a column that keeps the wall
// clock and drops the zone, or that compares times as text with their
// offsets, is wrong. The Issuer hands a store times in UTC; storetest hands
// them in other zones, as any other caller may. A cut-off outside that
// range given to a sweep (DeleteExpired, DeleteStale, DeleteExpiredProofs)
// compares as earlier or later than every stored time: one before 1678
// must not wrap around when made Unix nanoseconds.
//
// Expiry. A store may drop a session by itself once its ExpiresAt has passed
// (a key TTL in Redis, a database's row expiry); Get then reports
// ErrSessionNotFound for it, which the Issuer treats as an invalid token,
// exactly as it treats an expired one. It must never drop, or hide, a
// session by itself before its ExpiresAt, revoked or not: only the Issuer
// decides to delete one earlier (DeleteStale).
//
// Errors. Expected outcomes are the documented sentinels, matched with
// errors.Is (wrapping is fine). Everything else (a dropped connection, a
// busy database, a timeout, a cancelled ctx) is a system fault and must be
// returned as an error that matches none of the sentinels: a fault reported
// as ErrSessionNotFound or ErrConflict turns an outage into "invalid grant"
// for the user instead of 503, or makes the Issuer believe a session is gone.
// Each method honours ctx, returning an error wrapping ctx.Err() once it is
// done, and changes nothing when it returns an error, except RevokeSubject
// (see there).
type Store interface {
	// Create stores a new session. If a session with the same ID exists it
	// returns ErrSessionExists and changes nothing.
	Create(ctx context.Context, s *Session) error

	// Get returns the session with the id, revoked or not, expired or not,
	// or ErrSessionNotFound; never neither. Sessions removed by
	// DeleteExpired are not found. (The Issuer takes a nil session without
	// an error, or a session with another ID, for a broken store: a
	// system fault, 503 on the wire.)
	Get(ctx context.Context, id string) (*Session, error)

	// Advance moves the session from generation `from` to from+1, sets
	// RotatedAt to at and GraceUses to 0, but only if its generation is still
	// `from` and it is not revoked. Otherwise it returns ErrConflict and
	// changes nothing (ErrSessionNotFound if there is no such session). Of
	// any number of concurrent calls with the same `from`, at most one
	// succeeds.
	Advance(ctx context.Context, id string, from uint64, at time.Time) error

	// UseGrace counts one grace retry for the current generation: if the
	// session's generation is `generation`, it is not revoked and GraceUses is
	// below limit, it increments GraceUses and returns nil. Otherwise it
	// returns ErrConflict and changes nothing (ErrSessionNotFound if there is
	// no such session).
	UseGrace(ctx context.Context, id string, generation uint64, limit uint32) error

	// Revoke marks the session revoked at `at` for `reason`. Revoking a
	// revoked session returns nil and keeps the first RevokedAt and reason.
	// A missing session is ErrSessionNotFound.
	Revoke(ctx context.Context, id string, at time.Time, reason string) error

	// RevokeSubject revokes every session of the subject that is not revoked
	// yet and returns how many it revoked (0 for an unknown subject). Each
	// session is revoked atomically, as by Revoke, but not all in one step:
	// every session of the subject that existed when the call began is
	// revoked when it returns nil, while one created during the call may or
	// may not be (and is counted only if revoked). That is what "log out
	// everywhere" needs: a login racing it cannot be told from a login just
	// after it, and a rotation racing it either ran first or meets a revoked
	// session. On an error some sessions may already be revoked; the caller
	// may retry, since revocation is idempotent.
	RevokeSubject(ctx context.Context, subject string, at time.Time, reason string) (int, error)

	// Sessions returns every stored session of the subject, revoked ones
	// included, ordered by CreatedAt and then ID; an empty slice for an
	// unknown subject. Sessions of other subjects never appear.
	Sessions(ctx context.Context, subject string) ([]*Session, error)

	// DeleteExpired removes at most limit sessions whose ExpiresAt is at or
	// before `before` (at nanosecond precision) and returns how many it
	// removed. It removes no other session: not one expiring a nanosecond
	// later, and not a revoked one that has not expired. Callers loop until
	// it returns fewer than limit; each call must be short so it never holds
	// long locks. A store that drops sessions by itself (see Expiry) and
	// keeps an index of expiry times to find the rest may count, and must
	// bound by limit, the index entries of dropped sessions it removes, so
	// that a call's work stays bounded and callers loop until the index is
	// clean (redisstore does). limit <= 0 removes nothing and returns 0.
	DeleteExpired(ctx context.Context, before time.Time, limit int) (int, error)
}

// ActiveAdvancer is an optional Store capability that lets the Issuer rotate
// a refresh token in one round trip to the store instead of two (a Get, then
// Advance). A Store that has it is used that way automatically; one without
// it keeps working exactly as before.
//
// The Issuer keeps a local copy of what never changes after Issue (seed,
// subject, bindings, scope, claims, lifetimes), checks the token's MAC and the
// absolute expiry against it, and leaves to this one atomic step everything
// that can change: the generation, revocation and the idle lifetime.
type ActiveAdvancer interface {
	// AdvanceActive is Advance with one more condition in the same atomic
	// step: the session's RotatedAt must be after activeAfter (strictly).
	// If its generation is `from`, it is not revoked and RotatedAt is after
	// activeAfter, it moves the session to from+1, sets RotatedAt to at and
	// GraceUses to 0 and returns nil. Otherwise it returns ErrConflict and
	// changes nothing (ErrSessionNotFound if there is no such session). Of
	// any number of concurrent calls with the same `from`, AdvanceActive
	// and Advance mixed (one instance may take either path while another
	// takes the other), at most one succeeds. It compares times only; it
	// knows nothing of the Issuer's lifetimes.
	AdvanceActive(ctx context.Context, id string, from uint64, at, activeAfter time.Time) error
}

// StaleDeleter is an optional Store capability that keeps tables from
// growing: besides sessions past their absolute end, Issuer.Sweep then also
// removes sessions that can never be used again sooner, those idle past
// Config.IdleTTL and those revoked longer than Config.RevokedRetention ago.
// A Store without it is swept with DeleteExpired only.
type StaleDeleter interface {
	// DeleteStale removes at most limit sessions, each matching at least one
	// of: ExpiresAt at or before expiredBy; RotatedAt at or before idleBy;
	// revoked, with RevokedAt at or before revokedBy. It returns how many it
	// removed and removes no other session (compare at nanosecond
	// precision; a live session's zero RevokedAt never matches, and a zero
	// revokedBy, which the Issuer passes when revoked sessions are kept,
	// matches no session). A session rotated meanwhile must not be removed
	// for its old RotatedAt (re-check under the row's lock). Like
	// DeleteExpired it must be short, batched by limit, and limit <= 0
	// removes nothing. It compares times only; the Issuer chooses them.
	DeleteStale(ctx context.Context, expiredBy, idleBy, revokedBy time.Time, limit int) (int, error)
}

// ProofRecorder is an optional Store capability for several instances
// sharing one store: the DPoP proofs the Issuer accepts are recorded there,
// so that a proof replayed to another instance is refused too (RFC 9449
// §11.1). Without it each Issuer remembers proofs in its own memory, which
// stops replays only to the same instance. Proofs are recorded only once
// the request is authenticated, so unauthenticated clients cannot fill the
// store; each record lives about two minutes.
type ProofRecorder interface {
	// RecordProof records the proof identifier id (an opaque string of at
	// most 64 bytes, compared byte for byte) until expires and returns nil; or, when id is
	// recorded already with an expiry after now, changes nothing and
	// returns ErrProofReplayed. A record whose expiry is at or before now
	// counts as absent. Of any number of concurrent calls for one id,
	// across processes, exactly one returns nil. Compare at nanosecond
	// precision. A backend fault is an error that is not ErrProofReplayed.
	RecordProof(ctx context.Context, id string, now, expires time.Time) error
	// DeleteExpiredProofs removes at most limit records whose expiry is at
	// or before before, and returns how many; limit <= 0 removes nothing.
	// A store whose backend drops records at their expiry by itself (a
	// key TTL) may remove nothing and return 0.
	DeleteExpiredProofs(ctx context.Context, before time.Time, limit int) (int, error)
}

// SortSessions orders sessions as Store.Sessions must return them: by
// CreatedAt, then by ID. Store implementations may use it.
func SortSessions(list []*Session) {
	slices.SortFunc(list, func(a, b *Session) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return cmp.Compare(a.ID, b.ID)
	})
}
