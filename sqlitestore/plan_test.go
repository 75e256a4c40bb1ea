package sqlitestore

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// The statements that read more than one row search indexes and never
// scan a table: a sweep runs every few minutes against a table of every
// session in use, and usually finds little to delete, so a scan would read
// every row each time; "log out everywhere" and the sessions page read one
// subject's rows. (The stale sweep's first form, one WHERE with three rules joined
// by OR, was planned as SCAN refresh_sessions.)
func TestSweepsUseIndexes(t *testing.T) {
	st, err := Open(t.TempDir() + "/plan.db")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for name, q := range map[string]string{
		"RevokeSubject":       revokeSubjectSQL,
		"Sessions":            sessionsSQL,
		"DeleteExpired":       deleteExpiredSQL,
		"DeleteStale":         deleteStaleSQL,
		"DeleteExpiredProofs": deleteExpiredProofsSQL,
	} {
		rows, err := st.w.Query("EXPLAIN QUERY PLAN "+q, 1, 2, 3, 4)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var plan []string
		for rows.Next() {
			var id, parent, unused int
			var detail string
			if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, detail)
		}
		rows.Close()
		text := strings.Join(plan, "\n")
		if strings.Contains(text, "SCAN refresh_") || !strings.Contains(text, "USING ") {
			t.Errorf("%s scans a table:\n%s", name, text)
		}
	}
}

// BenchmarkDeleteStaleLargeTable: one DeleteStale call on a table of
// 200,000 sessions in use (20,000 under -race, where its time means
// nothing), of which none is stale (a sweep's usual call),
// against the first form of the statement (three rules joined by OR), in
// the same run.
func BenchmarkDeleteStaleLargeTable(b *testing.B) {
	st, err := Open(b.TempDir() + "/bench.db")
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	now := time.Now()
	tx, err := st.w.Begin()
	if err != nil {
		b.Fatal(err)
	}
	ins, err := tx.Prepare(`INSERT INTO refresh_sessions (id, subject, generation, seed, created_at, rotated_at, expires_at) VALUES (?, ?, 0, x'00', ?, ?, ?)`)
	if err != nil {
		b.Fatal(err)
	}
	rows := 200_000
	if raceEnabled {
		rows = 20_000 // 200,000 inserts take 30 s under -race
	}
	for i := range rows {
		at := now.Add(-time.Duration(i) * time.Second).UnixNano()
		if _, err := ins.Exec(fmt.Sprintf("s%07d", i), fmt.Sprintf("u%d", i%50_000), at, at, now.Add(24*time.Hour).UnixNano()); err != nil {
			b.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	expiredBy, idleBy, revokedBy := now, now.Add(-30*24*time.Hour), now.Add(-7*24*time.Hour)
	const orForm = `DELETE FROM refresh_sessions WHERE id IN (
		SELECT id FROM refresh_sessions WHERE expires_at <= ?1 OR rotated_at <= ?2 OR revoked_at <= ?3 LIMIT ?4)`
	for _, bc := range []struct{ name, q string }{{"union", deleteStaleSQL}, {"or", orForm}} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				n, err := st.delete(ctx, "delete stale", bc.q, 1000, nanos(expiredBy), nanos(idleBy), nanos(revokedBy))
				if err != nil || n != 0 {
					b.Fatalf("deleted %d, %v", n, err)
				}
			}
		})
	}
}
