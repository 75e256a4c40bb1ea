package refresh

// Token introspection (RFC 7662), the Issuer's side: what an authenticated
// client may learn about a token. The HTTP handler is in handler.go.

import (
	"context"
	"errors"
	"strings"
)

// introspection is the RFC 7662 §2.2 answer; the zero value is
// {"active":false}, all that an inactive token gets.
type introspection struct {
	Active    bool     `json:"active"`
	Scope     string   `json:"scope,omitempty"`
	ClientID  string   `json:"client_id,omitempty"`
	Subject   string   `json:"sub,omitempty"`
	Audience  []string `json:"aud,omitempty"`
	Issuer    string   `json:"iss,omitempty"`
	TokenType string   `json:"token_type,omitempty"`
	ExpiresAt int64    `json:"exp,omitempty"`
	IssuedAt  int64    `json:"iat,omitempty"`
	NotBefore int64    `json:"nbf,omitempty"`
	ID        string   `json:"jti,omitempty"`
	// The authentication the token stems from, for resource servers that
	// apply step-up rules (RFC 9470) to introspected tokens.
	AuthTime int64  `json:"auth_time,omitempty"`
	ACR      string `json:"acr,omitempty"`
	// Confirmation names the DPoP key a bound token is good with only (RFC
	// 9449 §6.2): a resource server that introspects instead of reading
	// the JWT learns of the binding from nothing else.
	Confirmation *confirmation `json:"cnf,omitempty"`
}

// confirmation is RFC 7800's cnf member with RFC 9449's jkt.
type confirmation struct {
	JKT string `json:"jkt"`
}

// confirm returns the cnf member of a token bound to the DPoP key with
// thumbprint jkt, or nil for an unbound one.
func confirm(jkt string) *confirmation {
	if jkt == "" {
		return nil
	}
	return &confirmation{JKT: jkt}
}

// introspect answers for token on behalf of the authenticated client
// caller. Both kinds carry auth_time (the session's sign-in) and an access
// token its acr claim, so that step-up rules work on introspected tokens,
// and a DPoP-bound one cnf.jkt, so that the binding holds there too.
// An access token is active when it verifies and its session is live in the
// store now (not from the session cache). A refresh token is active only to
// the client its session is bound to, and only while it is the session's
// current token and the session is usable: a client learns nothing about
// refresh tokens that are not its own. Only store failures are errors.
func (iss *Issuer) introspect(ctx context.Context, token, caller string) (introspection, error) {
	var none introspection
	if strings.HasPrefix(token, refreshPrefix) {
		rc, s, err := iss.verifyRefresh(ctx, token)
		if err != nil {
			if IsClientError(err) {
				return none, nil
			}
			return none, err
		}
		now := iss.now()
		if s.ClientID == "" || s.ClientID != caller || rc.gen != s.Generation || iss.usable(s, now, &callOptions{clientID: caller, dpop: s.DPoPKey}) != nil {
			return none, nil
		}
		exp := s.RotatedAt.Add(iss.cfg.IdleTTL)
		if s.ExpiresAt.Before(exp) {
			exp = s.ExpiresAt
		}
		return introspection{Active: true, Scope: strings.Join(s.Scope, " "), ClientID: s.ClientID, Subject: s.Subject,
			Issuer: iss.cfg.Issuer, TokenType: "refresh_token", ExpiresAt: exp.Unix(), IssuedAt: s.RotatedAt.Unix(),
			AuthTime: s.CreatedAt.Unix(), Confirmation: confirm(s.DPoPKey)}, nil
	}
	c, err := iss.rs.verify(token)
	if err != nil {
		return none, nil // malformed, forged, expired: inactive, whatever the cause
	}
	s, err := iss.getSession(ctx, c.SessionID)
	switch {
	case errors.Is(err, ErrSessionNotFound):
		return none, nil
	case err != nil:
		return none, storeErr("get", err)
	case s.Revoked() || !iss.now().Before(s.ExpiresAt):
		return none, nil
	}
	typ := "Bearer"
	if c.DPoPKey != "" {
		typ = "DPoP"
	}
	out := introspection{Active: true, Scope: strings.Join(c.Scope, " "), ClientID: c.ClientID, Subject: c.Subject,
		Audience: c.Audience, Issuer: c.Issuer, TokenType: typ, ExpiresAt: c.ExpiresAt.Unix(), IssuedAt: c.IssuedAt.Unix(), ID: c.ID,
		Confirmation: confirm(c.DPoPKey)}
	if !c.NotBefore.IsZero() {
		out.NotBefore = c.NotBefore.Unix()
	}
	if !c.AuthTime.IsZero() {
		out.AuthTime = c.AuthTime.Unix()
	}
	out.ACR, _ = c.Extra["acr"].(string)
	return out, nil
}
