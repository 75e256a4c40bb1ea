// Package sqlitestore is a refresh.Store in an SQLite file, for a single
// instance that wants sessions to survive a restart without running a
// database server. It uses modernc.org/sqlite, a pure-Go SQLite: no cgo.
//
//	store, err := sqlitestore.Open("data/sessions.db")
//	if err != nil { … }
//	defer store.Close()
//	iss, err := refresh.NewIssuer(refresh.Config{Store: store, …})
//
// Open creates the file and its schema (schema.sql) if needed. The database
// runs in WAL mode: readers never wait for the writer. All writes of a Store
// go through one connection, so they queue in the process instead of
// failing with SQLITE_BUSY; a busy timeout covers other processes that open
// the same file (a backup, the sqlite3 shell). Every change is one
// statement, so one atomic step: the compare-and-swap of a rotation is
// `UPDATE … WHERE generation = ? AND revoked_at IS NULL`. Times are stored
// as INTEGER Unix nanoseconds, so the Issuer's boundaries stay exact.
// Commits are synchronous (synchronous=FULL): a rotation the client was told
// about survives a power cut. Several processes may share one file, but
// SQLite allows one writer at a time; for many instances use pgstore or
// redisstore.
package sqlitestore

import (
	"context"
	"database/sql"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/url"
	"runtime"
	"time"

	"github.com/refreshkit/refresh"
	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

//go:embed schema.sql
var schema string

// Store is a refresh.Store, refresh.ActiveAdvancer and refresh.StaleDeleter
// in one SQLite file. It is safe for concurrent use by goroutines.
type Store struct {
	w, r *sql.DB // one writer connection; several readers
	busy time.Duration
}

var (
	_ refresh.Store          = (*Store)(nil)
	_ refresh.ActiveAdvancer = (*Store)(nil)
	_ refresh.StaleDeleter   = (*Store)(nil)
	_ refresh.ProofRecorder  = (*Store)(nil)
)

// Option configures Open.
type Option func(*Store)

// WithBusyTimeout sets how long a statement waits for another process's
// write lock on the file before failing (default 5 s). Writers of the same
// Store never need it: they queue on its single write connection.
func WithBusyTimeout(d time.Duration) Option { return func(s *Store) { s.busy = d } }

// Open opens (creating if needed) the SQLite database file at path and
// applies the schema. path must be a file: ":memory:" would give each
// connection a database of its own. Close the Store when done.
func Open(path string, opts ...Option) (*Store, error) {
	s := &Store{busy: 5 * time.Second}
	for _, o := range opts {
		o(s)
	}
	if path == "" || path == ":memory:" {
		return nil, errors.New("sqlitestore: Open needs a file path")
	}
	q := url.Values{}
	for _, p := range []string{
		"journal_mode(WAL)",
		"synchronous(FULL)",
		fmt.Sprintf("busy_timeout(%d)", s.busy.Milliseconds()),
		"foreign_keys(ON)",
	} {
		q.Add("_pragma", p)
	}
	q.Set("_txlock", "immediate")
	dsn := "file:" + (&url.URL{Path: path}).EscapedPath() + "?" + q.Encode()
	var err error
	if s.w, err = sql.Open("sqlite", dsn); err != nil {
		return nil, fmt.Errorf("sqlitestore: %w", err)
	}
	s.w.SetMaxOpenConns(1)
	s.w.SetMaxIdleConns(1)
	s.w.SetConnMaxLifetime(0)
	s.w.SetConnMaxIdleTime(0)
	if s.r, err = sql.Open("sqlite", dsn); err != nil {
		s.w.Close()
		return nil, fmt.Errorf("sqlitestore: %w", err)
	}
	readers := max(4, runtime.GOMAXPROCS(0))
	s.r.SetMaxOpenConns(readers)
	s.r.SetMaxIdleConns(readers)
	ctx, cancel := context.WithTimeout(context.Background(), s.busy+5*time.Second)
	defer cancel()
	if _, err := s.w.ExecContext(ctx, schema); err != nil {
		s.Close()
		return nil, fmt.Errorf("sqlitestore: applying the schema to %s: %w", path, err)
	}
	return s, nil
}

// Close closes the database. Calls after Close fail.
func (s *Store) Close() error {
	return errors.Join(s.r.Close(), s.w.Close())
}

const columns = `id, subject, client_id, dpop_key, generation, grace_uses, seed, scope, claims, meta,
	created_at, rotated_at, expires_at, revoked_at, revoke_reason`

// nanos is t in Unix nanoseconds, clamped to the years 1678 to 2262 so that
// times outside keep their order (a sweep "before the year 3000"). The zero
// Time is stored as NULL where it may occur (revoked_at).
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

func wrap(op string, err error) error { return fmt.Errorf("sqlitestore: %s: %w", op, err) }

// gen maps a generation to SQLite's signed INTEGER; those beyond it cannot
// be stored, so they match nothing (-1).
func gen(g uint64) int64 {
	if g > math.MaxInt64 {
		return -1
	}
	return int64(g)
}

// Create implements refresh.Store.
func (s *Store) Create(ctx context.Context, se *refresh.Session) error {
	var revoked any
	if se.Revoked() {
		revoked = nanos(se.RevokedAt)
	}
	var meta, scope any
	if se.Meta != nil {
		b, err := json.Marshal(se.Meta)
		if err != nil {
			return wrap("create", err)
		}
		meta = string(b)
	}
	if len(se.Scope) > 0 {
		b, err := json.Marshal(se.Scope)
		if err != nil {
			return wrap("create", err)
		}
		scope = string(b)
	}
	var claims any
	if se.Claims != nil {
		claims = []byte(se.Claims)
	}
	if se.Generation > math.MaxInt64 {
		return wrap("create", errors.New("generation out of range"))
	}
	res, err := s.w.ExecContext(ctx, `INSERT INTO refresh_sessions (`+columns+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`,
		se.ID, se.Subject, se.ClientID, se.DPoPKey, int64(se.Generation), int64(se.GraceUses),
		nonNil(se.Seed), scope, claims, meta, nanos(se.CreatedAt), nanos(se.RotatedAt), nanos(se.ExpiresAt),
		revoked, se.RevokeReason)
	if err != nil {
		return wrap("create", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return wrap("create", err)
	} else if n == 0 {
		return refresh.ErrSessionExists
	}
	return nil
}

func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

type scanner interface{ Scan(...any) error }

func scanSession(row scanner) (*refresh.Session, error) {
	var (
		se                        refresh.Session
		g, grace                  int64
		scope, meta               sql.NullString
		claims                    []byte
		created, rotated, expires int64
		revoked                   sql.NullInt64
	)
	err := row.Scan(&se.ID, &se.Subject, &se.ClientID, &se.DPoPKey, &g, &grace, &se.Seed, &scope, &claims, &meta,
		&created, &rotated, &expires, &revoked, &se.RevokeReason)
	if err != nil {
		return nil, err
	}
	se.Generation, se.GraceUses = uint64(g), uint32(grace)
	if scope.Valid {
		if err := json.Unmarshal([]byte(scope.String), &se.Scope); err != nil {
			return nil, err
		}
	}
	if meta.Valid {
		if err := json.Unmarshal([]byte(meta.String), &se.Meta); err != nil {
			return nil, err
		}
	}
	if claims != nil {
		se.Claims = json.RawMessage(claims)
	}
	se.CreatedAt, se.RotatedAt, se.ExpiresAt = fromNanos(created), fromNanos(rotated), fromNanos(expires)
	if revoked.Valid {
		se.RevokedAt = fromNanos(revoked.Int64)
	}
	return &se, nil
}

// Get implements refresh.Store.
func (s *Store) Get(ctx context.Context, id string) (*refresh.Session, error) {
	se, err := scanSession(s.r.QueryRowContext(ctx, `SELECT `+columns+` FROM refresh_sessions WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, refresh.ErrSessionNotFound
	}
	if err != nil {
		return nil, wrap("get", err)
	}
	return se, nil
}

// cas runs one conditional UPDATE of the row id; when it changes nothing,
// a second look tells not-found from conflict (only on that path).
func (s *Store) cas(ctx context.Context, op, q string, args ...any) error {
	res, err := s.w.ExecContext(ctx, q, args...)
	if err != nil {
		return wrap(op, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return wrap(op, err)
	}
	if n == 1 {
		return nil
	}
	var one int
	err = s.r.QueryRowContext(ctx, `SELECT 1 FROM refresh_sessions WHERE id = ?`, args[0]).Scan(&one)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return refresh.ErrSessionNotFound
	case err != nil:
		return wrap(op, err)
	}
	return refresh.ErrConflict
}

// Advance implements refresh.Store in one statement.
func (s *Store) Advance(ctx context.Context, id string, from uint64, at time.Time) error {
	return s.cas(ctx, "advance", `UPDATE refresh_sessions SET generation = generation + 1, rotated_at = ?2, grace_uses = 0
		WHERE id = ?1 AND generation = ?3 AND revoked_at IS NULL`, id, nanos(at), gen(from))
}

// AdvanceActive implements refresh.ActiveAdvancer in one statement.
func (s *Store) AdvanceActive(ctx context.Context, id string, from uint64, at, activeAfter time.Time) error {
	return s.cas(ctx, "advance", `UPDATE refresh_sessions SET generation = generation + 1, rotated_at = ?2, grace_uses = 0
		WHERE id = ?1 AND generation = ?3 AND revoked_at IS NULL AND rotated_at > ?4`, id, nanos(at), gen(from), nanos(activeAfter))
}

// UseGrace implements refresh.Store in one statement.
func (s *Store) UseGrace(ctx context.Context, id string, generation uint64, limit uint32) error {
	return s.cas(ctx, "use grace", `UPDATE refresh_sessions SET grace_uses = grace_uses + 1
		WHERE id = ?1 AND generation = ?2 AND revoked_at IS NULL AND grace_uses < ?3`, id, gen(generation), int64(limit))
}

// Revoke implements refresh.Store.
func (s *Store) Revoke(ctx context.Context, id string, at time.Time, reason string) error {
	res, err := s.w.ExecContext(ctx, `UPDATE refresh_sessions SET
			revoke_reason = CASE WHEN revoked_at IS NULL THEN ?3 ELSE revoke_reason END,
			revoked_at = COALESCE(revoked_at, ?2)
		WHERE id = ?1`, id, nanos(at), reason)
	if err != nil {
		return wrap("revoke", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return wrap("revoke", err)
	} else if n == 0 {
		return refresh.ErrSessionNotFound
	}
	return nil
}

// RevokeSubject implements refresh.Store.
func (s *Store) RevokeSubject(ctx context.Context, subject string, at time.Time, reason string) (int, error) {
	res, err := s.w.ExecContext(ctx, revokeSubjectSQL, subject, nanos(at), reason)
	if err != nil {
		return 0, wrap("revoke subject", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, wrap("revoke subject", err)
	}
	return int(n), nil
}

// Sessions implements refresh.Store. SQLite compares TEXT with the BINARY
// collation: subjects match as exact bytes, and ids order bytewise.
func (s *Store) Sessions(ctx context.Context, subject string) ([]*refresh.Session, error) {
	rows, err := s.r.QueryContext(ctx, sessionsSQL, subject)
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

// The statements that touch more than one row search indexes, never scan
// the table (TestSweepsUseIndexes reads their plans): one subject's
// sessions, and the sweeps, each a bounded DELETE. The stale
// one is a union of three searches, each limited: with the three rules in
// one WHERE joined by OR, SQLite scanned the whole table.
const (
	revokeSubjectSQL = `UPDATE refresh_sessions SET revoked_at = ?2, revoke_reason = ?3
		WHERE subject = ?1 AND revoked_at IS NULL`
	sessionsSQL      = `SELECT ` + columns + ` FROM refresh_sessions WHERE subject = ?1 ORDER BY created_at, id`
	deleteExpiredSQL = `DELETE FROM refresh_sessions WHERE id IN (
		SELECT id FROM refresh_sessions WHERE expires_at <= ?1 LIMIT ?2)`
	deleteStaleSQL = `DELETE FROM refresh_sessions WHERE id IN (
		SELECT id FROM (SELECT id FROM refresh_sessions WHERE expires_at <= ?1 LIMIT ?4)
		UNION SELECT id FROM (SELECT id FROM refresh_sessions WHERE rotated_at <= ?2 LIMIT ?4)
		UNION SELECT id FROM (SELECT id FROM refresh_sessions WHERE revoked_at <= ?3 LIMIT ?4)
		LIMIT ?4)`
	deleteExpiredProofsSQL = `DELETE FROM refresh_proofs WHERE id IN (
		SELECT id FROM refresh_proofs WHERE expires_at <= ?1 LIMIT ?2)`
)

// DeleteExpired implements refresh.Store: one bounded DELETE through the
// index on expires_at.
func (s *Store) DeleteExpired(ctx context.Context, before time.Time, limit int) (int, error) {
	return s.delete(ctx, "delete expired", deleteExpiredSQL, limit, nanos(before))
}

// DeleteStale implements refresh.StaleDeleter: one bounded DELETE through
// the indexes on expires_at, rotated_at and revoked_at. Writes are
// serialised, so a session rotated meanwhile is seen with its new time.
func (s *Store) DeleteStale(ctx context.Context, expiredBy, idleBy, revokedBy time.Time, limit int) (int, error) {
	var revoked any // NULL (zero revokedBy) matches no row
	if !revokedBy.IsZero() {
		revoked = nanos(revokedBy)
	}
	return s.delete(ctx, "delete stale", deleteStaleSQL, limit, nanos(expiredBy), nanos(idleBy), revoked)
}

func (s *Store) delete(ctx context.Context, op, q string, limit int, args ...any) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, wrap(op, err)
	}
	if limit <= 0 {
		return 0, nil
	}
	res, err := s.w.ExecContext(ctx, q, append(args, limit)...)
	if err != nil {
		return 0, wrap(op, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, wrap(op, err)
	}
	return int(n), nil
}

// RecordProof implements refresh.ProofRecorder: one INSERT … ON CONFLICT.
func (s *Store) RecordProof(ctx context.Context, id string, now, expires time.Time) error {
	res, err := s.w.ExecContext(ctx, `INSERT INTO refresh_proofs (id, expires_at) VALUES (?1, ?3)
		ON CONFLICT (id) DO UPDATE SET expires_at = excluded.expires_at WHERE refresh_proofs.expires_at <= ?2`,
		id, nanos(now), nanos(expires))
	if err != nil {
		return wrap("record proof", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return wrap("record proof", err)
	}
	if n == 0 {
		return refresh.ErrProofReplayed
	}
	return nil
}

// DeleteExpiredProofs implements refresh.ProofRecorder.
func (s *Store) DeleteExpiredProofs(ctx context.Context, before time.Time, limit int) (int, error) {
	return s.delete(ctx, "delete expired proofs", deleteExpiredProofsSQL, limit, nanos(before))
}
