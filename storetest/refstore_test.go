package storetest_test

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"maps"
	"math"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/refreshkit/refresh"
)

// refStore is a Store written the plain way, from the contract alone: a map
// and a mutex. With bug set it carries one realistic bug (a mutant, see
// mutants); with fault set every call fails the way a driver does.
type refStore struct {
	bug   string
	fault error
	*refBackend
	plock sync.Mutex                  // this instance's own lock (bug "process-lock")
	cache map[string]*refresh.Session // this instance's cache of sessions (bugs "get-cached", "cache-per-process"); guarded by mu
}

// refBackend is what instances of refStore share, as processes share a
// database: every instance made by second sees the same sessions.
type refBackend struct {
	mu    sync.RWMutex // read-locked only by the "-tight" bugs' checks
	amu   sync.Mutex   // AdvanceActive's own lock (bug "active-own-lock")
	m     map[string]*refresh.Session
	order []string             // ids in insertion order
	index map[string][]string  // subject to ids, never cleaned up (bug "subj-index-dangling")
	revAt map[string]time.Time // the last Revoke's time per id (bug "stale-revoked-last")
	scope map[string][]string  // interned scopes (bug "alias-intern-scope")
	proof map[string]time.Time // DPoP proof records: id to expiry
}

func newRefStore(bug string) *refStore {
	return &refStore{bug: bug, cache: map[string]*refresh.Session{},
		refBackend: &refBackend{m: map[string]*refresh.Session{}, index: map[string][]string{}, revAt: map[string]time.Time{}, scope: map[string][]string{}, proof: map[string]time.Time{}}}
}

// second returns another instance of the store on r's backend, as a
// second process of a service would open: its own lock and cache.
func (r *refStore) second() *refStore {
	return &refStore{bug: r.bug, fault: r.fault, refBackend: r.refBackend, cache: map[string]*refresh.Session{}}
}

var _ refresh.Store = (*refStore)(nil)

func (r *refStore) is(bug string) bool { return r.bug == bug }

// racy reports whether the two-step bug named is in, in either form: a
// check and a write with a pause between them (a network round trip, as a
// SELECT then an UPDATE), or "-tight": the in-process form, the check under
// a read lock and the write under the write lock back to back, with no
// pause (checks run together under an RWMutex's read lock).
func (r *refStore) racy(bug string) bool { return r.bug == bug || r.bug == bug+"-tight" }

func (r *refStore) tight() bool { return strings.HasSuffix(r.bug, "-tight") }

// checkLock and checkUnlock guard a racy bug's check.
func (r *refStore) checkLock() {
	if r.tight() {
		r.mu.RLock()
	} else {
		r.mu.Lock()
	}
}

func (r *refStore) checkUnlock() {
	if r.tight() {
		r.mu.RUnlock()
	} else {
		r.mu.Unlock()
	}
}

// window is the time between a racy bug's check and its write.
func (r *refStore) window() {
	if !r.tight() {
		runtime.Gosched()
		time.Sleep(time.Microsecond)
	}
}

