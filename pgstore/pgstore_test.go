package pgstore_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/refreshkit/refresh"
	"github.com/refreshkit/refresh/pgstore"
	"github.com/refreshkit/refresh/storetest"
)

// testPool connects to PG_DSN. Without it the tests skip, except under
// CI=true where a missing server is a failure.
func testPool(t testing.TB) *pgxpool.Pool {
	t.Helper()
	dsn := os.Getenv("PG_DSN")
	if dsn == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("PG_DSN is not set and CI=true: run scripts/test.sh, which starts a Postgres")
		}
		t.Skip("PG_DSN is not set: scripts/test.sh starts a throw-away Postgres when postgresql is installed or it runs as root (to install it); or set PG_DSN=postgres://…")
	}
	pool, err := pgxpool.New(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// newStore returns a migrated store on a table of its own, dropped after
// the test.
func newStore(t testing.TB, pool *pgxpool.Pool) *pgstore.Store {
	t.Helper()
	st, _ := newStoreTable(t, pool)
	return st
}

// newStoreTable is newStore, also returning its table.
func newStoreTable(t testing.TB, pool *pgxpool.Pool) (*pgstore.Store, string) {
	t.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	table := "rt_" + hex.EncodeToString(b[:])
	st, err := pgstore.New(pool, pgstore.WithTable(table))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := st.Migrate(context.Background()); err != nil {
		t.Fatalf("Migrate is not idempotent: %v", err)
	}
	t.Cleanup(func() { _, _ = pool.Exec(context.Background(), "DROP TABLE IF EXISTS "+table) })
	return st, table
}

func TestConformance(t *testing.T) {
	pool := testPool(t)
	st, table := newStoreTable(t, pool)
	storetest.Run(t, func(*testing.T) refresh.Store { return st }, storetest.WithBrokenStore(brokenStore),
		storetest.WithSecondInstance(func(t *testing.T, _ refresh.Store) refresh.Store {
			// A second process: a pool of its own on the same table.
			st2, err := pgstore.New(testPool(t), pgstore.WithTable(table))
			if err != nil {
				t.Fatal(err)
			}
			return st2
		}))
}

// brokenStore is a store whose pool points at a closed port: every call
// fails with a connection error.
func brokenStore(t *testing.T) refresh.Store {
	pool, err := pgxpool.New(context.Background(), "postgres://nobody@127.0.0.1:1/none?connect_timeout=2")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	st, err := pgstore.New(pool)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestNewRefusesBadTableName(t *testing.T) {
	for _, name := range []string{"", "Sessions", "a;drop table x", "auth.sessions", `"x"`} {
		if _, err := pgstore.New(nil, pgstore.WithTable(name)); err == nil {
			t.Errorf("table name %q accepted", name)
		}
	}
}

func TestConcurrentMigrate(t *testing.T) {
	pool := testPool(t)
	var b [6]byte
	_, _ = rand.Read(b[:])
	table := "rt_m" + hex.EncodeToString(b[:])
	t.Cleanup(func() { _, _ = pool.Exec(context.Background(), "DROP TABLE IF EXISTS "+table) })
	st, err := pgstore.New(pool, pgstore.WithTable(table))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); errs <- st.Migrate(context.Background()) }()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent Migrate: %v", err)
		}
	}
}

// The server stops mid-test: calls fail with clear, non-client errors and
// change nothing; once it is back the pool reconnects and rotation goes on
// with no generation lost or duplicated.
func TestServerRestart(t *testing.T) {
	st := newStore(t, testPool(t))
	storetest.RestartWithCommands(t, st, "pgstore", os.Getenv("PG_STOP_CMD"), os.Getenv("PG_START_CMD"))
}

func TestDeadline(t *testing.T) {
	pool := testPool(t)
	st := newStore(t, pool)
	ctx, cancel := context.WithTimeout(context.Background(), time.Nanosecond)
	defer cancel()
	<-ctx.Done()
	_, err := st.Get(ctx, "x")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Get past its deadline: %v", err)
	}
}

// BenchmarkRotate: rotations through an Issuer on Postgres with 1, 8 and 64
// concurrent clients, each rotating its own session. ns/op is wall time per
// rotation across all clients, so rotations per second = 1e9 / ns/op.
func BenchmarkRotate(b *testing.B) {
	pool := testPool(b)
	st := newStore(b, pool)
	storetest.BenchmarkPaths(b, st)
}

// countingTracer counts the statements pgx sends: one round trip each.
type countingTracer struct{ n atomic.Int64 }

func (c *countingTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	c.n.Add(1)
	return ctx
}
func (c *countingTracer) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// A rotation costs one round trip (one statement), and the other refreshes
// what storetest.Want says.
func TestRoundTripsPerRotation(t *testing.T) {
	testPool(t) // skips without a server
	cfg, err := pgxpool.ParseConfig(os.Getenv("PG_DSN"))
	if err != nil {
		t.Fatal(err)
	}
	tr := &countingTracer{}
	cfg.ConnConfig.Tracer = tr
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	got := storetest.CheckRoundTrips(t, newStore(t, pool), tr.n.Load, storetest.Want)
	t.Logf("round trips: %+v", got)
}

// TestFaultSoak: the soak invariants on a real Postgres while the server
// is stopped and started and, separately, every connection is killed
// (pg_terminate_backend). Only on a server scripts/test.sh started
// (PG_STOP_CMD set): it must not disturb a server someone else uses.
// SOAK_DURATION (default 3s) runs it longer.
func TestFaultSoak(t *testing.T) {
	pool := testPool(t)
	stopCmd, startCmd := os.Getenv("PG_STOP_CMD"), os.Getenv("PG_START_CMD")
	if stopCmd == "" || startCmd == "" {
		t.Skip("PG_STOP_CMD/PG_START_CMD not set: the fault soak runs only on the throw-away server of scripts/test.sh")
	}
	admin, err := pgxpool.New(context.Background(), os.Getenv("PG_DSN"))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	rep := storetest.FaultSoak(t, newStore(t, pool), storetest.SoakConfig{
		Faults: []storetest.Fault{
			{Name: "server stopped and started", Inject: func(t *testing.T) {
				shell(t, stopCmd)
				time.Sleep(300 * time.Millisecond)
				shell(t, startCmd)
			}},
			{Name: "every connection killed (pg_terminate_backend)", Inject: func(t *testing.T) {
				for i := 0; i < 3; i++ {
					if _, err := admin.Exec(context.Background(),
						`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()`); err != nil {
						t.Logf("terminate: %v", err)
					}
					time.Sleep(100 * time.Millisecond)
				}
			}},
		},
	})
	t.Logf("fault soak: %v", rep)
	fmt.Fprintf(os.Stderr, "pgstore fault soak: %v\n", rep)
}

func shell(t *testing.T, cmd string) {
	t.Helper()
	if out, err := exec.Command("bash", "-c", cmd).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", cmd, err, out)
	}
}
