package refresh

import (
	"context"
	"errors"
	"hash/maphash"
	"maps"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

const memShards = 64

// MemoryStore is a Store that keeps sessions in the memory of one process:
// for tests and for services that run as a single instance. Sessions do not
// survive a restart.
//
// It is sharded so that concurrent requests for different sessions rarely
// contend, and compact: a session costs about 250 bytes of heap. All
// methods are safe for concurrent use. A background sweeper removes expired
// sessions in bounded batches; Close stops it.
type MemoryStore struct {
	seed     maphash.Seed
	shards   [memShards]memShard
	subjects [memShards]subjectShard
	now      func() time.Time
	batch    int
	sweep    time.Duration
	proofs   memProofs
	// sweepFrom is the shard the last deletion batch stopped in: the next
	// starts there, rather than scanning again the shards that batch left
	// clean (which made a sweep of many batches quadratic).
	sweepFrom atomic.Uint32

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

// memID is a session id as the memory store keys it: the 16 bytes of an id
// minted by the Issuer (22 characters of base64url), or any other string.
type memID struct {
	fixed   [sessionIDLen]byte
	other   string
	isFixed bool
}

func parseMemID(id string) memID {
	var k memID
	if decodeB64Exact(k.fixed[:], id) {
		k.isFixed = true
		return k
	}
	k.other = id
	return k
}

func (k memID) String() string {
	if k.isFixed {
		return b64.EncodeToString(k.fixed[:])
	}
	return k.other
}

type memShard struct {
	mu    sync.RWMutex // guards fixed and other
	fixed map[[sessionIDLen]byte]*memRecord
	other map[string]*memRecord
	_     [cacheLine - 40]byte // neighbouring shards' locks on other cache lines (see genCache)
}

func (sh *memShard) get(k memID) *memRecord {
	if k.isFixed {
		return sh.fixed[k.fixed]
	}
	return sh.other[k.other]
}

func (sh *memShard) put(k memID, r *memRecord) {
	if k.isFixed {
		sh.fixed[k.fixed] = r
	} else {
		sh.other[k.other] = r
	}
}

type subjectShard struct {
	mu sync.Mutex // guards m
	m  map[string]*subjectEntry
}

// subjectEntry indexes a subject's sessions. Its name is shared by the
// records of the subject, so a subject's string is stored once.
type subjectEntry struct {
	name  string
	fixed map[[sessionIDLen]byte]struct{}
	other map[string]struct{}
}

func (e *subjectEntry) add(k memID) {
	if k.isFixed {
		e.fixed[k.fixed] = struct{}{}
	} else {
		e.other[k.other] = struct{}{}
	}
}

func (e *subjectEntry) remove(k memID) {
	if k.isFixed {
		delete(e.fixed, k.fixed)
	} else {
		delete(e.other, k.other)
	}
}

func (e *subjectEntry) len() int { return len(e.fixed) + len(e.other) }

// memRecord is a session as the memory store keeps it: times as Unix
// nanoseconds, the seed inline, the scope interned, the rarer fields behind
// one pointer; 112 bytes, under half a Session, and only three pointers for
// the garbage collector to follow.
type memRecord struct {
	subject string    // shared with the subject index
	scope   *[]string // interned; never modified
	ext     *memExt   // nil when all its fields are empty
	gen     uint64
	created int64
	rotated int64
	expires int64
	revoked int64 // zeroTime while live
	grace   uint32
	seedN   uint8
	seed    [seedLen]byte
}

// memExt holds the fields most sessions leave empty.
type memExt struct {
	dpopKey  string
	clientID string
	reason   string
	claims   string
	meta     map[string]string
}

func (r *memRecord) extra() memExt {
	if r.ext == nil {
		return memExt{}
	}
	return *r.ext
}

func (r *memRecord) revoke(at time.Time, reason string) {
	x := r.extra()
	x.reason = reason
	r.ext, r.revoked = &x, nanos(at)
}

// zeroTime encodes the zero time.Time; other times are Unix nanoseconds,
// which cover the years 1678 to 2262. Times outside are clamped to that
// range, so they keep their order against every time inside it.
const zeroTime = math.MinInt64

var (
	minNanos = time.Unix(0, math.MinInt64+1)
	maxNanos = time.Unix(0, math.MaxInt64)
)

func nanos(t time.Time) int64 {
	switch {
	case t.IsZero():
		return zeroTime
	case t.Before(minNanos):
		return math.MinInt64 + 1
	case t.After(maxNanos):
		return math.MaxInt64
	}
	return t.UnixNano()
}

func fromNanos(n int64) time.Time {
	if n == zeroTime {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

func (r *memRecord) isRevoked() bool { return r.revoked != zeroTime }

// session expands the record into a Session the caller owns.
func (r *memRecord) session(id string) *Session {
	x := r.extra()
	s := &Session{
		ID: id, Subject: r.subject, ClientID: x.clientID, DPoPKey: x.dpopKey, Generation: r.gen, GraceUses: r.grace,
		Seed: slices.Clone(r.seed[:r.seedN]), Meta: maps.Clone(x.meta),
		CreatedAt: fromNanos(r.created), RotatedAt: fromNanos(r.rotated),
		ExpiresAt: fromNanos(r.expires), RevokedAt: fromNanos(r.revoked), RevokeReason: x.reason,
	}
	if r.scope != nil {
		s.Scope = slices.Clone(*r.scope)
	}
	if x.claims != "" {
		s.Claims = []byte(x.claims)
	}
	return s
}

// MemoryOption configures a MemoryStore.
type MemoryOption func(*MemoryStore)

// WithSweepInterval sets how often the background sweeper deletes expired
// sessions (default one minute). Zero or a negative value disables the
// sweeper; call DeleteExpired (or Issuer.Sweep) yourself then.
func WithSweepInterval(d time.Duration) MemoryOption {
	return func(m *MemoryStore) { m.sweep = d }
}

// WithStoreClock sets the clock the sweeper uses to decide what has expired
// (default time.Now).
func WithStoreClock(now func() time.Time) MemoryOption {
	return func(m *MemoryStore) { m.now = now }
}

// NewMemoryStore returns an empty MemoryStore with its sweeper running.
// Call Close when done with it to stop the sweeper.
func NewMemoryStore(opts ...MemoryOption) *MemoryStore {
	m := &MemoryStore{seed: maphash.MakeSeed(), now: time.Now, batch: 1000, sweep: time.Minute}
	for _, o := range opts {
		o(m)
	}
	for i := range m.shards {
		m.shards[i].fixed = make(map[[sessionIDLen]byte]*memRecord)
		m.shards[i].other = make(map[string]*memRecord)
		m.subjects[i].m = make(map[string]*subjectEntry)
	}
	m.stop = make(chan struct{})
	m.done = make(chan struct{})
	if m.sweep > 0 {
		go m.sweeper(m.sweep)
	} else {
		close(m.done)
	}
	return m
}

var (
	_ Store          = (*MemoryStore)(nil)
	_ ActiveAdvancer = (*MemoryStore)(nil)
	_ StaleDeleter   = (*MemoryStore)(nil)
	_ ProofRecorder  = (*MemoryStore)(nil)
)

// memProofs holds DPoP proof records (ProofRecorder): id to expiry in
// Unix nanoseconds.
type memProofs struct {
	mu sync.Mutex // guards m
	m  map[string]int64
}

// RecordProof implements ProofRecorder.
func (m *MemoryStore) RecordProof(ctx context.Context, id string, now, expires time.Time) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	p := &m.proofs
	p.mu.Lock()
	defer p.mu.Unlock()
	if e, ok := p.m[id]; ok && e > nanos(now) {
		return ErrProofReplayed
	}
	if p.m == nil {
		p.m = make(map[string]int64)
	}
	p.m[id] = nanos(expires)
	return nil
}

// DeleteExpiredProofs implements ProofRecorder.
func (m *MemoryStore) DeleteExpiredProofs(ctx context.Context, before time.Time, limit int) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	cut := nanos(before)
	p := &m.proofs
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for id, e := range p.m {
		if n >= limit {
			break
		}
		if e <= cut {
			delete(p.m, id)
			n++
		}
	}
	return n, nil
}

// Close stops the background sweeper and waits for it. The store stays usable.
// Close is idempotent.
func (m *MemoryStore) Close() error {
	m.closeOnce.Do(func() { close(m.stop) })
	<-m.done
	return nil
}

func (m *MemoryStore) sweeper(every time.Duration) {
	defer close(m.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-t.C:
			m.sweepAll()
		}
	}
}

// sweepAll deletes expired sessions and proof records in batches until a
// batch of each comes back short, or Close is called.
func (m *MemoryStore) sweepAll() {
	for {
		n, _ := m.DeleteExpired(context.Background(), m.now(), m.batch)
		p, _ := m.DeleteExpiredProofs(context.Background(), m.now(), m.batch)
		if n < m.batch && p < m.batch {
			return
		}
		select {
		case <-m.stop:
			return
		default:
		}
	}
}

func (m *MemoryStore) shard(id string) *memShard {
	return &m.shards[maphash.String(m.seed, id)%memShards]
}

func (m *MemoryStore) subjectShard(subject string) *subjectShard {
	return &m.subjects[maphash.String(m.seed, subject)%memShards]
}

// Len returns the number of stored sessions, revoked and expired included.
func (m *MemoryStore) Len() int {
	n := 0
	for i := range m.shards {
		sh := &m.shards[i]
		sh.mu.RLock()
		n += len(sh.fixed) + len(sh.other)
		sh.mu.RUnlock()
	}
	return n
}

// Create implements Store. A seed longer than 32 bytes is refused.
func (m *MemoryStore) Create(ctx context.Context, s *Session) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if len(s.Seed) > seedLen {
		return errors.New("refresh: memory store: seed longer than 32 bytes")
	}
	k := parseMemID(s.ID)
	if !k.isFixed {
		k.other = strings.Clone(k.other)
	}
	r := &memRecord{
		scope: internScope(s.Scope), gen: s.Generation, grace: s.GraceUses,
		created: nanos(s.CreatedAt), rotated: nanos(s.RotatedAt), expires: nanos(s.ExpiresAt), revoked: nanos(s.RevokedAt),
		seedN: uint8(len(s.Seed)),
	}
	if s.ClientID != "" || s.DPoPKey != "" || s.RevokeReason != "" || len(s.Claims) > 0 || s.Meta != nil {
		r.ext = &memExt{clientID: s.ClientID, dpopKey: s.DPoPKey, reason: s.RevokeReason, claims: string(s.Claims), meta: maps.Clone(s.Meta)}
	}
	copy(r.seed[:], s.Seed)

	sh := m.shard(s.ID)
	ss := m.subjectShard(s.Subject)
	// The subject shard's lock is held across the insertion so that a
	// concurrent DeleteExpired cannot drop the entry in between; lock order
	// is always subject shard, then session shard.
	ss.mu.Lock()
	defer ss.mu.Unlock()
	e := ss.m[s.Subject]
	if e == nil {
		e = &subjectEntry{name: strings.Clone(s.Subject), fixed: map[[sessionIDLen]byte]struct{}{}, other: map[string]struct{}{}}
	}
	r.subject = e.name
	sh.mu.Lock()
	if sh.get(k) != nil {
		sh.mu.Unlock()
		return ErrSessionExists
	}
	sh.put(k, r)
	sh.mu.Unlock()
	ss.m[e.name] = e
	e.add(k)
	return nil
}