// start checks the context and the backend, as a driver call would.
func (r *refStore) start(ctx context.Context, method string) error {
	if !r.is("ctx-ignored") && !(r.is("ctx-ignored-create") && method == "create") {
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	if r.fault != nil {
		return r.fault
	}
	if r.is("cache-per-process") && method != "get" && method != "sessions" {
		// Its own writes invalidate its cache; other instances' do not.
		r.mu.Lock()
		clear(r.cache)
		r.mu.Unlock()
	}
	return nil
}

// faultAs is what a buggy adapter does with a driver error: map it to a
// sentinel. Without the named bug it passes the fault through.
func (r *refStore) faultAs(err error, bug string, sentinel error) error {
	if r.fault != nil && err == r.fault && r.is(bug) {
		return sentinel
	}
	return err
}

// store is how a time is kept: exact, unless a precision bug is in.
func (r *refStore) store(t time.Time) time.Time {
	switch {
	case r.is("time-micro"):
		return t.Truncate(time.Microsecond)
	case r.is("time-clamp-2038") && t.Unix() > 1<<31-1:
		return time.Unix(1<<31-1, 0)
	case r.is("time-zero-as-epoch") && t.IsZero():
		return time.Unix(0, 0)
	case r.is("time-wallclock"):
		// Postgres timestamp (without time zone) through pgx: the wall
		// clock is kept and the zone dropped; it reads back as UTC.
		return time.Date(t.Year(), t.Month(), t.Day(), t.Hour(), t.Minute(), t.Second(), t.Nanosecond(), time.UTC)
	}
	return t
}

// gone reports whether the backend dropped s by itself: allowed at
// ExpiresAt (variant "ttl-drop"), a bug before it.
func (r *refStore) gone(s *refresh.Session) bool {
	now := time.Now()
	switch {
	case r.is("ttl-drop"):
		return !now.Before(s.ExpiresAt)
	case r.is("ttl-ms-as-s"): // a lifetime in seconds read as milliseconds
		return now.After(s.CreatedAt.Add(s.ExpiresAt.Sub(s.CreatedAt) / 1000))
	}
	return false
}

func (r *refStore) get(id string) *refresh.Session {
	s := r.m[id]
	if s == nil && r.is("id-padspace") {
		s = r.m[strings.TrimRight(id, " ")]
	}
	if s == nil && r.is("id-casefold") {
		for k, v := range r.m {
			if strings.EqualFold(k, id) {
				s = v
				break
			}
		}
	}
	if s == nil || r.gone(s) {
		return nil
	}
	return s
}

func (r *refStore) Create(ctx context.Context, s *refresh.Session) error {
	if err := r.start(ctx, "create"); err != nil {
		return r.faultAs(err, "fault-create-exists", refresh.ErrSessionExists)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.get(s.ID) != nil && !r.is("create-overwrite") {
		if r.is("create-dup-indexes") {
			r.order = append(r.order, s.ID+"\x00"+s.Subject)
		}
		return refresh.ErrSessionExists
	}
	c := s.Clone()
	switch {
	case r.is("alias-create-scope"):
		c.Scope = s.Scope
	case r.is("alias-create-meta"):
		c.Meta = s.Meta
	case r.is("alias-create-seed"):
		c.Seed = s.Seed
	case r.is("alias-create-claims"):
		c.Claims = s.Claims
	case r.is("alias-intern-scope"):
		key := strings.Join(s.Scope, " ")
		if in, ok := r.scope[key]; ok {
			c.Scope = in
		} else {
			r.scope[key] = s.Scope // keeps the caller's slice
			c.Scope = s.Scope
		}
	case r.is("create-drops-dpop"):
		c.DPoPKey = ""
	case r.is("create-drops-client"):
		c.ClientID = ""
	case r.is("create-drops-claims"):
		c.Claims = nil
	case r.is("create-drops-meta"):
		c.Meta = nil
	case r.is("create-lone-reason"):
		if c.ClientID == "" && c.DPoPKey == "" && len(c.Claims) == 0 && c.Meta == nil {
			c.RevokeReason = ""
		}
	case r.is("create-trims-subject"):
		c.Subject = strings.TrimSpace(c.Subject)
	case r.is("subj-utf8mb3"):
		c.Subject = cutAt4Byte(c.Subject)
	case r.is("meta-utf8mb3"):
		for k, v := range c.Meta {
			c.Meta[k] = cutAt4Byte(v)
		}
	case r.is("scope-comma") && c.Scope != nil: // a text column, joined and split on commas
		c.Scope = strings.Split(strings.Join(c.Scope, ","), ",")
	case r.is("scope-unsplit") && len(c.Scope) > 0: // a text column, joined and never split
		c.Scope = []string{strings.Join(c.Scope, " ")}
	case r.is("meta-lines") && c.Meta != nil: // "k=v" lines in a text column
		var lines []string
		for k, v := range c.Meta {
			lines = append(lines, k+"="+v)
		}
		c.Meta = map[string]string{}
		for _, l := range strings.Split(strings.Join(lines, "\n"), "\n") {
			if k, v, ok := strings.Cut(l, "="); ok {
				c.Meta[k] = v
			}
		}
	case r.is("create-resets-grace"):
		c.GraceUses = 0
	case r.is("subj-varchar255") && len(c.Subject) > 255:
		c.Subject = c.Subject[:255]
	case r.is("scope-sorted"):
		slices.Sort(c.Scope)
	case r.is("client-varchar255") && len(c.ClientID) > 255:
		c.ClientID = c.ClientID[:255]
	case r.is("meta-varchar255"):
		for k, v := range c.Meta {
			if len(v) > 255 {
				c.Meta[k] = v[:255]
			}
		}
	case r.is("create-seed-16") && len(c.Seed) > 16:
		c.Seed = c.Seed[:16] // bytea column sized for a UUID
	case r.is("create-expires-default"):
		c.ExpiresAt = c.CreatedAt.Add(90 * 24 * time.Hour) // DEFAULT created_at + 90 days
	case r.is("created-from-rotated"):
		c.CreatedAt = c.RotatedAt // one "issued at" column for both
	case r.is("claims-float64") && c.Claims != nil:
		var m map[string]any // a document database's driver, or a jsonb column read into a map
		if err := json.Unmarshal(c.Claims, &m); err != nil {
			return err
		}
		c.Claims, _ = json.Marshal(m)
	case r.is("claims-jsonb") && c.Claims != nil:
		var v any
		d := json.NewDecoder(bytes.NewReader(c.Claims))
		d.UseNumber()
		if err := d.Decode(&v); err != nil {
			return err
		}
		c.Claims = jsonb(nil, v)
	}
	c.CreatedAt, c.RotatedAt, c.ExpiresAt, c.RevokedAt = r.store(c.CreatedAt), r.store(c.RotatedAt), r.store(c.ExpiresAt), r.store(c.RevokedAt)
	if r.is("create-server-clock") { // DEFAULT now() instead of the given times
		c.CreatedAt, c.RotatedAt = time.Now(), time.Now()
	}
	if r.m[s.ID] == nil {
		r.order = append(r.order, s.ID)
	}
	r.m[s.ID] = c
	if r.is("subj-index-dangling") {
		r.index[c.Subject] = append(r.index[c.Subject], c.ID)
	}
	if r.is("get-cached") {
		r.cache[s.ID] = c.Clone()
	}
	return nil
}

func (r *refStore) out(s *refresh.Session) *refresh.Session {
	c := s.Clone()
	switch {
	case r.is("alias-get-seed"):
		c.Seed = s.Seed
	case r.is("alias-get-claims"):
		c.Claims = s.Claims
	case r.is("alias-get-scope"):
		c.Scope = s.Scope
	case r.is("alias-get-meta"):
		c.Meta = s.Meta
	}
	return c
}

// listed is what Sessions returns for s.
func (r *refStore) listed(s *refresh.Session) *refresh.Session {
	c := r.out(s)
	switch {
	case r.is("alias-sessions-scope"):
		c.Scope = s.Scope
	case r.is("alias-sessions-claims"):
		c.Claims = s.Claims
	case r.is("alias-sessions-meta"):
		c.Meta = s.Meta
	}
	return c
}

func (r *refStore) Get(ctx context.Context, id string) (*refresh.Session, error) {
	if err := r.start(ctx, "get"); err != nil {
		return nil, r.faultAs(err, "fault-get-notfound", refresh.ErrSessionNotFound)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.get(id)
	if s == nil && r.is("get-nil-nil") {
		return nil, nil // a driver's "no rows" taken for success
	}
	if s == nil || r.is("get-revoked-notfound") && s.Revoked() {
		return nil, refresh.ErrSessionNotFound
	}
	if c := r.cache[id]; c != nil {
		return r.out(c), nil
	}
	if r.is("cache-per-process") {
		r.cache[id] = s.Clone()
	}
	c := r.out(s)
	if r.is("get-zero-graceuses") {
		c.GraceUses = 0 // the column not selected
	}
	return c, nil
}

func (r *refStore) Advance(ctx context.Context, id string, from uint64, at time.Time) error {
	if err := r.start(ctx, "advance"); err != nil {
		return r.faultAs(err, "fault-advance-conflict", refresh.ErrConflict)
	}
	if r.racy("advance-race") {
		return r.racyAdvance(id, from, at)
	}
	if r.is("advance-blob") {
		return r.blobWrite(id, from, func(c *refresh.Session) error {
			c.Generation, c.RotatedAt, c.GraceUses = from+1, r.store(at), 0
			return nil
		})
	}
	if r.is("process-lock") {
		// Atomic within this instance only: a sync.Mutex around a read
		// and a write, where the swap belongs in the database.
		r.plock.Lock()
		defer r.plock.Unlock()
		return r.racyAdvance(id, from, at)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.get(id)
	switch {
	case s == nil && r.is("advance-missing-conflict"):
		return refresh.ErrConflict
	case s == nil:
		return refresh.ErrSessionNotFound
	case s.Generation != from && r.is("advance-conflict-notfound"):
		return refresh.ErrSessionNotFound
	case s.Generation != from && !r.is("advance-no-cas"):
		return refresh.ErrConflict
	case s.Revoked() && !r.is("advance-revoked-ok"):
		return refresh.ErrConflict
	}
	s.Generation = s.Generation + 1
	if r.is("advance-plus-two") {
		s.Generation++
	}
	switch {
	case r.is("advance-server-clock"): // SET rotated_at = now()
		s.RotatedAt = time.Now()
	case !r.is("advance-no-rotatedat"):
		s.RotatedAt = r.store(at)
	}
	if !r.is("advance-keeps-grace") {
		s.GraceUses = 0
	}
	if r.is("advance-sets-createdat") {
		s.CreatedAt = s.RotatedAt
	}
	if r.is("advance-slides-expiry") { // SET expires_at = now() + the lifetime
		s.ExpiresAt = s.RotatedAt.Add(s.ExpiresAt.Sub(s.CreatedAt))
	}
	return nil
}

// blobWrite changes a session the way a store keeping each session as one
// document does: it reads the document, changes the copy, and writes the
// whole copy back with a compare-and-swap on the counters it read
// (UPDATE ... SET doc = $2 WHERE id = $1 AND generation = $3 AND
// grace_uses = $4), reading again when they moved. Rotations and grace
// retries stay exact, but a revocation that lands between the read and the
// write is overwritten with the copy's "live" (mutants "advance-blob",
// "active-blob", "grace-blob").
func (r *refStore) blobWrite(id string, gen uint64, change func(c *refresh.Session) error) error {
	for {
		r.mu.Lock()
		s := r.get(id)
		if s == nil {
			r.mu.Unlock()
			return refresh.ErrSessionNotFound
		}
		c := s.Clone()
		uses := c.GraceUses
		r.mu.Unlock()
		if c.Generation != gen || c.Revoked() {
			return refresh.ErrConflict
		}
		if err := change(c); err != nil {
			return err
		}
		runtime.Gosched()
		time.Sleep(time.Microsecond)
		r.mu.Lock()
		if now := r.get(id); now != nil && now.Generation == gen && now.GraceUses == uses {
			r.m[id] = c
			r.mu.Unlock()
			return nil
		}
		r.mu.Unlock()
	}
}

// racyAdvance is Advance that checks, then sets, under separate locks: two
// callers can both pass (mutants "advance-race", "active-race").
func (r *refStore) racyAdvance(id string, from uint64, at time.Time) error {
	r.checkLock()
	s := r.get(id)
	ok := s != nil && s.Generation == from && !s.Revoked()
	r.checkUnlock()
	switch {
	case s == nil:
		return refresh.ErrSessionNotFound
	case !ok:
		return refresh.ErrConflict
	}
	r.window()
	r.mu.Lock()
	s.Generation, s.RotatedAt, s.GraceUses = from+1, r.store(at), 0
	r.mu.Unlock()
	return nil
}

// AdvanceActive implements refresh.ActiveAdvancer.
func (r *refStore) AdvanceActive(ctx context.Context, id string, from uint64, at, activeAfter time.Time) error {
	if err := r.start(ctx, "advance"); err != nil {
		return r.faultAs(err, "fault-active-conflict", refresh.ErrConflict)
	}
	r.mu.Lock()
	s := r.get(id)
	idle := s != nil && !s.RotatedAt.After(activeAfter)
	if r.is("active-server-clock") { // SET rotated_at = now()
		at = time.Now()
	}
	switch {
	case r.is("active-ignored"):
		idle = false
	case r.is("active-inclusive"):
		idle = s != nil && s.RotatedAt.Before(activeAfter)
	case r.is("active-created"):
		idle = s != nil && !s.CreatedAt.After(activeAfter)
	}
	r.mu.Unlock()
	if idle {
		return refresh.ErrConflict
	}
	if r.is("active-blob") {
		return r.blobWrite(id, from, func(c *refresh.Session) error {
			c.Generation, c.RotatedAt, c.GraceUses = from+1, r.store(at), 0
			return nil
		})
	}
	if r.racy("active-race") {
		return r.racyAdvance(id, from, at)
	}
	if r.is("active-own-lock") {
		// Atomic against other AdvanceActive calls, not against Advance.
		r.amu.Lock()
		defer r.amu.Unlock()
		return r.racyAdvance(id, from, at)
	}
	if s == nil && r.is("active-missing-conflict") {
		return refresh.ErrConflict
	}
	if r.is("active-no-cas") || r.is("active-keeps-grace") || r.is("active-no-rotatedat") {
		r.mu.Lock()
		defer r.mu.Unlock()
		if s == nil {
			return refresh.ErrSessionNotFound
		}
		if s.Revoked() || s.Generation != from && !r.is("active-no-cas") {
			return refresh.ErrConflict
		}
		s.Generation++
		if !r.is("active-no-rotatedat") {
			s.RotatedAt = r.store(at)
		}
		if !r.is("active-keeps-grace") {
			s.GraceUses = 0
		}
		return nil
	}
	if r.is("active-revoked-ok") {
		r.mu.Lock()
		defer r.mu.Unlock()
		if s == nil {
			return refresh.ErrSessionNotFound
		}
		if s.Generation != from {
			return refresh.ErrConflict
		}
		s.Generation, s.RotatedAt, s.GraceUses = from+1, r.store(at), 0
		return nil
	}
	// RotatedAt only grows, so a session found active stays active until the
	// swap, which Advance makes atomic.
	return r.Advance(ctx, id, from, at)
}

func (r *refStore) UseGrace(ctx context.Context, id string, generation uint64, limit uint32) error {
	if err := r.start(ctx, "usegrace"); err != nil {
		return r.faultAs(err, "fault-usegrace-conflict", refresh.ErrConflict)
	}
	if r.is("grace-blob") { // the swap also checks the count it read: only revocations are lost
		return r.blobWrite(id, generation, func(c *refresh.Session) error {
			if c.GraceUses >= limit {
				return refresh.ErrConflict
			}
			c.GraceUses++
			return nil
		})
	}
	if r.racy("grace-race") {
		r.mu.Lock()
		s := r.get(id)
		r.mu.Unlock()
		if s == nil {
			return refresh.ErrSessionNotFound
		}
		r.checkLock()
		uses := s.GraceUses
		ok := s.Generation == generation && !s.Revoked() && uses < limit
		r.checkUnlock()
		if !ok {
			return refresh.ErrConflict
		}
		r.window()
		r.mu.Lock()
		s.GraceUses = uses + 1
		r.mu.Unlock()
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.get(id)
	switch {
	case s == nil && r.is("usegrace-missing-conflict"):
		return refresh.ErrConflict
	case s == nil:
		return refresh.ErrSessionNotFound
	case s.Generation != generation && !r.is("grace-other-gen"):
		return refresh.ErrConflict
	case s.Revoked() && !r.is("grace-revoked-ok"):
		return refresh.ErrConflict
	case r.is("grace-off-by-one") && s.GraceUses > limit:
		return refresh.ErrConflict
	case !r.is("grace-off-by-one") && !r.is("grace-no-limit") && s.GraceUses >= limit:
		if r.is("grace-counts-refusals") {
			s.GraceUses++
		}
		return refresh.ErrConflict
	}
	s.GraceUses++
	if r.is("grace-touches-rotatedat") { // SET grace_uses = grace_uses + 1, last_used = now()
		s.RotatedAt = time.Now()
	}
	return nil
}

func (r *refStore) Revoke(ctx context.Context, id string, at time.Time, reason string) error {
	if err := r.start(ctx, "revoke"); err != nil {
		return r.faultAs(err, "fault-revoke-notfound", refresh.ErrSessionNotFound)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.get(id)
	if s == nil {
		if r.is("revoke-missing-nil") {
			return nil
		}
		return refresh.ErrSessionNotFound
	}
	if r.is("revoke-deletes") { // a sign-out as DELETE
		delete(r.m, s.ID)
		return nil
	}
	if r.is("stale-revoked-last") { // an index of revocation times, written by every Revoke
		r.revAt[s.ID] = r.store(at)
	}
	if !s.Revoked() || r.is("revoke-overwrite") {
		s.RevokedAt, s.RevokeReason = r.store(at), reason
		if r.is("revoke-server-clock") {
			s.RevokedAt = time.Now()
		}
		if r.is("revoke-drops-reason") {
			s.RevokeReason = ""
		}
	}
	return nil
}

// subjectMatches is how the store compares subjects: exactly, unless a
// comparison bug is in.
func (r *refStore) subjectMatches(stored, query string, revoking bool) bool {
	switch {
	case r.is("subj-casefold"), r.is("revsubj-casefold") && revoking:
		return strings.EqualFold(stored, query)
	case r.is("subj-prefix"):
		return strings.HasPrefix(stored, query)
	case r.is("subj-like"):
		return wildcardMatch(stored, query, '%', '_')
	case r.is("subj-nfc"):
		nfc := strings.NewReplacer("e\u0301", "\u00e9")
		return nfc.Replace(stored) == nfc.Replace(query)
	case r.is("subj-trim"):
		return strings.TrimSpace(stored) == strings.TrimSpace(query)
	case r.is("subj-confusable"):
		fold := strings.NewReplacer("\u0430", "a")
		return fold.Replace(stored) == fold.Replace(query)
	case r.is("subj-glob"):
		return wildcardMatch(stored, query, '*', '?')
	case r.is("subj-separator"):
		return stored == query || strings.HasPrefix(stored, query+":")
	}
	return stored == query
}

// cutAt4Byte cuts s before its first character of four UTF-8 bytes, as a
// MySQL utf8 (utf8mb3) column does outside strict mode.
func cutAt4Byte(s string) string {
	for i, c := range s {
		if utf8.RuneLen(c) == 4 {
			return s[:i]
		}
	}
	return s
}

// wildcardMatch matches s against pattern used unescaped, with many
// standing for any run of bytes and one for any one byte: SQL LIKE (% and
// _) or Redis's glob-style patterns (SCAN MATCH, KEYS: * and ?).
func wildcardMatch(s, pattern string, many, one byte) bool {
	if pattern == "" {
		return s == ""
	}
	switch pattern[0] {
	case many:
		for i := 0; i <= len(s); i++ {
			if wildcardMatch(s[i:], pattern[1:], many, one) {
				return true
			}
		}
		return false
	case one:
		return s != "" && wildcardMatch(s[1:], pattern[1:], many, one)
	}
	return s != "" && s[0] == pattern[0] && wildcardMatch(s[1:], pattern[1:], many, one)
}

func (r *refStore) RevokeSubject(ctx context.Context, subject string, at time.Time, reason string) (int, error) {
	if err := r.start(ctx, "revokesubject"); err != nil {
		if r.is("fault-revokesubject-zero") {
			return 0, nil
		}
		return 0, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.is("subj-index-dangling") {
		n := 0
		for _, s := range r.indexed(subject) {
			if !s.Revoked() {
				s.RevokedAt, s.RevokeReason = r.store(at), reason
				n++
			}
		}
		return n, nil
	}
	n, seen := 0, 0
	for _, id := range r.order {
		s := r.get(id)
		if s == nil || !r.subjectMatches(s.Subject, subject, true) {
			continue
		}
		if seen++; seen > 100 && r.is("revsubj-one-batch") || seen > 1000 && r.is("revsubj-one-page-1000") {
			break // one page of a paginated update
		}
		if seen == 1 && r.is("revsubj-skips-first") {
			continue // an off-by-one in the page loop
		}
		switch {
		case !s.Revoked() && r.is("revsubj-deletes"): // log out everywhere as DELETE
			delete(r.m, s.ID)
			n++
		case !s.Revoked():
			s.RevokedAt, s.RevokeReason = r.store(at), reason
			if r.is("revsubj-server-clock") {
				s.RevokedAt = time.Now()
			}
			n++
		case r.is("revsubj-counts-all"):
			n++
		case r.is("revsubj-overwrite"):
			s.RevokedAt, s.RevokeReason = r.store(at), reason
		}
	}
	return n, nil
}

func (r *refStore) Sessions(ctx context.Context, subject string) ([]*refresh.Session, error) {
	if err := r.start(ctx, "sessions"); err != nil {
		if r.is("fault-sessions-empty") {
			return []*refresh.Session{}, nil
		}
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	out := []*refresh.Session{}
	if r.is("subj-index-dangling") {
		for _, s := range r.indexed(subject) {
			out = append(out, r.listed(s))
		}
		refresh.SortSessions(out)
		return out, nil
	}
	for _, key := range r.order {
		id, owner, dup := strings.Cut(key, "\x00")
		s := r.get(id)
		if s == nil {
			continue
		}
		if dup && owner == subject {
			out = append(out, r.listed(s)) // a stale index entry
			continue
		}
		if r.is("sessions-live-only") && s.Revoked() {
			continue // WHERE revoked_at IS NULL
		}
		if !dup && r.subjectMatches(s.Subject, subject, false) {
			out = append(out, r.listed(s))
			if r.is("sessions-dup") && len(s.Meta) > 1 {
				out = append(out, r.listed(s)) // a join on a metadata table
			}
		}
	}
	for i, c := range out {
		switch {
		case r.is("sessions-partial"): // SELECT id, created_at, rotated_at, expires_at, revoked_at
			out[i] = &refresh.Session{ID: c.ID, Subject: c.Subject, CreatedAt: c.CreatedAt, RotatedAt: c.RotatedAt,
				ExpiresAt: c.ExpiresAt, RevokedAt: c.RevokedAt, Generation: c.Generation}
		case r.is("sessions-stale"): // a per-subject copy made at Create
			c.Generation, c.RotatedAt, c.GraceUses = 0, c.CreatedAt, 0
		}
	}
	if r.is("sessions-limit") && len(out) > 100 {
		refresh.SortSessions(out)
		return out[:100], nil
	}
	if r.is("sessions-limit-1000") && len(out) > 1000 {
		refresh.SortSessions(out)
		return out[:1000], nil
	}
	switch {
	case r.is("order-insertion"):
	case r.is("order-no-tiebreak"):
		slices.SortStableFunc(out, func(a, b *refresh.Session) int { return a.CreatedAt.Compare(b.CreatedAt) })
	case r.is("order-id-casefold"):
		slices.SortFunc(out, func(a, b *refresh.Session) int {
			if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
				return c
			}
			return strings.Compare(strings.ToLower(a.ID), strings.ToLower(b.ID))
		})
	case r.is("order-desc"):
		refresh.SortSessions(out)
		slices.Reverse(out)
	default:
		refresh.SortSessions(out)
	}
	return out, nil
}

func (r *refStore) DeleteExpired(ctx context.Context, before time.Time, limit int) (int, error) {
	if r.is("del-server-clock") { // WHERE expires_at <= now()
		before = time.Now()
	}
	before = r.cutoff(before)
	return r.deleteWhere(ctx, "deleteexpired", limit, func(s *refresh.Session) bool {
		var expired bool
		switch {
		case r.is("del-before-strict"):
			expired = s.ExpiresAt.Before(before)
		case r.is("del-seconds"):
			expired = !s.ExpiresAt.Truncate(time.Second).After(before.Truncate(time.Second))
		case r.is("del-by-rotated"): // the wrong column
			expired = !s.RotatedAt.After(before)
		case r.is("del-text-compare"): // RFC 3339 text, each in its own zone, compared as strings
			expired = s.ExpiresAt.Format(time.RFC3339Nano) <= before.Format(time.RFC3339Nano)
		default:
			expired = !s.ExpiresAt.After(before)
		}
		return expired || r.is("del-revoked") && s.Revoked()
	})
}

// DeleteStale implements refresh.StaleDeleter.
func (r *refStore) DeleteStale(ctx context.Context, expiredBy, idleBy, revokedBy time.Time, limit int) (int, error) {
	if r.is("stale-server-clock") { // WHERE expires_at <= now() OR …
		expiredBy = time.Now()
	}
	expiredBy, idleBy = r.cutoff(expiredBy), r.cutoff(idleBy)
	if !revokedBy.IsZero() {
		revokedBy = r.cutoff(revokedBy)
	}
	if r.is("stale-limit-per-rule") { // a UNION of three queries, each with its own LIMIT
		total := 0
		for _, rule := range []func(*refresh.Session) bool{
			func(s *refresh.Session) bool { return !s.ExpiresAt.After(expiredBy) },
			func(s *refresh.Session) bool { return !s.RotatedAt.After(idleBy) },
			func(s *refresh.Session) bool { return s.Revoked() && !s.RevokedAt.After(revokedBy) },
		} {
			n, err := r.deleteWhere(ctx, "deletestale", limit, rule)
			if err != nil {
				return total, err
			}
			total += n
		}
		return total, nil
	}
	return r.deleteWhere(ctx, "deletestale", limit, func(s *refresh.Session) bool {
		expired := !s.ExpiresAt.After(expiredBy)
		idle := !s.RotatedAt.After(idleBy)
		revoked := s.Revoked() && !s.RevokedAt.After(revokedBy)
		if at, ok := r.revAt[s.ID]; ok && s.Revoked() {
			revoked = !at.After(revokedBy)
		}
		switch {
		case r.is("stale-ignores-expired"):
			expired = false
		case r.is("stale-idle-strict"):
			idle = s.RotatedAt.Before(idleBy)
		case r.is("stale-idle-created"):
			idle = !s.CreatedAt.After(idleBy)
		case r.is("stale-revoked-strict"):
			revoked = s.Revoked() && s.RevokedAt.Before(revokedBy)
		case r.is("stale-live-as-revoked"): // revoked_at NULL read as 0
			revoked = !s.RevokedAt.After(revokedBy)
		case r.is("stale-zero-unbounded"): // a zero revokedBy read as "any time"
			revoked = s.Revoked() && (revokedBy.IsZero() || !s.RevokedAt.After(revokedBy))
		case r.is("stale-and"):
			return expired && idle
		case r.is("stale-revoked-any"): // WHERE revoked_at IS NOT NULL, the cut forgotten
			revoked = s.Revoked() && !revokedBy.IsZero()
		case r.is("stale-micro"):
			idle = !s.RotatedAt.Truncate(time.Microsecond).After(idleBy.Truncate(time.Microsecond))
		}
		return expired || idle || revoked
	})
}

// deleteWhere removes at most limit sessions for which stale holds.
func (r *refStore) deleteWhere(ctx context.Context, method string, limit int, stale func(*refresh.Session) bool) (int, error) {
	if err := r.start(ctx, method); err != nil {
		if r.is("fault-delete-zero") && method == "deleteexpired" || r.is("fault-stale-zero") && method == "deletestale" {
			return 0, nil
		}
		return 0, err
	}
	switch {
	case limit <= 0 && r.is("del-limit-zero-unlimited"), limit < 0 && r.is("del-negative-unlimited"):
		limit = int(^uint(0) >> 1)
	case limit <= 0:
		return 0, nil
	}
	if r.is("del-over-limit") && method == "deleteexpired" || r.is("stale-over-limit") && method == "deletestale" {
		limit++
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	keep := r.order[:0]
	for _, key := range r.order {
		id, _, _ := strings.Cut(key, "\x00")
		s := r.m[id]
		if s != nil && stale(s) && n < limit {
			n++
			if r.is("del-reports-only") && method == "deleteexpired" || r.is("stale-reports-only") && method == "deletestale" {
				keep = append(keep, key) // the DELETE in a transaction never committed
				continue
			}
			delete(r.m, id)
			continue
		}
		keep = append(keep, key)
	}
	r.order = keep
	if r.is("del-count-wrong") && n > 0 {
		return limit, nil
	}
	if r.is("stale-count-batches") && method == "deletestale" && n > 0 {
		return limit, nil
	}
	return n, nil
}

// RecordProof implements refresh.ProofRecorder.
func (r *refStore) RecordProof(ctx context.Context, id string, now, expires time.Time) error {
	if err := r.start(ctx, "recordproof"); err != nil {
		return r.faultAs(err, "fault-proof-replayed", refresh.ErrProofReplayed)
	}
	if r.racy("proof-race") {
		r.checkLock()
		e, seen := r.proof[id]
		r.checkUnlock()
		if seen && e.After(now) {
			return refresh.ErrProofReplayed
		}
		r.window()
		r.mu.Lock()
		r.proof[id] = expires
		r.mu.Unlock()
		return nil
	}
	if r.is("proof-server-clock") { // WHERE expires_at > now()
		now = time.Now()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.is("proof-casefold") { // a _ci collation on the id column
		id = strings.ToLower(id)
	}
	if r.is("proof-prefix32") && len(id) > 32 { // a char(32) column
		id = id[:32]
	}
	e, seen := r.proof[id]
	switch {
	case r.is("proof-always-new"):
		seen = false
	case r.is("proof-expiry-inclusive"): // a record still counts at its expiry
		seen = seen && !e.Before(now)
	case r.is("proof-never-expires"):
	case r.is("proof-seconds"):
		seen = seen && e.Truncate(time.Second).After(now.Truncate(time.Second))
	default:
		seen = seen && e.After(now)
	}
	if seen {
		return refresh.ErrProofReplayed
	}
	r.proof[id] = expires
	return nil
}

// indexed returns the sessions the subject's index of ids names, as a
// key-value store keeping a set of ids per subject finds them: each id
// once, its session taken without looking at whose it is. r.mu is held.
func (r *refStore) indexed(subject string) []*refresh.Session {
	var out []*refresh.Session
	ids := slices.Clone(r.index[subject])
	slices.Sort(ids)
	for _, id := range slices.Compact(ids) {
		if s := r.get(id); s != nil {
			out = append(out, s)
		}
	}
	return out
}

// cutoff is a sweep's cut-off as the store compares it: as given, or with
// "del-unclamped-past" as an adapter keeping Unix nanoseconds converts it,
// clamped past 2262 (as storetest's far-future rule requires) but not
// before 1678, where time.UnixNano wraps around.
func (r *refStore) cutoff(t time.Time) time.Time {
	if r.is("del-unclamped-past") && t.Before(time.Unix(0, math.MinInt64)) {
		return time.Unix(0, t.UnixNano())
	}
	return t
}

// DeleteExpiredProofs implements refresh.ProofRecorder.
func (r *refStore) DeleteExpiredProofs(ctx context.Context, before time.Time, limit int) (int, error) {
	if err := r.start(ctx, "deleteproofs"); err != nil {
		return 0, err
	}
	if limit <= 0 && !r.is("proofdel-unlimited") {
		return 0, nil
	}
	if r.is("proofdel-reports-only") { // the count of what matched, nothing removed
		n := 0
		r.mu.Lock()
		for _, e := range r.proof {
			if !e.After(before) && n < limit {
				n++
			}
		}
		r.mu.Unlock()
		return n, nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for id, e := range r.proof {
		expired := !e.After(before)
		if r.is("proofdel-before-strict") {
			expired = e.Before(before)
		}
		if (n >= limit && !r.is("proofdel-unlimited")) || !expired && !r.is("proofdel-all") {
			continue
		}
		delete(r.proof, id)
		n++
	}
	return n, nil
}

// errDriver is a driver's failure, as a broken backend returns it.
var errDriver = errors.New("driver: connection reset by peer")

// numericText writes a JSON number as Postgres numeric does: without an
// exponent, keeping the digits written ("2.50E1" is 25.0, "1e2" 100,
// "1e-2" 0.01).
func numericText(n string) string {
	sign := ""
	if strings.HasPrefix(n, "-") {
		sign, n = "-", n[1:]
	}
	mant, exp, ok := strings.Cut(strings.ToLower(n), "e")
	if !ok {
		return sign + n
	}
	e, _ := strconv.Atoi(exp)
	whole, frac, _ := strings.Cut(mant, ".")
	digits, point := whole+frac, len(whole)+e
	switch {
	case point <= 0:
		digits, point = strings.Repeat("0", 1-point)+digits, 1
	case point > len(digits):
		digits += strings.Repeat("0", point-len(digits))
	}
	out := strings.TrimLeft(digits[:point], "0")
	if out == "" {
		out = "0"
	}
	if digits[point:] != "" {
		out += "." + digits[point:]
	}
	return sign + out
}

// jsonb writes v as Postgres writes a jsonb value: members ordered by the
// length of their names, then bytewise; ", " and ": " between; strings
// unescaped where JSON allows; numbers as numeric writes them (numericText).
func jsonb(b []byte, v any) []byte {
	switch v := v.(type) {
	case map[string]any:
		keys := slices.SortedFunc(maps.Keys(v), func(a, b string) int {
			return cmp.Or(cmp.Compare(len(a), len(b)), strings.Compare(a, b))
		})
		b = append(b, '{')
		for i, k := range keys {
			if i > 0 {
				b = append(b, ", "...)
			}
			b = jsonb(b, k)
			b = append(b, ": "...)
			b = jsonb(b, v[k])
		}
		return append(b, '}')
	case []any:
		b = append(b, '[')
		for i, e := range v {
			if i > 0 {
				b = append(b, ", "...)
			}
			b = jsonb(b, e)
		}
		return append(b, ']')
	case string:
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		_ = enc.Encode(v)
		return append(b, bytes.TrimSuffix(buf.Bytes(), []byte("\n"))...)
	case json.Number:
		return append(b, numericText(string(v))...)
	}
	out, _ := json.Marshal(v) // bool, nil
	return append(b, out...)
}
