// Command loadgen measures refresh grants per second and latency against a
// running refresh-demo over loopback HTTP. Each client logs in once, then
// rotates its own refresh token through POST /token as fast as it can until
// the duration is over. It refuses any address that is not loopback, and
// stops by itself.
//
//	go run ./cmd/refresh-demo -addr 127.0.0.1:18080 &
//	cd bench && GOWORK=off go run ./loadgen -url http://127.0.0.1:18080 -clients 8 -duration 10s
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

func main() {
	base := flag.String("url", "http://127.0.0.1:8080", "demo base URL (loopback only)")
	clients := flag.Int("clients", 8, "concurrent clients")
	duration := flag.Duration("duration", 10*time.Second, "how long to run (at most 2m)")
	flag.Parse()
	u, err := url.Parse(*base)
	if err != nil {
		fail(err)
	}
	if ip := net.ParseIP(u.Hostname()); u.Hostname() != "localhost" && (ip == nil || !ip.IsLoopback()) {
		fail(fmt.Errorf("refusing %s: loopback addresses only", u.Host))
	}
	if *duration > 2*time.Minute {
		*duration = 2 * time.Minute
	}
	tr := &http.Transport{MaxIdleConnsPerHost: *clients}
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}

	post := func(path string, form url.Values) (map[string]any, int, error) {
		resp, err := client.PostForm(*base+path, form)
		if err != nil {
			return nil, 0, err
		}
		defer resp.Body.Close()
		var m map[string]any
		err = json.NewDecoder(resp.Body).Decode(&m)
		return m, resp.StatusCode, err
	}

	var mu sync.Mutex
	var lat []time.Duration
	errors := 0
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(*duration)
	for c := 0; c < *clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m, status, err := post("/login", url.Values{"username": {"alice"}, "password": {"wonderland"}})
			if err != nil || status != 200 {
				fail(fmt.Errorf("login: %v %d", err, status))
			}
			tok := m["refresh_token"].(string)
			var mine []time.Duration
			bad := 0
			for time.Now().Before(deadline) {
				t0 := time.Now()
				m, status, err := post("/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok}})
				if err != nil || status != 200 {
					bad++
					break
				}
				mine = append(mine, time.Since(t0))
				tok = m["refresh_token"].(string)
			}
			mu.Lock()
			lat = append(lat, mine...)
			errors += bad
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	slices.Sort(lat)
	pct := func(p float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[min(len(lat)-1, int(float64(len(lat))*p))]
	}
	fmt.Printf("clients %d, %v: %d refresh grants, %.0f grants/s, p50 %v, p90 %v, p99 %v, max %v, errors %d\n",
		*clients, elapsed.Round(time.Millisecond), len(lat), float64(len(lat))/elapsed.Seconds(),
		pct(0.50).Round(time.Microsecond), pct(0.90).Round(time.Microsecond), pct(0.99).Round(time.Microsecond),
		pct(1).Round(time.Microsecond), errors)
	if errors > 0 {
		os.Exit(1)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "loadgen:", strings.TrimSpace(err.Error()))
	os.Exit(1)
}
