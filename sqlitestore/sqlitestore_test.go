package sqlitestore_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"github.com/refreshkit/refresh"
	"github.com/refreshkit/refresh/sqlitestore"
	"github.com/refreshkit/refresh/storetest"
)

func open(t testing.TB, path string) *sqlitestore.Store {
	t.Helper()
	st, err := sqlitestore.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

func TestConformance(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sessions.db")
	st := open(t, path)
	storetest.Run(t, func(*testing.T) refresh.Store { return st }, storetest.WithSecondInstance(func(t *testing.T, _ refresh.Store) refresh.Store {
		return open(t, path) // a second process: its own connections to the file
	}), storetest.WithBrokenStore(func(t *testing.T) refresh.Store {
		// A closed store: every call fails as a driver does.
		b, err := sqlitestore.Open(filepath.Join(t.TempDir(), "broken.db"))
		if err != nil {
			t.Fatal(err)
		}
		_ = b.Close()
		return b
	}))
}

func TestOpenRefusesMemory(t *testing.T) {
	for _, p := range []string{"", ":memory:"} {
		if _, err := sqlitestore.Open(p); err == nil {
			t.Errorf("Open(%q) succeeded", p)
		}
	}
	if _, err := sqlitestore.Open(filepath.Join(t.TempDir(), "no", "such", "dir", "x.db")); err == nil {
		t.Error("Open in a missing directory succeeded")
	}
}

// Close and reopen the file: sessions survive, the same refresh token still
// rotates exactly once, and a second use is reuse, which revokes.
func TestRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sessions.db")
	st, err := sqlitestore.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	iss := storetest.NewIssuer(t, st, 0)
	ctx := context.Background()
	p, err := iss.Issue(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	q, err := iss.Rotate(ctx, p.RefreshToken)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := iss.Rotate(ctx, q.RefreshToken); err == nil || refresh.IsClientError(err) {
		t.Fatalf("Rotate on a closed store: %v, want a system fault", err)
	}
	st2 := open(t, path)
	again := storetest.NewIssuerWithKeysOf(t, iss, st2)
	// The token from before the restart rotates once, then is reuse.
	if _, err := again.Rotate(ctx, q.RefreshToken); err != nil {
		t.Fatalf("rotating after reopening: %v", err)
	}
	if _, err := again.Rotate(ctx, q.RefreshToken); !errors.Is(err, refresh.ErrReused) {
		t.Fatalf("the same token again: %v, want ErrReused", err)
	}
	list, err := again.Sessions(ctx, "alice")
	if err != nil || len(list) != 0 {
		t.Fatalf("after reuse, live sessions: %d, %v; want 0 (revoked)", len(list), err)
	}
}

// Two Stores (two processes' worth of connections) on one file, writing at
// once: the busy timeout and WAL keep SQLITE_BUSY away from callers.
func TestTwoStoresOneFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sessions.db")
	a, b := open(t, path), open(t, path)
	ia := storetest.NewIssuer(t, a, 0)
	ib := storetest.NewIssuerWithKeysOf(t, ia, b)
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := 0; i < 8; i++ {
		for _, iss := range []*refresh.Issuer{ia, ib} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				p, err := iss.Issue(ctx, fmt.Sprintf("user-%d", i))
				for j := 0; err == nil && j < 20; j++ {
					p, err = iss.Rotate(ctx, p.RefreshToken)
				}
				if err != nil {
					errs <- err
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("two stores on one file: %v", err)
	}
}

// BenchmarkRotate: rotations through an Issuer at 1, 8 and 64 concurrent
// clients, with and without the one-statement swap.
func BenchmarkRotate(b *testing.B) {
	st := open(b, filepath.Join(b.TempDir(), "sessions.db"))
	storetest.BenchmarkPaths(b, st)
}
