// Command refresh-demo is a small service built on
// github.com/refreshkit/refresh: password login, rotating refresh tokens
// with reuse detection, bearer-protected routes, revocation, "log out
// everywhere" and a JWKS document.
//
//	go run ./cmd/refresh-demo                      # SQLite in -data, on 127.0.0.1:8080
//	go run ./cmd/refresh-demo -store memory        # forgets everything at exit
//	go run ./cmd/refresh-demo -store postgres -dsn postgres://…
//	go run ./cmd/refresh-demo -store redis -dsn redis://127.0.0.1:6379/0
//
// Users: alice/wonderland (role admin) and bob/builder (role user). Their
// passwords live in the session store's database (the SQLite file,
// Postgres or Redis), so that POST /password holds on every instance on it
// and after a restart.
//
// Data: sessions (with -store sqlite, the default), the Ed25519 signing key
// and the refresh MAC key live in the -data directory (default
// refresh-demo in the user's cache directory), created 0700 with files 0600,
// so a restart logs nobody out. -key names another private key file (PKCS#8
// PEM or JWK JSON) and REFRESH_SECRET another MAC key (base64 of at least 32
// bytes). With -store memory, keys are generated at start and die with the
// process, as do its sessions and tokens.
package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/refreshkit/refresh"
)

type options struct {
	addr, store, dsn, keyFile, dataDir string
	// storeSet: -store was given (a resource server keeps no store unless
	// told to).
	storeSet   bool
	oldKeyFile string
	// issuer, if set, is the public URL of the service (iss of its tokens,
	// and the URL DPoP proofs name) when it is not the listen address:
	// several instances behind one name.
	issuer                             string
	grace, accessTTL, idleTTL, sessTTL time.Duration
	// introspectionSecret (INTROSPECTION_SECRET): the auth service opens
	// /introspect to resource servers; a resource server uses it.
	introspectionSecret string
	// Resource-server mode.
	resourceServer             bool
	authURL, publicURL         string
	introspectTTL, jwksRefetch time.Duration
	// logRequests logs every request's method, path, status and origin.
	logRequests bool
	// loginFailures: failed sign-ins per client IP per minute (0: off).
	loginFailures int
	// maxSessions: Config.MaxSessions (0: no limit).
	maxSessions int
	// dpopNonce: Config.DPoPNonceLifetime (0: no nonces).
	dpopNonce time.Duration
	// recentAuth: how recent a sign-in /admin and signing out another
	// device want (RequireRecentAuth).
	recentAuth time.Duration
}

