// Package browsertest drives refresh-demo's browser app, and the library's
// cookie mode where the demo cannot show it (cookie tossing between sibling
// subdomains), in a real headless Chromium: the cookie mode as a browser
// sees it. It is a module of its own so that neither the library nor the
// demo depends on a browser driver.
package browsertest

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// accessTTL is the demo's access token lifetime here: short, so that the
// app's silent refresh can be watched in real time.
const accessTTL = 3 * time.Second

const cookieName = "__Host-refresh_token"

// TestBrowserApp signs in to the demo's browser app and checks, in a real
// Chromium, what the README promises about cookie mode.
func TestBrowserApp(t *testing.T) {
	d := startDemo(t, "-access-ttl", accessTTL.String(), "-grace", "5s", "-log-requests", "-recent-auth", "1s")
	root := browser(t)

	// Tab A signs in as alice.
	a := tab(t, root)
	do(t, a, "open the app", chromedp.Navigate(d.base+"/"))
	waitView(t, a, "login")
	signIn(t, a, "alice", "wonderland")
	sid := eval[string](t, a, `document.getElementById('me-sid').textContent`)
	require.NotEmpty(t, sid)

	t.Run("1 refresh token only in an HttpOnly cookie", func(t *testing.T) {
		c := refreshCookie(t, a, d.base)
		require.NotNil(t, c, "the browser kept no %s cookie", cookieName)
		assert.True(t, c.HTTPOnly, "HttpOnly")
		assert.True(t, c.Secure, "Secure (kept by Chromium on http://127.0.0.1, a potentially trustworthy origin)")
		assert.Equal(t, network.CookieSameSiteStrict, c.SameSite, "SameSite")
		assert.Equal(t, "/", c.Path, "Path")
		assert.Equal(t, "127.0.0.1", c.Domain, "host-only: no Domain attribute")
		assert.False(t, c.Session, "persistent until the refresh token's idle expiry")
		assert.True(t, strings.HasPrefix(c.Value, "rt_"), "the value is the refresh token")
		// Script sees nothing of it: not in document.cookie, not in storage,
		// not in the page.
		for _, js := range []string{
			`document.cookie`,
			`JSON.stringify(Object.entries(localStorage))`,
			`JSON.stringify(Object.entries(sessionStorage))`,
			`document.documentElement.outerHTML`,
		} {
			got := eval[string](t, a, js)
			assert.NotContains(t, got, "rt_", js)
			assert.NotContains(t, got, c.Value, js)
			assert.NotContains(t, got, "refresh_token", js)
		}
	})

	t.Run("1b bound to a key the page cannot export", func(t *testing.T) {
		assert.False(t, eval[bool](t, a, `dpopKey.then(k => k.key.privateKey.extractable)`), "the private key is extractable")
		assert.Equal(t, "refused", eval[string](t, a, `dpopKey.then(k => crypto.subtle.exportKey('jwk', k.key.privateKey)).then(() => 'exported', () => 'refused')`))
		assert.Equal(t, "DPoP", eval[string](t, a, `fetch('/me', {headers: {Authorization: 'Bearer ' + access.token}}).then(r => r.headers.get('WWW-Authenticate').split(' ')[0])`),
			"the access token is DPoP-bound: as a plain bearer token it is refused with a DPoP challenge")
	})

	t.Run("1c a stolen cookie or access token is useless without the key", func(t *testing.T) {
		// What malware reading the cookie store, or an XSS sending the
		// token away, would have: the cookie's value and the access token.
		rt := refreshCookie(t, a, d.base).Value
		at := eval[string](t, a, `access.token`)
		rot0 := d.events("rotated", sid)
		client := &http.Client{}
		for name, req := range map[string]*http.Request{
			"cookie at /app/token": formReq(t, d.base+"/app/token", "grant_type=refresh_token&client_id=refresh-demo-web",
				"Cookie", cookieName+"="+rt, "X-Requested-With", "x"),
			"cookie value at /token":          formReq(t, d.base+"/token", "grant_type=refresh_token&client_id=refresh-demo-web&refresh_token="+rt),
			"cookie value revoked at /revoke": formReq(t, d.base+"/revoke", "client_id=refresh-demo-web&token="+rt),
			"access token as Bearer":          getReq(t, d.base+"/me", "Authorization", "Bearer "+at),
			"access token as DPoP, no proof":  getReq(t, d.base+"/me", "Authorization", "DPoP "+at),
		} {
			resp, err := client.Do(req)
			require.NoError(t, err)
			resp.Body.Close()
			switch {
			case strings.Contains(name, "revoke"):
				assert.Equal(t, 200, resp.StatusCode, name) // RFC 7009: 200, and nothing revoked
			case strings.Contains(name, "/me"), strings.Contains(name, "access token"):
				assert.Equal(t, 401, resp.StatusCode, name)
			default:
				assert.Equal(t, 400, resp.StatusCode, name)
			}
		}
		assert.Equal(t, rot0, d.events("rotated", sid), "nothing rotated")
		assert.Zero(t, d.events("revoked", sid)+d.events("reused", sid), "the thief's attempts ended nothing")
		do(t, a, "reload", chromedp.Click(chromedp.ID("reload")))
		waitView(t, a, "app")
		assert.Equal(t, rt, refreshCookie(t, a, d.base).Value, "the browser's session goes on")
	})

	t.Run("2 silent refresh when the access token expires", func(t *testing.T) {
		gen0 := generation(t, a, sid)
		rot0 := d.events("rotated", sid)
		before := refreshCookie(t, a, d.base).Value
		signedIn := eval[string](t, a, `document.getElementById('me-auth').textContent`)
		require.NotEmpty(t, signedIn, "the sign-in time (auth_time) is shown")
		time.Sleep(accessTTL + 200*time.Millisecond) // real time: the demo is a real process
		do(t, a, "reload", chromedp.Click(chromedp.ID("reload")))
		waitText(t, a, "refreshes", "1")
		waitView(t, a, "app")
		assert.Equal(t, gen0+1, generation(t, a, sid), "the session's generation advanced by one")
		assert.Equal(t, rot0+1, d.events("rotated", sid))
		assert.NotEqual(t, before, refreshCookie(t, a, d.base).Value, "the cookie rotated")
		assert.Equal(t, signedIn, eval[string](t, a, `document.getElementById('me-auth').textContent`),
			"the refreshed access token keeps the sign-in time (auth_time)")
	})

	t.Run("2b a step-up challenge is not answered with a refresh", func(t *testing.T) {
		// alice signed in more than accessTTL ago, and /admin (run with
		// -recent-auth 1s) wants a sign-in at most a second old: a
		// refreshed token keeps the sign-in time, so the app must hand the
		// challenge back rather than refresh, retry, and report the
		// session ended.
		rot0 := d.events("rotated", sid)
		got := eval[string](t, a, `api('/admin').then(r => r.status + ' ' + r.headers.get('WWW-Authenticate'))`)
		assert.True(t, strings.HasPrefix(got, `401 DPoP realm="refresh-demo", error="insufficient_user_authentication", max_age="1"`), got)
		assert.Equal(t, rot0, d.events("rotated", sid), "no rotation spent on it")
		waitView(t, a, "app")
	})

	// Tab B opens the app in the same browser: it borrows tab A's access
	// token over the BroadcastChannel and spends no rotation.
	b := tab(t, a)
	genB := generation(t, a, sid)
	do(t, b, "open a second tab", chromedp.Navigate(d.base+"/"))
	waitView(t, b, "app")
	assert.Equal(t, sid, eval[string](t, b, `document.getElementById('me-sid').textContent`), "one browser, one session")
	assert.Equal(t, genB, generation(t, b, sid), "a new tab costs no rotation")
	assert.Equal(t, "0", eval[string](t, b, `document.getElementById('refreshes').textContent`))

	t.Run("3 two tabs expire together: one rotation", func(t *testing.T) {
		raceTabs(t, d, a, b, sid, func(rot, grace int) {
			assert.Equal(t, 1, rot, "one rotation for two tabs (Web Lock)")
			assert.Zero(t, grace, "with the lock no tab needs the grace window")
		})
	})

	t.Run("3b without the lock the grace window gives one identical successor", func(t *testing.T) {
		for _, c := range []context.Context{a, b} {
			do(t, c, "open with ?nolock", chromedp.Navigate(d.base+"/?nolock"))
			waitView(t, c, "app")
		}
		// Both tabs refresh. If their requests carry the same cookie, one
		// rotates and the other gets the identical successor from the grace
		// window; if the first one's new cookie is in the jar before the
		// second leaves, the second rotates once more. Never reuse.
		raceTabs(t, d, a, b, sid, func(rot, grace int) {
			t.Logf("rotations %d, grace retries %d", rot, grace)
			assert.True(t, rot == 1 && grace <= 1 || rot == 2 && grace == 0, "rotations %d, grace retries %d", rot, grace)
		})
		assert.Zero(t, d.events("reused", sid), "racing tabs never look like reuse")
	})

	t.Run("4 sign out everywhere reaches the other tab and the other device", func(t *testing.T) {
		other := tab(t, root, chromedp.WithNewBrowserContext())
		do(t, other, "open on another device", chromedp.Navigate(d.base+"/"))
		waitView(t, other, "login")
		signIn(t, other, "alice", "wonderland")

		do(t, a, "sign out everywhere", chromedp.Click(chromedp.ID("signout-all")))
		waitView(t, a, "login")
		assert.Nil(t, refreshCookie(t, a, d.base), "the cookie is cleared")
		// The other tab and the other device still show the app until their
		// next call, which the server refuses (the session check of the
		// access token, then the refresh): they show the login screen.
		for name, c := range map[string]context.Context{"other tab": b, "other device": other} {
			assert.Equal(t, "app", eval[string](t, c, `document.body.dataset.view`), name)
			do(t, c, "reload "+name, chromedp.Click(chromedp.ID("reload")))
			waitView(t, c, "login")
			assert.Contains(t, eval[string](t, c, `document.getElementById('login-note').textContent`), "ended", name)
		}
		assert.Zero(t, liveSessions(t, d.base, "alice", "wonderland"), "no session of alice is left")
	})

	t.Run("5 a page of another origin cannot use the cookie", func(t *testing.T) {
		signIn(t, a, "alice", "wonderland")
		sid := eval[string](t, a, `document.getElementById('me-sid').textContent`)
		require.Equal(t, sid, refreshSession(t, refreshCookie(t, a, d.base).Value))

		// The attacker's page: same host, another port. That is the same
		// site, so SameSite=Strict lets the browser send the cookie; the
		// demo's origin checks must refuse it.
		evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			fmt.Fprintf(w, evilPage, d.base)
		}))
		defer evil.Close()
		e := tab(t, a) // same browser context: the victim's cookies
		post403, options := d.requests("POST", "/app/token", 403), d.requests("OPTIONS", "/app/token", 0)
		do(t, e, "open the attacker's page", chromedp.Navigate(evil.URL))
		results := pollValue[map[string]string](t, e, `window.results && window.results.done ? window.results : null`)
		t.Logf("attacker's page saw: %v", results)
		assert.Equal(t, "refused", results["simple"], "a simple cross-origin POST cannot read the answer")
		assert.Equal(t, "refused", results["preflighted"], "the custom header needs a CORS preflight, which fails")
		// The simple POST reached the demo and was refused; of the other,
		// only its CORS preflight was sent, and refused.
		assert.Equal(t, post403+1, d.requests("POST", "/app/token", 403), "the simple POST: 403")
		assert.Equal(t, options+1, d.requests("OPTIONS", "/app/token", 0), "the preflight")
		// (The victim's own tab may refresh meanwhile, from its own origin:
		// its access token lives 3 s and the app calls the API every 30 s.)
		evilOrigin := " origin=" + evil.URL + " "
		assert.Equal(t, 1, d.requests("POST", "/app/token", 0, evilOrigin), "the attacker's page made one POST, and the demo saw its origin")
		assert.Zero(t, d.requests("POST", "/app/token", 200, evilOrigin), "a refresh from the attacker's page succeeded")
		assert.Equal(t, sid, refreshSession(t, refreshCookie(t, a, d.base).Value), "the cookie is no longer the victim's session's")
		// And the victim's session is intact.
		do(t, a, "reload", chromedp.Click(chromedp.ID("reload")))
		waitView(t, a, "app")
		assert.Equal(t, sid, eval[string](t, a, `document.getElementById('me-sid').textContent`))
		assert.Zero(t, d.events("reused", sid))
	})

	t.Run("5b a cross-site form cannot sign the browser into the attacker's session", func(t *testing.T) {
		// Bob, the attacker, signs in to the app himself and takes the
		// refresh token from his own cookie.
		req := formReq(t, d.base+"/app/login", "username=bob&password=builder&client_id=refresh-demo-web", "X-Requested-With", "fetch")
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, 200, resp.StatusCode)
		var bobs string
		for _, c := range resp.Cookies() {
			if c.Name == cookieName {
				bobs = c.Value
			}
		}
		require.NotEmpty(t, bobs)
		bobSid := refreshSession(t, bobs)
		victim := refreshSession(t, refreshCookie(t, a, d.base).Value)

		// His page, on another site (localhost is not 127.0.0.1's site),
		// posts his token to the app's token endpoint as a top-level form
		// navigation of the victim's browser: no custom header, and the
		// answer to such a navigation may set even a SameSite=Strict
		// cookie. Were the token accepted, the answer's cookie would put
		// the victim into Bob's session.
		evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			fmt.Fprintf(w, swapPage, d.base+"/app/token", bobs)
		}))
		defer evil.Close()
		evilURL := strings.Replace(evil.URL, "127.0.0.1", "localhost", 1)
		e := tab(t, a) // the victim's browser context
		post403 := d.requests("POST", "/app/token", 403)
		do(t, e, "open the attacker's page", chromedp.Navigate(evilURL))
		body := pollValue[string](t, e, `location.href.endsWith('/app/token') && document.body ? document.body.innerText : null`)
		t.Logf("the form's answer: %s", body)
		// (The victim's own tab may refresh meanwhile: its access token
		// lives 3 s and the app calls the API every 30 s. So her cookie
		// may change, but only to a token of her own session.)
		assert.Equal(t, post403+1, d.requests("POST", "/app/token", 403), "the form POST: 403")
		assert.Zero(t, d.events("rotated", bobSid), "Bob's token was rotated")
		assert.Equal(t, victim, refreshSession(t, refreshCookie(t, a, d.base).Value), "the victim's cookie is no longer her own session's")
	})

	var curlToken string // the access token of a session signed in with curl
	t.Run("6 screenshot of the signed-in page", func(t *testing.T) {
		// A second device (another browser context: its own cookies) and a
		// session from curl whose User-Agent is markup: the devices list
		// shows it as text, and the page's CSP would stop it anyway.
		other := tab(t, root, chromedp.WithNewBrowserContext())
		do(t, other, "open on another device", chromedp.Navigate(d.base+"/"))
		waitView(t, other, "login")
		signIn(t, other, "alice", "wonderland")
		curlToken = apiLogin(t, d.base, "alice", "wonderland", `<img src=x onerror="window.pwned=1">curl/8`)
		do(t, a, "reload", chromedp.Click(chromedp.ID("reload")))
		pollValue[bool](t, a, `document.getElementById('devices').innerText.includes('curl/8') || null`)
		sid := eval[string](t, a, `document.getElementById('me-sid').textContent`)
		assert.False(t, eval[bool](t, a, `window.pwned === 1`), "markup in a session's metadata ran")
		// Were there a sink that wrote markup, the CSP would still stop it:
		// inject an inline handler and an inline script as an XSS would.
		eval[bool](t, a, `(() => {
			document.body.insertAdjacentHTML('beforeend', '<img src="data:," onerror="window.pwned = 2"><img src="/nope" onerror="window.pwned = 3">');
			const s = document.createElement('script'); s.textContent = 'window.pwned = 4'; document.body.append(s);
			return true })()`)
		time.Sleep(300 * time.Millisecond) // let the images fail to load
		assert.Equal(t, "undefined", eval[string](t, a, `typeof window.pwned`), "the CSP let injected script run")
		assert.Contains(t, eval[string](t, a, `document.getElementById('devices').innerText`), `<img src=x onerror="window.pwned=1">curl/8`)
		assert.Contains(t, eval[string](t, a, `document.querySelector('tr[data-sid="`+sid+`"]').innerText`), "this device")

		png, err := chromedp.Run(a, chromedp.FullScreenshot(100))
		require.NoError(t, err)
		dir := os.Getenv("BROWSER_ARTIFACTS")
		if dir == "" {
			dir, err = os.MkdirTemp("", "refresh-browsertest-") // kept, for a person to look at
			require.NoError(t, err)
		}
		path := filepath.Join(dir, "signed-in.png")
		require.NoError(t, os.WriteFile(path, png, 0o644))
		t.Logf("screenshot of the signed-in page: %s", path)
		fmt.Printf("screenshot of the signed-in page: %s\n", path)
	})

	t.Run("7 sign out another device from the list", func(t *testing.T) {
		require.NotEmpty(t, curlToken)
		code := func() int {
			resp, err := http.DefaultClient.Do(getReq(t, d.base+"/me", "Authorization", "Bearer "+curlToken))
			require.NoError(t, err)
			resp.Body.Close()
			return resp.StatusCode
		}
		require.Equal(t, 200, code())
		// The row of the curl session: its button sends DELETE
		// /sessions/{id} with the tab's DPoP-bound token and a proof for
		// that path.
		curlSidJS := `[...document.querySelectorAll('#device-rows tr')].filter(r => r.innerText.includes('curl/8')).map(r => r.dataset.sid)[0] || null`
		curlSid := pollValue[string](t, a, curlSidJS)
		// This browser signed in more than a second ago, and the demo runs
		// with -recent-auth 1s: signing another device out wants a fresh
		// sign-in (a stolen refresh token must not do it). The app ends
		// this session and asks for one; nothing is signed out meanwhile.
		oldSid := eval[string](t, a, `document.getElementById('me-sid').textContent`)
		time.Sleep(1100 * time.Millisecond) // real time (the demo is a process): the sign-in is now over a second old
		eval[bool](t, a, `document.querySelector('tr[data-sid="`+curlSid+`"] button').click(), true`)
		waitView(t, a, "login")
		assert.Contains(t, eval[string](t, a, `document.getElementById('login-note').textContent`), "sign in again")
		// Refused: the sign-in was too old. (Twice when the tab's 3 s access
		// token expired during the wait: a 401 for the token, a refresh,
		// then the step-up 401.)
		assert.GreaterOrEqual(t, d.requests("DELETE", "/sessions/"+curlSid, 401), 1, "refused: the sign-in was too old")
		// (Its session, not its access token: that token may have expired by
		// now; with whole-second exp a 3 s token lives 2 to 3 s.)
		assert.Zero(t, d.events("revoked", curlSid), "the other device is still signed in")
		assert.Equal(t, 1, d.events("revoked", oldSid), "this browser's old session ended")
		// Sign in again early in a second: auth_time has whole seconds, so
		// a sign-in at .97 s counts from .0, and with -recent-auth 1s the
		// click 40 ms later was already "over a second old" now and then
		// (the test flaked). Early in the second, the click has ~0.7 s,
		// less what the sign-in takes: the demo built with -race checks
		// bcrypt ten times slower, and on a busy machine that was once
		// 0.9 s, so the step-up came again. Then this browser's session
		// has ended once more, nothing was signed out, and it signs in
		// again (at most three times).
		for try := 1; ; try++ {
			time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second + 10*time.Millisecond)))
			signIn(t, a, "alice", "wonderland")
			pollValue[string](t, a, curlSidJS)
			rows := eval[int](t, a, `document.querySelectorAll('#device-rows tr').length`)
			eval[bool](t, a, `document.querySelector('tr[data-sid="`+curlSid+`"] button').click(), true`)
			got := pollValue[string](t, a, fmt.Sprintf(`document.querySelectorAll('#device-rows tr').length === %d ? 'signed out' : document.body.dataset.view === 'login' ? 'step-up' : null`, rows-1))
			if got == "signed out" {
				break
			}
			require.Less(t, try, 3, "the step-up again after three fresh sign-ins")
			assert.Zero(t, d.events("revoked", curlSid), "the other device is still signed in")
			t.Logf("the sign-in took too long to count as recent (try %d): signing in again", try)
		}
		assert.False(t, eval[bool](t, a, `!!document.querySelector('tr[data-sid="`+curlSid+`"]')`), "the row is gone")
		assert.Equal(t, 401, code(), "the signed-out device's access token is refused")
		assert.Equal(t, 1, d.events("revoked", curlSid), "the other device's session ended")
		assert.Equal(t, 1, d.requests("DELETE", "/sessions/"+curlSid, 204))
		waitView(t, a, "app")
	})

	t.Run("8 sign out this browser", func(t *testing.T) {
		sid := eval[string](t, a, `document.getElementById('me-sid').textContent`)
		require.NotNil(t, refreshCookie(t, a, d.base))
		do(t, a, "sign out", chromedp.Click(chromedp.ID("signout")))
		waitView(t, a, "login")
		assert.Nil(t, refreshCookie(t, a, d.base), "the cookie is cleared")
		// A DPoP-bound session is revoked only with a proof from its key:
		// the event shows the browser's proof was accepted.
		assert.Equal(t, 1, d.events("revoked", sid), "the session was revoked")
		do(t, a, "reload the page", chromedp.Navigate(d.base+"/"))
		waitView(t, a, "login")
	})

	t.Run("9 the app answers DPoP nonce requests (demo -dpop-nonce)", func(t *testing.T) {
		dn := startDemo(t, "-dpop-nonce", "2m", "-access-ttl", accessTTL.String(), "-log-requests")
		n := tab(t, root, chromedp.WithNewBrowserContext()) // its own cookie jar: same host, other port
		do(t, n, "open the app", chromedp.Navigate(dn.base+"/"))
		signIn(t, n, "bob", "builder")
		nsid := eval[string](t, n, `document.getElementById('me-sid').textContent`)
		require.NotEmpty(t, nsid)
		assert.Equal(t, 1, dn.requests("POST", "/app/login", 400), "the first sign-in was asked for a nonce")
		assert.Equal(t, 1, dn.requests("POST", "/app/login", 200), "and the retry with it was accepted")
		refused := dn.requests("POST", "/app/token", 400) // the page's first look, without a cookie
		time.Sleep(accessTTL + 200*time.Millisecond)
		do(t, n, "reload", chromedp.Click(chromedp.ID("reload")))
		waitText(t, n, "refreshes", "1")
		waitView(t, n, "app")
		assert.Equal(t, 1, dn.events("rotated", nsid), "the silent refresh, with the nonce it was handed")
		assert.Equal(t, refused, dn.requests("POST", "/app/token", 400), "the sign-in response's nonce was used: no retry")

		t.Run("10 changing the password ends every session", func(t *testing.T) {
			// bob on another device, through the API: a refresh token of
			// its own, which must stop working with the password change.
			resp, err := http.DefaultClient.Do(formReq(t, dn.base+"/login", "username=bob&password=builder"))
			require.NoError(t, err)
			var other struct {
				RefreshToken string `json:"refresh_token"`
			}
			require.NoError(t, json.NewDecoder(resp.Body).Decode(&other))
			resp.Body.Close()
			require.Equal(t, 200, resp.StatusCode)
			refreshOther := func() int {
				resp, err := http.DefaultClient.Do(formReq(t, dn.base+"/token", "grant_type=refresh_token&refresh_token="+other.RefreshToken))
				require.NoError(t, err)
				var tr struct {
					RefreshToken string `json:"refresh_token"`
				}
				_ = json.NewDecoder(resp.Body).Decode(&tr)
				resp.Body.Close()
				if tr.RefreshToken != "" {
					other.RefreshToken = tr.RefreshToken
				}
				return resp.StatusCode
			}
			require.Equal(t, 200, refreshOther())
			signInStatus := func(pass string) int {
				resp, err := http.DefaultClient.Do(formReq(t, dn.base+"/login", "username=bob&password="+pass))
				require.NoError(t, err)
				resp.Body.Close()
				return resp.StatusCode
			}
			// A wrong current password changes nothing.
			do(t, n, "change the password with a wrong current one",
				chromedp.SetValue(chromedp.ID("current-password"), "not-builder"),
				chromedp.SetValue(chromedp.ID("new-password"), "bob-the-builder-2"),
				chromedp.Click(chromedp.ID("password-button")),
			)
			pollValue[bool](t, n, `!document.getElementById('password-error').hidden || null`)
			assert.Contains(t, eval[string](t, n, `document.getElementById('password-error').textContent`), "wrong")
			assert.Equal(t, 1, dn.requests("POST", "/password", 403))
			assert.Equal(t, "app", eval[string](t, n, `document.body.dataset.view`))
			assert.Equal(t, 200, refreshOther(), "the other device is still signed in")

			do(t, n, "change the password",
				chromedp.SetValue(chromedp.ID("current-password"), "builder"),
				chromedp.SetValue(chromedp.ID("new-password"), "bob-the-builder-2"),
				chromedp.Click(chromedp.ID("password-button")),
			)
			waitView(t, n, "login")
			assert.Contains(t, eval[string](t, n, `document.getElementById('login-note').textContent`), "Password changed")
			assert.Empty(t, eval[string](t, n, `document.getElementById('current-password').value + document.getElementById('new-password').value`),
				"no password left in the page for whoever signs in next")
			assert.Equal(t, 1, dn.requests("POST", "/password", 200))
			// One event for the subject: this browser's session and the other
			// device's (RevokeSubject names no session).
			ended := false
			for _, line := range strings.Split(dn.out.String(), "\n") {
				ended = ended || strings.Contains(line, "event.kind=revoked ") && strings.Contains(line, "event.sub=bob ") && strings.Contains(line, `"revoked-all: 2 sessions"`)
			}
			assert.True(t, ended, "both of bob's sessions ended, in one revocation of the subject")
			assert.Nil(t, refreshCookie(t, n, dn.base), "the cookie is cleared")
			assert.Equal(t, 400, refreshOther(), "the other device's refresh token is refused")
			assert.Equal(t, 401, signInStatus("builder"), "the old password is refused")
			signIn(t, n, "bob", "bob-the-builder-2")
			assert.Equal(t, 1, liveSessions(t, dn.base, "bob", "bob-the-builder-2"), "of bob's sessions only the browser's new sign-in is live")
		})
	})
}

