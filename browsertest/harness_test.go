package browsertest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// chromium finds the browser: $CHROMIUM, else Debian's chromium. Without
// one the test is skipped with a message, or fails under CI=true.
func chromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	msg := "no Chromium: run scripts/test.sh as root (it installs Debian's chromium), install it, or set CHROMIUM=/path/to/chrome"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + " (CI=true: a missing browser is a failure)")
	}
	t.Skip("SKIPPING the browser tests: " + msg)
	return ""
}

// syncBuffer collects a process's output for the test to read while it
// runs.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// demo is refresh-demo running as a process, built from this tree.
type demo struct {
	base string
	out  *syncBuffer
}

var urlLine = regexp.MustCompile(`refresh-demo (?:resource server )?on (http://127\.0\.0\.1:\d+)`)

// demoBuild is the demo binary, built once per test run into binDir.
var (
	binDir    string // removed by TestMain
	demoBuild struct {
		once sync.Once
		path string
		err  error
	}
)

// demoBinary builds the demo from ../cmd/refresh-demo (in the repository's
// workspace, whatever GOWORK this test runs with) the first time it is
// asked for.
func demoBinary(t *testing.T) string {
	t.Helper()
	demoBuild.once.Do(func() {
		bin := filepath.Join(binDir, "refresh-demo")
		build := exec.Command("go", append(append([]string{"build"}, raceFlag...), "-o", bin, ".")...)
		build.Dir = filepath.Join("..", "cmd", "refresh-demo")
		for _, kv := range os.Environ() {
			if !strings.HasPrefix(kv, "GOWORK=") {
				build.Env = append(build.Env, kv)
			}
		}
		if out, err := build.CombinedOutput(); err != nil {
			demoBuild.err = fmt.Errorf("go build the demo: %v\n%s", err, out)
			return
		}
		demoBuild.path = bin
	})
	if demoBuild.err != nil {
		t.Fatal(demoBuild.err)
	}
	return demoBuild.path
}

// startDemo runs the demo with args (on a free port, memory store) until
// the test ends.
func startDemo(t *testing.T, args ...string) *demo {
	t.Helper()
	bin := demoBinary(t)
	d := &demo{out: &syncBuffer{}}
	cmd := exec.Command(bin, append([]string{"-addr", "127.0.0.1:0", "-store", "memory"}, args...)...)
	// Built with -race (raceFlag), it would pause a second at exit
	// (GORACE atexit_sleep_ms, 1000 by default) at every test's end; a race
	// it reported is still seen, by its report and its exit status (66).
	cmd.Env = append(os.Environ(), "GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	cmd.Stdout, cmd.Stderr = d.out, d.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if strings.Contains(d.out.String(), "WARNING: DATA RACE") || cmd.ProcessState.ExitCode() == 66 {
			t.Errorf("the demo (built with -race) reported a data race (exit status %d)", cmd.ProcessState.ExitCode())
		}
		if t.Failed() {
			t.Logf("demo output:\n%s", d.out.String())
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		if m := urlLine.FindStringSubmatch(d.out.String()); m != nil {
			d.base = m[1]
			return d
		}
		select {
		case err := <-done:
			t.Fatalf("the demo exited: %v\n%s", err, d.out.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("the demo printed no URL:\n%s", d.out.String())
		}
	}
}

// events counts the demo's session events of a kind ("rotated", "grace",
// "reused", …) for a session id ("" for all sessions).
func (d *demo) events(kind, sid string) int {
	n := 0
	for _, line := range strings.Split(d.out.String(), "\n") {
		if strings.Contains(line, "event.kind="+kind+" ") && (sid == "" || strings.Contains(line, "event.sid="+sid+" ")) {
			n++
		}
	}
	return n
}

// requests counts the requests the demo logged (-log-requests) with the
// method and path, and the status (0: any), whose line also holds each of
// also (" origin=URL ", say).
func (d *demo) requests(method, path string, status int, also ...string) int {
	n := 0
lines:
	for _, line := range strings.Split(d.out.String(), "\n") {
		if !strings.Contains(line, " msg=request method="+method+" path="+path+" ") ||
			status != 0 && !strings.Contains(line, fmt.Sprintf(" status=%d ", status)) {
			continue
		}
		for _, a := range also {
			if !strings.Contains(line, a) {
				continue lines
			}
		}
		n++
	}
	return n
}

// browser starts one headless Chromium for the test, with extra flags if
// any, and returns its root context; tabs are chromedp.NewContext of it.
func browser(t *testing.T, extra ...chromedp.ExecAllocatorOption) context.Context {
	t.Helper()
	path := chromium(t)
	profile := t.TempDir()
	var logs syncBuffer
	opts := append(append(chromedp.DefaultExecAllocatorOptions[:], extra...),
		chromedp.ExecPath(path),
		chromedp.UserDataDir(profile),
		chromedp.NoSandbox, // root in CI; the pages are our own
		chromedp.DisableGPU,
		// This machine's network is closed: keep Chromium from calling out.
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.WindowSize(1100, 900),
		chromedp.CombinedOutput(&logs),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	// Start the browser now, on a blank tab that stays open, so that tabs
	// made later share it.
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		cancel()
		cancelAlloc()
		t.Fatalf("start %s: %v\n%s", path, err, logs.String())
	}
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	return ctx
}

// tab opens a new tab in the browser context of parent (the browser's
// default one for the root context). Its steps may take until the
// watchdog: a tab lives through a whole test (TestBrowserApp's first one
// through ten steps, 104 s of a run with every module compiling beside
// it, where a minute's budget failed its last three steps); a stuck step
// fails by pollValue's 15 s, or by the watchdog with every stack.
func tab(t *testing.T, parent context.Context, opts ...chromedp.ContextOption) context.Context {
	t.Helper()
	ctx, cancel := chromedp.NewContext(parent, opts...)
	t.Cleanup(cancel)
	ctx, cancelT := context.WithTimeout(ctx, watchdog)
	t.Cleanup(cancelT)
	return ctx
}

// do runs browser steps, failing the test on error.
func do(t *testing.T, ctx context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// eval evaluates JavaScript in a tab (awaiting a promise it returns).
func eval[T any](t *testing.T, ctx context.Context, js string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("evaluate %q: %v", js, err)
	}
	return v
}

// waitView waits until the app shows view ("login" or "app"), for up to 15 s.
func waitView(t *testing.T, ctx context.Context, view string) {
	t.Helper()
	js := fmt.Sprintf(`document.body && document.body.dataset.view === %q`, view)
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](js, chromedp.WithPollingTimeout(15*time.Second), chromedp.WithPollingInterval(20*time.Millisecond))); err != nil {
		got, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? (document.body.dataset.view || "") + " " + document.body.innerText.slice(0, 300) : ""`))
		t.Fatalf("waiting for the %s view: %v; page shows: %s", view, err, got)
	}
}