func main() {
	var o options
	fs := flag.NewFlagSet("refresh-demo", flag.ExitOnError)
	fs.StringVar(&o.addr, "addr", "127.0.0.1:8080", "listen address")
	fs.StringVar(&o.store, "store", "sqlite", "session store: sqlite (in -data), memory, postgres or redis; with -resource-server, postgres or redis shares DPoP replay detection between its instances")
	fs.StringVar(&o.dataDir, "data", defaultDataDir(), "directory for the SQLite store and the keys (not used by -store memory)")
	fs.StringVar(&o.dsn, "dsn", "", "postgres:// or redis:// URL for -store postgres|redis")
	fs.StringVar(&o.keyFile, "key", "", "signing key file: PEM (Ed25519, P-256, RSA) or JWK JSON; generated if empty")
	fs.StringVar(&o.oldKeyFile, "old-key", "", "a previous signing key, still published and accepted (key rotation)")
	fs.StringVar(&o.issuer, "issuer", "", "public URL of the service (tokens' iss, DPoP htu), for several instances behind one name; default the listen URL")
	fs.BoolVar(&o.resourceServer, "resource-server", false, "run as a resource server: verify the tokens of the auth service at -auth")
	fs.StringVar(&o.authURL, "auth", "http://127.0.0.1:8080", "with -resource-server: the auth service's URL (its issuer)")
	fs.StringVar(&o.publicURL, "public-url", "", "with -resource-server: its public URL (DPoP htu) behind a proxy or a port mapping; default: any host name on the listen port")
	fs.DurationVar(&o.introspectTTL, "introspect-ttl", 5*time.Second, "with -resource-server: how long an introspection answer is reused")
	fs.DurationVar(&o.jwksRefetch, "jwks-refetch", time.Minute, "with -resource-server: at most one JWKS fetch per this interval for unknown key ids")
	fs.DurationVar(&o.dpopNonce, "dpop-nonce", 0, "require server nonces in DPoP proofs, each good for this long (RFC 9449 §8, §9; 0: none); with -resource-server, under DPOP_NONCE_SECRET")
	fs.DurationVar(&o.recentAuth, "recent-auth", defaultRecentAuth, "how recent a sign-in /admin and signing out another device want (RFC 9470 step-up: older ones get 401 insufficient_user_authentication; refreshes keep the sign-in time)")
	fs.IntVar(&o.maxSessions, "max-sessions", 10, "live sessions per user; a new sign-in ends the least recently used beyond it (0: no limit)")
	fs.IntVar(&o.loginFailures, "login-failures", 10, "failed sign-ins one client IP may make per minute before it gets 429 (0: no limit)")
	fs.BoolVar(&o.logRequests, "log-requests", false, "log every request (method, path, status, Origin, Sec-Fetch-Site)")
	fs.DurationVar(&o.grace, "grace", 0, "grace window for retried refreshes (0: strict rotation)")
	fs.DurationVar(&o.accessTTL, "access-ttl", refresh.DefaultAccessTTL, "access token lifetime")
	fs.DurationVar(&o.idleTTL, "idle-ttl", refresh.DefaultIdleTTL, "refresh token idle lifetime")
	fs.DurationVar(&o.sessTTL, "session-ttl", refresh.DefaultSessionTTL, "absolute session lifetime")
	_ = fs.Parse(os.Args[1:])
	fs.Visit(func(f *flag.Flag) { o.storeSet = o.storeSet || f.Name == "store" })

	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	o.introspectionSecret = os.Getenv("INTROSPECTION_SECRET")
	runner := run
	if o.resourceServer {
		runner = runResource
	}
	if err := runner(ctx, o, log, os.Stdout); err != nil {
		log.Error("refresh-demo", "err", err)
		os.Exit(1)
	}
}

