package main

import (
	"context"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"golang.org/x/oauth2"
)

// TestOAuth2Client: golang.org/x/oauth2, the standard Go client, refreshes
// at the demo's /token after a sign-in at /login, in each of its client
// authentication styles (auto-detect included), with the demo's client
// authentication off and on (INTROSPECTION_SECRET), as a public client with
// and without a client_id; its tokens work at /me, and the demo's reuse
// detection reaches it as invalid_grant.
func TestOAuth2Client(t *testing.T) {
	for _, auth := range []struct {
		name string
		ac   authConfig
	}{{"no client auth", authConfig{}}, {"client auth on", authConfig{introspectionSecret: "rs-secret"}}} {
		srv := httptest.NewServer(newAuthMux(newTestIssuer(t), auth.ac))
		t.Cleanup(srv.Close)
		for _, clientID := range []string{"", "mobile"} {
			for _, style := range []oauth2.AuthStyle{oauth2.AuthStyleAutoDetect, oauth2.AuthStyleInParams, oauth2.AuthStyleInHeader} {
				if auth.ac.introspectionSecret != "" && style == oauth2.AuthStyleInHeader {
					// Basic authentication with an empty secret is a
					// confidential client's method: refused (401), which
					// AutoDetect answers by retrying in the body.
					continue
				}
				t.Run(auth.name+"/"+clientID+"/"+styleName(style), func(t *testing.T) {
					form := url.Values{"username": {"alice"}, "password": {"wonderland"}}
					if clientID != "" {
						form.Set("client_id", clientID)
					}
					r := post(t, srv.URL+"/login", "application/x-www-form-urlencoded", form.Encode())
					if r.status != 200 {
						t.Fatalf("login: %d %v", r.status, r.body)
					}
					conf := &oauth2.Config{ClientID: clientID, Endpoint: oauth2.Endpoint{TokenURL: srv.URL + "/token", AuthStyle: style}}
					first := &oauth2.Token{AccessToken: r.body["access_token"].(string), RefreshToken: r.body["refresh_token"].(string),
						Expiry: time.Now().Add(-time.Minute)} // expired: the next Token() refreshes
					ctx := context.Background()
					tok, err := conf.TokenSource(ctx, first).Token()
					if err != nil {
						t.Fatalf("refresh: %v", err)
					}
					if tok.RefreshToken == first.RefreshToken || tok.AccessToken == first.AccessToken || tok.Type() != "Bearer" {
						t.Fatalf("not a rotated pair: %+v", tok)
					}
					if tok.Extra("scope") != "profile sessions" || time.Until(tok.Expiry) < 14*time.Minute {
						t.Fatalf("scope %v, expiry %v", tok.Extra("scope"), tok.Expiry)
					}
					resp, err := conf.Client(ctx, tok).Get(srv.URL + "/me")
					if err != nil {
						t.Fatal(err)
					}
					var me map[string]any
					_ = json.NewDecoder(resp.Body).Decode(&me)
					resp.Body.Close()
					wantClient := clientID
					if wantClient == "" {
						wantClient = "refresh-demo" // Config.ClientID's default: the audience
					}
					if resp.StatusCode != 200 || me["sub"] != "alice" || me["client_id"] != wantClient {
						t.Fatalf("/me: %d %v", resp.StatusCode, me)
					}
					// The spent token again: reuse, the session is revoked.
					_, err = conf.TokenSource(ctx, first).Token()
					var re *oauth2.RetrieveError
					if !errors.As(err, &re) || re.ErrorCode != "invalid_grant" || re.Response.StatusCode != 400 {
						t.Fatalf("reuse: %v", err)
					}
					if _, err = conf.TokenSource(ctx, &oauth2.Token{RefreshToken: tok.RefreshToken}).Token(); !errors.As(err, &re) || re.ErrorCode != "invalid_grant" {
						t.Fatalf("the newest token after reuse: %v", err)
					}
				})
			}
		}
	}
}

func styleName(s oauth2.AuthStyle) string {
	return map[oauth2.AuthStyle]string{oauth2.AuthStyleAutoDetect: "auto", oauth2.AuthStyleInParams: "params", oauth2.AuthStyleInHeader: "header"}[s]
}
