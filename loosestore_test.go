package refresh_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/refreshkit/refresh"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// looseSubjectStore lists sessions by subject prefix, as a store using
// LIKE 'alice%' would (storetest refuses it: mutant "subj-prefix"). The
// Issuer must not let such a store show or end one user's sessions on
// another's behalf.
type looseSubjectStore struct {
	*refresh.MemoryStore
	mu       sync.Mutex
	subjects []string
}

func (s *looseSubjectStore) Create(ctx context.Context, se *refresh.Session) error {
	s.mu.Lock()
	if !slices.Contains(s.subjects, se.Subject) {
		s.subjects = append(s.subjects, se.Subject)
	}
	s.mu.Unlock()
	return s.MemoryStore.Create(ctx, se)
}

func (s *looseSubjectStore) Sessions(ctx context.Context, subject string) ([]*refresh.Session, error) {
	s.mu.Lock()
	subjects := slices.Clone(s.subjects)
	s.mu.Unlock()
	var out []*refresh.Session
	for _, sub := range subjects {
		if strings.HasPrefix(sub, subject) {
			l, err := s.MemoryStore.Sessions(ctx, sub)
			if err != nil {
				return nil, err
			}
			out = append(out, l...)
		}
	}
	refresh.SortSessions(out)
	return out, nil
}

// RevokeSubject revokes by the same prefix match.
func (s *looseSubjectStore) RevokeSubject(ctx context.Context, subject string, at time.Time, reason string) (int, error) {
	list, err := s.Sessions(ctx, subject)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, se := range list {
		if !se.Revoked() && s.MemoryStore.Revoke(ctx, se.ID, at, reason) == nil {
			n++
		}
	}
	return n, nil
}

// TestLooseStoreCannotCrossSubjects, over HTTP: on a store that matches
// subjects by prefix, the attacker who signs up as "alice" lists only his
// own devices on a devices page, not those of "alice-smith" with her IP
// address and user agent, and his sign-ins past MaxSessions end only his
// own sessions.
func TestLooseStoreCannotCrossSubjects(t *testing.T) {
	st := &looseSubjectStore{MemoryStore: refresh.NewMemoryStore(refresh.WithSweepInterval(0))}
	e := newEnv(t, func(c *refresh.Config) { c.Store, c.MaxSessions = st, 1 })
	mux := http.NewServeMux()
	mux.Handle("GET /sessions", e.iss.Middleware()(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, _ := refresh.ClaimsFromContext(r.Context())
		list, err := e.iss.Sessions(r.Context(), c.Subject)
		if err != nil {
			http.Error(w, "unavailable", http.StatusServiceUnavailable)
			return
		}
		_ = json.NewEncoder(w).Encode(list)
	})))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	victim := e.issue(t, "alice-smith", refresh.WithMeta(map[string]string{"ip": "203.0.113.7", "ua": "victim-phone"}))
	e.issue(t, "alice") // the attacker, twice: MaxSessions 1 revokes his first
	attacker := e.issue(t, "alice")

	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/sessions", nil)
	req.Header.Set("Authorization", "Bearer "+attacker.AccessToken)
	r := do(t, nil, req)
	require.Equal(t, 200, r.status, r.raw)
	assert.NotContains(t, r.raw, "203.0.113.7", "the attacker's devices page shows the victim's IP address")
	assert.NotContains(t, r.raw, victim.SessionID)
	var list []refresh.SessionInfo
	require.NoError(t, json.Unmarshal([]byte(r.raw), &list))
	require.Len(t, list, 1)
	assert.Equal(t, attacker.SessionID, list[0].ID)

	s, err := st.Get(context.Background(), victim.SessionID)
	require.NoError(t, err)
	assert.False(t, s.Revoked(), "the attacker's sign-ins past MaxSessions ended the victim's session")
}