// scopes interns scope lists: most sessions share a few, and a shared list
// costs one pointer per session. Records never modify their scope.
var scopes = struct {
	sync.Mutex // guards m
	m          map[string]*[]string
}{m: make(map[string]*[]string)}

const maxInternedScopes = 1024

func internScope(scope []string) *[]string {
	if len(scope) == 0 {
		return nil
	}
	key := strings.Join(scope, "\x00")
	scopes.Lock()
	defer scopes.Unlock()
	if s, ok := scopes.m[key]; ok && slices.Equal(*s, scope) {
		return s
	}
	s := slices.Clone(scope)
	if len(scopes.m) < maxInternedScopes {
		scopes.m[key] = &s
	}
	return &s
}

// Get implements Store.
func (m *MemoryStore) Get(ctx context.Context, id string) (*Session, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	k := parseMemID(id)
	sh := m.shard(id)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	r := sh.get(k)
	if r == nil {
		return nil, ErrSessionNotFound
	}
	return r.session(id), nil
}

// update runs f on the record under its shard's write lock.
func (m *MemoryStore) update(ctx context.Context, id string, f func(*memRecord) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	k := parseMemID(id)
	sh := m.shard(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	r := sh.get(k)
	if r == nil {
		return ErrSessionNotFound
	}
	return f(r)
}

// Advance implements Store.
func (m *MemoryStore) Advance(ctx context.Context, id string, from uint64, at time.Time) error {
	return m.advance(ctx, id, from, at, math.MinInt64)
}

// AdvanceActive implements ActiveAdvancer.
func (m *MemoryStore) AdvanceActive(ctx context.Context, id string, from uint64, at, activeAfter time.Time) error {
	return m.advance(ctx, id, from, at, nanos(activeAfter))
}

func (m *MemoryStore) advance(ctx context.Context, id string, from uint64, at time.Time, activeAfter int64) error {
	return m.update(ctx, id, func(r *memRecord) error {
		if r.gen != from || r.isRevoked() || r.rotated <= activeAfter && activeAfter != math.MinInt64 {
			return ErrConflict
		}
		r.gen++
		r.grace = 0
		r.rotated = nanos(at)
		return nil
	})
}

// UseGrace implements Store.
func (m *MemoryStore) UseGrace(ctx context.Context, id string, generation uint64, limit uint32) error {
	return m.update(ctx, id, func(r *memRecord) error {
		if r.gen != generation || r.isRevoked() || r.grace >= limit {
			return ErrConflict
		}
		r.grace++
		return nil
	})
}

// Revoke implements Store.
func (m *MemoryStore) Revoke(ctx context.Context, id string, at time.Time, reason string) error {
	return m.update(ctx, id, func(r *memRecord) error {
		if !r.isRevoked() {
			r.revoke(at, reason)
		}
		return nil
	})
}

func (m *MemoryStore) subjectIDs(subject string) []string {
	ss := m.subjectShard(subject)
	ss.mu.Lock()
	defer ss.mu.Unlock()
	e := ss.m[subject]
	if e == nil {
		return nil
	}
	ids := make([]string, 0, e.len())
	for k := range e.fixed {
		ids = append(ids, memID{fixed: k, isFixed: true}.String())
	}
	for k := range e.other {
		ids = append(ids, k)
	}
	return ids
}

// RevokeSubject implements Store.
func (m *MemoryStore) RevokeSubject(ctx context.Context, subject string, at time.Time, reason string) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	n := 0
	for _, id := range m.subjectIDs(subject) {
		_ = m.update(ctx, id, func(r *memRecord) error {
			if r.subject == subject && !r.isRevoked() {
				r.revoke(at, reason)
				n++
			}
			return nil
		})
	}
	return n, nil
}

