// Standard JavaScript OAuth and JOSE libraries against a running
// refresh-demo: panva's oauth4webapi as the client of the refresh grant
// (RFC 6749 §6), the revocation endpoint (RFC 7009) and a DPoP-protected
// resource (RFC 9449), panva's openid-client (the most used Node.js OAuth
// client) for the same grant and revocation, and panva's jose verifying the access tokens against
// the published JWKS as an RFC 9068 resource server would. Nothing here
// comes from this repository: if a standard client cannot use the service,
// these tests fail.
//
// The client knows only the issuer URL and finds the endpoints through the
// demo's RFC 8414 metadata. Run by TestJavaScriptClients
// (javascript_test.go):
//   DEMO=http://127.0.0.1:PORT node --test clients.test.mjs
import { test } from 'node:test'
import assert from 'node:assert/strict'
import * as oauth from 'oauth4webapi'
import * as jose from 'jose'
import * as oidc from 'openid-client'

const base = process.env.DEMO
assert.ok(base, 'DEMO must be the demo URL')

// The demo runs on loopback over plain HTTP; oauth4webapi refuses http://
// unless told.
const insecure = { [oauth.allowInsecureRequests]: true }
// The endpoints come from the demo's RFC 8414 metadata, as a client that
// knows only the issuer finds them.
const issuer = new URL(base)
const as = await oauth.processDiscoveryResponse(issuer,
  await oauth.discoveryRequest(issuer, { algorithm: 'oauth2', ...insecure }))
const client = { client_id: 'js-client' }
const none = oauth.None()
const jwks = jose.createRemoteJWKSet(new URL(as.jwks_uri))

// login is the demo's own sign-in (not OAuth): a form POST, with a DPoP
// proof made by jose when a key pair is given.
async function login(user, password, keyPair) {
  const headers = { 'content-type': 'application/x-www-form-urlencoded' }
  if (keyPair) headers.DPoP = await proof(keyPair, 'POST', `${base}/login`)
  const res = await fetch(`${base}/login`, {
    method: 'POST', headers,
    body: new URLSearchParams({ username: user, password, client_id: client.client_id }),
  })
  assert.equal(res.status, 200, `login: ${await res.clone().text()}`)
  return res.json()
}

// proof is a DPoP proof JWT, signed with jose, independently of
// oauth4webapi's proofs; with an access token it carries its hash (ath).
async function proof(keyPair, htm, htu, nonce, accessToken) {
  const jwk = await jose.exportJWK(keyPair.publicKey)
  const claims = { htm, htu, jti: crypto.randomUUID(), iat: Math.floor(Date.now() / 1000) }
  if (nonce) claims.nonce = nonce
  if (accessToken) {
    const sum = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(accessToken))
    claims.ath = jose.base64url.encode(new Uint8Array(sum))
  }
  return new jose.SignJWT(claims).setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk }).sign(keyPair.privateKey)
}

