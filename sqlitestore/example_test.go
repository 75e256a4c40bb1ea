package sqlitestore_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/refreshkit/refresh"
	"github.com/refreshkit/refresh/sqlitestore"
)

// Sessions in a file outlive the process: a refresh token handed out before
// a restart rotates after it, and reuse is still detected.
func Example() {
	dir, err := os.MkdirTemp("", "sessions")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "sessions.db")

	// The keys must outlive the process too (from your secret store).
	_, signing, _ := ed25519.GenerateKey(rand.Reader)
	mac := make([]byte, 32)
	_, _ = rand.Read(mac)
	start := func() (*refresh.Issuer, *sqlitestore.Store) {
		store, err := sqlitestore.Open(path) // creates the file and its schema
		if err != nil {
			log.Fatal(err)
		}
		iss, err := refresh.NewIssuer(refresh.Config{
			Issuer:      "https://auth.example.com",
			Audience:    "https://api.example.com",
			Keys:        []refresh.Key{{ID: "2026-12", Algorithm: refresh.EdDSA, Key: signing}},
			RefreshKeys: []refresh.RefreshKey{{ID: 1, Secret: mac}},
			Store:       store,
		})
		if err != nil {
			log.Fatal(err)
		}
		return iss, store
	}
	ctx := context.Background()

	iss, store := start()
	pair, err := iss.Issue(ctx, "alice")
	if err != nil {
		log.Fatal(err)
	}
	_ = store.Close() // the process stops

	iss, store = start() // and starts again
	defer store.Close()
	next, err := iss.Rotate(ctx, pair.RefreshToken)
	fmt.Println("rotated after the restart:", err == nil && next.SessionID == pair.SessionID)
	_, err = iss.Rotate(ctx, pair.RefreshToken)
	fmt.Println("the spent token again is reuse:", errors.Is(err, refresh.ErrReused))
	// Output:
	// rotated after the restart: true
	// the spent token again is reuse: true
}
