package browsertest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// nodeJS finds node and npm (Node.js 20 or later, which jose 6 needs).
// Without them the test is skipped with a message, or fails under CI=true.
func nodeJS(t *testing.T) (node, npm string) {
	t.Helper()
	fail := func(msg string) {
		msg += ": run scripts/test.sh (as root it installs Debian's nodejs and npm; it fetches Node.js 24 from the npm registry when the one it finds is older than 20) or install Node.js 20+"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg + " (CI=true: a missing Node.js is a failure)")
		}
		t.Skip("SKIPPING the JavaScript client tests: " + msg)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		fail("no node")
	}
	if npm, err = exec.LookPath("npm"); err != nil {
		fail("no npm")
	}
	out, err := exec.Command(node, "--version").Output()
	m := regexp.MustCompile(`^v(\d+)\.`).FindSubmatch(out)
	if err != nil || m == nil {
		fail("node --version failed")
	}
	if major, _ := strconv.Atoi(string(m[1])); major < 20 {
		fail("Node.js " + strings.TrimSpace(string(out)) + " is too old")
	}
	return node, npm
}

// TestJavaScriptClients runs js/clients.test.mjs: panva's oauth4webapi
// (discovery, refresh grant, revocation, DPoP-protected API calls, DPoP
// nonces against a second demo run with -dpop-nonce, and against a demo
// resource server of it with nonces of its own) and jose (RFC 9068
// verification against the JWKS) against the demo over real HTTP. The
// packages are pinned by js/package-lock.json and installed with `npm ci`
// into a temporary directory. The demo's event log is then checked against
// what the clients saw: the refusals that must change nothing changed
// nothing.
func TestJavaScriptClients(t *testing.T) {
	node, npm := nodeJS(t)
	dir := t.TempDir()
	for _, f := range []string{"package.json", "package-lock.json", "clients.test.mjs"} {
		b, err := os.ReadFile(filepath.Join("js", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	install := exec.CommandContext(ctx, npm, "ci", "--prefer-offline", "--no-audit", "--no-fund", "--ignore-scripts")
	install.Dir = dir
	if out, err := install.CombinedOutput(); err != nil {
		t.Fatalf("npm ci (needs the npm registry): %v\n%s", err, out)
	}

	d := startDemo(t, "-recent-auth", "1s") // the step-up test waits a second, not 15 minutes
	dn := startDemo(t, "-dpop-nonce", "2m")
	rs := startDemo(t, "-resource-server", "-auth", dn.base, "-dpop-nonce", "2m")
	ctx, cancel = context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	run := exec.CommandContext(ctx, node, "--test", "--test-reporter=spec", "clients.test.mjs")
	run.Dir = dir
	run.Env = append(os.Environ(), "DEMO="+d.base, "DEMO_NONCE="+dn.base, "DEMO_RS="+rs.base, "NO_COLOR=1")
	out, err := run.CombinedOutput()
	t.Logf("node --test clients.test.mjs:\n%s", out)
	if err != nil {
		t.Fatalf("the JavaScript clients failed: %v", err)
	}

	// Six sign-ins (two of them openid-client's); rotations: two (bearer,
	// step-up), two (DPoP) and openid-client's one. Two reuses (oauth4webapi's
	// and openid-client's), each revoking its session; three revocations
	// that carried what they needed. The refusals (spent tokens after a
	// reuse, the thief's refreshes, the proof-less revocation) rotated and
	// revoked nothing. (openid-client's DPoP part runs on the -dpop-nonce demo.)
	for kind, want := range map[string]int{"issued": 6, "rotated": 5, "reused": 2, "revoked": 3, "grace": 0} {
		if got := d.events(kind, ""); got != want {
			t.Errorf("demo logged %d %q events, want %d", got, kind, want)
		}
	}
}