// run serves until ctx is done, then shuts down gracefully.
func run(ctx context.Context, o options, log *slog.Logger, out io.Writer) error {
	if err := checkRecentAuth(o.recentAuth); err != nil {
		return err
	}
	persist := o.store != "memory"
	if persist {
		if err := prepareDataDir(o.dataDir); err != nil {
			return err
		}
	}
	store, passwords, closeStore, err := openStore(ctx, o.store, o.dsn, o.dataDir)
	if err != nil {
		return err
	}
	defer closeStore()
	var (
		key        refresh.Key
		generated  bool
		mac        []byte
		macCreated bool
	)
	if o.keyFile == "" && persist {
		key, generated, err = persistentSigningKey(o.dataDir)
	} else {
		key, generated, err = signingKey(o.keyFile)
	}
	if err != nil {
		return err
	}
	keys := []refresh.Key{key}
	if o.oldKeyFile != "" {
		old, _, err := signingKey(o.oldKeyFile)
		if err != nil {
			return fmt.Errorf("-old-key: %w", err)
		}
		keys = append(keys, old)
	}
	if env := os.Getenv("REFRESH_SECRET"); env == "" && persist {
		mac, macCreated, err = persistentSecret(o.dataDir)
	} else {
		mac, macCreated, err = decodeSecret("REFRESH_SECRET", env)
	}
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", o.addr)
	if err != nil {
		return err
	}
	defer ln.Close()
	base := "http://" + ln.Addr().String()
	issuer, publicURL := base, ""
	if o.issuer != "" {
		if _, ok := serviceURL(o.issuer); !ok {
			return fmt.Errorf("-issuer %q: want the service's public URL, http(s)://host[:port][/path]", o.issuer)
		}
		issuer, publicURL = strings.TrimRight(o.issuer, "/"), strings.TrimRight(o.issuer, "/")
	}
	iss, err := refresh.NewIssuer(refresh.Config{
		Issuer:            issuer,
		PublicURL:         publicURL,
		Audience:          "refresh-demo",
		Keys:              keys,
		RefreshKeys:       []refresh.RefreshKey{{ID: 1, Secret: mac}},
		Store:             store,
		AccessTTL:         o.accessTTL,
		IdleTTL:           o.idleTTL,
		SessionTTL:        o.sessTTL,
		Grace:             o.grace,
		MaxSessions:       o.maxSessions,
		DPoPNonceLifetime: o.dpopNonce,
		CheckSession:      true,
		OnEvent: func(ctx context.Context, e refresh.Event) {
			level := slog.LevelInfo
			if e.Kind == refresh.EventReused {
				level = slog.LevelWarn
			}
			log.Log(ctx, level, "session event", "event", e)
		},
	})
	if err != nil {
		return err
	}
	var handler http.Handler = newAuthMux(iss, authConfig{introspectionSecret: o.introspectionSecret, log: log, recentAuth: o.recentAuth,
		loginFailures: o.loginFailures, loginWindow: time.Minute, passwords: passwords})
	if publicURL == "" {
		handler = ownPortOnly(handler, ln.Addr(), "", "-issuer")
	}
	if o.logRequests {
		handler = requestLog(handler, log)
	}
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second}
	switch {
	case !persist:
		fmt.Fprintln(out, "Memory store: sessions and generated keys die with this process (drop -store memory to keep them).")
	case o.store == "sqlite":
		fmt.Fprintf(out, "Sessions, passwords and keys in %s: a restart logs nobody out (-store memory forgets them).\n", o.dataDir)
	}
	if persist && (generated || macCreated) {
		fmt.Fprintf(out, "Created new keys in %s.\n", o.dataDir)
	}
	fmt.Fprintf(out, "refresh-demo on %s, %s store. Users: %s.\n", base, o.store, usersLine(ctx, passwords))
	fmt.Fprintf(out, "Browser app: open %s/ (cookie mode: the refresh token in an HttpOnly cookie).\n", base)
	fmt.Fprintf(out, "Try it (needs curl and jq):\n\n%s\n", walkthrough(base))

	// Sweep every few minutes, as a service should: tables stay bounded by
	// the sessions in use (expired, idle and long-revoked ones go).
	go sweep(ctx, iss, 5*time.Minute, log)
	return serveUntil(ctx, srv, ln, out)
}

// usersLine names the built-in accounts and their passwords for the
// start-up line, or says that one was changed (POST /password): the store
// keeps a change across restarts, and the built-in password would not
// work.
func usersLine(ctx context.Context, pw passwordStore) string {
	var parts []string
	for _, u := range []struct{ name, password string }{{"alice", "wonderland"}, {"bob", "builder"}} {
		shown := u.password
		switch _, v, ok, err := pw.password(ctx, u.name); {
		case err != nil || !ok:
			shown = "(password unreadable)"
		case v != 0:
			shown = "(password changed)"
		}
		parts = append(parts, fmt.Sprintf("%s/%s (%s)", u.name, shown, strings.Join(users[u.name].roles, ", ")))
	}
	return strings.Join(parts, ", ")
}

// serviceURL parses s as a service's public URL: http or https, a host,
// no query or fragment.
func serviceURL(s string) (*url.URL, bool) {
	u, err := url.Parse(s)
	ok := err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" && u.RawQuery == "" && u.Fragment == ""
	return u, ok
}

