// refresh-demo's browser app: cookie mode, no build step, no dependencies.
//
// The refresh token is an HttpOnly cookie set by /app/login and rotated by
// /app/token: this script never sees it. The access token lives only in a
// variable of this tab. Both are bound to a DPoP key (RFC 9449): a P-256
// key made by WebCrypto as non-extractable, kept in IndexedDB for every tab
// of this browser, which signs a proof for each request. Whoever steals the
// cookie or the access token (malware reading the cookie store, an XSS
// sending the token away) cannot use them anywhere else: the private key
// never leaves the browser, not even to this script. When a call is refused with 401 (the access token
// expired, or the session ended), the tab refreshes once, silently, and
// retries.
//
// Tabs coordinate so that tabs whose token expires together spend one
// rotation: a refresh runs under a Web Lock, and the tab that refreshed
// shares its new access token over a BroadcastChannel. A tab that gets the
// lock after another one refreshed must not refresh again, but the
// broadcast may reach it after the lock does (they are separate channels),
// so tokens are numbered: an epoch counter in IndexedDB (no secret in it),
// whose transactions are consistent across tabs, tells the waiting tab that
// a newer token exists, and it waits for that one. A new tab asks the open
// ones for their token before it spends a rotation of its own. The server's
// grace window (-grace) still covers tabs that race anyway (open the page
// with ?nolock to see that: the lock is then not taken).
'use strict';

const CLIENT_ID = 'refresh-demo-web';
const CSRF = { 'X-Requested-With': 'refresh-demo' }; // the cookie mode's CSRF header
const LOCK = 'refresh-demo-refresh';
const POLL_MS = 30000;
const useLock = !new URLSearchParams(location.search).has('nolock') && 'locks' in navigator;
const channel = 'BroadcastChannel' in self ? new BroadcastChannel('refresh-demo') : null;

let access = null;   // { token, expiresAt (ms), epoch }: this tab's access token
let inflight = null; // this tab's refresh in progress
let refreshes = 0;   // silent refreshes this tab made
let mySid = '';
const waiters = new Set(); // resolve functions of tabs' waits for a newer token

const $ = (id) => document.getElementById(id);

function show(view) {
  for (const v of ['loading', 'login', 'app']) $(v).hidden = v !== view;
  document.body.dataset.view = view; // for tests and styles
}

class SignedOut extends Error {}

// takeToken adopts a token shared by another tab if it is newer than ours.
function takeToken(t) {
  if (t && t.token && t.expiresAt > Date.now() && (!access || t.epoch > access.epoch)) {
    access = t;
    for (const w of waiters) w();
    return true;
  }
  return false;
}

// sessionOf reads the sid claim of an access token (for display only: the
// server verifies the token, the app never has to).
function sessionOf(jwt) {
  try {
    return JSON.parse(atob(jwt.split('.')[1].replace(/-/g, '+').replace(/_/g, '/'))).sid || '';
  } catch {
    return '';
  }
}

// The epoch of the newest access token of this browser, in IndexedDB.
const db = new Promise((resolve, reject) => {
  const r = indexedDB.open('refresh-demo', 1);
  r.onupgradeneeded = () => r.result.createObjectStore('kv');
  r.onsuccess = () => resolve(r.result);
  r.onerror = () => reject(r.error);
});

async function epoch(bump) {
  const tx = (await db).transaction('kv', bump ? 'readwrite' : 'readonly');
  const st = tx.objectStore('kv');
  const q = st.get('epoch');
  let n = 0;
  q.onsuccess = () => {
    n = (q.result || 0) + (bump ? 1 : 0);
    if (bump) st.put(n, 'epoch');
  };
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve(n);
    tx.onerror = () => reject(tx.error);
  });
}

// The DPoP key pair of this browser: made once, non-extractable, shared by
// the tabs through IndexedDB. Two tabs that start together may both make
// one; a single transaction keeps the first stored and the other uses it.
const dpopKey = (async () => {
  const made = await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign', 'verify']);
  const tx = (await db).transaction('kv', 'readwrite');
  const st = tx.objectStore('kv');
  let key = made;
  const q = st.get('dpop');
  q.onsuccess = () => {
    if (q.result) key = q.result;
    else st.put(made, 'dpop');
  };
  await new Promise((resolve, reject) => {
    tx.oncomplete = resolve;
    tx.onerror = () => reject(tx.error);
  });
  const { kty, crv, x, y } = await crypto.subtle.exportKey('jwk', key.publicKey);
  return { key, jwk: { kty, crv, x, y } };
})();

