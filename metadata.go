package refresh

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// Endpoints says where an application mounted the Handlers, for
// MetadataHandler: absolute http(s) URLs as clients use them, or absolute
// paths ("/token"), which are taken to be on the scheme and host of
// Config.Issuer (whatever path the issuer has).
// TokenEndpoint is required; an empty optional field is left out of the
// document. It is a plain value.
type Endpoints struct {
	TokenEndpoint         string // RefreshHandler
	RevocationEndpoint    string // RevocationHandler
	IntrospectionEndpoint string // IntrospectionHandler
	JWKSURI               string // JWKSHandler
}

// metadataDocument is RFC 8414 authorization server metadata, with the
// DPoP member of RFC 9449 §5.1.
type metadataDocument struct {
	Issuer                                    string   `json:"issuer"`
	TokenEndpoint                             string   `json:"token_endpoint"`
	JWKSURI                                   string   `json:"jwks_uri,omitempty"`
	RevocationEndpoint                        string   `json:"revocation_endpoint,omitempty"`
	IntrospectionEndpoint                     string   `json:"introspection_endpoint,omitempty"`
	ResponseTypesSupported                    []string `json:"response_types_supported"`
	GrantTypesSupported                       []string `json:"grant_types_supported"`
	TokenEndpointAuthMethodsSupported         []string `json:"token_endpoint_auth_methods_supported"`
	RevocationEndpointAuthMethodsSupported    []string `json:"revocation_endpoint_auth_methods_supported,omitempty"`
	IntrospectionEndpointAuthMethodsSupported []string `json:"introspection_endpoint_auth_methods_supported,omitempty"`
	DPoPSigningAlgValuesSupported             []string `json:"dpop_signing_alg_values_supported"`
}

// MetadataHandler serves RFC 8414 authorization server metadata for GET and
// HEAD, so that clients which discover endpoints (oauth4webapi, openid-client
// and others) find the token, revocation, introspection and JWKS URLs, the
// grant (refresh_token only: sign-in is the application's), the client
// authentication methods these Handlers accept (client_secret_basic and
// client_secret_post with HandlerConfig.ClientAuth, else none; introspection
// always needs a secret) and the DPoP proof algorithms (RFC 9449 §5.1).
// response_types_supported is empty: there is no authorization endpoint.
// Mount it at MetadataPath. The document is fixed when the handler is
// made; it is cacheable for five minutes, and the handler is safe for
// concurrent use. It returns an error if
// TokenEndpoint is empty or an endpoint is neither an absolute http(s) URL
// nor an absolute path.
func (h *Handlers) MetadataHandler(ep Endpoints) (http.Handler, error) {
	if ep.TokenEndpoint == "" {
		return nil, errors.New("refresh: metadata: TokenEndpoint is required")
	}
	issuer, err := url.Parse(h.iss.cfg.Issuer)
	if err != nil {
		return nil, fmt.Errorf("refresh: metadata: Config.Issuer: %w", err)
	}
	for _, f := range []struct {
		name string
		u    *string
	}{{"TokenEndpoint", &ep.TokenEndpoint}, {"RevocationEndpoint", &ep.RevocationEndpoint},
		{"IntrospectionEndpoint", &ep.IntrospectionEndpoint}, {"JWKSURI", &ep.JWKSURI}} {
		if *f.u == "" {
			continue
		}
		p, err := url.Parse(*f.u)
		if err == nil && !p.IsAbs() && strings.HasPrefix(*f.u, "/") && !strings.HasPrefix(*f.u, "//") {
			p = issuer.ResolveReference(p)
		}
		if err != nil || (p.Scheme != "https" && p.Scheme != "http") || p.Host == "" || p.Fragment != "" {
			return nil, fmt.Errorf("refresh: metadata: %s %q is neither an absolute http(s) URL nor an absolute path", f.name, *f.u)
		}
		*f.u = p.String()
	}
	auth := []string{ClientAuthNone}
	if h.cfg.ClientAuth != nil {
		auth = []string{ClientSecretBasic, ClientSecretPost, ClientAuthNone}
	}
	doc := metadataDocument{
		Issuer:                            h.iss.cfg.Issuer,
		TokenEndpoint:                     ep.TokenEndpoint,
		JWKSURI:                           ep.JWKSURI,
		RevocationEndpoint:                ep.RevocationEndpoint,
		IntrospectionEndpoint:             ep.IntrospectionEndpoint,
		ResponseTypesSupported:            []string{},
		GrantTypesSupported:               []string{"refresh_token"},
		TokenEndpointAuthMethodsSupported: auth,
	}
	if ep.RevocationEndpoint != "" {
		doc.RevocationEndpointAuthMethodsSupported = auth
	}
	if ep.IntrospectionEndpoint != "" {
		doc.IntrospectionEndpointAuthMethodsSupported = []string{ClientSecretBasic, ClientSecretPost}
	}
	for _, a := range dpopAlgorithms {
		doc.DPoPSigningAlgValuesSupported = append(doc.DPoPSigningAlgValuesSupported, string(a))
	}
	body, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("refresh: metadata: %w", err)
	}
	return publicDocument("application/json", body), nil
}

// MetadataPath is where RFC 8414 §3.1 puts the metadata of the Handlers'
// Issuer: "/.well-known/oauth-authorization-server" followed by the path of
// Config.Issuer, if it has one ("https://auth.example.com/tenant" gives
// "/.well-known/oauth-authorization-server/tenant").
func (h *Handlers) MetadataPath() string {
	const wellKnown = "/.well-known/oauth-authorization-server"
	u, err := url.Parse(h.iss.cfg.Issuer)
	if err != nil {
		return wellKnown
	}
	return wellKnown + strings.TrimRight(u.EscapedPath(), "/")
}
