package refresh_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/refreshkit/refresh"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestMetadataHandler: RFC 8414 metadata says what the Handlers really do,
// so that a discovering client neither misses an endpoint nor tries a
// client authentication method the server refuses.
func TestMetadataHandler(t *testing.T) {
	e := newEnv(t)
	const base = "https://auth.example.com"
	serve := func(cfg refresh.HandlerConfig, ep refresh.Endpoints) map[string]any {
		t.Helper()
		h, err := refresh.NewHandlers(e.iss, cfg).MetadataHandler(ep)
		require.NoError(t, err)
		srv := httptest.NewServer(h)
		t.Cleanup(srv.Close)
		resp, err := http.Get(srv.URL)
		require.NoError(t, err)
		defer resp.Body.Close()
		require.Equal(t, 200, resp.StatusCode)
		assert.Equal(t, "application/json", resp.Header.Get("Content-Type"))
		assert.Equal(t, "public, max-age=300", resp.Header.Get("Cache-Control"))
		var doc map[string]any
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&doc))

		head, err := http.Head(srv.URL)
		require.NoError(t, err)
		body, _ := io.ReadAll(head.Body)
		head.Body.Close()
		assert.Equal(t, 200, head.StatusCode)
		assert.Empty(t, body)
		post, err := http.Post(srv.URL, "application/json", nil)
		require.NoError(t, err)
		post.Body.Close()
		assert.Equal(t, 405, post.StatusCode)
		assert.Equal(t, "GET, HEAD", post.Header.Get("Allow"))
		return doc
	}
	list := func(v ...string) []any {
		out := []any{}
		for _, s := range v {
			out = append(out, s)
		}
		return out
	}

	public := serve(refresh.HandlerConfig{}, refresh.Endpoints{
		TokenEndpoint: base + "/token", RevocationEndpoint: base + "/revoke", JWKSURI: base + "/jwks",
	})
	assert.Equal(t, map[string]any{
		"issuer":                                     base,
		"token_endpoint":                             base + "/token",
		"revocation_endpoint":                        base + "/revoke",
		"jwks_uri":                                   base + "/jwks",
		"response_types_supported":                   list(),
		"grant_types_supported":                      list("refresh_token"),
		"token_endpoint_auth_methods_supported":      list("none"),
		"revocation_endpoint_auth_methods_supported": list("none"),
		"dpop_signing_alg_values_supported":          list("ES256", "EdDSA", "RS256", "PS256"),
	}, public, "without ClientAuth no secret is accepted, so none is advertised")

	confidential := serve(refresh.HandlerConfig{ClientAuth: func(context.Context, refresh.ClientCredentials) error { return nil }},
		refresh.Endpoints{TokenEndpoint: "/token", IntrospectionEndpoint: "/introspect"})
	assert.Equal(t, base+"/token", confidential["token_endpoint"], "a path is resolved against the issuer")
	assert.Equal(t, list("client_secret_basic", "client_secret_post", "none"), confidential["token_endpoint_auth_methods_supported"])
	assert.Equal(t, list("client_secret_basic", "client_secret_post"), confidential["introspection_endpoint_auth_methods_supported"],
		"introspection always needs a secret")
	assert.Equal(t, base+"/introspect", confidential["introspection_endpoint"])
	for _, absent := range []string{"revocation_endpoint", "revocation_endpoint_auth_methods_supported", "jwks_uri"} {
		assert.NotContains(t, confidential, absent)
	}

	h := refresh.NewHandlers(e.iss, refresh.HandlerConfig{})
	for name, ep := range map[string]refresh.Endpoints{
		"no token endpoint": {JWKSURI: base + "/jwks"},
		"relative":          {TokenEndpoint: "token"},
		"network-path":      {TokenEndpoint: "//evil.example/token"},
		"other scheme":      {TokenEndpoint: "ftp://auth.example.com/token"},
		"no host":           {TokenEndpoint: "https:///token"},
		"fragment":          {TokenEndpoint: base + "/token#x"},
		"bad optional":      {TokenEndpoint: base + "/token", JWKSURI: "jwks.json"},
	} {
		_, err := h.MetadataHandler(ep)
		assert.Error(t, err, name)
	}
}

func TestMetadataPath(t *testing.T) {
	for issuer, want := range map[string]string{
		"https://auth.example.com":          "/.well-known/oauth-authorization-server",
		"https://auth.example.com/":         "/.well-known/oauth-authorization-server",
		"https://auth.example.com/tenant/a": "/.well-known/oauth-authorization-server/tenant/a",
		"https://auth.example.com/tenant/":  "/.well-known/oauth-authorization-server/tenant",
	} {
		e := newEnv(t, func(c *refresh.Config) { c.Issuer = issuer })
		assert.Equal(t, want, refresh.NewHandlers(e.iss, refresh.HandlerConfig{}).MetadataPath(), issuer)
	}
}
