// Package pgstore is a refresh.Store on PostgreSQL, through pgx's
// connection pool. Several instances of a service can share it.
//
//	pool, err := pgxpool.New(ctx, "postgres://…")
//	store, err := pgstore.New(pool)
//	if err := store.Migrate(ctx); err != nil { … }
//	iss, err := refresh.NewIssuer(refresh.Config{Store: store, …})
//
// Every method is one SQL statement and one round trip. Advance is a
// compare-and-swap (UPDATE … WHERE generation = $2 AND revoked_at IS NULL),
// so concurrent rotations of one session need no explicit transaction and
// exactly one wins. Times are stored as bigint Unix nanoseconds, because
// timestamptz keeps only microseconds and the Issuer's idle and grace
// boundaries are exact to the nanosecond. The schema is in schema.sql.
package pgstore

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/refreshkit/refresh"
)

//go:embed schema.sql
var schema string

// DefaultTable is the table name used unless WithTable says otherwise.
const DefaultTable = "refresh_sessions"

// Store is a refresh.Store on PostgreSQL. It is safe for concurrent use by
// multiple goroutines and processes. It owns no goroutines; the pool is the
// caller's to close.
type Store struct {
	pool  *pgxpool.Pool
	table string // a plain identifier, checked by New
	q     queries
}

var (
	_ refresh.Store          = (*Store)(nil)
	_ refresh.ActiveAdvancer = (*Store)(nil)
	_ refresh.StaleDeleter   = (*Store)(nil)
	_ refresh.ProofRecorder  = (*Store)(nil)
)

// Option configures a Store.
type Option func(*Store)

// WithTable sets the table name (default "refresh_sessions"): a plain
// lower-case SQL identifier. Use the connection's search_path to place it in
// another schema.
func WithTable(name string) Option {
	return func(s *Store) { s.table = name }
}