// Sessions implements Store.
func (m *MemoryStore) Sessions(ctx context.Context, subject string) ([]*Session, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	out := []*Session{}
	for _, id := range m.subjectIDs(subject) {
		sh := m.shard(id)
		sh.mu.RLock()
		if r := sh.get(parseMemID(id)); r != nil && r.subject == subject {
			out = append(out, r.session(id))
		}
		sh.mu.RUnlock()
	}
	SortSessions(out)
	return out, nil
}

// DeleteExpired implements Store. It visits shards in turn, from the one
// the previous call stopped in, and holds each shard's lock only while it
// scans that shard.
func (m *MemoryStore) DeleteExpired(ctx context.Context, before time.Time, limit int) (int, error) {
	cut := nanos(before)
	return m.deleteWhere(ctx, limit, func(r *memRecord) bool { return r.expires <= cut })
}

// DeleteStale implements StaleDeleter, visiting shards like DeleteExpired.
func (m *MemoryStore) DeleteStale(ctx context.Context, expiredBy, idleBy, revokedBy time.Time, limit int) (int, error) {
	e, i, v := nanos(expiredBy), nanos(idleBy), nanos(revokedBy)
	return m.deleteWhere(ctx, limit, func(r *memRecord) bool {
		return r.expires <= e || r.rotated <= i || r.isRevoked() && r.revoked <= v
	})
}

