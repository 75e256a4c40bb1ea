package storetest

import (
	"context"
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
