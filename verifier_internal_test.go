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

// Every HTTP exchange of a Verifier is bounded: an application's client
// without a Timeout (Go's zero client waits for ever) is given 10 seconds,
// for introspection and JWKS fetches alike, and one with a Timeout keeps
// it; the application's own client is not changed.
func TestFetchClientTimeout(t *testing.T) {
	key := []Key{{ID: "k", Algorithm: HS256, Key: []byte("0123456789abcdef0123456789abcdef")}}
	intro := &IntrospectionConfig{URL: "https://auth.example.com/introspect", ClientID: "c", ClientSecret: "s"}
	for given, want := range map[time.Duration]time.Duration{
		-time.Second: 10 * time.Second,
		0:            10 * time.Second,
		time.Second:  time.Second,
		time.Minute:  time.Minute,
	} {
		app := &http.Client{Timeout: given}
		v, err := NewVerifier(VerifierConfig{Issuer: "i", Audience: "a", Keys: key, Introspection: intro, HTTPClient: app})
		if err != nil {
			t.Fatal(err)
		}
		if got := v.intro.client.Timeout; got != want {
			t.Errorf("introspection client Timeout with the application's %v = %v, want %v", given, got, want)
		}
		if got := v.cfg.HTTPClient.Timeout; got != want {
			t.Errorf("JWKS client Timeout with the application's %v = %v, want %v", given, got, want)
		}
		if app.Timeout != given {
			t.Errorf("the application's client was changed: Timeout %v", app.Timeout)
		}
		v.Close()
	}
	v, err := NewVerifier(VerifierConfig{Issuer: "i", Audience: "a", Keys: key, Introspection: intro})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if got := v.intro.client.Timeout; got != 10*time.Second {
		t.Errorf("default client Timeout = %v, want 10s", got)
	}
}
