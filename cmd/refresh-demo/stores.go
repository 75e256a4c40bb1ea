//go:build !demofuzz

package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
	_ "modernc.org/sqlite" // the database/sql driver of sqlitePasswords (sqlitestore's too)

	"github.com/refreshkit/refresh"
	"github.com/refreshkit/refresh/pgstore"
	"github.com/refreshkit/refresh/redisstore"
	"github.com/refreshkit/refresh/sqlitestore"
)

// openStore opens the -store kind: the session store, and the accounts'
// passwords beside it (in the same SQLite file, Postgres database or Redis
// server), so that a password change reaches every instance on the store
// at once and outlives a restart. (Built with -tags demofuzz, for
// scripts/fuzz.sh, stores_fuzz.go stands in: the memory store only, so that
// the fuzzer's instrumented build leaves out the database drivers.)
func openStore(ctx context.Context, kind, dsn, dataDir string) (refresh.Store, passwordStore, func(), error) {
	switch kind {
	case "sqlite":
		path := filepath.Join(dataDir, "sessions.db")
		// Create it private before SQLite does (its -wal and -shm files
		// take the database file's mode).
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, nil, nil, err
		}
		_ = f.Close()
		if err := os.Chmod(path, 0o600); err != nil {
			return nil, nil, nil, err
		}
		st, err := sqlitestore.Open(path)
		if err != nil {
			return nil, nil, nil, err
		}
		pw, err := openSQLitePasswords(ctx, path)
		if err != nil {
			_ = st.Close()
			return nil, nil, nil, err
		}
		return st, pw, func() { _ = pw.db.Close(); _ = st.Close() }, nil
	case "memory":
		m := refresh.NewMemoryStore()
		return m, newMemoryPasswords(), func() { _ = m.Close() }, nil
	case "postgres":
		if dsn == "" {
			return nil, nil, nil, errors.New("-store postgres needs -dsn postgres://…")
		}
		pool, err := pgxpool.New(ctx, dsn)
		if err != nil {
			return nil, nil, nil, err
		}
		st, err := pgstore.New(pool)
		if err == nil {
			err = st.Migrate(ctx)
		}
		var pw *pgPasswords
		if err == nil {
			pw, err = openPGPasswords(ctx, pool)
		}
		if err != nil {
			pool.Close()
			return nil, nil, nil, err
		}
		return st, pw, pool.Close, nil
	case "redis":
		if dsn == "" {
			return nil, nil, nil, errors.New("-store redis needs -dsn redis://…")
		}
		opt, err := redis.ParseURL(dsn)
		if err != nil {
			return nil, nil, nil, err
		}
		c := redis.NewClient(opt)
		if err := c.Ping(ctx).Err(); err != nil {
			_ = c.Close()
			return nil, nil, nil, fmt.Errorf("redis: %w", err)
		}
		pw, err := openRedisPasswords(ctx, c)
		if err != nil {
			_ = c.Close()
			return nil, nil, nil, err
		}
		return redisstore.New(c), pw, func() { _ = c.Close() }, nil
	}
	return nil, nil, nil, fmt.Errorf("unknown -store %q (sqlite, memory, postgres or redis)", kind)
}

// sqlitePasswords keeps the passwords in the table refresh_demo_accounts
// of the sessions' SQLite file.
type sqlitePasswords struct{ db *sql.DB }

func openSQLitePasswords(ctx context.Context, path string) (*sqlitePasswords, error) {
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(5000)")
	q.Add("_pragma", "synchronous(FULL)")
	q.Set("_txlock", "immediate")
	db, err := sql.Open("sqlite", "file:"+(&url.URL{Path: path}).EscapedPath()+"?"+q.Encode())
	if err != nil {
		return nil, err
	}
	p := &sqlitePasswords{db}
	if err := p.seed(ctx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("accounts in %s: %w", path, err)
	}
	return p, nil
}