// nonceLogin signs alice in at the demo run with -dpop-nonce (at url),
// bound to keyPair by a jose-made proof carrying nonce, if any; the raw
// response, which without a current nonce is 400 use_dpop_nonce.
async function nonceLogin(url, keyPair, nonce) {
  return fetch(`${url}/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', DPoP: await proof(keyPair, 'POST', `${url}/login`, nonce) },
    body: new URLSearchParams({ username: 'alice', password: 'wonderland', client_id: client.client_id }),
  })
}

// verify checks an access token the way an RFC 9068 resource server does.
async function verify(accessToken) {
  const { payload, protectedHeader } = await jose.jwtVerify(accessToken, jwks, {
    issuer: base, audience: 'refresh-demo', typ: 'at+jwt',
    requiredClaims: ['sub', 'client_id', 'iat', 'exp', 'jti'],
  })
  assert.ok(protectedHeader.kid, 'kid in the header')
  return payload
}

async function refresh(refreshToken, options = {}) {
  const res = await oauth.refreshTokenGrantRequest(as, client, none, refreshToken, { ...insecure, ...options })
  return oauth.processRefreshTokenResponse(as, client, res)
}

// refused asserts that a refresh is refused with the OAuth error code.
async function refused(refreshToken, code, options) {
  await assert.rejects(refresh(refreshToken, options), (err) => {
    assert.ok(err instanceof oauth.ResponseBodyError, `want an OAuth error response, got ${err}`)
    assert.equal(err.error, code)
    return true
  })
}

// me calls the demo's API; a refusal (which oauth4webapi throws as a
// WWWAuthenticateChallengeError) is returned as its status and challenge.
async function me(accessToken, options = {}) {
  try {
    const res = await oauth.protectedResourceRequest(accessToken, 'GET', new URL(`${base}/me`), undefined, undefined, { ...insecure, ...options })
    return { status: res.status, body: await res.json() }
  } catch (err) {
    if (!(err instanceof oauth.WWWAuthenticateChallengeError)) throw err
    return { status: err.status, challenge: err.cause[0] }
  }
}

// denied asserts that the API refused an access token with an RFC 6750 or
// RFC 9449 challenge of the scheme.
function denied(res, scheme, what) {
  assert.equal(res.status, 401, what)
  assert.equal(res.challenge.scheme, scheme, what)
  assert.equal(res.challenge.parameters.error, 'invalid_token', what)
}

test('discovery: RFC 8414 metadata names the endpoints and what they accept', () => {
  assert.equal(as.issuer, base)
  assert.equal(as.token_endpoint, `${base}/token`)
  assert.equal(as.revocation_endpoint, `${base}/revoke`)
  assert.equal(as.jwks_uri, `${base}/.well-known/jwks.json`)
  assert.deepEqual(as.grant_types_supported, ['refresh_token'])
  assert.deepEqual(as.token_endpoint_auth_methods_supported, ['none'])
  assert.ok(as.dpop_signing_alg_values_supported.includes('ES256'), 'the DPoP key type used below')
})

test('bearer: jose verifies, oauth4webapi rotates, reuse revokes', async () => {
  const first = await login('alice', 'wonderland')
  assert.equal(first.token_type, 'Bearer')
  const claims = await verify(first.access_token)
  assert.equal(claims.sub, 'alice')
  assert.equal(claims.client_id, client.client_id)

  const second = await refresh(first.refresh_token)
  assert.equal(second.token_type, 'bearer') // oauth4webapi normalises the case
  assert.notEqual(second.refresh_token, first.refresh_token, 'rotated')
  assert.ok(second.expires_in > 0)
  const c2 = await verify(second.access_token)
  assert.equal(c2.sid, claims.sid, 'same session')
  assert.notEqual(c2.jti, claims.jti)

  const res = await me(second.access_token)
  assert.equal(res.status, 200)
  assert.equal(res.body.sub, 'alice')

  // The spent token again: reuse. The session is revoked, so the current
  // refresh token and the current access token stop working too.
  await refused(first.refresh_token, 'invalid_grant')
  await refused(second.refresh_token, 'invalid_grant')
  denied(await me(second.access_token), 'bearer', 'the session check stops the access token')
})

test('step-up (RFC 9470, demo -recent-auth 1s): a refresh keeps auth_time, and oauth4webapi parses the insufficient_user_authentication challenge', async () => {
  const first = await login('alice', 'wonderland')
  const signedIn = (await verify(first.access_token)).auth_time
  assert.ok(Number.isInteger(signedIn), 'auth_time is a NumericDate (RFC 9068 §2.2.1)')
  await new Promise((resolve) => setTimeout(resolve, 1100)) // real time: the demo is a process
  const next = await refresh(first.refresh_token)
  const claims = await verify(next.access_token)
  assert.equal(claims.auth_time, signedIn, 'the refresh keeps the sign-in time')
  assert.ok(claims.iat > signedIn, 'while iat moves')
  await assert.rejects(
    oauth.protectedResourceRequest(next.access_token, 'GET', new URL(`${base}/admin`), undefined, undefined, insecure),
    (err) => {
      assert.ok(err instanceof oauth.WWWAuthenticateChallengeError, `want a challenge, got ${err}`)
      assert.equal(err.status, 401)
      const [c] = err.cause
      assert.equal(c.scheme, 'bearer')
      assert.equal(c.parameters.error, 'insufficient_user_authentication')
      assert.equal(c.parameters.max_age, '1')
      return true
    })
  assert.equal((await me(next.access_token)).status, 200, 'the token itself is good')
})

test('bearer: oauth4webapi revokes, the refresh token is dead', async () => {
  const p = await login('bob', 'builder')
  const res = await oauth.revocationRequest(as, client, none, p.refresh_token, insecure)
  await oauth.processRevocationResponse(res)
  await refused(p.refresh_token, 'invalid_grant')
  denied(await me(p.access_token), 'bearer', 'the session check stops the access token')
  // Revoking again, or revoking garbage, is 200 (RFC 7009 §2.2).
  await oauth.processRevocationResponse(await oauth.revocationRequest(as, client, none, p.refresh_token, insecure))
  await oauth.processRevocationResponse(await oauth.revocationRequest(as, client, none, 'not-a-token', insecure))
})

test('openid-client: discovers the service, rotates, revokes; reuse and a thief without the DPoP key are invalid_grant', async () => {
  const discover = async (url) => oidc.discovery(new URL(url), client.client_id, undefined, oidc.None(),
    { algorithm: 'oauth2', execute: [oidc.allowInsecureRequests] })
  const config = await discover(base)
  assert.equal(config.serverMetadata().token_endpoint, `${base}/token`)
  const rejected = (promise, code) => assert.rejects(promise, (err) => {
    assert.ok(err instanceof oidc.ResponseBodyError, `want an OAuth error response, got ${err}`)
    assert.equal(err.error, code)
    return true
  })

  // Bearer: a rotation, the spent token is reuse, and the session ends.
  const first = await login('bob', 'builder')
  const second = await oidc.refreshTokenGrant(config, first.refresh_token)
  assert.notEqual(second.refresh_token, first.refresh_token, 'rotated')
  assert.ok(second.expiresIn() > 0, 'expires_in is a positive number of seconds')
  assert.equal((await verify(second.access_token)).sub, 'bob')
  await rejected(oidc.refreshTokenGrant(config, first.refresh_token), 'invalid_grant')
  await rejected(oidc.refreshTokenGrant(config, second.refresh_token), 'invalid_grant')

  // Revocation (RFC 7009) ends a fresh session.
  const p = await login('bob', 'builder')
  await oidc.tokenRevocation(config, p.refresh_token)
  await rejected(oidc.refreshTokenGrant(config, p.refresh_token), 'invalid_grant')

  // DPoP, against the demo that requires server nonces: openid-client's
  // handle is refused once with use_dpop_nonce, keeps the nonce and
  // retries; a thief with another key is refused and ends nothing.
  const nb = process.env.DEMO_NONCE
  assert.ok(nb, 'DEMO_NONCE must be a demo run with -dpop-nonce')
  const config2 = await discover(nb)
  const keyPair = await oidc.randomDPoPKeyPair('ES256')
  const DPoP = oidc.getDPoPHandle(config2, keyPair)
  const signIn = (nonce) => nonceLogin(nb, keyPair, nonce)
  const nonce = (await signIn()).headers.get('dpop-nonce')
  const res = await signIn(nonce)
  assert.equal(res.status, 200, await res.clone().text())
  const bound = await res.json()
  const thief = oidc.getDPoPHandle(config2, await oidc.randomDPoPKeyPair('ES256'))
  await rejected(oidc.refreshTokenGrant(config2, bound.refresh_token, undefined, { DPoP: thief }), 'invalid_grant')
  const next = await oidc.refreshTokenGrant(config2, bound.refresh_token, undefined, { DPoP })
  assert.equal(next.token_type, 'dpop')
  const jkt = await jose.calculateJwkThumbprint(await jose.exportJWK(keyPair.publicKey))
  const { payload } = await jose.jwtVerify(next.access_token, jose.createRemoteJWKSet(new URL(config2.serverMetadata().jwks_uri)),
    { issuer: nb, audience: 'refresh-demo', typ: 'at+jwt' })
  assert.deepEqual(payload.cnf, { jkt }, 'bound to the key')
  await rejected(oidc.refreshTokenGrant(config2, next.refresh_token), 'invalid_grant') // no proof: refused, nothing revoked
  assert.equal((await oidc.refreshTokenGrant(config2, next.refresh_token, undefined, { DPoP })).token_type, 'dpop', 'the owner rotates on')
})

test('DPoP: oauth4webapi proofs rotate and call the API; without the key nothing works and nothing is revoked', async () => {
  const keyPair = await oauth.generateKeyPair('ES256')
  const DPoP = oauth.DPoP(client, keyPair)
  const first = await login('alice', 'wonderland', keyPair)
  assert.equal(first.token_type, 'DPoP')
  const claims = await verify(first.access_token)
  const jkt = await jose.calculateJwkThumbprint(await jose.exportJWK(keyPair.publicKey))
  assert.deepEqual(claims.cnf, { jkt }, 'bound to the key')

  const second = await refresh(first.refresh_token, { DPoP })
  assert.equal(second.token_type, 'dpop')
  const ok = await me(second.access_token, { DPoP })
  assert.equal(ok.status, 200)
  assert.equal(ok.body.sub, 'alice')

  // A thief holds both tokens but not the key.
  await refused(second.refresh_token, 'invalid_grant') // no proof
  const thief = oauth.DPoP(client, await oauth.generateKeyPair('ES256'))
  await refused(second.refresh_token, 'invalid_grant', { DPoP: thief }) // another key
  denied(await me(second.access_token), 'dpop', 'as a Bearer token')
  denied(await me(second.access_token, { DPoP: thief }), 'dpop', 'with the wrong key')
  // A revocation without the key's proof is answered 200 (RFC 7009) and
  // revokes nothing.
  await oauth.processRevocationResponse(await oauth.revocationRequest(as, client, none, second.refresh_token, insecure))

  // Nothing of that ended the session: the owner rotates on.
  const third = await refresh(second.refresh_token, { DPoP })
  assert.equal((await me(third.access_token, { DPoP })).status, 200)

  // The owner's revocation carries a proof from the key (jose-made; the
  // library's revocationRequest sends none).
  const res = await fetch(as.revocation_endpoint, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', DPoP: await proof(keyPair, 'POST', as.revocation_endpoint) },
    body: new URLSearchParams({ token: third.refresh_token, client_id: client.client_id }),
  })
  assert.equal(res.status, 200)
  await refused(third.refresh_token, 'invalid_grant', { DPoP })
})

test('DPoP nonces (demo -dpop-nonce): a proof without the server nonce is refused with a fresh one; oauth4webapi retries with it', async () => {
  const nb = process.env.DEMO_NONCE
  assert.ok(nb, 'DEMO_NONCE must be a demo run with -dpop-nonce')
  const iss2 = new URL(nb)
  const as2 = await oauth.processDiscoveryResponse(iss2, await oauth.discoveryRequest(iss2, { algorithm: 'oauth2', ...insecure }))
  const keyPair = await oauth.generateKeyPair('ES256')
  const DPoP = oauth.DPoP(client, keyPair)
  const signIn = (nonce) => nonceLogin(nb, keyPair, nonce)
  let res = await signIn()
  assert.equal(res.status, 400)
  assert.equal((await res.json()).error, 'use_dpop_nonce')
  const nonce = res.headers.get('dpop-nonce')
  assert.ok(nonce, 'a DPoP-Nonce header')
  res = await signIn(nonce)
  assert.equal(res.status, 200, await res.clone().text())
  const first = await res.json()

  // oauth4webapi's handle has not seen a nonce yet: its first refresh is
  // refused with use_dpop_nonce, it keeps the nonce, and the retry works.
  const refresh2 = async (rt) => oauth.processRefreshTokenResponse(as2, client,
    await oauth.refreshTokenGrantRequest(as2, client, none, rt, { ...insecure, DPoP }))
  await assert.rejects(refresh2(first.refresh_token), (err) => oauth.isDPoPNonceError(err))
  const second = await refresh2(first.refresh_token)
  assert.equal(second.token_type, 'dpop')
  const r = await oauth.protectedResourceRequest(second.access_token, 'GET', new URL(`${nb}/me`), undefined, undefined, { ...insecure, DPoP })
  assert.equal(r.status, 200, 'the nonce from the token response is used at the API')

  // A resource server of that auth service with nonces of its own (RFC 9449
  // §9; demo -resource-server -dpop-nonce): a proof with the auth service's
  // nonce is refused with use_dpop_nonce and this server's nonce;
  // oauth4webapi's handle, new to this origin, is refused once and retries.
  const rs = process.env.DEMO_RS
  assert.ok(rs, 'DEMO_RS must be a demo resource server with -dpop-nonce')
  const authNonce = r.headers.get('dpop-nonce') ?? nonce
  res = await fetch(`${rs}/me`, {
    headers: { authorization: `DPoP ${second.access_token}`, DPoP: await proof(keyPair, 'GET', `${rs}/me`, authNonce, second.access_token) },
  })
  assert.equal(res.status, 401)
  assert.match(res.headers.get('www-authenticate'), /^DPoP .*error="use_dpop_nonce"/)
  const rsNonce = res.headers.get('dpop-nonce')
  assert.ok(rsNonce && rsNonce !== authNonce, 'the resource server hands out its own nonce')
  res = await fetch(`${rs}/me`, {
    headers: { authorization: `DPoP ${second.access_token}`, DPoP: await proof(keyPair, 'GET', `${rs}/me`, rsNonce, second.access_token) },
  })
  assert.equal(res.status, 200, 'a proof with its nonce')
  const atRS = async () => oauth.protectedResourceRequest(second.access_token, 'GET', new URL(`${rs}/me`), undefined, undefined, { ...insecure, DPoP })
  await assert.rejects(atRS(), (err) => oauth.isDPoPNonceError(err))
  assert.equal((await atRS()).status, 200, 'oauth4webapi retries with the resource server\'s nonce')
})
