-- Schema of github.com/refreshkit/refresh/pgstore. Store.Migrate applies it
-- (idempotent); the table name is replaced when WithTable is used.
--
-- One row per session (token family), whatever the number of rotations.
-- No column holds a token or a hash of one: seed is useless without the
-- Issuer's refresh MAC key. Times are Unix nanoseconds (timestamptz keeps
-- only microseconds; the Issuer's boundaries are exact to the nanosecond).
CREATE TABLE IF NOT EXISTS refresh_sessions (
    id            text     PRIMARY KEY,
    subject       text     NOT NULL,
    client_id     text     NOT NULL DEFAULT '',
    dpop_key      text     NOT NULL DEFAULT '',
    generation    bigint   NOT NULL,
    grace_uses    bigint   NOT NULL DEFAULT 0,
    seed          bytea    NOT NULL,
    scope         text[]   NOT NULL DEFAULT '{}',
    claims        bytea,
    meta          jsonb,
    created_at    bigint   NOT NULL,
    rotated_at    bigint   NOT NULL,
    expires_at    bigint   NOT NULL,
    revoked_at    bigint,
    revoke_reason text     NOT NULL DEFAULT ''
);
-- Sessions(subject) and RevokeSubject(subject).
CREATE INDEX IF NOT EXISTS refresh_sessions_subject_idx ON refresh_sessions (subject, created_at);
-- DeleteExpired(before) and DeleteStale's first rule.
CREATE INDEX IF NOT EXISTS refresh_sessions_expires_idx ON refresh_sessions (expires_at);
-- DeleteStale: sessions idle since rotated_at. This index makes a rotation
-- update an indexed column (no HOT update); BENCHMARKS.md has the cost.
CREATE INDEX IF NOT EXISTS refresh_sessions_rotated_idx ON refresh_sessions (rotated_at);
-- DeleteStale: revoked sessions, a small part of the table.
CREATE INDEX IF NOT EXISTS refresh_sessions_revoked_idx ON refresh_sessions (revoked_at)
    WHERE revoked_at IS NOT NULL;
-- DPoP proofs already used (refresh.ProofRecorder), so that a proof
-- replayed to another instance is refused: a hash of key and jti, kept
-- about two minutes; Sweep deletes expired ones.
CREATE TABLE IF NOT EXISTS refresh_sessions_proofs (
    id         text   PRIMARY KEY,
    expires_at bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS refresh_sessions_proofs_expires_idx ON refresh_sessions_proofs (expires_at);
-- Columns added after the first version, for tables created before them.
ALTER TABLE refresh_sessions ADD COLUMN IF NOT EXISTS dpop_key text NOT NULL DEFAULT '';
