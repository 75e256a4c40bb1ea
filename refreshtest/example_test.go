package refreshtest_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/refreshkit/refresh"
	"github.com/refreshkit/refresh/refreshtest"
)

// me is the handler under test: it greets the token's subject.
var me = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	c, _ := refresh.ClaimsFromContext(r.Context())
	fmt.Fprint(w, "hello ", c.Subject)
})

// The shortest test of a protected route: four lines of setup.
func Example() {
	t := &testing.T{} // in a real test, the *testing.T you are given
	iss := refreshtest.New(t)
	h := iss.Middleware()(me)
	r := httptest.NewRequest(http.MethodGet, "/me", nil)
	r.Header.Set("Authorization", iss.LoginHeader("alice"))

	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	fmt.Println(w.Code, w.Body.String())

	// Time moves only when the test says so.
	iss.Clock.Advance(iss.AccessTTL())
	w = httptest.NewRecorder()
	h.ServeHTTP(w, r)
	fmt.Println(w.Code, w.Header().Get("WWW-Authenticate"))
	// Output:
	// 200 hello alice
	// 401 Bearer realm="api", error="invalid_token"
}

// Reuse of a rotated refresh token revokes the session, and the test can
// see the event.
func ExampleIssuer_Events() {
	t := &testing.T{}
	iss := refreshtest.New(t, refreshtest.WithConfig(func(c *refresh.Config) { c.Grace = 2 * time.Second }))
	p := iss.Login("alice")
	iss.Refresh(p.RefreshToken)
	iss.Refresh(p.RefreshToken) // a second tab, within the grace window
	iss.Clock.Advance(2*time.Second + time.Nanosecond)
	_, err := iss.Rotate(context.Background(), p.RefreshToken) // outside it: reuse
	fmt.Println(err)
	fmt.Println(len(iss.Events(refresh.EventGrace)), len(iss.Events(refresh.EventReused)))
	// Output:
	// refresh: refresh token reused; session revoked: rotated refresh token presented again
	// 1 1
}

// A service's own handlers must live through an outage of the session
// store too: a devices page answers 503, not 500 with the database's error.
// FailStore makes only the calls named fail, here the listing.
func ExampleIssuer_FailStore() {
	t := &testing.T{}
	iss := refreshtest.New(t)
	devices := iss.Middleware()(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, _ := refresh.ClaimsFromContext(r.Context())
		list, err := iss.Sessions(r.Context(), c.Subject)
		if err != nil {
			http.Error(w, "try again later", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, len(list), "device(s)")
	}))
	r := httptest.NewRequest(http.MethodGet, "/devices", nil)
	r.Header.Set("Authorization", iss.LoginHeader("alice"))
	for _, down := range []bool{false, true} {
		if down {
			iss.FailStore(errors.New("dial tcp 10.0.0.7:5432: connection refused"), "Sessions")
		}
		w := httptest.NewRecorder()
		devices.ServeHTTP(w, r)
		fmt.Print(w.Code, " ", w.Body.String())
	}
	// Output:
	// 200 1 device(s)
	// 503 try again later
}

// A database that commits and then loses its reply: the sign-out below
// reports an error, yet the session has ended, so a "try again" answer
// must not pretend otherwise; and a rotation caught so still succeeds,
// because the Issuer looks before it answers.
func ExampleIssuer_LoseStoreReplies() {
	t := &testing.T{}
	iss := refreshtest.New(t)
	ctx := context.Background()
	reset := errors.New("read tcp 10.0.0.7:5432: connection reset by peer")

	p := iss.Login("alice")
	iss.LoseStoreReplies(reset, "Revoke")
	err := iss.RevokeSession(ctx, p.SessionID)
	fmt.Println("sign-out error:", err != nil, "- session ended:", iss.Session(p.SessionID).Revoked())

	q := iss.Login("bob")
	iss.LoseStoreReplies(reset, "AdvanceActive")
	_, err = iss.Rotate(ctx, q.RefreshToken)
	fmt.Println("rotation error:", err, "- generation:", iss.Session(q.SessionID).Generation)
	// Output:
	// sign-out error: true - session ended: true
	// rotation error: <nil> - generation: 1
}
