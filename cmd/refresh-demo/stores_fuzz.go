//go:build demofuzz

package main

import (
	"context"
	"fmt"

	"github.com/refreshkit/refresh"
)

// openStore of a demo built with -tags demofuzz (scripts/fuzz.sh's build of
// FuzzDemo): the memory store only. Fuzzing instruments every package of
// the build, and SQLite, pgx and go-redis, which fuzzing on the memory
// store never runs, doubled the time to build it on an empty cache.
func openStore(_ context.Context, kind, _, _ string) (refresh.Store, passwordStore, func(), error) {
	if kind != "memory" {
		return nil, nil, nil, fmt.Errorf("-store %s: this build (-tags demofuzz) has the memory store only", kind)
	}
	m := refresh.NewMemoryStore()
	return m, newMemoryPasswords(), func() { _ = m.Close() }, nil
}
