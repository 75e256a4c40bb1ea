package storetest

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/refreshkit/refresh"
)

// BenchmarkClients runs b.N rotations through iss from the given number of
// concurrent clients, each rotating a session of its own, so that adapters
// can report rotations per second at several levels of concurrency with
// the same code. ns/op is wall time per rotation across all clients.
func BenchmarkClients(b *testing.B, iss *refresh.Issuer, clients int) {
	ctx := context.Background()
	toks := make([]string, clients)
	for i := range toks {
		p, err := iss.Issue(ctx, "bench")
		if err != nil {
			b.Fatal(err)
		}
		toks[i] = p.RefreshToken
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok := toks[c]
			for next.Add(1) <= int64(b.N) {
				p, err := iss.Rotate(ctx, tok)
				if err != nil {
					b.Error(err)
					return
				}
				tok = p.RefreshToken
			}
		}()
	}
	wg.Wait()
}

// BenchmarkPaths runs BenchmarkClients at 1, 8 and 64 clients on st twice
// in one run: as shipped ("one-round-trip") and behind HideCapabilities
// ("two-round-trips", what a store without refresh.ActiveAdvancer gets), as
// sub-benchmarks named clients=N/path. Rotations per second = 1e9 / ns/op.
func BenchmarkPaths(b *testing.B, st refresh.Store) {
	paths := []struct {
		name string
		iss  *refresh.Issuer
	}{
		{"two-round-trips", NewIssuer(b, HideCapabilities(st), 0)},
		{"one-round-trip", NewIssuer(b, st, 0)},
	}
	for _, clients := range []int{1, 8, 64} {
		for _, p := range paths {
			b.Run(fmt.Sprintf("clients=%d/%s", clients, p.name), func(b *testing.B) {
				b.ReportAllocs()
				BenchmarkClients(b, p.iss, clients)
			})
		}
	}
}
