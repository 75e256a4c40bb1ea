package refresh_test

import (
	"testing"

	"github.com/refreshkit/refresh"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// What a store that lost writes does (a Redis restart with RDB snapshots or
// AOF everysec, a database restored from a backup), end to end, as
// SECURITY.md and redisstore/README.md describe it:
//   - the client's newest refresh token is ahead of the restored session:
//     refused (invalid_grant), nothing revoked: the user logs in again;
//   - a token spent before the loss but current in the restored state
//     rotates again: a thief holding it is back in;
//   - a revocation lost with the writes is undone;
//   - the runbook (drop the refresh MAC key in use) refuses them all.
func TestRestoreFromBackup(t *testing.T) {
	e := newEnv(t)
	p0 := e.issue(t, "alice")
	snapshot, err := e.store.Get(bg, p0.SessionID) // the backup
	require.NoError(t, err)
	revokedLater := e.issue(t, "alice")
	revokedSnapshot, err := e.store.Get(bg, revokedLater.SessionID)
	require.NoError(t, err)

	p1, err := e.iss.Rotate(bg, p0.RefreshToken)
	require.NoError(t, err)
	p2, err := e.iss.Rotate(bg, p1.RefreshToken)
	require.NoError(t, err)
	require.NoError(t, e.iss.RevokeSession(bg, revokedLater.SessionID))

	// The store comes back from the backup.
	restored := refresh.NewMemoryStore(refresh.WithStoreClock(e.clock.Now))
	t.Cleanup(func() { _ = restored.Close() })
	require.NoError(t, restored.Create(bg, snapshot))
	require.NoError(t, restored.Create(bg, revokedSnapshot))
	cfg := e.cfg
	cfg.Store = restored
	iss, err := refresh.NewIssuer(cfg)
	require.NoError(t, err)

	_, err = iss.Rotate(bg, p2.RefreshToken)
	require.ErrorIs(t, err, refresh.ErrInvalidToken, "the newest token is ahead of the restored session")
	s, err := restored.Get(bg, p0.SessionID)
	require.NoError(t, err)
	assert.False(t, s.Revoked(), "refusing it revoked nothing")
	resurrected, err := iss.Rotate(bg, p0.RefreshToken)
	require.NoError(t, err, "a token spent before the loss is current again in the restored state")
	_, err = iss.Rotate(bg, revokedLater.RefreshToken)
	require.NoError(t, err, "a revocation lost with the writes is undone")

	// The runbook: a new refresh MAC key, the old one removed.
	cfg.RefreshKeys = []refresh.RefreshKey{{ID: 2, Secret: []byte("a-new-refresh-mac-key-32-bytes!!")}}
	after, err := refresh.NewIssuer(cfg)
	require.NoError(t, err)
	for _, tok := range []string{resurrected.RefreshToken, p1.RefreshToken, p2.RefreshToken} {
		_, err = after.Rotate(bg, tok)
		require.ErrorIs(t, err, refresh.ErrInvalidToken, "after the runbook every earlier refresh token is refused")
	}
}
