package storetest

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/refreshkit/refresh"
)

// Restart checks a server-backed store across a server restart: stop and
// start stop and restart the server. While it is down, Rotate fails with an
// error that is not the client's fault and names the adapter (errPrefix,
// such as "pgstore"); once it is back, the same refresh token rotates, so
// that no generation was lost or applied twice. The store must keep its data
// across the restart.
func Restart(t *testing.T, st refresh.Store, errPrefix string, stop, start func(t *testing.T)) {
	t.Helper()
	iss := NewIssuer(t, st, 0)
	ctx := context.Background()
	p, err := iss.Issue(ctx, subject(t))
	if err != nil {
		t.Fatal(err)
	}
	if p, err = iss.Rotate(ctx, p.RefreshToken); err != nil {
		t.Fatal(err)
	}
	stop(t)
	restarted := false
	defer func() {
		if !restarted {
			start(t)
		}
	}()
	for i := 0; i < 3; i++ {
		c, cancel := context.WithTimeout(ctx, 3*time.Second)
		_, err = iss.Rotate(c, p.RefreshToken)
		cancel()
		if err == nil {
			t.Fatal("Rotate succeeded with the server stopped")
		}
		if refresh.IsClientError(err) {
			t.Fatalf("a server outage was reported as the client's fault: %v", err)
		}
		if !strings.Contains(err.Error(), errPrefix) {
			t.Fatalf("error does not say where it came from (%s): %v", errPrefix, err)
		}
		t.Logf("with the server stopped: %v", err)
	}
	start(t)
	restarted = true

	var next *refresh.Pair
	deadline := time.Now().Add(30 * time.Second)
	for {
		next, err = iss.Rotate(ctx, p.RefreshToken)
		if err == nil || refresh.IsClientError(err) || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("after restart: %v", err)
	}
	s := mustGet(t, st, next.SessionID)
	if s.Generation != 2 || s.Revoked() {
		t.Fatalf("after restart: generation %d revoked %v, want 2 and live", s.Generation, s.Revoked())
	}
}

// RestartWithCommands runs Restart with shell commands that stop and start
// the server, such as the PG_STOP_CMD/PG_START_CMD and
// REDIS_STOP_CMD/REDIS_START_CMD that scripts/test.sh exports for the
// servers it starts. It skips the test when either command is empty.
func RestartWithCommands(t *testing.T, st refresh.Store, errPrefix, stopCmd, startCmd string) {
	t.Helper()
	if stopCmd == "" || startCmd == "" {
		t.Skip("no commands to stop and start the server (scripts/test.sh sets them for the servers it starts)")
	}
	run := func(cmd string) func(t *testing.T) {
		return func(t *testing.T) {
			t.Helper()
			if out, err := exec.Command("bash", "-c", cmd).CombinedOutput(); err != nil {
				t.Fatalf("%s: %v\n%s", cmd, err, out)
			}
		}
	}
	Restart(t, st, errPrefix, run(stopCmd), run(startCmd))
}
