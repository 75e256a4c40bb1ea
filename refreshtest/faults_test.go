package refreshtest_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/refreshkit/refresh"
	"github.com/refreshkit/refresh/refreshtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var errDown = errors.New("dial tcp 10.0.0.7:5432: connection refused")

// An outage as a service's tests see it: the refresh endpoint and the
// middleware answer 503, nothing changes, and all is well once it ends.
func TestFailStore(t *testing.T) {
	t.Parallel()
	rt := refreshtest.New(t)
	h := refresh.NewHandlers(rt.Issuer, refresh.HandlerConfig{}).RefreshHandler()
	p := rt.Login("alice")

	rt.FailStore(errDown)
	w := httptest.NewRecorder()
	r := httptest.NewRequest(http.MethodPost, "/token", strings.NewReader(url.Values{
		"grant_type": {"refresh_token"}, "refresh_token": {p.RefreshToken}}.Encode()))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	h.ServeHTTP(w, r)
	assert.Equal(t, 503, w.Code)
	_, err := rt.Issue(context.Background(), "bob")
	require.ErrorIs(t, err, errDown)
	assert.Zero(t, rt.Session(p.SessionID).Generation, "Session reads past the fault; nothing changed")

	rt.FailStore(nil)
	rt.Refresh(p.RefreshToken)
}

// Only the named calls fail: here Revoke, so a reuse is detected but
// cannot be acted on (503, not invalid_grant).
func TestFailStoreOneMethod(t *testing.T) {
	t.Parallel()
	rt := refreshtest.New(t)
	p0 := rt.Login("alice")
	rt.Refresh(rt.Refresh(p0.RefreshToken).RefreshToken)
	rt.FailStore(errDown, "Revoke")
	_, err := rt.Rotate(context.Background(), p0.RefreshToken)
	require.ErrorIs(t, err, errDown)
	assert.False(t, refresh.IsClientError(err))
	rt.Login("bob") // Create still works
	rt.FailStore(nil)
	_, err = rt.Rotate(context.Background(), p0.RefreshToken)
	require.ErrorIs(t, err, refresh.ErrReused)
}

// Every method by which an Issuer can reach a MemoryStore is one FailStore
// can make fail: a capability added to the store without a fault here
// would keep working through an outage in every test that simulates one.
func TestFailStoreCoversEveryStoreCall(t *testing.T) {
	ctxType := reflect.TypeOf((*context.Context)(nil)).Elem()
	ms := reflect.TypeOf(&refresh.MemoryStore{})
	for i := 0; i < ms.NumMethod(); i++ {
		m := ms.Method(i)
		if m.Type.NumIn() > 1 && m.Type.In(1) == ctxType {
			assert.True(t, slices.Contains(refreshtest.StoreMethods(), m.Name), "MemoryStore.%s is not in StoreMethods", m.Name)
		}
	}
	rt := refreshtest.New(t)
	ctx := context.Background()
	now := rt.Clock.Now()
	seen := map[string]bool{} // each name twice: FailStore, then LoseStoreReplies
	for _, name := range append(refreshtest.StoreMethods(), refreshtest.StoreMethods()...) {
		fail := rt.FailStore
		if _, second := seen[name]; second {
			fail = rt.LoseStoreReplies
		}
		seen[name] = true
		fail(errDown, name)
		st := rt.Config.Store
		var err error
		switch name {
		case "Create":
			err = st.Create(ctx, &refresh.Session{ID: "x"})
		case "Get":
			_, err = st.Get(ctx, "x")
		case "Advance":
			err = st.Advance(ctx, "x", 0, now)
		case "AdvanceActive":
			err = st.(refresh.ActiveAdvancer).AdvanceActive(ctx, "x", 0, now, now)
		case "UseGrace":
			err = st.UseGrace(ctx, "x", 0, 1)
		case "Revoke":
			err = st.Revoke(ctx, "x", now, "")
		case "RevokeSubject":
			_, err = st.RevokeSubject(ctx, "x", now, "")
		case "Sessions":
			_, err = st.Sessions(ctx, "x")
		case "DeleteExpired":
			_, err = st.DeleteExpired(ctx, now, 1)
		case "DeleteStale":
			_, err = st.(refresh.StaleDeleter).DeleteStale(ctx, now, now, now, 1)
		case "RecordProof":
			err = st.(refresh.ProofRecorder).RecordProof(ctx, "x", now, now)
		case "DeleteExpiredProofs":
			_, err = st.(refresh.ProofRecorder).DeleteExpiredProofs(ctx, now, 1)
		default:
			t.Fatalf("no call for %s", name)
		}
		assert.ErrorIs(t, err, errDown, name)
	}
}

func TestFailStoreRefusesUnknownNames(t *testing.T) {
	rec := &recorder{TB: t}
	rt := refreshtest.New(rec)
	func() {
		defer func() { _ = recover() }()
		rt.FailStore(errDown, "Gett")
	}()
	assert.Contains(t, rec.failed, "no store method")

	rec = &recorder{TB: t}
	own := refresh.NewMemoryStore(refresh.WithSweepInterval(0))
	t.Cleanup(func() { _ = own.Close() })
	rt = refreshtest.New(rec, refreshtest.WithConfig(func(c *refresh.Config) { c.Store = own }))
	func() {
		defer func() { _ = recover() }()
		rt.FailStore(errDown)
	}()
	assert.Contains(t, rec.failed, "replaced the Store")
}

// LoseStoreReplies: the call takes effect and then fails, as a commit whose
// reply was lost; a rotation caught so is still answered as the success it
// was, since the Issuer looks.
func TestLoseStoreReplies(t *testing.T) {
	rt := refreshtest.New(t)
	ctx := context.Background()
	p := rt.Login("alice")
	rt.LoseStoreReplies(errDown, "Revoke")
	require.ErrorIs(t, rt.RevokeSession(ctx, p.SessionID), errDown)
	assert.True(t, rt.Session(p.SessionID).Revoked(), "the revocation took effect")

	q := rt.Login("bob")
	rt.LoseStoreReplies(errDown, "AdvanceActive")
	next, err := rt.Rotate(ctx, q.RefreshToken)
	require.NoError(t, err, "the swap took effect; the Issuer saw it")
	assert.Equal(t, uint64(1), rt.Session(q.SessionID).Generation)
	rt.LoseStoreReplies(nil)
	_, err = rt.Rotate(ctx, next.RefreshToken)
	require.NoError(t, err)
}
