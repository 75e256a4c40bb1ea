package redisstore_test

import (
	"context"
	"log"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/refreshkit/refresh"
	"github.com/refreshkit/refresh/redisstore"
)

// A service on Redis, or on a Redis Cluster with the same code
// (redis.NewClusterClient is a redis.UniversalClient too). Sessions expire
// in Redis by themselves; a sweeper trims the expiry index they leave
// behind. (Compiled, not run: it needs a server; redisstore_test.go runs
// the same calls against a real one.)
func Example() {
	ctx := context.Background()
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	defer client.Close()
	store := redisstore.New(client) // or redisstore.New(client, redisstore.WithPrefix("myapp:rt:"))
	// Refuse to start on a Redis that may evict keys before they expire
	// (the store would refuse its first write there anyway).
	if err := store.Check(ctx); err != nil {
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