// swapPage, given the token endpoint and the attacker's refresh token,
// submits them as a form: a top-level cross-site POST navigation.
const swapPage = `<!doctype html><title>win a prize</title>
<form method="POST" action="%s"><input type="hidden" name="grant_type" value="refresh_token">
<input type="hidden" name="refresh_token" value="%s"><input type="hidden" name="client_id" value="refresh-demo-web"></form>
<script>document.forms[0].submit()</script>`

// evilPage, given the demo's URL, tries the refresh endpoint from another
// origin with the victim's cookie: a simple POST (no preflight) and one with
// the CSRF header (preflighted).
const evilPage = `<!doctype html><title>evil</title><script>
const target = %q + '/app/token';
const body = 'grant_type=refresh_token&client_id=refresh-demo-web';
const results = {};
async function attempt(name, headers) {
  try {
    const r = await fetch(target, { method: 'POST', credentials: 'include', headers, body });
    results[name] = 'read ' + r.status + ' ' + (await r.text());
  } catch (e) {
    results[name] = 'refused';
  }
}
(async () => {
  await attempt('simple', { 'Content-Type': 'application/x-www-form-urlencoded' });
  await attempt('preflighted', { 'Content-Type': 'application/x-www-form-urlencoded', 'X-Requested-With': 'evil' });
  results.done = 'yes';
  window.results = results;
})();
</script>`

