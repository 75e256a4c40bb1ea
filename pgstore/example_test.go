package pgstore_test

import (
	"context"
	"log"
	"os"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/refreshkit/refresh"
	"github.com/refreshkit/refresh/pgstore"
)

// A service on Postgres: one pool, the table created at start-up (safe from
// several instances at once), and a sweeper that keeps the table bounded.
// (Compiled, not run: it needs a database; pgstore_test.go runs the same
// calls against a real one.)
func Example() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	store, err := pgstore.New(pool) // or pgstore.New(pool, pgstore.WithTable("sessions"))
	if err != nil {
		log.Fatal(err)
	}
	if err := store.Migrate(ctx); err != nil { // idempotent
		log.Fatal(err)
	}
	iss, err := refresh.NewIssuer(refresh.Config{
		Issuer:      "https://auth.example.com",
		Audience:    "https://api.example.com",
		Keys:        []refresh.Key{loadSigningKey()},
		RefreshKeys: []refresh.RefreshKey{{ID: 1, Secret: loadMACKey()}},
		Store:       store,
	})
	if err != nil {
		log.Fatal(err)
	}
	go func() {
		for range time.Tick(5 * time.Minute) {
			if _, err := iss.Sweep(ctx, 1000); err != nil {
				log.Print(err)
			}
		}
	}()
}

// loadSigningKey and loadMACKey stand for your secret store.
func loadSigningKey() refresh.Key { return refresh.Key{} }
func loadMACKey() []byte          { return nil }
