// Package redisstore is a refresh.Store on Redis (7 or later), through
// go-redis. Several instances of a service can share it.
//
//	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
//	store := redisstore.New(client)
//	iss, err := refresh.NewIssuer(refresh.Config{Store: store, …})
//
// # Keys
//
// With the default prefix "refresh:":
//
//	refresh:s:{<id>}       hash: one session
//	refresh:u:{<subject>}  set: the ids of a subject's sessions
//	refresh:exp            sorted set: ids scored by expiry (Unix seconds)
//	refresh:idle           sorted set: ids scored by a time at or before their last rotation
//	refresh:rev            sorted set: ids of revoked sessions scored by revocation time
//
// Every change to a session (Create, Advance, UseGrace, Revoke) is one Lua
// script on its own hash, loaded once and run by its SHA, so it is atomic
// and one round trip. Each session hash expires with the session's absolute
// lifetime (PEXPIREAT), so Redis forgets dead sessions by itself;
// DeleteExpired also removes them on demand, and DeleteStale removes idle
// and long-revoked ones (Issuer.Sweep calls it).
//
// # Redis Cluster
//
// The braces are hash tags: a session's hash lives in the slot of its id and
// a subject's set in the slot of the subject, so every script touches one
// key in one slot. What spans slots is not atomic, and need not be: Create
// adds the id to the subject's set before it creates the hash, so a crash
// between the two leaves only a dangling id, which readers skip and remove;
// RevokeSubject revokes each listed session atomically, one by one (a
// session created during the call may or may not be included, as with any
// store); DeleteExpired and DeleteStale re-check each candidate inside the
// session's own script before deleting it.
package redisstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/refreshkit/refresh"
)

// Store is a refresh.Store on Redis. It is safe for concurrent use by
// multiple goroutines and processes. It owns no goroutines; the client is
// the caller's to close.
type Store struct {
	rdb     redis.UniversalClient
	prefix  string
	noCheck bool        // WithoutEvictionCheck
	checked atomic.Bool // Check has passed
}

var (
	_ refresh.Store          = (*Store)(nil)
	_ refresh.ActiveAdvancer = (*Store)(nil)
	_ refresh.ProofRecorder  = (*Store)(nil)
	_ refresh.StaleDeleter   = (*Store)(nil)
)

// Option configures a Store.
type Option func(*Store)

// WithPrefix sets the prefix of every key (default "refresh:").
func WithPrefix(p string) Option { return func(s *Store) { s.prefix = p } }

// WithoutEvictionCheck turns off the Check that Create, RevokeSubject and
// RecordProof make before they first write. Use it only for a server
// whose ACL denies INFO, after checking its maxmemory-policy yourself.
func WithoutEvictionCheck() Option { return func(s *Store) { s.noCheck = true } }

// New returns a Store on rdb: a *redis.Client, *redis.ClusterClient or any
// redis.UniversalClient.
func New(rdb redis.UniversalClient, opts ...Option) *Store {
	s := &Store{rdb: rdb, prefix: "refresh:"}
	for _, o := range opts {
		o(s)
	}
	return s
}

// ErrEviction is returned by Check for a server that may evict keys.
var ErrEviction = errors.New("redisstore: maxmemory-policy is not noeviction: a full Redis would evict sessions, the subject sets RevokeSubject reads and DPoP replay records before they expire")