const enc = new TextEncoder();

function b64url(bytes) {
  let s = '';
  for (const b of new Uint8Array(bytes)) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

// dpopNonce is the server's latest DPoP nonce, when it asks for them
// (refresh-demo -dpop-nonce; RFC 9449 §8).
let dpopNonce = '';

// proof signs a DPoP proof for a request to path (this origin) and, for an
// API call, the access token it carries.
async function proof(method, path, accessToken) {
  const { key, jwk } = await dpopKey;
  const header = { typ: 'dpop+jwt', alg: 'ES256', jwk };
  const claims = { jti: b64url(crypto.getRandomValues(new Uint8Array(16))), htm: method, htu: location.origin + path, iat: Math.floor(Date.now() / 1000) };
  if (accessToken) claims.ath = b64url(await crypto.subtle.digest('SHA-256', enc.encode(accessToken)));
  if (dpopNonce) claims.nonce = dpopNonce;
  const input = b64url(enc.encode(JSON.stringify(header))) + '.' + b64url(enc.encode(JSON.stringify(claims)));
  const sig = await crypto.subtle.sign({ name: 'ECDSA', hash: 'SHA-256' }, key.privateKey, enc.encode(input));
  return input + '.' + b64url(sig); // WebCrypto's ECDSA signature is r||s, as JWS wants
}

// tokenOf waits up to ms for an access token of epoch e or newer.
function tokenOf(e, ms) {
  return new Promise((resolve) => {
    const check = () => {
      if (access && access.epoch >= e) done(true);
    };
    const done = (ok) => {
      waiters.delete(check);
      clearTimeout(timer);
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), ms);
    waiters.add(check);
    check();
  });
}

if (channel) {
  channel.onmessage = (e) => {
    const m = e.data || {};
    if (m.type === 'token') {
      // Another tab refreshed or signed in: use its access token, and show
      // the session it belongs to if that is not the one shown.
      if (takeToken(m.token) && (document.body.dataset.view !== 'app' || sessionOf(m.token.token) !== mySid)) load();
    } else if (m.type === 'hello' && access) {
      channel.postMessage({ type: 'token', token: access });
    }
  };
}

// refresh gets a new access token with the cookie. failed is the token the
// server refused (or null): if another tab has replaced it meanwhile, no
// rotation is spent. It resolves to true, or false when the session is gone.
function refresh(failed) {
  if (!inflight) {
    inflight = (async () => {
      const seen = failed ? failed.epoch : await epoch(false);
      const run = async () => {
        if (access && (!failed || access.token !== failed.token)) return true;
        // Another tab refreshed after our token was made: take its token.
        if ((await epoch(false)) > seen && (await tokenOf(seen + 1, 2000))) return true;
        const r = await cookiePost('/app/token', new URLSearchParams({ grant_type: 'refresh_token', client_id: CLIENT_ID }));
        if (!r.ok) return false;
        await accept(await r.json());
        refreshes++;
        $('refreshes').textContent = String(refreshes);
        return true;
      };
      return useLock ? navigator.locks.request(LOCK, run) : run();
    })().finally(() => { inflight = null; });
  }
  return inflight;
}

// cookiePost sends a cookie-mode request: the cookie, the CSRF header and
// a DPoP proof for path. A URLSearchParams body sets its own content type.
async function cookiePost(path, body, type) {
  return withNonce(async () => {
    const headers = { ...CSRF, DPoP: await proof('POST', path) };
    if (type) headers['Content-Type'] = type;
    return fetch(path, { method: 'POST', credentials: 'same-origin', headers, body });
  });
}

