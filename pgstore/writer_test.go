package pgstore_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/refreshkit/refresh"
	"github.com/refreshkit/refresh/storetest"
)

// TestStoreWriterCannotEscalate is finding 28 on a real Postgres: someone
// who can run an UPDATE on the sessions table (SQL injection elsewhere in
// the application, an operator, an edited backup) changes their own
// session's row, or strips the DPoP binding of a session whose token they
// stole, and refreshes on an instance that reads the row. A refresh
// token's tag covers every field that never changes after Issue, so each
// edit makes the token invalid_grant, mints nothing and changes nothing;
// an edit of metadata alone, which no decision reads, does not.
func TestStoreWriterCannotEscalate(t *testing.T) {
	pool := testPool(t)
	st, table := newStoreTable(t, pool)
	iss := storetest.NewIssuer(t, st, 0)
	ctx := context.Background()
	refreshAt := func(tok string) (int, map[string]any) {
		t.Helper()
		// Another instance, which has seen none of the sessions.
		srv := httptest.NewServer(refresh.NewHandlers(storetest.NewIssuerWithKeysOf(t, iss, st), refresh.HandlerConfig{}).RefreshHandler())
		defer srv.Close()
		resp, err := http.PostForm(srv.URL, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok}})
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&body)
		return resp.StatusCode, body
	}
	for _, tc := range []struct {
		set   string
		bound bool // the session is DPoP-bound (a thief without the key)
		want  int
	}{
		{`claims = convert_to('{"roles":["admin"]}', 'UTF8')`, false, 400},
		{`subject = 'alice'`, false, 400},
		{`scope = array_append(scope, 'admin')`, false, 400},
		{`created_at = created_at + 3600000000000`, false, 400}, // a sign-in an hour fresher: past step-up guards
		{`expires_at = expires_at + 31536000000000000`, false, 400},
		{`dpop_key = ''`, true, 400},
		{`meta = '{"ip": "203.0.113.9"}'`, false, 200},
	} {
		t.Run(tc.set, func(t *testing.T) {
			opts := []refresh.Option{refresh.WithScope("read"), refresh.WithClaims(map[string]any{"roles": []string{"user"}}),
				refresh.WithMeta(map[string]string{"ip": "192.0.2.1"})}
			if tc.bound {
				opts = append(opts, refresh.WithDPoP(strings.Repeat("A", 43)))
			}
			p, err := iss.Issue(ctx, "mallory", opts...)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := pool.Exec(ctx, "UPDATE "+table+" SET "+tc.set+" WHERE id = $1", p.SessionID); err != nil {
				t.Fatal(err)
			}
			status, body := refreshAt(p.RefreshToken)
			if status != tc.want {
				t.Fatalf("refresh after SET %s: %d %v, want %d", tc.set, status, body, tc.want)
			}
			if tc.want == 200 {
				return
			}
			if body["error"] != "invalid_grant" || body["access_token"] != nil {
				t.Fatalf("refresh after SET %s: %v, want invalid_grant and no token", tc.set, body)
			}
			s, err := st.Get(ctx, p.SessionID)
			if err != nil {
				t.Fatal(err)
			}
			if s.Generation != 0 || s.Revoked() {
				t.Fatalf("a refused refresh changed the session: generation %d, revoked %v", s.Generation, s.Revoked())
			}
		})
	}
}