var identifier = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,40}$`)

// New returns a Store on pool. Call Migrate once to create the table.
func New(pool *pgxpool.Pool, opts ...Option) (*Store, error) {
	s := &Store{pool: pool, table: DefaultTable}
	for _, o := range opts {
		o(s)
	}
	if !identifier.MatchString(s.table) {
		return nil, fmt.Errorf("pgstore: table name %q is not a plain lower-case identifier", s.table)
	}
	s.q = buildQueries(s.table)
	return s, nil
}

// Migrate creates the table and its indexes if they do not exist. It is
// idempotent and safe to run from several instances at start-up.
func (s *Store) Migrate(ctx context.Context) error {
	sql := strings.ReplaceAll(schema, DefaultTable, s.table)
	// Serialise concurrent migrations: CREATE … IF NOT EXISTS can race.
	_, err := s.pool.Exec(ctx, "SELECT pg_advisory_xact_lock(727465); "+sql)
	if err != nil {
		return fmt.Errorf("pgstore: migrate: %w", err)
	}
	return nil
}

type queries struct {
	create, get, advance, advanceActive, grace, revoke, revokeSubject, sessions, deleteExpired, deleteStale string
	recordProof, deleteProofs                                                                               string
}

const columns = `id, subject, client_id, dpop_key, generation, grace_uses, seed, scope, claims, meta,
	created_at, rotated_at, expires_at, revoked_at, revoke_reason`

func buildQueries(t string) queries {
	r := func(q string) string { return strings.ReplaceAll(q, "$T", t) }
	return queries{
		create: r(`INSERT INTO $T (` + columns + `)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
			ON CONFLICT (id) DO NOTHING`),
		get: r(`SELECT ` + columns + ` FROM $T WHERE id = $1`),
		// One round trip: the update, and whether the row exists at all so
		// that a miss can say not-found rather than conflict.
		advance: r(`WITH u AS (
				UPDATE $T SET generation = generation + 1, rotated_at = $3, grace_uses = 0
				WHERE id = $1 AND generation = $2 AND revoked_at IS NULL
				RETURNING 1)
			SELECT (SELECT count(*) FROM u), EXISTS (SELECT 1 FROM $T WHERE id = $1)`),
		advanceActive: r(`WITH u AS (
				UPDATE $T SET generation = generation + 1, rotated_at = $3, grace_uses = 0
				WHERE id = $1 AND generation = $2 AND revoked_at IS NULL AND rotated_at > $4
				RETURNING 1)
			SELECT (SELECT count(*) FROM u), EXISTS (SELECT 1 FROM $T WHERE id = $1)`),
		grace: r(`WITH u AS (
				UPDATE $T SET grace_uses = grace_uses + 1
				WHERE id = $1 AND generation = $2 AND revoked_at IS NULL AND grace_uses < $3
				RETURNING 1)
			SELECT (SELECT count(*) FROM u), EXISTS (SELECT 1 FROM $T WHERE id = $1)`),
		revoke: r(`UPDATE $T SET
				revoke_reason = CASE WHEN revoked_at IS NULL THEN $3 ELSE revoke_reason END,
				revoked_at = COALESCE(revoked_at, $2)
			WHERE id = $1`),
		revokeSubject: r(`UPDATE $T SET revoked_at = $2, revoke_reason = $3
			WHERE subject = $1 AND revoked_at IS NULL`),
		sessions: r(`SELECT ` + columns + ` FROM $T WHERE subject = $1 ORDER BY created_at, id COLLATE "C"`),
		// A bounded batch; SKIP LOCKED lets concurrent sweepers share work
		// without waiting on each other or on rotations.
		// = ANY(ARRAY(…)) rather than IN (…): the planner then deletes the
		// batch through the primary key; with IN it may hash-join against a
		// sequential scan of the whole table (TestSweepUsesIndexes).
		deleteExpired: r(`DELETE FROM $T WHERE id = ANY(ARRAY(
				SELECT id FROM $T WHERE expires_at <= $1 LIMIT $2 FOR UPDATE SKIP LOCKED))`),
		// The same, for the three rules of DeleteStale; each has an index
		// (schema.sql), which the planner combines (BitmapOr) while stale
		// rows are few, as they are when sweeping runs periodically. Under
		// READ COMMITTED, FOR UPDATE re-checks a row updated since the
		// snapshot, so a session rotated meanwhile is not idle any more
		// and stays. A NULL $3 (no retention) matches no revoked row.
		deleteStale: r(`DELETE FROM $T WHERE id = ANY(ARRAY(
				SELECT id FROM $T WHERE expires_at <= $1 OR rotated_at <= $2 OR revoked_at <= $3
				LIMIT $4 FOR UPDATE SKIP LOCKED))`),
		// Insert, or take over a record past its expiry; a live record is
		// left alone (0 rows: a replay). ON CONFLICT makes concurrent
		// inserts of one id wait for each other, so exactly one wins.
		recordProof: r(`INSERT INTO $T_proofs (id, expires_at) VALUES ($1, $3)
			ON CONFLICT (id) DO UPDATE SET expires_at = EXCLUDED.expires_at
			WHERE $T_proofs.expires_at <= $2`),
		deleteProofs: r(`DELETE FROM $T_proofs WHERE id = ANY(ARRAY(
				SELECT id FROM $T_proofs WHERE expires_at <= $1 LIMIT $2 FOR UPDATE SKIP LOCKED))`),
	}
}

// nanos is t in Unix nanoseconds, clamped to the years 1678 to 2262 so that
// times outside keep their order (a sweep "before the year 3000").
func nanos(t time.Time) int64 {
	switch {
	case t.Before(minTime):
		return math.MinInt64
	case t.After(maxTime):
		return math.MaxInt64
	}
	return t.UnixNano()
}

var (
	minTime = time.Unix(0, math.MinInt64)
	maxTime = time.Unix(0, math.MaxInt64)
)

func fromNanos(n int64) time.Time { return time.Unix(0, n).UTC() }

func wrap(op string, err error) error { return fmt.Errorf("pgstore: %s: %w", op, err) }

// Create implements refresh.Store.
func (s *Store) Create(ctx context.Context, se *refresh.Session) error {
	var revoked *int64
	if se.Revoked() {
		n := nanos(se.RevokedAt)
		revoked = &n
	}
	meta, err := json.Marshal(se.Meta)
	if err != nil {
		return wrap("create", err)
	}
	scope := se.Scope
	if scope == nil {
		scope = []string{}
	}
	// meta goes as text: in the exec and simple_protocol query modes (for
	// poolers, README) pgx sends []byte as bytea, which jsonb refuses.
	tag, err := s.pool.Exec(ctx, s.q.create, se.ID, se.Subject, se.ClientID, se.DPoPKey, int64(se.Generation), int64(se.GraceUses),
		se.Seed, scope, se.Claims, string(meta), nanos(se.CreatedAt), nanos(se.RotatedAt), nanos(se.ExpiresAt),
		revoked, se.RevokeReason)
	if err != nil {
		return wrap("create", err)
	}
	if tag.RowsAffected() == 0 {
		return refresh.ErrSessionExists
	}
	return nil
}

func scanSession(row pgx.Row) (*refresh.Session, error) {
	var (
		se                        refresh.Session
		gen, grace                int64
		meta                      []byte
		created, rotated, expires int64
		revoked                   *int64
	)
	err := row.Scan(&se.ID, &se.Subject, &se.ClientID, &se.DPoPKey, &gen, &grace, &se.Seed, &se.Scope, &se.Claims, &meta,
		&created, &rotated, &expires, &revoked, &se.RevokeReason)
	if err != nil {
		return nil, err
	}
	se.Generation, se.GraceUses = uint64(gen), uint32(grace)
	if len(meta) > 0 && string(meta) != "null" {
		if err := json.Unmarshal(meta, &se.Meta); err != nil {
			return nil, err
		}
	}
	if len(se.Scope) == 0 {
		se.Scope = nil
	}
	se.CreatedAt, se.RotatedAt, se.ExpiresAt = fromNanos(created), fromNanos(rotated), fromNanos(expires)
	if revoked != nil {
		se.RevokedAt = fromNanos(*revoked)
	}
	return &se, nil
}

// Get implements refresh.Store.
func (s *Store) Get(ctx context.Context, id string) (*refresh.Session, error) {
	se, err := scanSession(s.pool.QueryRow(ctx, s.q.get, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, refresh.ErrSessionNotFound
	}
	if err != nil {
		return nil, wrap("get", err)
	}
	return se, nil
}

// casResult turns the (updated, exists) row of advance and grace into the
// contract's errors.
func (s *Store) cas(ctx context.Context, op, q string, args ...any) error {
	var updated int64
	var exists bool
	if err := s.pool.QueryRow(ctx, q, args...).Scan(&updated, &exists); err != nil {
		return wrap(op, err)
	}
	switch {
	case updated == 1:
		return nil
	case !exists:
		return refresh.ErrSessionNotFound
	default:
		return refresh.ErrConflict
	}
}

// Advance implements refresh.Store in one statement.
func (s *Store) Advance(ctx context.Context, id string, from uint64, at time.Time) error {
	if from >= 1<<63-1 {
		return s.cas(ctx, "advance", s.q.advance, id, int64(-1), nanos(at))
	}
	return s.cas(ctx, "advance", s.q.advance, id, int64(from), nanos(at))
}

// AdvanceActive implements refresh.ActiveAdvancer in one statement, so that
// a rotation costs one round trip.
func (s *Store) AdvanceActive(ctx context.Context, id string, from uint64, at, activeAfter time.Time) error {
	if from >= 1<<63-1 {
		return s.cas(ctx, "advance", s.q.advanceActive, id, int64(-1), nanos(at), nanos(activeAfter))
	}
	return s.cas(ctx, "advance", s.q.advanceActive, id, int64(from), nanos(at), nanos(activeAfter))
}

// UseGrace implements refresh.Store in one statement.
func (s *Store) UseGrace(ctx context.Context, id string, generation uint64, limit uint32) error {
	if generation >= 1<<63-1 {
		return s.cas(ctx, "use grace", s.q.grace, id, int64(-1), int64(limit))
	}
	return s.cas(ctx, "use grace", s.q.grace, id, int64(generation), int64(limit))
}

// Revoke implements refresh.Store.
func (s *Store) Revoke(ctx context.Context, id string, at time.Time, reason string) error {
	tag, err := s.pool.Exec(ctx, s.q.revoke, id, nanos(at), reason)
	if err != nil {
		return wrap("revoke", err)
	}
	if tag.RowsAffected() == 0 {
		return refresh.ErrSessionNotFound
	}
	return nil
}

// RevokeSubject implements refresh.Store.
func (s *Store) RevokeSubject(ctx context.Context, subject string, at time.Time, reason string) (int, error) {
	tag, err := s.pool.Exec(ctx, s.q.revokeSubject, subject, nanos(at), reason)
	if err != nil {
		return 0, wrap("revoke subject", err)
	}
	return int(tag.RowsAffected()), nil
}

// Sessions implements refresh.Store.
func (s *Store) Sessions(ctx context.Context, subject string) ([]*refresh.Session, error) {
	rows, err := s.pool.Query(ctx, s.q.sessions, subject)
	if err != nil {
		return nil, wrap("sessions", err)
	}
	defer rows.Close()
	out := []*refresh.Session{}
	for rows.Next() {
		se, err := scanSession(rows)
		if err != nil {
			return nil, wrap("sessions", err)
		}
		out = append(out, se)
	}
	if err := rows.Err(); err != nil {
		return nil, wrap("sessions", err)
	}
	return out, nil
}

// DeleteExpired implements refresh.Store: one bounded DELETE.
func (s *Store) DeleteExpired(ctx context.Context, before time.Time, limit int) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, wrap("delete expired", err)
	}
	if limit <= 0 {
		return 0, nil
	}
	tag, err := s.pool.Exec(ctx, s.q.deleteExpired, nanos(before), limit)
	if err != nil {
		return 0, wrap("delete expired", err)
	}
	return int(tag.RowsAffected()), nil
}

// DeleteStale implements refresh.StaleDeleter: one bounded DELETE, like
// DeleteExpired, using the indexes on expires_at, rotated_at and (partial)
// revoked_at.
func (s *Store) DeleteStale(ctx context.Context, expiredBy, idleBy, revokedBy time.Time, limit int) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, wrap("delete stale", err)
	}
	if limit <= 0 {
		return 0, nil
	}
	var revoked *int64
	if !revokedBy.IsZero() {
		n := nanos(revokedBy)
		revoked = &n
	}
	tag, err := s.pool.Exec(ctx, s.q.deleteStale, nanos(expiredBy), nanos(idleBy), revoked, limit)
	if err != nil {
		return 0, wrap("delete stale", err)
	}
	return int(tag.RowsAffected()), nil
}

// RecordProof implements refresh.ProofRecorder: one INSERT … ON CONFLICT
// into the proofs table (the sessions table's name + "_proofs").
func (s *Store) RecordProof(ctx context.Context, id string, now, expires time.Time) error {
	tag, err := s.pool.Exec(ctx, s.q.recordProof, id, nanos(now), nanos(expires))
	if err != nil {
		return wrap("record proof", err)
	}
	if tag.RowsAffected() == 0 {
		return refresh.ErrProofReplayed
	}
	return nil
}

// DeleteExpiredProofs implements refresh.ProofRecorder: one bounded DELETE
// through the index on expires_at.
func (s *Store) DeleteExpiredProofs(ctx context.Context, before time.Time, limit int) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, wrap("delete expired proofs", err)
	}
	if limit <= 0 {
		return 0, nil
	}
	tag, err := s.pool.Exec(ctx, s.q.deleteProofs, nanos(before), limit)
	if err != nil {
		return 0, wrap("delete expired proofs", err)
	}
	return int(tag.RowsAffected()), nil
}