// deleteWhere removes at most limit records for which stale holds.
func (m *MemoryStore) deleteWhere(ctx context.Context, limit int, stale func(*memRecord) bool) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	type gone struct {
		k       memID
		subject string
	}
	var deleted []gone
	from := m.sweepFrom.Load() % memShards
	for j := range uint32(memShards) {
		if len(deleted) >= limit {
			break
		}
		i := (from + j) % memShards
		m.sweepFrom.Store(i) // a batch that fills up in shard i goes on there
		sh := &m.shards[i]
		sh.mu.Lock()
		for k, r := range sh.fixed {
			if len(deleted) >= limit {
				break
			}
			if stale(r) {
				delete(sh.fixed, k)
				deleted = append(deleted, gone{memID{fixed: k, isFixed: true}, r.subject})
			}
		}
		for k, r := range sh.other {
			if len(deleted) >= limit {
				break
			}
			if stale(r) {
				delete(sh.other, k)
				deleted = append(deleted, gone{memID{other: k}, r.subject})
			}
		}
		sh.mu.Unlock()
	}
	for _, g := range deleted {
		ss := m.subjectShard(g.subject)
		ss.mu.Lock()
		if e := ss.m[g.subject]; e != nil {
			e.remove(g.k)
			if e.len() == 0 {
				delete(ss.m, g.subject)
			}
		}
		ss.mu.Unlock()
	}
	return len(deleted), nil
}
