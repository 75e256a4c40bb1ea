package refresh_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/refreshkit/refresh"
)

// newExampleIssuer builds an Issuer the way a service would: an Ed25519
// signing key, a refresh MAC key, and a store.
func newExampleIssuer(grace time.Duration) *refresh.Issuer {
	_, signing, _ := ed25519.GenerateKey(rand.Reader)
	mac := make([]byte, 32)
	_, _ = rand.Read(mac)
	iss, err := refresh.NewIssuer(refresh.Config{
		Issuer:      "https://auth.example.com",
		Audience:    "https://api.example.com",
		Keys:        []refresh.Key{{ID: "2026-11", Algorithm: refresh.EdDSA, Key: signing}},
		RefreshKeys: []refresh.RefreshKey{{ID: 1, Secret: mac}},
		Store:       refresh.NewMemoryStore(),
		Grace:       grace,
	})
	if err != nil {
		log.Fatal(err)
	}
	return iss
}

// After your own login check, Issue starts a session; Rotate exchanges the
// refresh token for a new pair.
func Example() {
	ctx := context.Background()
	iss := newExampleIssuer(0)

	pair, err := iss.Issue(ctx, "alice", refresh.WithScope("read", "write"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(pair.TokenType, pair.Scope)

	next, err := iss.Rotate(ctx, pair.RefreshToken)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("rotated:", next.RefreshToken != pair.RefreshToken)
	fmt.Println("same session:", next.SessionID == pair.SessionID)
	// Output:
	// Bearer [read write]
	// rotated: true
	// same session: true
}

// Presenting a rotated refresh token again is reuse: the session is revoked,
// so a thief and a victim holding copies of one token both lose it.
func ExampleIssuer_Rotate_reuse() {
	ctx := context.Background()
	iss := newExampleIssuer(0)
	pair, _ := iss.Issue(ctx, "alice")
	next, _ := iss.Rotate(ctx, pair.RefreshToken)

	_, err := iss.Rotate(ctx, pair.RefreshToken) // the old token, again
	fmt.Println(errors.Is(err, refresh.ErrReused))

	_, err = iss.Rotate(ctx, next.RefreshToken) // the session is gone
	fmt.Println(errors.Is(err, refresh.ErrRevoked))
	// Output:
	// true
	// true
}

// With a grace window, a second tab or a retried request presenting the
// previous token shortly after a rotation receives the same successor.
func ExampleIssuer_Rotate_grace() {
	ctx := context.Background()
	iss := newExampleIssuer(10 * time.Second)
	pair, _ := iss.Issue(ctx, "alice")
	tab1, _ := iss.Rotate(ctx, pair.RefreshToken)
	tab2, err := iss.Rotate(ctx, pair.RefreshToken)
	fmt.Println(err == nil, tab1.RefreshToken == tab2.RefreshToken)
	// Output: true true
}

// Verify checks an access token and returns its claims.
func ExampleIssuer_Verify() {
	ctx := context.Background()
	iss := newExampleIssuer(0)
	pair, _ := iss.Issue(ctx, "alice",
		refresh.WithScope("read"),
		refresh.WithClaims(map[string]any{"roles": []string{"admin"}}))

	claims, err := iss.Verify(ctx, pair.AccessToken)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(claims.Subject, claims.Scope, claims.Roles(), claims.SessionID == pair.SessionID)

	_, err = iss.Verify(ctx, pair.AccessToken+"x")
	fmt.Println(errors.Is(err, refresh.ErrInvalidToken))
	// Output:
	// alice [read] [admin] true
	// true
}

// RevokeSubject logs a user out everywhere.
func ExampleIssuer_RevokeSubject() {
	ctx := context.Background()
	iss := newExampleIssuer(0)
	laptop, _ := iss.Issue(ctx, "alice")
	_, _ = iss.Issue(ctx, "alice")

	n, _ := iss.RevokeSubject(ctx, "alice")
	_, err := iss.Rotate(ctx, laptop.RefreshToken)
	fmt.Println(n, errors.Is(err, refresh.ErrRevoked))
	// Output: 2 true
}