// ownPortOnly answers 421 Misdirected Request (RFC 9110 §15.5.20) to a
// request whose Host names a port other than addr's, or names other (the
// auth service, for the resource server), and passes the rest to next. It
// stands in for a public URL when none is configured: DPoP's htu is then
// checked against the Host header, which the client writes, so without it
// a proof captured on a sibling service (the auth service's /me and the
// resource server's /me accept the same tokens) could be replayed here
// within its minute with that service's Host. Any host name reaches the
// demo on its own port (localhost, 127.0.0.1, a LAN address); behind a
// proxy or a port mapping, flag names the option that sets the URL.
func ownPortOnly(next http.Handler, addr net.Addr, other, flag string) http.Handler {
	_, port, _ := net.SplitHostPort(addr.String())
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := "80"
		if r.TLS != nil {
			p = "443"
		}
		if _, hp, err := net.SplitHostPort(r.Host); err == nil {
			p = hp
		}
		if p != port || (other != "" && strings.EqualFold(r.Host, other)) {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.Header().Set("X-Content-Type-Options", "nosniff")
			w.WriteHeader(http.StatusMisdirectedRequest)
			fmt.Fprintf(w, "misdirected request: the Host header names another server; this one listens on port %s (behind a proxy or a port mapping, start it with %s naming the URL clients use)\n", port, flag)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// requestLog logs each request after it was answered: what the browser app
// does (silent refreshes, refused cross-origin calls) shows in the log.
func requestLog(next http.Handler, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(sw, r)
		log.Info("request", "method", r.Method, "path", r.URL.Path, "status", sw.status,
			"origin", r.Header.Get("Origin"), "sec_fetch_site", r.Header.Get("Sec-Fetch-Site"))
	})
}

// statusWriter remembers the status a handler wrote.
type statusWriter struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wrote {
		w.status, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	w.wrote = true
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// serveUntil serves on ln until ctx is done, then shuts down gracefully.
func serveUntil(ctx context.Context, srv *http.Server, ln net.Listener, out io.Writer) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	fmt.Fprintln(out, "shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}

// signingKey reads the key file, or generates an Ed25519 key.
func signingKey(path string) (refresh.Key, bool, error) {
	if path == "" {
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		return refresh.Key{Algorithm: refresh.EdDSA, Key: priv}, true, err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return refresh.Key{}, false, err
	}
	if strings.HasPrefix(strings.TrimSpace(string(data)), "{") {
		k, err := refresh.ParseJWK(data)
		return k, false, err
	}
	k, err := refresh.ParseKeyPEM(data)
	return k, false, err
}

// decodeSecret decodes the base64 secret env (REFRESH_SECRET,
// DPOP_NONCE_SECRET: name says which, for errors) of at least 32 bytes, or
// generates one when env is empty.
func decodeSecret(name, env string) ([]byte, bool, error) {
	if env == "" {
		b := make([]byte, 32)
		_, err := rand.Read(b)
		return b, true, err
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(env); err == nil {
			if len(b) < 32 {
				return nil, false, fmt.Errorf("%s decodes to %d bytes; at least 32 are needed", name, len(b))
			}
			return b, false, nil
		}
	}
	return nil, false, fmt.Errorf("%s is not base64", name)
}

// sweep runs iss.Sweep every interval until ctx ends.
func sweep(ctx context.Context, iss *refresh.Issuer, every time.Duration, log *slog.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if n, err := iss.Sweep(ctx, 1000); err != nil {
				log.Warn("sweep", "err", err)
			} else if n > 0 {
				log.Info("sweep", "deleted", n)
			}
		}
	}
}

// checkRecentAuth refuses a -recent-auth under a second (0 is the default):
// auth_time has whole seconds, and RequireRecentAuth would panic.
func checkRecentAuth(d time.Duration) error {
	if d != 0 && d < time.Second {
		return fmt.Errorf("-recent-auth %v: want at least 1s (a sign-in time has whole seconds)", d)
	}
	return nil
}
