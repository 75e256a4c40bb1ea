package redisstore

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// DeleteExpired implements refresh.Store: the sweep below with the expiry
// rule only.
func (s *Store) DeleteExpired(ctx context.Context, before time.Time, limit int) (int, error) {
	return s.sweep(ctx, "delete expired", before, time.Time{}, time.Time{}, limit)
}

// DeleteStale implements refresh.StaleDeleter: through the expiry index
// first, then the index of rotation times (sessions idle since idleBy),
// then that of revocation times (revoked by revokedBy; no rule when it is
// zero).
//
// A rotation never touches the rotation index: it changes only the
// session's hash, in one round trip. So the index holds a time at or
// before the session's last rotation, and the sweep re-reads each
// candidate, deletes it only if its hash matches a rule (in a script, so a
// session rotated meanwhile stays) and otherwise moves it to its real
// time. A session in daily use is moved about once per IdleTTL.
func (s *Store) DeleteStale(ctx context.Context, expiredBy, idleBy, revokedBy time.Time, limit int) (int, error) {
	return s.sweep(ctx, "delete stale", expiredBy, idleBy, revokedBy, limit)
}

// sweepPage bounds the candidates one claim takes from an index.
const sweepPage = 1000

var (
	// Takes up to ARGV[2] members scored at most ARGV[1] out of the index
	// KEYS[1], and returns them with their scores: a candidate belongs to
	// one sweeper, so concurrent sweeps never work on, or count, the same
	// entry. The sweep puts back every candidate it keeps.
	claimScript = redis.NewScript(`
local m = redis.call('ZRANGE', KEYS[1], '-inf', ARGV[1], 'BYSCORE', 'LIMIT', 0, ARGV[2], 'WITHSCORES')
for i = 1, #m, 2 do redis.call('ZREM', KEYS[1], m[i]) end
return m`)
	// Deletes the session if it matches a rule: expiry at or before
	// ARGV[1], last rotation at or before ARGV[2], revocation at or before
	// ARGV[3]; an empty cut-off is no rule. Times are 20-digit nanoseconds,
	// so string order is time order. Returns -1 for a missing session,
	// {1, subject} for a deleted one (the caller updates the subject's set,
	// in another slot), {0, expires, rotated, revoked or ''} for one kept.
	deleteScript = redis.NewScript(`
local v = redis.call('HMGET', KEYS[1], 'expires', 'sub', 'rotated', 'revoked')
if not v[1] then return -1 end
if v[1] <= ARGV[1] or (ARGV[2] ~= '' and v[3] <= ARGV[2]) or (ARGV[3] ~= '' and v[4] and v[4] <= ARGV[3]) then
  redis.call('DEL', KEYS[1])
  return {1, v[2] or ''}
end
return {0, v[1], v[3], v[4] or ''}`)
)

// The fields of a session a sweep compares, as 20-digit nanoseconds.
const (
	fieldExpires = iota
	fieldRotated
	fieldRevoked
)

// cutoff is a sweep rule's time as the scripts compare it: "" (no rule)
// for the zero time and anything before 1970, which no stored time is at
// or before.
func cutoff(t time.Time) string {
	if t.Before(epoch) {
		return ""
	}
	return ns(t)
}

// sweep removes at most limit sessions matching a rule (see deleteScript)
// and returns how many. It walks an index per rule: expiry, rotation,
// revocation. A session counts when this call took its entry out of the
// expiry index, which exactly one sweeper does, whether the session was
// deleted by its script or already dropped by Redis at its TTL (its id
// left in the index): concurrent sweeps count each session once, and the
// ids Redis left count against limit, so a call's deletions and trims are
// bounded by it. What a call moves (sessions rotated since their entry was
// written) is not, and need not be: each session is moved at most once per
// IdleTTL, in pages of at most sweepPage.
func (s *Store) sweep(ctx context.Context, op string, expiredBy, idleBy, revokedBy time.Time, limit int) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, wrap(op, err)
	}
	if limit <= 0 {
		return 0, nil
	}
	w := &sweeper{s: s, cuts: [3]string{cutoff(expiredBy), cutoff(idleBy), cutoff(revokedBy)}, limit: limit, hold: map[string][]redis.Z{}}
	passes := []struct {
		index string
		cut   time.Time
		field int
	}{
		{s.expiryKey(), expiredBy, fieldExpires},
		{s.idleKey(), idleBy, fieldRotated},
		{s.revokedKey(), revokedBy, fieldRevoked},
	}
	var err error
	for _, p := range passes {
		if w.cuts[p.field] == "" {
			continue
		}
		if err = w.run(ctx, p.index, p.cut, p.field); err != nil {
			break
		}
	}
	// Candidates kept in range go back only now, so that this call does not
	// take them again; also after a failure, and after ctx has ended.
	if perr := w.putBack(context.WithoutCancel(ctx)); err == nil {
		err = perr
	}
	if err != nil {
		return w.removed, wrap(op, err)
	}
	return w.removed, nil
}