// contractBreakingStore answers Get and Sessions as no correct store does:
// "nil" gets neither a session nor an error, "other" gets another session
// (a cache keyed wrongly), "nil-entry" lists a nil among the sessions.
type contractBreakingStore struct {
	*refresh.MemoryStore
	mode  atomic.Value // string
	decoy string       // the session "other" answers with
}

func (s *contractBreakingStore) Get(ctx context.Context, id string) (*refresh.Session, error) {
	switch s.mode.Load() {
	case "nil":
		return nil, nil
	case "other":
		return s.MemoryStore.Get(ctx, s.decoy)
	}
	return s.MemoryStore.Get(ctx, id)
}

func (s *contractBreakingStore) Sessions(ctx context.Context, subject string) ([]*refresh.Session, error) {
	l, err := s.MemoryStore.Sessions(ctx, subject)
	if s.mode.Load() == "nil-entry" {
		l = append([]*refresh.Session{nil}, l...)
	}
	return l, err
}

// TestStoreBreakingContract, over HTTP: a store answering Get with neither
// a session nor an error made every refresh, session check, introspection
// and revocation of it panic (a dropped connection, not an answer); one
// answering with another session's record let the middleware judge a
// revoked session by a live one's, so a signed-out user's access token
// still worked. Both are now system faults: 503, nothing decided.
func TestStoreBreakingContract(t *testing.T) {
	st := &contractBreakingStore{MemoryStore: refresh.NewMemoryStore(refresh.WithSweepInterval(0))}
	st.mode.Store("")
	var faults atomic.Int32
	e := newEnv(t, func(c *refresh.Config) {
		c.Store, c.CheckSession = st, true
	})
	// The endpoints run on another instance, which has seen none of the
	// sessions: it reads each from the store.
	other, err := refresh.NewIssuer(e.cfg)
	require.NoError(t, err)
	h := refresh.NewHandlers(other, refresh.HandlerConfig{
		ClientAuth: func(context.Context, refresh.ClientCredentials) error { return nil },
		OnError: func(_ *http.Request, err error) {
			if strings.Contains(err.Error(), "broke its contract") {
				faults.Add(1)
			}
		}})
	mux := http.NewServeMux()
	mux.Handle("/token", h.RefreshHandler())
	mux.Handle("/revoke", h.RevocationHandler())
	mux.Handle("/introspect", h.IntrospectionHandler())
	mux.Handle("/me", other.Middleware()(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	st.decoy = e.issue(t, "carol").SessionID
	bob := e.issue(t, "bob")
	alice := e.issue(t, "alice")
	me := func(tok string) int { return do(t, nil, mustRequest(t, srv.URL+"/me", tok)).status }
	require.Equal(t, 200, me(alice.AccessToken))
	require.NoError(t, other.RevokeSession(context.Background(), alice.SessionID)) // alice signs out
	require.Equal(t, 401, me(alice.AccessToken))

	for _, mode := range []string{"nil", "other"} {
		st.mode.Store(mode)
		e.clock.Advance(refresh.DefaultSessionCheckTTL + time.Second) // past the session checks' cache
		before := faults.Load()
		assert.Equal(t, 503, me(alice.AccessToken), "%s: a signed-out session's access token", mode)
		assert.Equal(t, 503, me(bob.AccessToken), "%s: a live session's access token", mode)
		r := postForm(t, nil, srv.URL+"/token", refreshForm(bob.RefreshToken), nil)
		assert.Equal(t, 503, r.status, "%s: refresh: %s", mode, r.raw)
		assert.Equal(t, "temporarily_unavailable", r.body["error"], mode)
		r = postForm(t, nil, srv.URL+"/revoke", url.Values{"token": {bob.RefreshToken}}, nil)
		assert.Equal(t, 503, r.status, "%s: revocation: %s", mode, r.raw)
		r = postForm(t, nil, srv.URL+"/introspect", url.Values{"token": {bob.AccessToken}, "client_id": {"rs"}, "client_secret": {"s"}}, nil)
		assert.Equal(t, 503, r.status, "%s: introspection: %s", mode, r.raw)
		assert.Error(t, other.RevokeSessionOf(context.Background(), "bob", bob.SessionID), mode)
		assert.Greater(t, faults.Load(), before, "%s: OnError names the broken contract", mode)
	}
	st.mode.Store("nil-entry")
	list, err := other.Sessions(context.Background(), "bob")
	require.NoError(t, err)
	require.Len(t, list, 1)
	assert.Equal(t, bob.SessionID, list[0].ID)
	st.mode.Store("")
	s, err := st.Get(context.Background(), bob.SessionID)
	require.NoError(t, err)
	assert.False(t, s.Revoked(), "nothing was decided while the store misbehaved")
	assert.Equal(t, uint64(0), s.Generation)
}

// TestSubjectNoSessionCanHave, over HTTP: an operator's "sign this user
// out everywhere" form sent with an empty user name (or an application
// passing the subject of claims it never verified) asked the store to
// revoke the sessions of "": a store matching subjects by prefix ended
// every session of every user, and Postgres answers NUL in a text
// parameter with an error (503). RevokeSubject and Sessions now refuse a
// subject that Issue refuses, ErrInvalidRequest, without asking the store.
func TestSubjectNoSessionCanHave(t *testing.T) {
	st := &looseSubjectStore{MemoryStore: refresh.NewMemoryStore(refresh.WithSweepInterval(0))}
	counted := &subjectCallStore{Store: st}
	e := newEnv(t, func(c *refresh.Config) { c.Store = counted })
	mux := http.NewServeMux()
	mux.HandleFunc("POST /admin/sign-out-user", func(w http.ResponseWriter, r *http.Request) {
		n, err := e.iss.RevokeSubject(r.Context(), r.FormValue("user"))
		switch {
		case refresh.IsClientError(err):
			http.Error(w, "no such user", http.StatusBadRequest)
		case err != nil:
			http.Error(w, "unavailable", http.StatusServiceUnavailable)
		default:
			_ = json.NewEncoder(w).Encode(map[string]int{"revoked": n})
		}
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	var users []*refresh.Pair
	for _, sub := range []string{"alice", "bob", "carol"} {
		users = append(users, e.issue(t, sub))
	}
	for _, user := range []string{"", "a\x00", "\xff", strings.Repeat("u", 1025)} {
		r := postForm(t, nil, srv.URL+"/admin/sign-out-user", url.Values{"user": {user}}, nil)
		assert.Equal(t, 400, r.status, "user %q: %s", user, r.raw)
		_, err := e.iss.Sessions(context.Background(), user)
		assert.ErrorIs(t, err, refresh.ErrInvalidRequest, "Sessions(%q)", user)
	}
	assert.Zero(t, counted.calls.Load(), "a subject no session can have reached the store")
	for _, p := range users {
		s, err := st.Get(context.Background(), p.SessionID)
		require.NoError(t, err)
		assert.False(t, s.Revoked(), "%s was signed out by a request naming nobody", p.Subject)
	}

	// A subject sessions can have is asked for as before.
	r := postForm(t, nil, srv.URL+"/admin/sign-out-user", url.Values{"user": {"bob"}}, nil)
	require.Equal(t, 200, r.status, r.raw)
	assert.EqualValues(t, 1, r.body["revoked"])
	assert.EqualValues(t, 1, counted.calls.Load())
}

// subjectCallStore counts the calls that name a subject.
type subjectCallStore struct {
	refresh.Store
	calls atomic.Int32
}

func (s *subjectCallStore) Sessions(ctx context.Context, subject string) ([]*refresh.Session, error) {
	s.calls.Add(1)
	return s.Store.Sessions(ctx, subject)
}

func (s *subjectCallStore) RevokeSubject(ctx context.Context, subject string, at time.Time, reason string) (int, error) {
	s.calls.Add(1)
	return s.Store.RevokeSubject(ctx, subject, at, reason)
}
