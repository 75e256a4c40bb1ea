package refresh

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// verifyRefresh parses tok, loads its session and checks the tag in
// constant time. Only a token that passes can change any state.
func (iss *Issuer) verifyRefresh(ctx context.Context, tok string) (*refreshClaims, *Session, error) {
	rc, err := iss.parseRefresh(tok)
	if err != nil {
		return nil, nil, err
	}
	if !rc.checked() {
		return nil, nil, tokenErr(ErrInvalidToken, "bad refresh token check")
	}
	s, err := iss.getSession(ctx, rc.sessionID())
	if errors.Is(err, ErrSessionNotFound) {
		return nil, nil, tokenErr(ErrInvalidToken, "unknown session")
	}
	if err != nil {
		return nil, nil, storeErr("get", err)
	}
	rc.binding = binding(s)
	want := rc.key.tag(rc.sid[:], rc.gen, &rc.binding)
	if !hmac.Equal(want[:], rc.tag[:]) {
		// A forged token, or a session whose row someone changed.
		return nil, nil, tokenErr(ErrInvalidToken, "bad refresh token MAC")
	}
	if rc.gen > s.Generation {
		// Only possible if the store lost writes (restored from backup).
		return nil, nil, tokenErr(ErrInvalidToken, "refresh token generation ahead of session")
	}
	if iss.frozen != nil {
		check := rc.check
		if rc.key != iss.mintKey {
			check = iss.mintKey.check(rc.sid[:])
		}
		iss.frozen.put(&rc.sid, s, &check, &rc.binding)
	}
	return &rc, s, nil
}