// signIn fills in and submits the login form, and waits for the app.
func signIn(t *testing.T, ctx context.Context, user, pass string) {
	t.Helper()
	waitView(t, ctx, "login")
	do(t, ctx, "sign in",
		chromedp.SetValue(chromedp.ID("username"), user),
		chromedp.SetValue(chromedp.ID("password"), pass),
		chromedp.Click(chromedp.ID("login-button")),
	)
	waitView(t, ctx, "app")
}

// refreshCookie reads the refresh cookie through the DevTools protocol (what
// the browser stores, HttpOnly included), or nil.
func refreshCookie(t *testing.T, ctx context.Context, base string) *network.Cookie {
	t.Helper()
	res, err := chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{base + "/"}})
	require.NoError(t, err)
	for _, c := range res.Cookies {
		if c.Name == cookieName {
			return c
		}
	}
	return nil
}

// refreshSession is the session id a refresh token names (its format:
// rt_ and the base64url of version, key id, then the 16 bytes of the id).
func refreshSession(t *testing.T, rt string) string {
	t.Helper()
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(rt, "rt_"))
	require.NoError(t, err)
	require.Greater(t, len(raw), 18, "a refresh token: %q", rt)
	return base64.RawURLEncoding.EncodeToString(raw[2:18])
}

