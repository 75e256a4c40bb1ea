package pgstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// TestSweepUsesIndexes: on a populated, analysed table where stale sessions
// are few (as when Sweep runs periodically), the sweep's DELETE finds them
// through the indexes (BitmapOr of the three), never a sequential scan of
// the table; nor do "log out everywhere" and the sessions page, which read
// one subject's rows. The plan is logged; README.md shows one.
func TestSweepUsesIndexes(t *testing.T) {
	dsn := os.Getenv("PG_DSN")
	if dsn == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("PG_DSN is not set and CI=true: run scripts/test.sh, which starts a Postgres")
		}
		t.Skip("PG_DSN is not set: run scripts/test.sh, or set PG_DSN=postgres://…")
	}
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	var b [6]byte
	_, _ = rand.Read(b[:])
	table := "rt_plan" + hex.EncodeToString(b[:])
	st, err := New(pool, WithTable(table))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	defer pool.Exec(context.Background(), "DROP TABLE IF EXISTS "+table) //nolint:errcheck

	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC).UnixNano()
	const hour = int64(time.Hour)
	// 100,000 live sessions rotated within the last hour; 300 expired, 300
	// idle for two weeks, 300 revoked a month ago.
	_, err = pool.Exec(ctx, strings.ReplaceAll(`
		INSERT INTO $T (id, subject, generation, seed, created_at, rotated_at, expires_at, revoked_at)
		SELECT 's' || g, 'user-' || (g % 5000), 1, '\x00', $1::bigint - 10*$2::bigint,
			CASE WHEN g % 1000 = 1 THEN $1::bigint - 336*$2::bigint ELSE $1::bigint - (g % 60) * $2::bigint / 60 END,
			CASE WHEN g % 1000 = 2 THEN $1::bigint - $2::bigint ELSE $1::bigint + 2000*$2::bigint END,
			CASE WHEN g % 1000 = 3 THEN $1::bigint - 720*$2::bigint END
		FROM generate_series(1, 300000) AS g
		WHERE g <= 100000 OR g % 1000 IN (1, 2, 3)`, "$T", table), now, hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, "ANALYZE "+table); err != nil {
		t.Fatal(err)
	}
	for _, q := range []struct {
		name, sql string
		args      []any
		indexes   []string
	}{
		{"DeleteStale", st.q.deleteStale, []any{now, now - 336*hour, now - 168*hour, 1000}, []string{"expires_idx", "rotated_idx", "revoked_idx", "pkey"}},
		{"DeleteExpired", st.q.deleteExpired, []any{now, 1000}, []string{"expires_idx", "pkey"}},
		// "Log out everywhere" and the sessions page: one subject's rows.
		{"RevokeSubject", st.q.revokeSubject, []any{"user-42", now, "logout"}, []string{"subject_idx"}},
		{"Sessions", st.q.sessions, []any{"user-42"}, []string{"subject_idx"}},
	} {
		explain(t, pool, table, q.name, q.sql, q.args, q.indexes)
	}
	n, err := st.DeleteStale(ctx, time.Unix(0, now), time.Unix(0, now-336*hour), time.Unix(0, now-168*hour), 1000)
	if err != nil || n != 900 {
		t.Fatalf("DeleteStale = %d, %v; want the 900 stale sessions", n, err)
	}
}

func explain(t *testing.T, pool *pgxpool.Pool, table, name, sql string, args []any, indexes []string) {
	t.Helper()
	rows, err := pool.Query(context.Background(), "EXPLAIN "+sql, args...)
	if err != nil {
		t.Fatal(err)
	}
	var plan []string
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, line)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	text := strings.Join(plan, "\n")
	t.Logf("EXPLAIN %s:\n%s", name, text)
	if strings.Contains(text, "Seq Scan") {
		t.Fatalf("%s scans the whole table:\n%s", name, text)
	}
	for _, idx := range indexes {
		if !strings.Contains(text, table+"_"+idx) {
			t.Errorf("%s does not use the %s index:\n%s", name, idx, text)
		}
	}
}
