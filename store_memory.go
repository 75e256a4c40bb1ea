package refresh

import (
	"cmp"
	"context"
	"hash/maphash"
	"slices"
	"sync"
	"time"
)

const memShards = 64

// MemoryStore is a Store that keeps sessions in the memory of one process:
// for tests and for services that run as a single instance. Sessions do not
// survive a restart.
//
// It is sharded so that concurrent requests for different sessions rarely
// contend. All methods are safe for concurrent use. A background sweeper
// removes expired sessions in bounded batches; Close stops it.
type MemoryStore struct {
	seed     maphash.Seed
	shards   [memShards]memShard
	subjects [memShards]subjectShard
	now      func() time.Time
	batch    int
	sweep    time.Duration

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

type memShard struct {
	mu sync.RWMutex // guards m
	m  map[string]*Session
}

type subjectShard struct {
	mu sync.Mutex // guards m
	m  map[string]map[string]struct{}
}

// MemoryOption configures a MemoryStore.
type MemoryOption func(*MemoryStore)

// WithSweepInterval sets how often the background sweeper deletes expired
// sessions (default one minute). Zero or a negative value disables the
// sweeper; call DeleteExpired yourself then.
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
		m.shards[i].m = make(map[string]*Session)
		m.subjects[i].m = make(map[string]map[string]struct{})
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

var _ Store = (*MemoryStore)(nil)

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
			for {
				n, _ := m.DeleteExpired(context.Background(), m.now(), m.batch)
				if n < m.batch {
					break
				}
				select {
				case <-m.stop:
					return
				default:
				}
			}
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
		n += len(sh.m)
		sh.mu.RUnlock()
	}
	return n
}

// Create implements Store.
func (m *MemoryStore) Create(ctx context.Context, s *Session) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c := s.Clone()
	sh := m.shard(c.ID)
	sh.mu.Lock()
	if _, ok := sh.m[c.ID]; ok {
		sh.mu.Unlock()
		return ErrSessionExists
	}
	sh.m[c.ID] = c
	sh.mu.Unlock()

	ss := m.subjectShard(c.Subject)
	ss.mu.Lock()
	ids := ss.m[c.Subject]
	if ids == nil {
		ids = make(map[string]struct{}, 1)
		ss.m[c.Subject] = ids
	}
	ids[c.ID] = struct{}{}
	ss.mu.Unlock()
	return nil
}

// Get implements Store.
func (m *MemoryStore) Get(ctx context.Context, id string) (*Session, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	sh := m.shard(id)
	sh.mu.RLock()
	s, ok := sh.m[id]
	var c *Session
	if ok {
		c = s.Clone()
	}
	sh.mu.RUnlock()
	if !ok {
		return nil, ErrSessionNotFound
	}
	return c, nil
}

// update runs f on the stored session under the shard's write lock.
func (m *MemoryStore) update(ctx context.Context, id string, f func(*Session) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	sh := m.shard(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	s, ok := sh.m[id]
	if !ok {
		return ErrSessionNotFound
	}
	return f(s)
}

// Advance implements Store.
func (m *MemoryStore) Advance(ctx context.Context, id string, from uint64, at time.Time) error {
	return m.update(ctx, id, func(s *Session) error {
		if s.Generation != from || s.Revoked() {
			return ErrConflict
		}
		s.Generation++
		s.GraceUses = 0
		s.RotatedAt = at
		return nil
	})
}

// UseGrace implements Store.
func (m *MemoryStore) UseGrace(ctx context.Context, id string, generation uint64, limit uint32) error {
	return m.update(ctx, id, func(s *Session) error {
		if s.Generation != generation || s.Revoked() || s.GraceUses >= limit {
			return ErrConflict
		}
		s.GraceUses++
		return nil
	})
}

// Revoke implements Store.
func (m *MemoryStore) Revoke(ctx context.Context, id string, at time.Time, reason string) error {
	return m.update(ctx, id, func(s *Session) error {
		if !s.Revoked() {
			s.RevokedAt, s.RevokeReason = at, reason
		}
		return nil
	})
}

func (m *MemoryStore) subjectIDs(subject string) []string {
	ss := m.subjectShard(subject)
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ids := make([]string, 0, len(ss.m[subject]))
	for id := range ss.m[subject] {
		ids = append(ids, id)
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
		sh := m.shard(id)
		sh.mu.Lock()
		if s, ok := sh.m[id]; ok && s.Subject == subject && !s.Revoked() {
			s.RevokedAt, s.RevokeReason = at, reason
			n++
		}
		sh.mu.Unlock()
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
		if s, ok := sh.m[id]; ok && s.Subject == subject {
			out = append(out, s.Clone())
		}
		sh.mu.RUnlock()
	}
	slices.SortFunc(out, func(a, b *Session) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return cmp.Compare(a.ID, b.ID)
	})
	return out, nil
}

// DeleteExpired implements Store. It visits shards in turn and holds each
// shard's lock only while it scans that shard.
func (m *MemoryStore) DeleteExpired(ctx context.Context, before time.Time, limit int) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	type gone struct{ id, subject string }
	var deleted []gone
	for i := range m.shards {
		if len(deleted) >= limit {
			break
		}
		sh := &m.shards[i]
		sh.mu.Lock()
		for id, s := range sh.m {
			if len(deleted) >= limit {
				break
			}
			if !s.ExpiresAt.After(before) {
				delete(sh.m, id)
				deleted = append(deleted, gone{id, s.Subject})
			}
		}
		sh.mu.Unlock()
	}
	for _, g := range deleted {
		ss := m.subjectShard(g.subject)
		ss.mu.Lock()
		if ids := ss.m[g.subject]; ids != nil {
			delete(ids, g.id)
			if len(ids) == 0 {
				delete(ss.m, g.subject)
			}
		}
		ss.mu.Unlock()
	}
	return len(deleted), nil
}
