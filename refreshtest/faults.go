package refreshtest

import (
	"context"
	"slices"
	"sync/atomic"
	"time"

	"github.com/refreshkit/refresh"
)

// StoreMethods returns the names FailStore takes: every method by which an
// Issuer reaches its store, the optional capabilities' included.
func StoreMethods() []string { return slices.Clone(storeMethods) }

var storeMethods = []string{
	"Create", "Get", "Advance", "AdvanceActive", "UseGrace", "Revoke", "RevokeSubject",
	"Sessions", "DeleteExpired", "DeleteStale", "RecordProof", "DeleteExpiredProofs",
}

// FailStore makes the Issuer's calls to its store fail with err, as calls
// to an unreachable or failing database do, until FailStore(nil): for
// testing what a service answers during an outage (the library answers 503
// at its endpoints and its middleware; a handler of the service's own that
// lists or ends sessions must too). methods names the calls that fail (see
// StoreMethods: "Get", "Revoke", ...); with none, every call fails. The
// Store field and Session still read the sessions directly, so a test can
// check that nothing changed. Unknown names fail the test, as does
// FailStore after WithConfig replaced the Store. It is safe to call while
// requests are being served.
func (f *Issuer) FailStore(err error, methods ...string) {
	f.t.Helper()
	if f.faults == nil {
		f.t.Fatalf("refreshtest: FailStore: WithConfig replaced the Store; faults apply only to New's MemoryStore")
	}
	for _, m := range methods {
		if !slices.Contains(storeMethods, m) {
			f.t.Fatalf("refreshtest: FailStore: no store method %q (want one of %v)", m, storeMethods)
		}
	}
	if err == nil {
		f.faults.set.Store(nil)
		return
	}
	f.faults.set.Store(&faultSet{err: err, only: slices.Clone(methods)})
}

type faultSet struct {
	err  error
	only []string // empty: every method
}

// faultyStore is New's MemoryStore as the Issuer sees it: each call first
// asks whether FailStore has made it fail.
type faultyStore struct {
	*refresh.MemoryStore
	set atomic.Pointer[faultSet]
}

func (s *faultyStore) fault(method string) error {
	fs := s.set.Load()
	if fs == nil || len(fs.only) > 0 && !slices.Contains(fs.only, method) {
		return nil
	}
	return fs.err
}

func (s *faultyStore) Create(ctx context.Context, sess *refresh.Session) error {
	if err := s.fault("Create"); err != nil {
		return err
	}
	return s.MemoryStore.Create(ctx, sess)
}

func (s *faultyStore) Get(ctx context.Context, id string) (*refresh.Session, error) {
	if err := s.fault("Get"); err != nil {
		return nil, err
	}
	return s.MemoryStore.Get(ctx, id)
}

func (s *faultyStore) Advance(ctx context.Context, id string, from uint64, at time.Time) error {
	if err := s.fault("Advance"); err != nil {
		return err
	}
	return s.MemoryStore.Advance(ctx, id, from, at)
}

func (s *faultyStore) AdvanceActive(ctx context.Context, id string, from uint64, at, activeAfter time.Time) error {
	if err := s.fault("AdvanceActive"); err != nil {
		return err
	}
	return s.MemoryStore.AdvanceActive(ctx, id, from, at, activeAfter)
}

func (s *faultyStore) UseGrace(ctx context.Context, id string, generation uint64, limit uint32) error {
	if err := s.fault("UseGrace"); err != nil {
		return err
	}
	return s.MemoryStore.UseGrace(ctx, id, generation, limit)
}

func (s *faultyStore) Revoke(ctx context.Context, id string, at time.Time, reason string) error {
	if err := s.fault("Revoke"); err != nil {
		return err
	}
	return s.MemoryStore.Revoke(ctx, id, at, reason)
}

func (s *faultyStore) RevokeSubject(ctx context.Context, subject string, at time.Time, reason string) (int, error) {
	if err := s.fault("RevokeSubject"); err != nil {
		return 0, err
	}
	return s.MemoryStore.RevokeSubject(ctx, subject, at, reason)
}

func (s *faultyStore) Sessions(ctx context.Context, subject string) ([]*refresh.Session, error) {
	if err := s.fault("Sessions"); err != nil {
		return nil, err
	}
	return s.MemoryStore.Sessions(ctx, subject)
}

func (s *faultyStore) DeleteExpired(ctx context.Context, before time.Time, limit int) (int, error) {
	if err := s.fault("DeleteExpired"); err != nil {
		return 0, err
	}
	return s.MemoryStore.DeleteExpired(ctx, before, limit)
}

func (s *faultyStore) DeleteStale(ctx context.Context, expiredBy, idleBy, revokedBy time.Time, limit int) (int, error) {
	if err := s.fault("DeleteStale"); err != nil {
		return 0, err
	}
	return s.MemoryStore.DeleteStale(ctx, expiredBy, idleBy, revokedBy, limit)
}

func (s *faultyStore) RecordProof(ctx context.Context, id string, now, expires time.Time) error {
	if err := s.fault("RecordProof"); err != nil {
		return err
	}
	return s.MemoryStore.RecordProof(ctx, id, now, expires)
}

func (s *faultyStore) DeleteExpiredProofs(ctx context.Context, before time.Time, limit int) (int, error) {
	if err := s.fault("DeleteExpiredProofs"); err != nil {
		return 0, err
	}
	return s.MemoryStore.DeleteExpiredProofs(ctx, before, limit)
}
