package refresh

import (
	"net/http"
	"testing"
	"time"
)

// A caller waits for a JWKS fetch 3 seconds, or the client's timeout when
// that is shorter; no timeout (0) is not a wait of 0.
func TestFetchWait(t *testing.T) {
	for timeout, want := range map[time.Duration]time.Duration{
		0:                               3 * time.Second,
		time.Second:                     time.Second,
		3*time.Second - time.Nanosecond: 3*time.Second - time.Nanosecond,
		3 * time.Second:                 3 * time.Second,
		3*time.Second + time.Nanosecond: 3 * time.Second,
		time.Hour:                       3 * time.Second,
	} {
		if got := fetchWait(&http.Client{Timeout: timeout}); got != want {
			t.Errorf("fetchWait with Timeout %v = %v, want %v", timeout, got, want)
		}
	}
}
