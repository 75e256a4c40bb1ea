package browsertest

import (
	"fmt"
	"os"
	"runtime"
	"testing"
	"time"
)

// watchdog bounds the whole run: a browser that stops answering must fail
// the test in minutes, with every goroutine's stack, not hang CI. A run
// with empty build caches, every other module compiling beside it, took
// 153 s; 5 minutes leave room and stay well inside CI's 15.
const watchdog = 5 * time.Minute

func TestMain(m *testing.M) {
	t := time.AfterFunc(watchdog, func() {
		buf := make([]byte, 1<<20)
		n := runtime.Stack(buf, true)
		fmt.Fprintf(os.Stderr, "browsertest: still running after %v; goroutines:\n%s\n", watchdog, buf[:n])
		os.Exit(2)
	})
	var err error
	if binDir, err = os.MkdirTemp("", "browsertest-bin-"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	t.Stop()
	_ = os.RemoveAll(binDir)
	os.Exit(code)
}