// Issue starts a session for subject and returns its first token pair. Call
// it after your own login check has authenticated the user. Options:
// WithClientID, WithScope, WithClaims, WithMeta, WithDPoPProof,
// WithAuthTime. Before the store is asked anything it refuses, with
// ErrInvalidRequest, a WithAuthTime that no authentication can have, an empty
// subject, a subject or client ID that is not valid UTF-8, holds NUL or is
// longer than 1024 bytes, a scope token outside RFC 6749 §3.3, a WithDPoP
// value that is not a SHA-256 JWK thumbprint, and claims with a registered
// name (in any spelling Go's encoding/json takes for it: WithClaims) or
// two names it takes for one, holding a NUL character or a lone surrogate
// escape, that JSON cannot encode, or that would make the access token
// longer than Config.MaxTokenSize, and metadata over MaxMetaBytes once made valid
// UTF-8 without NUL (U+FFFD in place of the rest). A login handler answers
// its errors with Handlers.WriteIssueError.
func (iss *Issuer) Issue(ctx context.Context, subject string, opts ...Option) (*Pair, error) {
	o := collect(opts)
	if err := checkIssue(subject, &o); err != nil {
		return nil, err
	}
	claims, err := encodeClaims(o.claims)
	if err != nil {
		return nil, err
	}
	if jsonbRefuses(claims) {
		return nil, requestErr("claims hold a NUL character or a lone UTF-16 surrogate escape, which stores keeping JSON (a Postgres jsonb column) refuse")
	}
	meta := textMap(o.meta)
	if n := metaBytes(meta); n > MaxMetaBytes {
		return nil, requestErr(fmt.Sprintf("metadata of %d bytes, over MaxMetaBytes (%d): cut values taken from requests, such as the user agent", n, MaxMetaBytes))
	}
	if o.authTime != nil {
		if err := iss.checkAuthTime(*o.authTime); err != nil {
			return nil, err
		}
	}
	if o.proof != nil {
		// The application has authenticated the user before calling Issue.
		if err := iss.rs.consumeDPoP(ctx, o.proof); err != nil {
			return nil, err
		}
	}
	now := iss.now()
	// WithAuthTime's time, or now for one ahead of now (within the leeway:
	// checkAuthTime refused the rest).
	authTime := now
	if o.authTime != nil && o.authTime.Before(now) {
		authTime = o.authTime.UTC() // as every time the store is given
	}
	var sid [sessionIDLen]byte
	seed := make([]byte, seedLen)
	_, _ = rand.Read(sid[:])
	_, _ = rand.Read(seed)
	s := &Session{
		ID:         b64.EncodeToString(sid[:]),
		Subject:    subject,
		ClientID:   o.clientID,
		DPoPKey:    o.dpop,
		Generation: 0,
		Seed:       seed,
		Scope:      distinct(o.scope),
		Claims:     claims,
		Meta:       meta,
		CreatedAt:  authTime,
		RotatedAt:  now,
		ExpiresAt:  now.Add(iss.cfg.SessionTTL),
	}
	// The pair first: a session whose access token Verify would refuse
	// for its size is never stored.
	check := iss.mintKey.check(sid[:])
	bound := binding(s)
	p, err := iss.pair(new(Pair), s, sid[:], &check, &bound, s.Scope, s.Claims, now)
	if err != nil {
		return nil, err
	}
	if len(p.AccessToken) > iss.cfg.MaxTokenSize {
		return nil, requestErr(fmt.Sprintf("the access token would be %d bytes, over MaxTokenSize (%d): fewer or shorter claims", len(p.AccessToken), iss.cfg.MaxTokenSize))
	}
	if err := iss.store.Create(ctx, s); err != nil {
		return nil, storeErr("create", err)
	}
	iss.frozen.put(&sid, s, &check, &bound)
	iss.emit(ctx, Event{Kind: EventIssued, Time: now, SessionID: s.ID, Subject: subject, ClientID: s.ClientID})
	if iss.cfg.MaxSessions > 0 {
		if err := iss.limitSessions(ctx, s, now); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// checkAuthTime refuses a WithAuthTime value that no authentication can
// have: zero, before 1970 (auth_time is a NumericDate, RFC 7519 §2), or
// later than now plus the leeway.
func (iss *Issuer) checkAuthTime(t time.Time) error {
	switch {
	case t.IsZero():
		return requestErr("WithAuthTime: zero time (when did the user authenticate?)")
	case t.Before(time.Unix(0, 0)):
		return requestErr("WithAuthTime: a time before 1970")
	case t.After(iss.now().Add(iss.cfg.Leeway)):
		return requestErr("WithAuthTime: a time in the future, past Config.Leeway")
	}
	return nil
}

// MaxMetaBytes bounds a session's metadata (WithMeta): the bytes of its
// keys and values together, once made valid UTF-8 without NUL. Far above
// a devices page's needs (a user agent, an address, a device name), it
// bounds what one sign-in can make a store keep. Every store must keep
// metadata of this size whole (storetest checks it).
const MaxMetaBytes = 4096

// maxNameLen bounds subjects and client IDs: far above any real one (an
// OpenID Connect sub is at most 255 ASCII characters), below what a
// database index entry holds (Postgres' B-tree: about 2.7 KB), and the
// length storetest checks every store keeps whole.
const maxNameLen = 1024

// checkIssue refuses what Issue cannot put in a token and a store as
// given (ErrInvalidRequest).
func checkIssue(subject string, o *callOptions) error {
	if err := checkSubject(subject); err != nil {
		return err
	}
	if err := checkName("client ID", o.clientID); err != nil {
		return err
	}
	if o.dpop != "" && !isThumbprint(o.dpop) {
		return requestErr("DPoP key thumbprint is not an RFC 7638 SHA-256 thumbprint (43 base64url characters)")
	}
	for _, tok := range o.scope {
		if !isScopeToken(tok) {
			return requestErr("scope token outside RFC 6749 §3.3 (printable ASCII without space, '\"' or '\\')")
		}
	}
	return nil
}

// checkSubject refuses a subject no session can have, because Issue
// refuses it (ErrInvalidRequest). RevokeSubject and Sessions ask it too:
// such a subject is a caller's mistake (an empty one, from claims that
// were never verified, "logs out everywhere" nobody), and no store is
// asked about it (Postgres answers NUL in a text parameter with an error,
// and a store matching subjects loosely would match every one to "").
func checkSubject(subject string) error {
	if subject == "" {
		return requestErr("empty subject")
	}
	return checkName("subject", subject)
}

// checkName refuses a subject or client ID (what) that no store keeps as
// given: not valid UTF-8, holding NUL, or longer than maxNameLen.
func checkName(what, s string) error {
	switch {
	case !isText(s):
		return requestErr(what + " is not valid UTF-8 or holds a NUL byte")
	case len(s) > maxNameLen:
		return requestErr(what + " longer than 1024 bytes")
	}
	return nil
}

// isText reports whether s is valid UTF-8 without NUL: what every store
// keeps as given (Postgres text refuses NUL and invalid UTF-8) and JSON
// carries unchanged.
func isText(s string) bool { return utf8.ValidString(s) && strings.IndexByte(s, 0) < 0 }

// isThumbprint reports whether s is an RFC 7638 SHA-256 JWK thumbprint in
// unpadded base64url, as DPoPProof.Thumbprint and cnf.jkt are.
func isThumbprint(s string) bool {
	var b [sha256.Size]byte
	return decodeB64Exact(b[:], s)
}

// distinct returns a copy of scope without repeated tokens, each where it
// first appears. A scope is a set (RFC 6749 §3.3): a repeat means nothing,
// and a store may keep scope as a set (a Redis set) that drops it. Past 16
// tokens a map keeps the work linear.
func distinct(scope []string) []string {
	out := slices.Clone(scope)[:0] // nil stays nil
	if len(scope) <= 16 {
		for _, tok := range scope {
			if !slices.Contains(out, tok) {
				out = append(out, tok)
			}
		}
		return out
	}
	seen := make(map[string]bool, len(scope))
	for _, tok := range scope {
		if !seen[tok] {
			seen[tok] = true
			out = append(out, tok)
		}
	}
	return out
}

// isScopeToken reports whether s is an RFC 6749 §3.3 scope-token:
// 1*( %x21 / %x23-5B / %x5D-7E ).
func isScopeToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x21 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// metaBytes is the size of metadata as MaxMetaBytes counts it.
func metaBytes(m map[string]string) int {
	n := 0
	for k, v := range m {
		n += len(k) + len(v)
	}
	return n
}

// textMap copies m with every key and value made text (isText): invalid
// UTF-8 and NUL become U+FFFD, as a JSON column would store them anyway,
// so that metadata taken from requests (a user agent) is the same in
// every store and never makes one fail.
func textMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	clean := func(s string) string {
		if isText(s) {
			return s
		}
		return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[clean(k)] = clean(v)
	}
	return out
}

// limitSessions revokes the least recently used live sessions of s's
// subject beyond Config.MaxSessions, never s itself. A store failure is
// returned, and Issue fails closed: s's tokens are never handed out, so s
// goes idle unused.
func (iss *Issuer) limitSessions(ctx context.Context, s *Session, now time.Time) error {
	all, err := iss.sessionsOf(ctx, s.Subject)
	if err != nil {
		return storeErr("sessions", err)
	}
	var others []*Session
	for _, o := range all {
		if o.ID != s.ID && iss.live(o, now) {
			others = append(others, o)
		}
	}
	excess := len(others) + 1 - iss.cfg.MaxSessions
	if excess <= 0 {
		return nil
	}
	// Least recently used first; ties broken by age, then id, so that
	// every instance would pick the same ones.
	slices.SortFunc(others, func(a, b *Session) int {
		if c := a.RotatedAt.Compare(b.RotatedAt); c != 0 {
			return c
		}
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	for _, o := range others[:excess] {
		if err := iss.revoke(ctx, o, "session-limit"); err != nil && !errors.Is(err, ErrSessionNotFound) {
			return err
		}
	}
	return nil
}

// pair mints the access token and the refresh token of s's current
// generation into dst and returns dst; check is the session's check under
// the minting key, or nil to compute it, and bound its binding. The Pair's
// Scope is a copy of scope: the caller may change it, and scope is often
// the slice the Issuer's cache of sessions holds (TestVuln14_PairScopeShared).
func (iss *Issuer) pair(dst *Pair, s *Session, sid []byte, check *[checkLen]byte, bound *[sha256.Size]byte, scope []string, claims []byte, now time.Time) (*Pair, error) {
	if check == nil {
		c := iss.mintKey.check(sid)
		check = &c
	}
	at, atExp, err := iss.signAccess(&accessInput{
		subject: s.Subject, clientID: s.ClientID, sessionID: s.ID, scope: scope, claims: claims, jkt: s.DPoPKey,
		authTime: s.CreatedAt, sessionEnd: s.ExpiresAt,
	}, now)
	if err != nil {
		return nil, err
	}
	rtExp := s.RotatedAt.Add(iss.cfg.IdleTTL)
	if s.ExpiresAt.Before(rtExp) {
		rtExp = s.ExpiresAt
	}
	typ := "Bearer"
	if s.DPoPKey != "" {
		typ = "DPoP"
	}
	*dst = Pair{
		AccessToken:      at,
		TokenType:        typ,
		AccessExpiresAt:  atExp,
		RefreshToken:     iss.mintKey.mint(sid, check, s.Generation, bound),
		RefreshExpiresAt: rtExp,
		SessionID:        s.ID,
		Subject:          s.Subject,
		Scope:            slices.Clone(scope),
	}
	return dst, nil
}

// usable reports why s cannot be refreshed now by this request, if at all.
func (iss *Issuer) usable(s *Session, now time.Time, o *callOptions) error {
	switch {
	case s.Revoked():
		return tokenErr(ErrRevoked, "session revoked")
	case ended(s, now):
		return tokenErr(ErrExpired, "session lifetime over")
	case !now.Before(s.RotatedAt.Add(iss.cfg.IdleTTL)):
		return tokenErr(ErrExpired, "session idle too long")
	}
	return checkBindings(s, o)
}

// ended reports whether s's absolute lifetime is over for refreshing at
// now: from the whole second its end falls in. An access token's exp is in
// whole seconds and never past its session's end, so one minted in that
// last fraction of a second would be expired when issued; a refresh there
// is refused as at the end rather than answered with a dead token and
// expires_in 0, which clients such as x/oauth2 read as "never expires".
// At an end on a whole second (every session whose clock and SessionTTL
// are), that is the end itself.
func ended(s *Session, now time.Time) bool {
	return !now.Before(time.Unix(s.ExpiresAt.Unix(), 0))
}

// live reports whether s can still be refreshed by its own client: not
// revoked, not expired. Sessions lists these.
func (iss *Issuer) live(s *Session, now time.Time) bool {
	own := callOptions{clientID: s.ClientID, dpop: s.DPoPKey}
	return iss.usable(s, now, &own) == nil
}

// checkBindings refuses a request that is not from the client, or has no
// proof from the DPoP key, that the session is bound to.
func checkBindings(s *Session, o *callOptions) error {
	switch {
	case s.ClientID != "" && o.clientID != s.ClientID:
		return tokenErr(ErrInvalidToken, "session bound to another client")
	case s.DPoPKey != "" && o.dpop != s.DPoPKey:
		return tokenErr(ErrInvalidToken, "session bound to another DPoP key")
	}
	return nil
}

// consumeProof consumes the request's DPoP proof if it is from the key the
// session is bound to; the caller has verified the session's token.
func (iss *Issuer) consumeProof(ctx context.Context, s *Session, o *callOptions) error {
	if o.proof == nil || s.DPoPKey == "" || o.proof.Thumbprint != s.DPoPKey {
		return nil // no proof, an unbound session, or refused by checkBindings
	}
	return iss.rs.consumeDPoP(ctx, o.proof)
}

// maxRaces bounds how often one Rotate re-reads a session after losing a
// compare-and-swap; each loss means another request made progress.
const maxRaces = 8

// rotateActive is the one-round-trip rotation (see frozenCache). It reports
// done=false, having changed nothing, when the slow path must decide: the
// session is not known locally, or the store refused the swap (an older
// token, a revoked or idle session, a lost race, a swept session), so that
// grace, reuse, expiry and their events stay in one place.
func (iss *Issuer) rotateActive(ctx context.Context, dst *Pair, rc *refreshClaims, o *callOptions) (p *Pair, err error, done bool) {
	f := iss.frozen.get(&rc.sid)
	if f == nil {
		return nil, nil, false
	}
	check := f.check // under the minting key
	if rc.key != iss.mintKey {
		check = rc.key.check(rc.sid[:]) // a token minted under an older key
	}
	if !hmac.Equal(check[:], rc.check[:]) {
		return nil, tokenErr(ErrInvalidToken, "bad refresh token check"), true
	}
	want := rc.key.tag(rc.sid[:], rc.gen, &f.binding)
	if !hmac.Equal(want[:], rc.tag[:]) {
		return nil, tokenErr(ErrInvalidToken, "bad refresh token MAC"), true
	}
	now := iss.now()
	s := f.Session
	s.Generation = rc.gen
	if ended(&s, now) {
		return nil, nil, false // the slow path reports it, with its event
	}
	if err := checkBindings(&s, o); err != nil {
		return nil, err, true
	}
	if err := iss.consumeProof(ctx, &s, o); err != nil {
		return nil, err, true
	}
	o.proof = nil // consumed: the slow path must not consume it again
	scope, claims, err := iss.prepare(ctx, &s, o, now)
	if err != nil {
		return nil, err, true
	}
	err = iss.settle(ctx, iss.active.AdvanceActive(ctx, s.ID, rc.gen, now, now.Add(-iss.cfg.IdleTTL)), s.ID, rc.gen, now)
	switch {
	case err == nil:
		s.Generation, s.RotatedAt = rc.gen+1, now
		iss.emit(ctx, Event{Kind: EventRotated, Time: now, SessionID: s.ID, Subject: s.Subject, ClientID: s.ClientID, Generation: rc.gen})
		p, err := iss.pair(dst, &s, rc.sid[:], &f.check, &f.binding, scope, claims, now)
		return p, err, true
	case errors.Is(err, ErrConflict), errors.Is(err, ErrSessionNotFound):
		return nil, nil, false
	default:
		return nil, storeErr("update", err), true
	}
}

// settle returns err, the answer of a swap of session id from generation
// from made at at, or nil when err is a fault and the swap took effect all
// the same: a database that committed the update and lost its reply (a
// connection reset after the commit). The session is then live at from+1
// with RotatedAt exactly at. Without this look the rotation would answer
// 503 although it happened, and the client's retry with its token, now
// rotated, would be reuse and end the session. It costs one Get, on a fault
// only, and none once ctx has ended. The one way it could take another's
// swap for its own is a concurrent rotation of the same token that
// succeeded at the very same nanosecond, and that one hands out the same
// successor.
func (iss *Issuer) settle(ctx context.Context, err error, id string, from uint64, at time.Time) error {
	if err == nil || errors.Is(err, ErrConflict) || errors.Is(err, ErrSessionNotFound) || ctx.Err() != nil {
		return err
	}
	if s, gerr := iss.getSession(ctx, id); gerr == nil && s.Generation == from+1 && s.RotatedAt.Equal(at) && !s.Revoked() {
		return nil
	}
	return err
}

// Rotate exchanges a refresh token for a new pair. The rules (DESIGN.md,
// "Rotation, reuse and the grace window"):
//
//   - a malformed or forged token, or one of a session bound to another
//     client (see WithClientID), is ErrInvalidToken and changes nothing;
//   - a revoked session is ErrRevoked; an expired one (idle or absolute)
//     ErrExpired;
//   - the current token advances the session by one generation (an atomic
//     compare-and-swap in the store) and returns its successor;
//   - the previous token, presented within Config.Grace of the rotation
//     (on either side of its time: clocks differ), returns the same
//     successor: racing tabs and clients that lost a response are not
//     logged out, however many there are. With
//     Config.MaxGraceUses set, retries past it are ErrInvalidToken and
//     revoke nothing;
//   - any other earlier token is reuse: the session (only this one) is
//     revoked and Rotate returns ErrReused.
//
// WithScope narrows the scope of the new access token (ErrInvalidScope if it
// is not a subset); WithClientID names the presenting client. Config.OnRefresh
// may refuse or reload claims. Rotate is safe for concurrent use.
func (iss *Issuer) Rotate(ctx context.Context, refreshToken string, opts ...Option) (*Pair, error) {
	// Small enough to be inlined: a caller that does not keep the Pair (a
	// handler that writes it out, a client that keeps only the tokens) has
	// it on its own stack, and a rotation allocates only what it hands out.
	var p Pair
	return iss.rotate(ctx, &p, refreshToken, opts)
}

// rotate is Rotate, minting into dst: it returns dst, or nil and an error.
// It keeps no reference to dst.
func (iss *Issuer) rotate(ctx context.Context, dst *Pair, refreshToken string, opts []Option) (*Pair, error) {
	o := collect(opts)
	if iss.active != nil {
		rc, err := iss.parseRefresh(refreshToken)
		if err != nil {
			return nil, err
		}
		if p, err, done := iss.rotateActive(ctx, dst, &rc, &o); done {
			return p, err
		}
	}
	rc, s, err := iss.verifyRefresh(ctx, refreshToken)
	if err != nil {
		return nil, err
	}
	if err := iss.consumeProof(ctx, s, &o); err != nil {
		return nil, err
	}
	var check *[checkLen]byte // verified; the successor's too if the key still mints
	if rc.key == iss.mintKey {
		check = &rc.check
	}
	now := iss.now()
	for race := 0; ; race++ {
		if err := iss.usable(s, now, &o); err != nil {
			if errors.Is(err, ErrExpired) {
				iss.emit(ctx, Event{Kind: EventExpired, Time: now, SessionID: s.ID, Subject: s.Subject, ClientID: s.ClientID, Generation: rc.gen})
			}
			return nil, err
		}
		if race >= maxRaces {
			return nil, fmt.Errorf("refresh: rotate: gave up after %d concurrent modifications", race)
		}
		head := s.Generation
		grace := rc.gen+1 == head && iss.cfg.Grace > 0 && withinGrace(now.Sub(s.RotatedAt), iss.cfg.Grace)
		if rc.gen != head && !grace {
			return nil, iss.reuse(ctx, s, rc.gen, now)
		}
		scope, claims, err := iss.prepare(ctx, s, &o, now)
		if err != nil {
			return nil, err
		}
		if rc.gen == head {
			err = iss.settle(ctx, iss.store.Advance(ctx, s.ID, head, now), s.ID, head, now)
			if err == nil {
				s.Generation, s.RotatedAt, s.GraceUses = head+1, now, 0
				iss.emit(ctx, Event{Kind: EventRotated, Time: now, SessionID: s.ID, Subject: s.Subject, ClientID: s.ClientID, Generation: rc.gen})
				return iss.pair(dst, s, rc.sid[:], check, &rc.binding, scope, claims, now)
			}
		} else {
			if iss.maxGrace > 0 {
				err = iss.store.UseGrace(ctx, s.ID, head, iss.maxGrace)
			}
			if err == nil {
				iss.emit(ctx, Event{Kind: EventGrace, Time: now, SessionID: s.ID, Subject: s.Subject, ClientID: s.ClientID, Generation: rc.gen})
				return iss.pair(dst, s, rc.sid[:], check, &rc.binding, scope, claims, now)
			}
		}
		if errors.Is(err, ErrSessionNotFound) { // swept meanwhile
			return nil, tokenErr(ErrInvalidToken, "unknown session")
		}
		if !errors.Is(err, ErrConflict) {
			return nil, storeErr("update", err)
		}
		// Someone else changed the session first: look again.
		fresh, err := iss.getSession(ctx, s.ID)
		if errors.Is(err, ErrSessionNotFound) {
			return nil, tokenErr(ErrInvalidToken, "unknown session")
		}
		if err != nil {
			return nil, storeErr("get", err)
		}
		if rc.gen != head && fresh.Generation == head && !fresh.Revoked() {
			// The grace retries of this rotation are used up. Refuse this
			// one, but do not revoke: it is still within the window.
			return nil, tokenErr(ErrInvalidToken, "grace retries of this rotation used up")
		}
		// Only what can change is taken from the second read: the rest is
		// what the token's tag verified (an edit in between must not be
		// minted from; TestVuln28_StoreWriterEscalates).
		s.Generation, s.RotatedAt, s.GraceUses = fresh.Generation, fresh.RotatedAt, fresh.GraceUses
		s.RevokedAt, s.RevokeReason = fresh.RevokedAt, fresh.RevokeReason
	}
}

// withinGrace reports whether a rotation made since ago (negative: later
// than now) is within a grace window of that length. Its time may be later
// than now because instances' clocks differ, by less than the window; by
// more, it is outside: a clock set wrong or a store that moves times (a
// zone dropped on the way in) must not keep the previous token good for
// hours, which is what a thief riding along needs.
func withinGrace(since, window time.Duration) bool {
	return since <= window && since >= -window
}

// prepare computes the scope and claims of the access token a refresh will
// mint, running Config.OnRefresh. It changes nothing.
func (iss *Issuer) prepare(ctx context.Context, s *Session, o *callOptions, now time.Time) ([]string, []byte, error) {
	scope := s.Scope
	if o.scopeSet {
		for _, sc := range o.scope {
			if !slices.Contains(s.Scope, sc) {
				return nil, nil, tokenErr(ErrInvalidScope, "requested scope not granted")
			}
		}
		scope = distinct(o.scope)
	}
	claims := s.Claims
	if iss.cfg.OnRefresh == nil {
		return scope, claims, nil
	}
	info := &RefreshInfo{
		SessionID: s.ID, Subject: s.Subject, ClientID: s.ClientID,
		Scope: slices.Clone(scope), Meta: maps.Clone(s.Meta),
	}
	if len(s.Claims) > 0 {
		if err := decodeJSONInto(s.Claims, &info.Claims); err != nil {
			return nil, nil, fmt.Errorf("refresh: stored claims: %w", err)
		}
	}
	if err := iss.cfg.OnRefresh(ctx, info); err != nil {
		iss.emit(ctx, Event{Kind: EventRejected, Time: now, SessionID: s.ID, Subject: s.Subject, ClientID: s.ClientID, Generation: s.Generation})
		return nil, nil, fmt.Errorf("%w: %w", ErrRefused, err)
	}
	claims, err := encodeClaims(info.Claims)
	if err != nil {
		// The hook's claims, not the client's request: the application's
		// fault, a system error (503 at the endpoint, which then keeps a
		// cookie it would clear for a dead token), and nothing changes.
		return nil, nil, fmt.Errorf("refresh: claims returned by OnRefresh: %v", err)
	}
	return scope, claims, nil
}

// reuse handles the presentation of a rotated refresh token: it revokes the
// session and returns ErrReused.
func (iss *Issuer) reuse(ctx context.Context, s *Session, gen uint64, now time.Time) error {
	if err := iss.store.Revoke(ctx, s.ID, now, "reuse"); err != nil && !errors.Is(err, ErrSessionNotFound) {
		return storeErr("revoke", err)
	}
	iss.sessCache.forget(s.ID)
	iss.emit(ctx, Event{Kind: EventReused, Time: now, SessionID: s.ID, Subject: s.Subject, ClientID: s.ClientID, Generation: gen, Reason: "reuse"})
	return tokenErr(ErrReused, "rotated refresh token presented again")
}

// Revoke ends the session of a refresh token (RFC 7009): its refresh tokens
// stop working at once, and so do its access tokens when
// Config.CheckSession is on. It honours the same bindings as Rotate: a
// malformed, forged or unknown token, the token of a session bound to a
// client (WithClientID at Issue) without the same WithClientID here, and the
// token of a DPoP-bound session without a proof from its key
// (WithDPoPProof) return an error wrapping ErrInvalidToken and revoke
// nothing. Revoking a revoked session is not an error.
func (iss *Issuer) Revoke(ctx context.Context, refreshToken string, opts ...Option) error {
	_, s, err := iss.verifyRefresh(ctx, refreshToken)
	if err != nil {
		return err
	}
	return iss.revokeBound(ctx, s, collect(opts))
}

// revokeBound revokes the session of a verified token if the request meets
// the session's client and DPoP bindings.
func (iss *Issuer) revokeBound(ctx context.Context, s *Session, o callOptions) error {
	if err := checkBindings(s, &o); err != nil {
		return err
	}
	if err := iss.consumeProof(ctx, s, &o); err != nil {
		return err
	}
	return iss.revoke(ctx, s, "revoked")
}

// revokeAccess ends the session of a valid access token, under the same
// bindings as Revoke. The token must also be bound to the proof's key if it
// names one (cnf.jkt).
func (iss *Issuer) revokeAccess(ctx context.Context, accessToken string, o callOptions) error {
	c, err := iss.rs.verifyAccess(accessToken)
	if err != nil {
		return err
	}
	if c.DPoPKey != "" && o.dpop != c.DPoPKey {
		return tokenErr(ErrInvalidToken, "access token bound to another DPoP key")
	}
	s, err := iss.getSession(ctx, c.SessionID)
	if errors.Is(err, ErrSessionNotFound) {
		return tokenErr(ErrInvalidToken, "unknown session")
	}
	if err != nil {
		return storeErr("get", err)
	}
	return iss.revokeBound(ctx, s, o)
}

// RevokeSession ends the session with the id (from Claims.SessionID or
// Sessions), for logout or an administrator. An unknown id returns
// ErrSessionNotFound. When the id comes from a user's request (a "sign out
// this device" button), use RevokeSessionOf, which also checks ownership.
// It is safe for concurrent use.
func (iss *Issuer) RevokeSession(ctx context.Context, id string) error {
	return iss.revokeID(ctx, id, "")
}

// RevokeSessionOf ends the session with the id only if it is a live session
// of subject, one that Sessions(subject) lists: the "sign out this device"
// button of a devices page, where the id arrives in the request and must
// not let one user end another's sessions. Any other id returns
// ErrSessionNotFound: another subject's session (subjects compared
// exactly), an unknown id, a session that has already ended, and any id
// with an empty subject, so the answer tells nothing about sessions the
// caller does not own. It is safe for concurrent use.
func (iss *Issuer) RevokeSessionOf(ctx context.Context, subject, id string) error {
	if subject == "" {
		return ErrSessionNotFound
	}
	return iss.revokeID(ctx, id, subject)
}

// revokeID revokes the session with the id, if owner is empty or its
// subject.
func (iss *Issuer) revokeID(ctx context.Context, id, owner string) error {
	if !isSessionID(id) {
		// Not an id Issue mints: no session has it, and the store is not
		// asked (Postgres would answer a NUL or invalid UTF-8 with an error).
		return ErrSessionNotFound
	}
	s, err := iss.getSession(ctx, id)
	if errors.Is(err, ErrSessionNotFound) {
		return err
	}
	if err != nil {
		return storeErr("get", err)
	}
	if owner != "" && (s.Subject != owner || !iss.live(s, iss.now())) {
		return ErrSessionNotFound
	}
	return iss.revoke(ctx, s, "revoked")
}

// isSessionID reports whether id has the form of the session ids Issue
// mints: 16 bytes in unpadded base64url.
func isSessionID(id string) bool {
	var b [sessionIDLen]byte
	return decodeB64Exact(b[:], id)
}

// revoke ends session s as read from the store. A session that was already
// revoked when read is left as it is, without a second event (a revocation
// is never undone, so the read cannot be stale in that direction).
func (iss *Issuer) revoke(ctx context.Context, s *Session, reason string) error {
	if s.Revoked() {
		iss.sessCache.forget(s.ID) // another instance revoked it: stop trusting a cached copy
		return nil
	}
	now := iss.now()
	err := iss.store.Revoke(ctx, s.ID, now, reason)
	if errors.Is(err, ErrSessionNotFound) {
		return err
	}
	if err != nil {
		return storeErr("revoke", err)
	}
	iss.sessCache.forget(s.ID)
	iss.emit(ctx, Event{Kind: EventRevoked, Time: now, SessionID: s.ID, Subject: s.Subject, ClientID: s.ClientID, Generation: s.Generation, Reason: reason})
	return nil
}

// RevokeSubject ends every session of the subject ("log out everywhere",
// password change) and returns how many were live. A subject no session
// can have (empty, not valid UTF-8, holding NUL, over 1024 bytes) is
// ErrInvalidRequest, and the store is not asked.
func (iss *Issuer) RevokeSubject(ctx context.Context, subject string) (int, error) {
	if err := checkSubject(subject); err != nil {
		return 0, err
	}
	now := iss.now()
	n, err := iss.store.RevokeSubject(ctx, subject, now, "revoked-all")
	if err != nil {
		return n, storeErr("revoke subject", err)
	}
	iss.sessCache.forget("")
	iss.emit(ctx, Event{Kind: EventRevoked, Time: now, Subject: subject, Reason: fmt.Sprintf("revoked-all: %d sessions", n)})
	return n, nil
}

// SessionInfo describes a live session, for a "your devices" page. It holds
// nothing secret and is a plain value owned by the caller.
type SessionInfo struct {
	ID         string            `json:"id"`
	ClientID   string            `json:"client_id,omitempty"`
	Scope      []string          `json:"scope,omitempty"`
	Meta       map[string]string `json:"meta,omitempty"`
	CreatedAt  time.Time         `json:"created_at"`   // the sign-in (Session.CreatedAt, auth_time)
	LastUsedAt time.Time         `json:"last_used_at"` // last rotation
	ExpiresAt  time.Time         `json:"expires_at"`   // the earlier of idle and absolute expiry
	// Generation counts the session's rotations: 0 until its first
	// refresh, then one more for each (grace retries do not count).
	Generation uint64 `json:"generation"`
}

// Sessions lists the subject's live sessions (not revoked, not expired),
// oldest first. Only sessions whose subject is exactly subject are listed,
// whatever the store returns (sessionsOf): a store that matched subjects
// loosely (a prefix, a case-insensitive collation) would otherwise show one
// user another's devices, their IP addresses and user agents. A subject no
// session can have is ErrInvalidRequest, as for RevokeSubject.
func (iss *Issuer) Sessions(ctx context.Context, subject string) ([]SessionInfo, error) {
	if err := checkSubject(subject); err != nil {
		return nil, err
	}
	all, err := iss.sessionsOf(ctx, subject)
	if err != nil {
		return nil, storeErr("sessions", err)
	}
	now := iss.now()
	out := []SessionInfo{}
	for _, s := range all {
		if !iss.live(s, now) {
			continue
		}
		exp := s.RotatedAt.Add(iss.cfg.IdleTTL)
		if s.ExpiresAt.Before(exp) {
			exp = s.ExpiresAt
		}
		out = append(out, SessionInfo{
			ID: s.ID, ClientID: s.ClientID, Scope: s.Scope, Meta: s.Meta,
			CreatedAt: s.CreatedAt, LastUsedAt: s.RotatedAt, ExpiresAt: exp,
			Generation: s.Generation,
		})
	}
	return out, nil
}

// Sweep deletes from the store, in batches of batch (default 1000), the
// sessions that can never be used again, and returns how many it deleted:
// those past their absolute lifetime and, with a Store that is a
// StaleDeleter (every shipped store), also those idle past IdleTTL and
// those revoked longer than RevokedRetention ago. With a Store that is a ProofRecorder it also
// removes expired DPoP proof records (not counted). Run it periodically
// (every few minutes) so tables stay bounded by the sessions actually in use.
// One call makes at most MaxSweepBatches calls of each kind and stops early
// when ctx ends, so that a store that keeps reporting full batches (a bug
// that reports rows it did not delete) cannot keep it looping; the next call
// goes on where it stopped.
func (iss *Issuer) Sweep(ctx context.Context, batch int) (int, error) {
	if batch <= 0 {
		batch = 1000
	}
	now := iss.now()
	del := func() (int, error) { return iss.store.DeleteExpired(ctx, now, batch) }
	if sd, ok := iss.store.(StaleDeleter); ok {
		idleBy := now.Add(-iss.cfg.IdleTTL)
		revokedBy := time.Time{} // matches no revocation
		if iss.cfg.RevokedRetention > 0 {
			revokedBy = now.Add(-iss.cfg.RevokedRetention)
		}
		del = func() (int, error) { return sd.DeleteStale(ctx, now, idleBy, revokedBy, batch) }
	}
	total, err := drain(ctx, batch, "delete expired", del)
	if err != nil {
		return total, err
	}
	// Expired DPoP proof records too, not counted: they are not sessions.
	if pr := iss.rs.proofs; pr != nil {
		_, err = drain(ctx, batch, "delete expired proofs", func() (int, error) { return pr.DeleteExpiredProofs(ctx, now, batch) })
	}
	return total, err
}

// drain calls del until it reports fewer than batch deletions, at most
// MaxSweepBatches times and not after ctx ends, and returns the total.
func drain(ctx context.Context, batch int, what string, del func() (int, error)) (int, error) {
	total := 0
	for i := 0; i < MaxSweepBatches; i++ {
		if err := ctx.Err(); err != nil {
			return total, storeErr(what, err)
		}
		n, err := del()
		total += n
		if err != nil {
			return total, storeErr(what, err)
		}
		if n < batch {
			break
		}
	}
	return total, nil
}

// MaxSweepBatches bounds the store calls of one Issuer.Sweep: at the default
// batch of 1,000, a million sessions a call.
const MaxSweepBatches = 1000