func (p *sqlitePasswords) seed(ctx context.Context) error {
	if _, err := p.db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS refresh_demo_accounts (
		username TEXT PRIMARY KEY, hash BLOB NOT NULL, version INTEGER NOT NULL DEFAULT 0)`); err != nil {
		return err
	}
	for name, u := range users {
		if _, err := p.db.ExecContext(ctx, `INSERT INTO refresh_demo_accounts (username, hash) VALUES (?, ?)
			ON CONFLICT (username) DO NOTHING`, name, u.hash); err != nil {
			return err
		}
	}
	return nil
}

func (p *sqlitePasswords) password(ctx context.Context, username string) (hash []byte, version uint64, ok bool, err error) {
	err = p.db.QueryRowContext(ctx, `SELECT hash, version FROM refresh_demo_accounts WHERE username = ?`, username).Scan(&hash, &version)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, 0, false, nil
	}
	return hash, version, err == nil, err
}

func (p *sqlitePasswords) setPassword(ctx context.Context, username string, hash []byte) error {
	res, err := p.db.ExecContext(ctx, `UPDATE refresh_demo_accounts SET hash = ?, version = version + 1 WHERE username = ?`, hash, username)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil || n == 0 {
		return errors.Join(errNoAccount, err)
	}
	return nil
}

// pgPasswords keeps the passwords in the table refresh_demo_accounts of
// the sessions' Postgres database.
type pgPasswords struct{ pool *pgxpool.Pool }

func openPGPasswords(ctx context.Context, pool *pgxpool.Pool) (*pgPasswords, error) {
	// Under a lock, as pgstore's Migrate: two instances starting together
	// would race on CREATE TABLE IF NOT EXISTS.
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(727466)"); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS refresh_demo_accounts (
			username text PRIMARY KEY, hash bytea NOT NULL, version bigint NOT NULL DEFAULT 0)`); err != nil {
			return err
		}
		for name, u := range users {
			if _, err := tx.Exec(ctx, `INSERT INTO refresh_demo_accounts (username, hash) VALUES ($1, $2)
				ON CONFLICT (username) DO NOTHING`, name, u.hash); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: accounts: %w", err)
	}
	return &pgPasswords{pool}, nil
}

func (p *pgPasswords) password(ctx context.Context, username string) (hash []byte, version uint64, ok bool, err error) {
	var v int64
	err = p.pool.QueryRow(ctx, `SELECT hash, version FROM refresh_demo_accounts WHERE username = $1`, username).Scan(&hash, &v)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, 0, false, nil
	}
	return hash, uint64(v), err == nil, err
}

func (p *pgPasswords) setPassword(ctx context.Context, username string, hash []byte) error {
	tag, err := p.pool.Exec(ctx, `UPDATE refresh_demo_accounts SET hash = $2, version = version + 1 WHERE username = $1`, username, hash)
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return errNoAccount
	}
	return nil
}

// redisPasswords keeps each account's password as the hash (fields hash
// and version) at refresh-demo:account:NAME of the sessions' Redis.
type redisPasswords struct{ c redis.UniversalClient }

const redisAccountPrefix = "refresh-demo:account:"

func openRedisPasswords(ctx context.Context, c redis.UniversalClient) (*redisPasswords, error) {
	for name, u := range users {
		// HSETNX on hash first: an account held already keeps its
		// password, and its version (HSETNX on version changes nothing).
		k := redisAccountPrefix + name
		if _, err := c.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.HSetNX(ctx, k, "hash", u.hash)
			p.HSetNX(ctx, k, "version", 0)
			return nil
		}); err != nil {
			return nil, fmt.Errorf("redis: accounts: %w", err)
		}
	}
	return &redisPasswords{c}, nil
}

func (p *redisPasswords) password(ctx context.Context, username string) (hash []byte, version uint64, ok bool, err error) {
	vals, err := p.c.HMGet(ctx, redisAccountPrefix+username, "hash", "version").Result()
	if err != nil {
		return nil, 0, false, err
	}
	h, okH := vals[0].(string)
	v, okV := vals[1].(string)
	if !okH || !okV {
		return nil, 0, false, nil
	}
	if version, err = strconv.ParseUint(v, 10, 64); err != nil {
		return nil, 0, false, fmt.Errorf("redis: account %s: version %q", username, v)
	}
	return []byte(h), version, true, nil
}

// setRedisPassword sets hash and moves the version on in one step, only
// for an account the server holds (a flushed one stays gone: its old
// password must not come back half-written).
var setRedisPassword = redis.NewScript(`
if redis.call('HEXISTS', KEYS[1], 'hash') == 0 then return -1 end
redis.call('HSET', KEYS[1], 'hash', ARGV[1])
return redis.call('HINCRBY', KEYS[1], 'version', 1)`)

func (p *redisPasswords) setPassword(ctx context.Context, username string, hash []byte) error {
	n, err := setRedisPassword.Run(ctx, p.c, []string{redisAccountPrefix + username}, hash).Int64()
	if err != nil {
		return err
	}
	if n < 0 {
		return errNoAccount
	}
	return nil
}