// withNonce sends a request with a DPoP proof (send makes it afresh each
// time), keeps the nonce the server hands out, and sends it once more if
// the server refused the proof for want of that nonce.
async function withNonce(send) {
  const r = await send();
  const n = r.headers.get('DPoP-Nonce');
  if (!n) return r;
  dpopNonce = n;
  const asked = r.status === 401 ? (r.headers.get('WWW-Authenticate') || '').includes('use_dpop_nonce')
    : r.status === 400 && (await r.clone().json().catch(() => ({}))).error === 'use_dpop_nonce';
  return asked ? send() : r;
}

// accept takes a token response, numbers it, and shares its access token
// with the other tabs of this browser.
async function accept(t) {
  const expiresAt = Date.now() + t.expires_in * 1000;
  access = { token: t.access_token, expiresAt, epoch: await epoch(true) };
  if (channel) channel.postMessage({ type: 'token', token: access });
}

// api calls the JSON API with the access token, refreshing once on 401.
async function api(path, init = {}) {
  for (let attempt = 0; ; attempt++) {
    if (!access && !(await refresh(null))) throw new SignedOut();
    const used = access;
    const method = init.method || 'GET';
    const r = await withNonce(async () => fetch(path, {
      ...init,
      headers: { ...(init.headers || {}), Authorization: 'DPoP ' + used.token, DPoP: await proof(method, path, used.token) },
    }));
    // A step-up challenge (RFC 9470) is about the sign-in, not the token:
    // a refresh keeps the sign-in time, so only signing in again helps.
    if (r.status !== 401 || stepUp(r)) return r;
    if (access === used) access = null;
    if (attempt > 0 || !(await refresh(used))) throw new SignedOut();
  }
}

// stepUp reports a refusal that wants a more recent sign-in (RFC 9470).
function stepUp(r) {
  return r.status === 401 && (r.headers.get('WWW-Authenticate') || '').includes('error="insufficient_user_authentication"');
}

function signedOut(note) {
  access = null;
  mySid = '';
  // Whoever signs in next in this tab must not find passwords typed here.
  $('current-password').value = '';
  $('new-password').value = '';
  $('login-note').textContent = note || '';
  $('login-note').hidden = !note;
  show('login');
}

async function load() {
  try {
    const me = await (await api('/me')).json();
    mySid = me.sid;
    $('me-sub').textContent = me.sub;
    $('me-roles').textContent = (me.roles || []).join(', ') || '—';
    $('me-sid').textContent = me.sid;
    $('me-auth').textContent = new Date(me.auth_time).toLocaleString(); // auth_time: refreshes keep it
    $('me-exp').textContent = 'expires ' + new Date(me.expires_at).toLocaleTimeString();
    const list = await (await api('/sessions')).json();
    renderDevices(list.sessions || []);
    $('app-error').hidden = true;
    show('app');
  } catch (e) {
    if (e instanceof SignedOut) signedOut('Your session has ended. Sign in again.');
    else fail(e);
  }
}

function fail(e) {
  $('app-error').textContent = 'Something went wrong: ' + (e && e.message ? e.message : e);
  $('app-error').hidden = false;
}

function cell(text, cls) {
  const td = document.createElement('td');
  if (cls) td.className = cls;
  td.textContent = text;
  return td;
}

function renderDevices(sessions) {
  const rows = $('device-rows');
  rows.replaceChildren();
  for (const s of sessions) {
    const tr = document.createElement('tr');
    tr.dataset.sid = s.id;
    tr.dataset.generation = String(s.generation);
    const dev = document.createElement('td');
    const name = document.createElement('div');
    name.textContent = (s.client_id || 'API client') + (s.id === mySid ? ' (this device)' : '');
    if (s.id === mySid) name.className = 'this';
    const ua = document.createElement('div');
    ua.className = 'ua';
    ua.textContent = (s.meta && s.meta.user_agent) || '';
    dev.append(name, ua);
    tr.append(dev, cell(new Date(s.created_at).toLocaleString()), cell(new Date(s.last_used_at).toLocaleString()), cell(String(s.generation)));
    const act = document.createElement('td');
    const b = document.createElement('button');
    b.type = 'button';
    b.className = 'secondary';
    b.textContent = 'Sign out';
    b.addEventListener('click', () => (s.id === mySid ? signOut() : signOutDevice(s.id)));
    act.append(b);
    tr.append(act);
    rows.append(tr);
  }
}