// Check verifies that the server keeps what the store writes until it
// expires: its maxmemory-policy must be noeviction, on every master of a
// Cluster. Under any other policy a Redis that reaches maxmemory evicts
// keys early (every key of this store but the expiry index has a TTL, so
// the volatile-* policies take them too): sessions (users signed out), the
// subject sets that RevokeSubject reads (a "log out everywhere" that misses
// sessions, which stay live) and DPoP replay records (a replayed proof
// accepted). That breaks the refresh.Store contract; with noeviction a full
// Redis refuses writes instead, and sign-ins and refreshes fail closed
// (503). The error wraps ErrEviction and names the policy, or is the
// server's error. It reads INFO memory, which managed services allow where
// CONFIG is not. Safe for concurrent use.
//
// Create, RevokeSubject and RecordProof run it themselves until it has
// passed once for this Store, and fail with its error until then: on a
// server that may evict, sign-ins, "log out everywhere" and DPoP-bound
// requests fail closed (503) rather than write what the server may lose,
// and the error says why. Calling it at start-up reports the problem
// before the first user meets it.
func (s *Store) Check(ctx context.Context) error {
	check := func(ctx context.Context, c *redis.Client) error {
		info, err := c.Info(ctx, "memory").Result()
		if err != nil {
			return wrap("check", err)
		}
		for _, line := range strings.Split(info, "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), "maxmemory_policy:"); ok {
				if v != "noeviction" {
					return fmt.Errorf("%w (%s on %s)", ErrEviction, v, c.Options().Addr)
				}
				return nil
			}
		}
		return wrap("check", fmt.Errorf("INFO memory from %s has no maxmemory_policy", c.Options().Addr))
	}
	switch c := s.rdb.(type) {
	case *redis.ClusterClient:
		return c.ForEachMaster(ctx, check)
	case *redis.Client:
		return check(ctx, c)
	}
	return wrap("check", fmt.Errorf("cannot check a %T: check maxmemory-policy yourself", s.rdb))
}

// checkOnce runs Check until it passes once (a failure is not kept: a
// server whose policy is fixed is accepted at the next call).
func (s *Store) checkOnce(ctx context.Context) error {
	if s.noCheck || s.checked.Load() {
		return nil
	}
	if err := s.Check(ctx); err != nil {
		return err
	}
	s.checked.Store(true)
	return nil
}

func (s *Store) sessionKey(id string) string  { return s.prefix + "s:{" + id + "}" }
func (s *Store) subjectKey(sub string) string { return s.prefix + "u:{" + sub + "}" }
func (s *Store) expiryKey() string            { return s.prefix + "exp" }
func (s *Store) idleKey() string              { return s.prefix + "idle" }
func (s *Store) revokedKey() string           { return s.prefix + "rev" }
func (s *Store) proofKey(id string) string    { return s.prefix + "p:{" + id + "}" }
func wrap(op string, err error) error         { return fmt.Errorf("redisstore: %s: %w", op, err) }
func ns(t time.Time) string {
	// Clamped to 1970..2262: 20 digits without a sign, so that string
	// order is time order inside the scripts.
	n := int64(0)
	switch {
	case t.After(maxTime):
		n = math.MaxInt64
	case t.After(epoch):
		n = t.UnixNano()
	}
	return fmt.Sprintf("%020d", n)
}

var (
	epoch   = time.Unix(0, 0)
	maxTime = time.Unix(0, math.MaxInt64)
)

func parseNs(v string) (time.Time, error) {
	n, err := strconv.ParseInt(v, 10, 64)
	return time.Unix(0, n).UTC(), err
}

