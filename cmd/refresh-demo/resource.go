package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/refreshkit/refresh"
)

// runResource runs the demo as a resource server of the auth service at
// o.authURL: no store, no login; /me and /admin accept that service's
// access tokens, verified with the keys of its JWKS and, with
// INTROSPECTION_SECRET, checked for revocation through its /introspect;
// with -dpop-nonce, DPoP proofs need this server's own nonces.
func runResource(ctx context.Context, o options, log *slog.Logger, out io.Writer) error {
	if err := checkRecentAuth(o.recentAuth); err != nil {
		return err
	}
	auth := strings.TrimRight(o.authURL, "/")
	authURL, err := url.Parse(auth)
	if err != nil || (authURL.Scheme != "http" && authURL.Scheme != "https") || authURL.Host == "" {
		return fmt.Errorf("-auth %q: want the auth service's URL, http(s)://host[:port]", o.authURL)
	}
	public := strings.TrimRight(o.publicURL, "/")
	if public != "" {
		if u, ok := serviceURL(public); !ok || u.Path != "" {
			return fmt.Errorf("-public-url %q: want this server's public URL, http(s)://host[:port]", o.publicURL)
		}
	}
	cfg := refresh.VerifierConfig{
		Issuer:              auth, // the auth demo's issuer is its URL
		PublicURL:           public,
		Audience:            "refresh-demo",
		JWKSURL:             auth + "/.well-known/jwks.json",
		JWKSRefetchInterval: o.jwksRefetch,
		Logger:              log,
	}
	nonces := "off"
	if o.dpopNonce > 0 {
		// The resource server's own nonces (RFC 9449 §9), under
		// DPOP_NONCE_SECRET: every instance behind one URL needs the same.
		secret, generated, err := decodeSecret("DPOP_NONCE_SECRET", os.Getenv("DPOP_NONCE_SECRET"))
		if err != nil {
			return err
		}
		cfg.DPoPNonceLifetime, cfg.DPoPNonceKeys = o.dpopNonce, [][]byte{secret}
		nonces = fmt.Sprintf("required, each good for %v", o.dpopNonce)
		if generated {
			nonces += " (key made for this process: set DPOP_NONCE_SECRET on every instance behind one URL)"
		}
	}
	// DPoP replay detection: each process remembers the proofs it saw,
	// unless -store names a server every instance behind one URL shares.
	// (openStore seeds the demo's accounts there too, as for the auth
	// service; a resource server never reads them.)
	replays := "per process"
	switch {
	case o.storeSet && (o.store == "postgres" || o.store == "redis"):
		st, _, closeStore, err := openStore(ctx, o.store, o.dsn, "")
		if err != nil {
			return err
		}
		defer closeStore()
		pr, ok := st.(refresh.ProofRecorder)
		if !ok {
			return fmt.Errorf("-store %s keeps no DPoP proofs", o.store)
		}
		cfg.Proofs, replays = pr, "shared through "+o.store
	case o.storeSet && o.store != "memory":
		return fmt.Errorf("-resource-server -store %s: postgres or redis (DPoP replay detection shared by every instance), or memory", o.store)
	case public != "":
		// Several instances behind one URL, likely: a proof accepted by
		// one would be taken by another within its minute.
		replays += " (instances behind -public-url each remember only their own: give them -store postgres|redis)"
	}
	if o.introspectionSecret != "" {
		cfg.Introspection = &refresh.IntrospectionConfig{
			URL: auth + "/introspect", ClientID: resourceClient, ClientSecret: o.introspectionSecret, CacheTTL: o.introspectTTL,
		}
	}
	v, err := refresh.NewVerifier(cfg)
	if err != nil {
		return err
	}
	defer v.Close()
	ln, err := net.Listen("tcp", o.addr)
	if err != nil {
		return err
	}
	defer ln.Close()
	base := "http://" + ln.Addr().String()
	intro := "off (set INTROSPECTION_SECRET on both to refuse revoked sessions' tokens)"
	if cfg.Introspection != nil {
		intro = fmt.Sprintf("on, answers reused for %v", o.introspectTTL)
	}
	keys := "loaded"
	if !v.Ready() {
		keys = "NOT loaded yet (the auth service is not answering; tokens get 503 until it does)"
	}
	fmt.Fprintf(out, "refresh-demo resource server on %s, for tokens of %s. Keys %s. Introspection %s. DPoP nonces %s. DPoP replay detection %s.\n", base, auth, keys, intro, nonces, replays)
	fmt.Fprintf(out, "Try: curl -s %s/me -H \"Authorization: Bearer $AT\"\n", base)
	handler := newResourceMux(v, o.recentAuth)
	if public == "" {
		handler = ownPortOnly(handler, ln.Addr(), authURL.Host, "-public-url")
	}
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second}
	return serveUntil(ctx, srv, ln, out)
}

// newResourceMux serves the auth service's /me and /admin from tokens alone;
// /admin wants a sign-in at most recentAuth ago (0: defaultRecentAuth).
func newResourceMux(v *refresh.Verifier, recentAuth time.Duration) http.Handler {
	auth := v.Middleware(refresh.WithRealm("refresh-demo-api"))
	mux := http.NewServeMux()
	profile := func(h http.Handler) http.Handler { return auth(refresh.RequireScope(scopeProfile)(h)) }
	mux.Handle("GET /me", profile(http.HandlerFunc(me)))
	mux.Handle("GET /admin", profile(adminOnly(recentSignIn(recentAuth))))
	return mux
}