async function signOutDevice(id) {
  try {
    const r = await api('/sessions/' + encodeURIComponent(id), { method: 'DELETE' });
    if (stepUp(r)) {
      // Signing other devices out wants a recent sign-in (so that a stolen
      // refresh token cannot do it): end this one and sign in afresh.
      await signOut('To sign out another device, sign in again first.');
      return;
    }
    if (!r.ok && r.status !== 404) throw new Error('HTTP ' + r.status);
    await load();
  } catch (e) {
    if (e instanceof SignedOut) signedOut('Your session has ended. Sign in again.');
    else fail(e);
  }
}

// signOut ends this browser's session: the server revokes it and clears
// the cookie.
async function signOut(note) {
  await cookiePost('/app/revoke', new URLSearchParams({ client_id: CLIENT_ID })).catch(() => {});
  signedOut(note || 'Signed out.');
}

async function signOutEverywhere() {
  try {
    const r = await api('/logout-all', { method: 'POST' });
    if (!r.ok) throw new Error('HTTP ' + r.status);
    await signOut('Signed out on every device.');
  } catch (e) {
    if (e instanceof SignedOut) signedOut('Your session has ended. Sign in again.');
    else fail(e);
  }
}

// changePassword sends the current and the new password (POST /password,
// which wants a recent sign-in); the server then ends every session of the
// user, this one too, so the app signs out and asks for the new password.
async function changePassword(ev) {
  ev.preventDefault();
  $('password-error').hidden = true;
  $('password-button').disabled = true;
  try {
    const body = new URLSearchParams({ current_password: $('current-password').value, password: $('new-password').value });
    const r = await api('/password', { method: 'POST', headers: { 'Content-Type': 'application/x-www-form-urlencoded' }, body });
    if (stepUp(r)) {
      await signOut('To change your password, sign in again first.');
      return;
    }
    if (r.ok) {
      await signOut('Password changed, and every device signed out. Sign in with the new password.');
      return;
    }
    const e = await r.json().catch(() => ({}));
    $('password-error').textContent = r.status === 403 ? 'The current password is wrong.'
      : r.status === 429 ? 'Too many failed attempts: try again in ' + r.headers.get('Retry-After') + ' s.'
      : e.error_description ? 'Not done: ' + e.error_description + '.'
      : 'Not changed (HTTP ' + r.status + ').';
    $('password-error').hidden = false;
  } catch (e) {
    if (e instanceof SignedOut) signedOut('Your session has ended. Sign in again.');
    else fail(e);
  } finally {
    $('password-button').disabled = false;
  }
}

async function login(ev) {
  ev.preventDefault();
  $('login-error').hidden = true;
  $('login-button').disabled = true;
  try {
    const r = await cookiePost('/app/login', JSON.stringify({ username: $('username').value, password: $('password').value, client_id: CLIENT_ID }), 'application/json');
    if (!r.ok) {
      $('login-error').textContent = r.status === 401 ? 'Wrong user or password.'
        : r.status === 429 ? 'Too many failed attempts: try again in ' + r.headers.get('Retry-After') + ' s.'
        : 'Sign-in failed (HTTP ' + r.status + ').';
      $('login-error').hidden = false;
      return;
    }
    await accept(await r.json());
    $('password').value = '';
    await load();
  } finally {
    $('login-button').disabled = false;
  }
}

// boot: take a token from an open tab, else try the cookie, else sign in.
async function boot() {
  $('login-form').addEventListener('submit', login);
  $('reload').addEventListener('click', load);
  $('signout').addEventListener('click', () => signOut());
  $('signout-all').addEventListener('click', signOutEverywhere);
  $('password-form').addEventListener('submit', changePassword);
  document.addEventListener('visibilitychange', () => { if (!document.hidden && access) load(); });
  setInterval(() => { if (access && !document.hidden) load(); }, POLL_MS);
  if (channel) {
    channel.postMessage({ type: 'hello' });
    await new Promise((r) => setTimeout(r, 250));
  }
  if (access || (await refresh(null))) await load();
  else signedOut();
}

boot();
