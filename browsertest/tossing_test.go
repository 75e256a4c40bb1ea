package browsertest

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/refreshkit/refresh"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestCookieTossingInChromium: an app whose cookie mode uses a Path other
// than "/" (so its refresh cookie is __Secure-, not __Host-) on
// https://app.example.test, and a page of the attacker on the sibling
// https://evil.example.test, which sets its own session's refresh token as
// a cookie for the parent domain example.test, as any subdomain may. In
// Chromium, the app's silent refresh must not sign the victim into the
// attacker's session: not when she had no session (only the tossed cookie
// reaches the endpoint), and not when she had one (both do).
func TestCookieTossingInChromium(t *testing.T) {
	secret, mac := make([]byte, 32), make([]byte, 32)
	rand.Read(secret)
	rand.Read(mac)
	iss, err := refresh.NewIssuer(refresh.Config{
		Issuer: "https://app.example.test", Audience: "app",
		Keys:        []refresh.Key{{ID: "k1", Algorithm: refresh.HS256, Key: secret}},
		RefreshKeys: []refresh.RefreshKey{{ID: 1, Secret: mac}},
		Store:       refresh.NewMemoryStore(),
	})
	require.NoError(t, err)
	h := refresh.NewHandlers(iss, refresh.HandlerConfig{Cookie: &refresh.CookieConfig{Path: "/auth"}})
	mallory, err := iss.Issue(context.Background(), "mallory")
	require.NoError(t, err)

	app := http.NewServeMux()
	app.Handle("POST /auth/token", h.RefreshHandler())
	app.HandleFunc("POST /auth/login", func(w http.ResponseWriter, r *http.Request) {
		if h.CheckCSRF(r) != nil {
			http.Error(w, "cross-site", http.StatusForbidden)
			return
		}
		p, err := iss.Issue(r.Context(), "alice")
		if err != nil {
			http.Error(w, "store", http.StatusServiceUnavailable)
			return
		}
		h.WriteTokenResponse(w, r, p)
	})
	app.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprint(w, appPage)
	})
	evil := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// What any page of a sibling subdomain can do.
		http.SetCookie(w, &http.Cookie{Name: "__Secure-refresh_token", Value: mallory.RefreshToken,
			Domain: "example.test", Path: "/auth/token", Secure: true, HttpOnly: true, SameSite: http.SameSiteLaxMode})
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprint(w, `<!doctype html><title>cute cats</title><p>cats`)
	})
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.Host)
		switch host {
		case "app.example.test":
			app.ServeHTTP(w, r)
		case "evil.example.test":
			evil.ServeHTTP(w, r)
		default:
			http.NotFound(w, r)
		}
	}))
	srv.StartTLS()
	t.Cleanup(srv.Close)
	port := srv.Listener.Addr().(*net.TCPAddr).Port
	appURL := fmt.Sprintf("https://app.example.test:%d", port)
	evilURL := fmt.Sprintf("https://evil.example.test:%d", port)

	root := browser(t,
		chromedp.Flag("host-resolver-rules", "MAP *.example.test 127.0.0.1"),
		chromedp.Flag("ignore-certificate-errors", true), // httptest's certificate
	)
	refreshes := func(tb context.Context) string {
		return eval[string](t, tb, `fetch('/auth/token', {method: 'POST', credentials: 'same-origin',
			headers: {'X-Requested-With': 'fetch', 'Content-Type': 'application/x-www-form-urlencoded'},
			body: 'grant_type=refresh_token'}).then(async r => r.status + ' ' + await r.text())`)
	}
	// tossed reports whether the browser would send the attacker's token
	// to the app's token endpoint: the attack is really in place.
	tossed := func(tb context.Context) bool {
		res, err := chromedp.Call(tb, network.GetCookies, network.GetCookiesParams{URLs: []string{appURL + "/auth/token"}})
		require.NoError(t, err)
		for _, c := range res.Cookies {
			if c.Name == "__Secure-refresh_token" && c.Value == mallory.RefreshToken && c.Domain == ".example.test" {
				return true
			}
		}
		return false
	}

	// tossThenRefresh has the tab visit the attacker's page, come back to
	// the app and refresh: refused, and the attacker's session untouched.
	tossThenRefresh := func(t *testing.T, tb context.Context, what string) {
		do(t, tb, "visit the attacker's page", chromedp.Navigate(evilURL+"/"))
		do(t, tb, "open the app", chromedp.Navigate(appURL+"/"))
		require.True(t, tossed(tb), "the browser holds the tossed cookie for the app")
		got := refreshes(tb)
		t.Logf("refresh with %s: %s", what, got)
		assert.True(t, strings.HasPrefix(got, "400 "), "refused: %s", got)
		assert.NotContains(t, got, "access_token")
		assert.Zero(t, sessionOf(t, iss, "mallory").Generation, "mallory's session was not rotated")
	}

	t.Run("a browser without a session", func(t *testing.T) {
		tossThenRefresh(t, tab(t, root, chromedp.WithNewBrowserContext()), "only the tossed cookie")
	})

	t.Run("a signed-in browser", func(t *testing.T) {
		tb := tab(t, root, chromedp.WithNewBrowserContext())
		do(t, tb, "open the app", chromedp.Navigate(appURL+"/"))
		signIn := eval[string](t, tb, `fetch('/auth/login', {method: 'POST', credentials: 'same-origin',
			headers: {'X-Requested-With': 'fetch'}}).then(r => String(r.status))`)
		require.Equal(t, "200", signIn)
		require.Equal(t, "200", strings.Fields(refreshes(tb))[0], "her own session refreshes")
		tossThenRefresh(t, tb, "her cookies and the tossed one")
	})
}

// sessionOf is the only session of subject.
func sessionOf(t *testing.T, iss *refresh.Issuer, subject string) refresh.SessionInfo {
	t.Helper()
	list, err := iss.Sessions(context.Background(), subject)
	require.NoError(t, err)
	require.Len(t, list, 1, "%s's live sessions", subject)
	return list[0]
}

const appPage = `<!doctype html><title>app</title><p>app`
