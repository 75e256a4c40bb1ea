-- Schema of github.com/refreshkit/refresh/sqlitestore. Open applies it
-- (idempotent).
--
-- One row per session (token family), whatever the number of rotations.
-- No column holds a token or a hash of one: seed is useless without the
-- Issuer's refresh MAC key. Times are INTEGER Unix nanoseconds; TEXT
-- compares with the BINARY collation (exact bytes).
CREATE TABLE IF NOT EXISTS refresh_sessions (
    id            TEXT    PRIMARY KEY,
    subject       TEXT    NOT NULL,
    client_id     TEXT    NOT NULL DEFAULT '',
    dpop_key      TEXT    NOT NULL DEFAULT '',
    generation    INTEGER NOT NULL,
    grace_uses    INTEGER NOT NULL DEFAULT 0,
    seed          BLOB    NOT NULL,
    scope         TEXT,   -- JSON array, NULL when empty
    claims        BLOB,
    meta          TEXT,   -- JSON object
    created_at    INTEGER NOT NULL,
    rotated_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    revoked_at    INTEGER,
    revoke_reason TEXT    NOT NULL DEFAULT ''
) WITHOUT ROWID;
-- Sessions(subject) and RevokeSubject(subject).
CREATE INDEX IF NOT EXISTS refresh_sessions_subject_idx ON refresh_sessions (subject, created_at);
-- DeleteExpired and DeleteStale.
CREATE INDEX IF NOT EXISTS refresh_sessions_expires_idx ON refresh_sessions (expires_at);
CREATE INDEX IF NOT EXISTS refresh_sessions_rotated_idx ON refresh_sessions (rotated_at);
CREATE INDEX IF NOT EXISTS refresh_sessions_revoked_idx ON refresh_sessions (revoked_at) WHERE revoked_at IS NOT NULL;
-- DPoP proofs already used (refresh.ProofRecorder): a hash of key and jti,
-- kept about two minutes; Sweep deletes expired ones.
CREATE TABLE IF NOT EXISTS refresh_proofs (
    id         TEXT    PRIMARY KEY,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS refresh_proofs_expires_idx ON refresh_proofs (expires_at);