type sweeper struct {
	s       *Store
	cuts    [3]string // deleteScript's cut-offs, by field
	limit   int
	removed int
	hold    map[string][]redis.Z // kept candidates still in range, by index
}

type candidate struct {
	id    string
	score float64
}

// run walks one index until limit sessions are removed or no candidate is
// left in range (scored at or before cut's second).
func (w *sweeper) run(ctx context.Context, index string, cut time.Time, field int) error {
	max := strconv.FormatInt(cut.Unix(), 10)
	for w.removed < w.limit {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := w.limit - w.removed
		if field != fieldExpires {
			// These indexes may hold many sessions that only need moving:
			// a page as small as the budget left would cost a round trip
			// for each of them.
			n = w.limit
		}
		raw, err := claimScript.Run(ctx, w.s.rdb, []string{index}, max, min(n, sweepPage)).StringSlice()
		if err != nil {
			return err
		}
		if len(raw) == 0 {
			return nil
		}
		cands := make([]candidate, 0, len(raw)/2)
		for i := 0; i+1 < len(raw); i += 2 {
			f, _ := strconv.ParseFloat(raw[i+1], 64)
			cands = append(cands, candidate{raw[i], f})
		}
		if err := w.page(ctx, index, float64(cut.Unix()), field, cands); err != nil {
			return err
		}
	}
	return nil
}

// matches reports whether a session's times match a rule of the sweep, as
// deleteScript decides it.
func (w *sweeper) matches(t [3]string) bool {
	return t[fieldExpires] <= w.cuts[fieldExpires] ||
		w.cuts[fieldRotated] != "" && t[fieldRotated] <= w.cuts[fieldRotated] ||
		w.cuts[fieldRevoked] != "" && t[fieldRevoked] != "" && t[fieldRevoked] <= w.cuts[fieldRevoked]
}

// page handles the candidates one claim took out of index: deletes those
// that match a rule, within the budget, and puts the others back, scored by
// their real time (field). Three round trips on the expiry index, four on
// the others (a read first).
func (w *sweeper) page(ctx context.Context, index string, maxSec float64, field int, cands []candidate) error {
	var now []redis.Z // back into index at once: scored past the cut
	keep := func(id string, score float64) {
		if score > maxSec {
			now = append(now, redis.Z{Score: score, Member: id})
		} else { // still in range: after this call
			w.hold[index] = append(w.hold[index], redis.Z{Score: score, Member: id})
		}
	}
	// move puts a kept session back by its real time, or, out of the
	// revocation index, drops it if it is not revoked.
	move := func(id string, t [3]string) {
		if t[field] == "" {
			return
		}
		at, _ := parseNs(t[field]) // corrupt: 1970, a candidate again at the next sweep
		keep(id, float64(at.Unix()))
	}

	// Every candidate the expiry index gives is expired, but for the cut's
	// own second: each goes to the script. The other two may hold many
	// sessions only to move: read them first and send to the script only
	// as many matching ones as the budget allows.
	todo := cands
	if field != fieldExpires {
		reads := make([]*redis.SliceCmd, len(cands))
		if _, err := w.s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, c := range cands {
				reads[i] = p.HMGet(ctx, w.s.sessionKey(c.id), "expires", "rotated", "revoked")
			}
			return nil
		}); err != nil {
			for _, c := range cands {
				w.hold[index] = append(w.hold[index], redis.Z{Score: c.score, Member: c.id})
			}
			return err
		}
		todo = nil
		budget := w.limit - w.removed
		for i, c := range cands {
			t := strings3(reads[i].Val())
			switch {
			case t[fieldExpires] != "" && !w.matches(t):
				move(c.id, t)
			case len(todo) < budget: // matching, or gone
				todo = append(todo, c)
			default: // over budget: the next call
				keep(c.id, c.score)
			}
		}
	}

	cmds, firstErr := w.deleteAll(ctx, todo)
	var gone []any
	subjects := map[string][]any{}
	for i, c := range todo {
		switch v := cmds[i].Val().(type) {
		case int64:
			if v != -1 {
				keep(c.id, c.score)
				continue
			}
			gone = append(gone, c.id) // dropped by Redis at its TTL
		case []any:
			if len(v) == 2 { // deleted
				sub, _ := v[1].(string)
				subjects[sub] = append(subjects[sub], c.id)
				gone = append(gone, c.id)
				continue
			}
			if len(v) != 4 {
				keep(c.id, c.score)
				continue
			}
			t := strings3(v[1:])
			if t[field] == "" && field != fieldRevoked {
				keep(c.id, c.score)
				continue
			}
			move(c.id, t) // rotated since its entry was written
		default: // failed, or an answer not expected: back as it was
			keep(c.id, c.score)
		}
	}

	// The clean-up, one round trip: what is gone leaves every index and its
	// subject's set, and counts if this call took its expiry entry.
	var counted []*redis.IntCmd
	if _, err := w.s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		if len(gone) > 0 {
			if field != fieldExpires {
				counted = make([]*redis.IntCmd, len(gone))
				for i, id := range gone {
					counted[i] = p.ZRem(ctx, w.s.expiryKey(), id)
				}
			}
			for _, k := range []string{w.s.idleKey(), w.s.revokedKey()} {
				if k != index {
					p.ZRem(ctx, k, gone...)
				}
			}
		}
		for sub, ids := range subjects {
			p.SRem(ctx, w.s.subjectKey(sub), ids...)
		}
		if len(now) > 0 {
			p.ZAdd(ctx, index, now...)
		}
		return nil
	}); err != nil {
		// The sessions moved past the cut go back with the others at the
		// end of the call; what was deleted is gone either way.
		w.hold[index] = append(w.hold[index], now...)
		return err
	}
	if field == fieldExpires {
		w.removed += len(gone)
	} else {
		for _, c := range counted {
			w.removed += int(c.Val())
		}
	}
	return firstErr
}

