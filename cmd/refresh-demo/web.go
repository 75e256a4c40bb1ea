package main

import (
	"embed"
	"io/fs"
	"net/http"

	"github.com/refreshkit/refresh"
)

// The browser app: plain HTML, CSS and JavaScript in web/, compiled into
// the binary (no build step, nothing from a CDN).
//
//go:embed web
var webFiles embed.FS

// appClientID is the client the browser app's sessions are bound to.
const appClientID = "refresh-demo-web"

// appCSRFHeader is the custom header the app sends on cookie requests.
const appCSRFHeader = "X-Requested-With"

// contentSecurityPolicy allows the app's own files and nothing else: no
// inline script, no other origin, no framing. An injected <script> or
// onerror= attribute does not run.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
	"form-action 'self'; base-uri 'none'; frame-ancestors 'none'"

// mountApp adds the browser app to mux: the page at /, its files under
// /assets/, and the cookie-mode endpoints /app/login, /app/token and
// /app/revoke (the JSON API beside them is unchanged).
func mountApp(mux *http.ServeMux, iss *refresh.Issuer, hc refresh.HandlerConfig, throttle *loginThrottle, accts accounts) {
	// A __Host- cookie (Secure, Path=/, no Domain), HttpOnly and
	// SameSite=Strict. Browsers keep Secure cookies of http://127.0.0.1 and
	// http://localhost, which are potentially trustworthy origins; served
	// over plain HTTP from another host they would not, which is why the
	// demo listens on loopback.
	hc.Cookie = &refresh.CookieConfig{CSRFHeader: appCSRFHeader}
	h := refresh.NewHandlers(iss, hc)
	static, err := fs.Sub(webFiles, "web")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	// Only the files the binary holds, by exact name: a file server asked
	// for a name fs.FS cannot hold (invalid UTF-8, say) answers 500.
	assets := map[string]bool{}
	entries, _ := fs.ReadDir(static, ".")
	for _, e := range entries {
		assets[e.Name()] = e.Type().IsRegular() && e.Name() != "index.html"
	}
	mux.Handle("GET /{$}", pageHeaders(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeFileFS(w, r, static, "index.html")
	})))
	mux.Handle("GET /assets/{file}", pageHeaders(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("file")
		if !assets[name] {
			http.NotFound(w, r)
			return
		}
		http.ServeFileFS(w, r, static, name)
	})))
	mux.Handle("/app/login", loginHandler(iss, h, throttle, accts))
	mux.Handle("/app/token", h.RefreshHandler())
	mux.Handle("/app/revoke", h.RevocationHandler())
}

// pageHeaders sets the headers every page and file of the app gets.
func pageHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", contentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY") // frame-ancestors for older browsers
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Cache-Control", "no-cache")
		next.ServeHTTP(w, r)
	})
}
