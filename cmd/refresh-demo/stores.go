//go:build !demofuzz

package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/refreshkit/refresh"
	"github.com/refreshkit/refresh/pgstore"
	"github.com/refreshkit/refresh/redisstore"
	"github.com/refreshkit/refresh/sqlitestore"
)

// openStore opens the -store kind. (Built with -tags demofuzz, for
// scripts/fuzz.sh, stores_fuzz.go stands in: the memory store only, so that
// the fuzzer's instrumented build leaves out the database drivers.)
func openStore(ctx context.Context, kind, dsn, dataDir string) (refresh.Store, func(), error) {
	switch kind {
	case "sqlite":
		path := filepath.Join(dataDir, "sessions.db")
		// Create it private before SQLite does (its -wal and -shm files
		// take the database file's mode).
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, nil, err
		}
		_ = f.Close()
		if err := os.Chmod(path, 0o600); err != nil {
			return nil, nil, err
		}
		st, err := sqlitestore.Open(path)
		if err != nil {
			return nil, nil, err
		}
		return st, func() { _ = st.Close() }, nil
	case "memory":
		m := refresh.NewMemoryStore()
		return m, func() { _ = m.Close() }, nil
	case "postgres":
		if dsn == "" {
			return nil, nil, errors.New("-store postgres needs -dsn postgres://…")
		}
		pool, err := pgxpool.New(ctx, dsn)
		if err != nil {
			return nil, nil, err
		}
		st, err := pgstore.New(pool)
		if err == nil {
			err = st.Migrate(ctx)
		}
		if err != nil {
			pool.Close()
			return nil, nil, err
		}
		return st, pool.Close, nil
	case "redis":
		if dsn == "" {
			return nil, nil, errors.New("-store redis needs -dsn redis://…")
		}
		opt, err := redis.ParseURL(dsn)
		if err != nil {
			return nil, nil, err
		}
		c := redis.NewClient(opt)
		if err := c.Ping(ctx).Err(); err != nil {
			_ = c.Close()
			return nil, nil, fmt.Errorf("redis: %w", err)
		}
		return redisstore.New(c), func() { _ = c.Close() }, nil
	}
	return nil, nil, fmt.Errorf("unknown -store %q (sqlite, memory, postgres or redis)", kind)
}
