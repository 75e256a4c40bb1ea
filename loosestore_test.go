package refresh_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

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