// generation is the session's generation as the devices list shows it.
func generation(t *testing.T, ctx context.Context, sid string) uint64 {
	t.Helper()
	// Empty the list first, so that what is read is the reloaded one.
	eval[bool](t, ctx, `document.getElementById('device-rows').replaceChildren(), true`)
	do(t, ctx, "reload", chromedp.Click(chromedp.ID("reload")))
	js := `(() => { const r = document.querySelector('tr[data-sid="` + sid + `"]'); return r ? r.dataset.generation : null })()`
	g := pollValue[string](t, ctx, js)
	var n uint64
	_, err := fmt.Sscan(g, &n)
	require.NoError(t, err)
	return n
}

// raceTabs lets the shared access token of tabs a and b expire, makes both
// call the API at once, and hands the rotations and grace retries the demo
// counted to check; both tabs must stay signed in, in the same session.
func raceTabs(t *testing.T, d *demo, a, b context.Context, sid string, check func(rot, grace int)) {
	t.Helper()
	rot0, grace0, expired0 := d.events("rotated", sid), d.events("grace", sid), d.requests("GET", "/me", 401)
	ra := eval[string](t, a, `document.getElementById('refreshes').textContent`)
	rb := eval[string](t, b, `document.getElementById('refreshes').textContent`)
	time.Sleep(accessTTL + 200*time.Millisecond)
	var wg sync.WaitGroup
	for _, c := range []context.Context{a, b} {
		wg.Go(func() {
			_, _ = chromedp.Run(c, chromedp.Evaluate[bool](`document.getElementById('reload').click(), true`))
		})
	}
	wg.Wait()
	deadline := time.Now().Add(15 * time.Second)
	for eval[string](t, a, `document.getElementById('refreshes').textContent`) == ra &&
		eval[string](t, b, `document.getElementById('refreshes').textContent`) == rb {
		require.True(t, time.Now().Before(deadline), "neither tab refreshed")
		time.Sleep(20 * time.Millisecond)
	}
	for _, c := range []context.Context{a, b} {
		waitView(t, c, "app")
		assert.Equal(t, sid, eval[string](t, c, `document.getElementById('me-sid').textContent`))
	}
	// Let any straggler finish before counting.
	time.Sleep(300 * time.Millisecond)
	assert.Equal(t, expired0+2, d.requests("GET", "/me", 401), "both tabs found their access token expired")
	check(d.events("rotated", sid)-rot0, d.events("grace", sid)-grace0)
	assert.Zero(t, d.events("reused", sid))
}