// Scripts return -1 for a missing session, 0 for a refused change, 1 for a
// done one. Generations are compared as decimal strings (exact for uint64;
// Lua numbers are doubles).
var (
	createScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('PEXPIREAT', KEYS[1], ARGV[1])
return 1`)
	// ARGV[4], if given, is the time RotatedAt must be after (AdvanceActive);
	// times are 20-digit nanoseconds, so string order is time order.
	advanceScript = redis.NewScript(`
local v = redis.call('HMGET', KEYS[1], 'gen', 'revoked', 'rotated')
if not v[1] then return -1 end
if v[1] ~= ARGV[1] or v[2] then return 0 end
if ARGV[4] and not (v[3] > ARGV[4]) then return 0 end
redis.call('HSET', KEYS[1], 'gen', ARGV[2], 'rotated', ARGV[3], 'grace', '0')
return 1`)
	graceScript = redis.NewScript(`
local v = redis.call('HMGET', KEYS[1], 'gen', 'revoked', 'grace')
if not v[1] then return -1 end
if v[1] ~= ARGV[1] or v[2] or tonumber(v[3]) >= tonumber(ARGV[2]) then return 0 end
redis.call('HINCRBY', KEYS[1], 'grace', 1)
return 1`)
	// ARGV[3], if given, is the subject the session must belong to: 2 if
	// it does not.
	revokeScript = redis.NewScript(`
local v = redis.call('HMGET', KEYS[1], 'gen', 'revoked', 'sub')
if not v[1] then return -1 end
if v[2] then return 0 end
if ARGV[3] and v[3] ~= ARGV[3] then return 2 end
redis.call('HSET', KEYS[1], 'revoked', ARGV[1], 'reason', ARGV[2])
return 1`)
	// A DPoP proof record: refused (0) while its stored expiry (20-digit
	// nanoseconds) is after ARGV[1]; else set to expire at ARGV[2], with
	// the key's TTL at ARGV[3] milliseconds so that Redis drops it.
	proofScript = redis.NewScript(`
local e = redis.call('GET', KEYS[1])
if e and e > ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PXAT', ARGV[3])
return 1`)
)

// Create implements refresh.Store.
func (s *Store) Create(ctx context.Context, se *refresh.Session) error {
	if err := ctx.Err(); err != nil {
		return wrap("create", err)
	}
	if err := s.checkOnce(ctx); err != nil {
		return err
	}
	scope, err := json.Marshal(se.Scope)
	if err != nil {
		return wrap("create", err)
	}
	meta, err := json.Marshal(se.Meta)
	if err != nil {
		return wrap("create", err)
	}
	args := []any{se.ExpiresAt.UnixMilli(),
		"sub", se.Subject, "cid", se.ClientID, "jkt", se.DPoPKey, "gen", strconv.FormatUint(se.Generation, 10),
		"grace", strconv.FormatUint(uint64(se.GraceUses), 10), "seed", se.Seed,
		"scope", scope, "claims", se.Claims, "meta", meta,
		"created", ns(se.CreatedAt), "rotated", ns(se.RotatedAt), "expires", ns(se.ExpiresAt),
		"reason", se.RevokeReason,
	}
	if se.Revoked() {
		args = append(args, "revoked", ns(se.RevokedAt))
	}
	// The subject's set first: a crash after it leaves a dangling id, never
	// a session that RevokeSubject cannot find.
	sk := s.subjectKey(se.Subject)
	if err := s.rdb.SAdd(ctx, sk, se.ID).Err(); err != nil {
		return wrap("create", err)
	}
	if err := s.extendSubject(ctx, sk, se.ExpiresAt); err != nil {
		return wrap("create", err)
	}
	n, err := createScript.Run(ctx, s.rdb, []string{s.sessionKey(se.ID)}, args...).Int()
	if err != nil {
		return wrap("create", err)
	}
	if n == 0 {
		// Taken: undo the index entry, unless it is the owner's.
		if owner, err := s.rdb.HGet(ctx, s.sessionKey(se.ID), "sub").Result(); err == nil && owner != se.Subject {
			s.rdb.SRem(ctx, sk, se.ID)
		}
		return refresh.ErrSessionExists
	}
	// The sweep's indexes last, in one round trip: a session missing from
	// them still expires by its key's TTL.
	if _, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.ZAdd(ctx, s.expiryKey(), redis.Z{Score: float64(se.ExpiresAt.Unix()), Member: se.ID})
		p.ZAdd(ctx, s.idleKey(), redis.Z{Score: float64(se.RotatedAt.Unix()), Member: se.ID})
		if se.Revoked() {
			p.ZAdd(ctx, s.revokedKey(), redis.Z{Score: float64(se.RevokedAt.Unix()), Member: se.ID})
		}
		return nil
	}); err != nil {
		return wrap("create", err)
	}
	return nil
}

// extendSubject keeps a subject's set alive as long as its longest session.
var extendScript = redis.NewScript(`
local t = redis.call('PEXPIRETIME', KEYS[1])
if t == -1 or (t >= 0 and t < tonumber(ARGV[1])) then redis.call('PEXPIREAT', KEYS[1], ARGV[1]) end
return 1`)

func (s *Store) extendSubject(ctx context.Context, key string, until time.Time) error {
	return extendScript.Run(ctx, s.rdb, []string{key}, until.UnixMilli()).Err()
}

func decode(id string, m map[string]string) (*refresh.Session, error) {
	se := &refresh.Session{ID: id, Subject: m["sub"], ClientID: m["cid"], DPoPKey: m["jkt"], RevokeReason: m["reason"]}
	var err error
	if se.Generation, err = strconv.ParseUint(m["gen"], 10, 64); err != nil {
		return nil, err
	}
	g, err := strconv.ParseUint(m["grace"], 10, 32)
	if err != nil {
		return nil, err
	}
	se.GraceUses = uint32(g)
	se.Seed = []byte(m["seed"])
	if err := json.Unmarshal([]byte(m["scope"]), &se.Scope); err != nil {
		return nil, err
	}
	if c := m["claims"]; c != "" {
		se.Claims = []byte(c)
	}
	if err := json.Unmarshal([]byte(m["meta"]), &se.Meta); err != nil {
		return nil, err
	}
	for f, dst := range map[string]*time.Time{"created": &se.CreatedAt, "rotated": &se.RotatedAt, "expires": &se.ExpiresAt} {
		if *dst, err = parseNs(m[f]); err != nil {
			return nil, err
		}
	}
	if r, ok := m["revoked"]; ok {
		if se.RevokedAt, err = parseNs(r); err != nil {
			return nil, err
		}
	}
	return se, nil
}

// Get implements refresh.Store.
func (s *Store) Get(ctx context.Context, id string) (*refresh.Session, error) {
	m, err := s.rdb.HGetAll(ctx, s.sessionKey(id)).Result()
	if err != nil {
		return nil, wrap("get", err)
	}
	if len(m) == 0 {
		return nil, refresh.ErrSessionNotFound
	}
	se, err := decode(id, m)
	if err != nil {
		return nil, wrap("get: corrupt session", err)
	}
	return se, nil
}

func (s *Store) run(ctx context.Context, op string, sc *redis.Script, id string, args ...any) error {
	n, err := sc.Run(ctx, s.rdb, []string{s.sessionKey(id)}, args...).Int()
	switch {
	case err != nil:
		return wrap(op, err)
	case n < 0:
		return refresh.ErrSessionNotFound
	case n == 0:
		return refresh.ErrConflict
	}
	return nil
}

// Advance implements refresh.Store: one script, one round trip.
func (s *Store) Advance(ctx context.Context, id string, from uint64, at time.Time) error {
	if from == ^uint64(0) {
		return s.run(ctx, "advance", advanceScript, id, "none", "0", ns(at))
	}
	return s.run(ctx, "advance", advanceScript, id,
		strconv.FormatUint(from, 10), strconv.FormatUint(from+1, 10), ns(at))
}

// AdvanceActive implements refresh.ActiveAdvancer: one script, so that a
// rotation costs one round trip.
func (s *Store) AdvanceActive(ctx context.Context, id string, from uint64, at, activeAfter time.Time) error {
	if from == ^uint64(0) {
		return s.run(ctx, "advance", advanceScript, id, "none", "0", ns(at), ns(activeAfter))
	}
	return s.run(ctx, "advance", advanceScript, id,
		strconv.FormatUint(from, 10), strconv.FormatUint(from+1, 10), ns(at), ns(activeAfter))
}

// UseGrace implements refresh.Store: one script, one round trip.
func (s *Store) UseGrace(ctx context.Context, id string, generation uint64, limit uint32) error {
	return s.run(ctx, "use grace", graceScript, id, strconv.FormatUint(generation, 10), limit)
}

// Revoke implements refresh.Store: the script and the revocation index's
// entry in one round trip (reuse detection revokes on the refresh path).
// The entry is written whatever the script finds (ZADD LT keeps an
// earlier revocation's time), and taken out again, a second round trip,
// when there was no session to revoke.
func (s *Store) Revoke(ctx context.Context, id string, at time.Time, reason string) error {
	var cmd *redis.Cmd
	if _, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		cmd = revokeScript.Eval(ctx, p, []string{s.sessionKey(id)}, ns(at), reason)
		p.ZAddLT(ctx, s.revokedKey(), redis.Z{Score: float64(at.Unix()), Member: id})
		return nil
	}); err != nil {
		return wrap("revoke", err)
	}
	n, err := cmd.Int()
	if err != nil {
		return wrap("revoke", err)
	}
	if n < 0 {
		s.rdb.ZRem(ctx, s.revokedKey(), id)
		return refresh.ErrSessionNotFound
	}
	return nil // revoked, or revoked already
}

// RevokeSubject implements refresh.Store: each session of the subject is
// revoked by its own atomic script, in one pipelined round trip.
func (s *Store) RevokeSubject(ctx context.Context, subject string, at time.Time, reason string) (int, error) {
	if err := s.checkOnce(ctx); err != nil {
		return 0, err
	}
	ids, err := s.rdb.SMembers(ctx, s.subjectKey(subject)).Result()
	if err != nil {
		return 0, wrap("revoke subject", err)
	}
	if len(ids) == 0 {
		return 0, nil
	}
	// Make sure the scripts are loaded: EvalSha in a pipeline cannot fall
	// back to EVAL on NOSCRIPT.
	if err := revokeScript.Load(ctx, s.rdb).Err(); err != nil {
		return 0, wrap("revoke subject", err)
	}
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.Cmd, len(ids))
	score := float64(at.Unix())
	for i, id := range ids {
		cmds[i] = revokeScript.EvalSha(ctx, pipe, []string{s.sessionKey(id)}, ns(at), reason, subject)
		pipe.ZAddLT(ctx, s.revokedKey(), redis.Z{Score: score, Member: id})
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return 0, wrap("revoke subject", err)
	}
	n := 0
	var gone, foreign []any
	for i, c := range cmds {
		switch v, err := c.Int(); {
		case err != nil:
		case v == 1:
			n++
		case v == -1: // dropped by Redis at its TTL: a dangling id
			gone = append(gone, ids[i])
		case v == 2:
			foreign = append(foreign, ids[i])
		}
	}
	// Entries of the revocation index for sessions not revoked go again,
	// and so do the ids of sessions that are gone from the subject's set.
	if len(gone)+len(foreign) > 0 {
		_, _ = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			p.ZRem(ctx, s.revokedKey(), append(gone, foreign...)...)
			if len(gone) > 0 {
				p.SRem(ctx, s.subjectKey(subject), gone...)
			}
			return nil
		})
	}
	return n, nil
}

// Sessions implements refresh.Store: the subject's set, then every hash in
// one pipelined round trip. Ids whose hash is gone (expired) are dropped
// from the set.
func (s *Store) Sessions(ctx context.Context, subject string) ([]*refresh.Session, error) {
	sk := s.subjectKey(subject)
	ids, err := s.rdb.SMembers(ctx, sk).Result()
	if err != nil {
		return nil, wrap("sessions", err)
	}
	out := []*refresh.Session{}
	if len(ids) == 0 {
		return out, nil
	}
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.MapStringStringCmd, len(ids))
	for i, id := range ids {
		cmds[i] = pipe.HGetAll(ctx, s.sessionKey(id))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, wrap("sessions", err)
	}
	var gone []any
	for i, c := range cmds {
		m := c.Val()
		if len(m) == 0 {
			gone = append(gone, ids[i])
			continue
		}
		if m["sub"] != subject {
			continue
		}
		se, err := decode(ids[i], m)
		if err != nil {
			return nil, wrap("sessions: corrupt session", err)
		}
		out = append(out, se)
	}
	if len(gone) > 0 {
		s.rdb.SRem(ctx, sk, gone...)
	}
	refresh.SortSessions(out)
	return out, nil
}

// RecordProof implements refresh.ProofRecorder: one script on one key
// (hash-tagged by the id, so Cluster-safe), which also carries the key's
// TTL, so expired records vanish by themselves.
func (s *Store) RecordProof(ctx context.Context, id string, now, expires time.Time) error {
	if err := ctx.Err(); err != nil {
		return wrap("record proof", err)
	}
	if err := s.checkOnce(ctx); err != nil {
		return err
	}
	// The TTL rounds up to the next millisecond: never before the expiry.
	ms := expires.Add(time.Millisecond - 1).UnixMilli()
	n, err := proofScript.Run(ctx, s.rdb, []string{s.proofKey(id)}, ns(now), ns(expires), ms).Int()
	if err != nil {
		return wrap("record proof", err)
	}
	if n == 0 {
		return refresh.ErrProofReplayed
	}
	return nil
}

// DeleteExpiredProofs implements refresh.ProofRecorder. Redis drops proof
// records at their expiry by itself, so there is nothing to sweep.
func (s *Store) DeleteExpiredProofs(ctx context.Context, before time.Time, limit int) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, wrap("delete expired proofs", err)
	}
	return 0, nil
}