// strings3 reads the three times of a session (expires, rotated,
// revoked) from a reply; a missing or nil one is "".
func strings3(v []any) (t [3]string) {
	for j := range min(len(v), 3) {
		t[j], _ = v[j].(string)
	}
	return t
}

// deleteAll runs deleteScript on each candidate, pipelined, by its SHA: a
// page's scripts do not carry the script's text each. Where the server
// does not know it (a restart, SCRIPT FLUSH), it is loaded and those run
// again. The error is the first that remains; the commands that ran are
// good either way.
func (w *sweeper) deleteAll(ctx context.Context, todo []candidate) ([]*redis.Cmd, error) {
	cmds := make([]*redis.Cmd, len(todo))
	if len(todo) == 0 {
		return cmds, nil
	}
	run := func(which []int) error {
		_, err := w.s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, i := range which {
				cmds[i] = deleteScript.EvalSha(ctx, p, []string{w.s.sessionKey(todo[i].id)}, w.cuts[0], w.cuts[1], w.cuts[2])
			}
			return nil
		})
		return err
	}
	all := make([]int, len(todo))
	for i := range all {
		all[i] = i
	}
	err := run(all)
	var again []int
	for i, c := range cmds {
		if redis.HasErrorPrefix(c.Err(), "NOSCRIPT") {
			again = append(again, i)
		}
	}
	if len(again) > 0 {
		if err := deleteScript.Load(ctx, w.s.rdb).Err(); err != nil {
			return cmds, err
		}
		err = run(again)
	}
	if err != nil && !errors.Is(err, redis.Nil) {
		return cmds, err
	}
	return cmds, nil
}

// putBack returns the kept candidates still in range to their indexes.
func (w *sweeper) putBack(ctx context.Context) error {
	if len(w.hold) == 0 {
		return nil
	}
	_, err := w.s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for index, zs := range w.hold {
			p.ZAdd(ctx, index, zs...)
		}
		return nil
	})
	return err
}

// IndexSessions adds to the sweep's indexes the sessions missing from them:
// those created by a version of this package before DeleteStale existed
// (or left out by a crash between a session's script and its index
// entries), which would otherwise stay until their absolute expiry. It
// walks the expiry index, a page of 1,000 ids at a time, reads each
// session's rotation and revocation times and adds what is missing (ZADD
// NX: an entry that is there stays). Run it once after upgrading; it is
// safe to run again and beside instances in service. It returns how many
// entries it added. Safe for concurrent use.
func (s *Store) IndexSessions(ctx context.Context) (int, error) {
	added := 0
	var cursor uint64
	for {
		page, next, err := s.rdb.ZScan(ctx, s.expiryKey(), cursor, "*", sweepPage).Result()
		if err != nil {
			return added, wrap("index sessions", err)
		}
		ids := make([]string, 0, len(page)/2)
		for i := 0; i < len(page); i += 2 { // member, score
			ids = append(ids, page[i])
		}
		reads := make([]*redis.SliceCmd, len(ids))
		if _, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, id := range ids {
				reads[i] = p.HMGet(ctx, s.sessionKey(id), "rotated", "revoked")
			}
			return nil
		}); err != nil && !errors.Is(err, redis.Nil) {
			return added, wrap("index sessions", err)
		}
		var adds []*redis.IntCmd
		if _, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, id := range ids {
				v := reads[i].Val()
				for j, key := range []string{s.idleKey(), s.revokedKey()} {
					if j >= len(v) {
						break
					}
					t, _ := v[j].(string)
					at, err := parseNs(t)
					if t == "" || err != nil {
						continue // gone, never revoked, or not ours to fix
					}
					adds = append(adds, p.ZAddNX(ctx, key, redis.Z{Score: float64(at.Unix()), Member: id}))
				}
			}
			return nil
		}); err != nil {
			return added, wrap("index sessions", err)
		}
		for _, a := range adds {
			added += int(a.Val())
		}
		if cursor = next; cursor == 0 {
			return added, nil
		}
	}
}