// waitText waits until the element with id has the text.
func waitText(t *testing.T, ctx context.Context, id, text string) {
	t.Helper()
	pollValue[bool](t, ctx, fmt.Sprintf(`document.getElementById(%q).textContent === %q || null`, id, text))
}

// pollValue polls a JavaScript expression until it is neither null nor
// undefined, for up to 15 s, and returns it.
func pollValue[T any](t *testing.T, ctx context.Context, js string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Poll[T](js, chromedp.WithPollingTimeout(15*time.Second), chromedp.WithPollingInterval(20*time.Millisecond)))
	if err != nil {
		t.Fatalf("waiting for %s: %v", js, err)
	}
	return v
}

// formReq is a form POST with headers (name, value pairs).
func formReq(t *testing.T, u, body string, hdr ...string) *http.Request {
	t.Helper()
	req, err := http.NewRequest("POST", u, strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	return req
}

// getReq is a GET with headers (name, value pairs).
func getReq(t *testing.T, u string, hdr ...string) *http.Request {
	t.Helper()
	req, err := http.NewRequest("GET", u, nil)
	require.NoError(t, err)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	return req
}

// apiLogin signs in through the JSON API with a User-Agent of the caller's
// choosing.
func apiLogin(t *testing.T, base, user, pass, agent string) string {
	t.Helper()
	req, _ := http.NewRequest("POST", base+"/login", strings.NewReader("username="+user+"&password="+pass))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("User-Agent", agent)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, 200, resp.StatusCode)
	var tr struct {
		AccessToken string `json:"access_token"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&tr))
	return tr.AccessToken
}

// liveSessions counts the user's live sessions through the JSON API (a new
// login, which is itself one of them and is not counted).
func liveSessions(t *testing.T, base, user, pass string) int {
	t.Helper()
	at := apiLogin(t, base, user, pass, "browsertest")
	req, _ := http.NewRequest("GET", base+"/sessions", nil)
	req.Header.Set("Authorization", "Bearer "+at)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var out struct {
		Sessions []json.RawMessage `json:"sessions"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&out))
	return len(out.Sessions) - 1
}
