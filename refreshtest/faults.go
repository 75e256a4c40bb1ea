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

// LoseStoreReplies is FailStore for replies lost after the fact: the named
// calls (all, with none) reach the store and take effect, then return err,
// as when a database commits an update and the connection drops before its
// reply arrives. The Issuer then cannot tell from the error whether a
// rotation happened; a rotation whose swap took effect is still answered
// as a success (the Issuer looks), and what a service of its own does with
// such faults can be tested the same way. LoseStoreReplies(nil) and
// FailStore(nil) end either mode. It is safe to call while requests are
// being served.
func (f *Issuer) LoseStoreReplies(err error, methods ...string) {
	f.t.Helper()
	f.FailStore(err, methods...)
	if fs := f.faults.set.Load(); fs != nil {
		f.faults.set.Store(&faultSet{err: fs.err, only: fs.only, after: true})
	}
}

type faultSet struct {
	err   error
	only  []string // empty: every method
	after bool     // the call takes effect before it fails (LoseStoreReplies)
}

// faultyStore is New's MemoryStore as the Issuer sees it: each call first
// asks whether FailStore has made it fail.
type faultyStore struct {
	*refresh.MemoryStore
	set atomic.Pointer[faultSet]
}

// fault returns the error a call fails with before it reaches the store
// (early, FailStore), or after it took effect (late, LoseStoreReplies), or
// neither.
func (s *faultyStore) fault(method string) (early, late error) {
	fs := s.set.Load()
	if fs == nil || len(fs.only) > 0 && !slices.Contains(fs.only, method) {
		return nil, nil
	}
	if fs.after {
		return nil, fs.err
	}
	return fs.err, nil
}

// lost is err, or late when the call's reply is lost.
func lost(err, late error) error {
	if late != nil {
		return late
	}
	return err
}

// lostValue is lost for calls that also return a value: the zero value
// goes with late.
func lostValue[T any](v T, err, late error) (T, error) {
	if late != nil {
		var zero T
		return zero, late
	}
	return v, err
}

func (s *faultyStore) Create(ctx context.Context, sess *refresh.Session) error {
	early, late := s.fault("Create")
	if early != nil {
		return early
	}
	return lost(s.MemoryStore.Create(ctx, sess), late)
}

func (s *faultyStore) Get(ctx context.Context, id string) (*refresh.Session, error) {
	early, late := s.fault("Get")
	if early != nil {
		return nil, early
	}
	v, err := s.MemoryStore.Get(ctx, id)
	return lostValue(v, err, late)
}

func (s *faultyStore) Advance(ctx context.Context, id string, from uint64, at time.Time) error {
	early, late := s.fault("Advance")
	if early != nil {
		return early
	}
	return lost(s.MemoryStore.Advance(ctx, id, from, at), late)
}

func (s *faultyStore) AdvanceActive(ctx context.Context, id string, from uint64, at, activeAfter time.Time) error {
	early, late := s.fault("AdvanceActive")
	if early != nil {
		return early
	}
	return lost(s.MemoryStore.AdvanceActive(ctx, id, from, at, activeAfter), late)
}

func (s *faultyStore) UseGrace(ctx context.Context, id string, generation uint64, limit uint32) error {
	early, late := s.fault("UseGrace")
	if early != nil {
		return early
	}
	return lost(s.MemoryStore.UseGrace(ctx, id, generation, limit), late)
}

func (s *faultyStore) Revoke(ctx context.Context, id string, at time.Time, reason string) error {
	early, late := s.fault("Revoke")
	if early != nil {
		return early
	}
	return lost(s.MemoryStore.Revoke(ctx, id, at, reason), late)
}

func (s *faultyStore) RevokeSubject(ctx context.Context, subject string, at time.Time, reason string) (int, error) {
	early, late := s.fault("RevokeSubject")
	if early != nil {
		return 0, early
	}
	v, err := s.MemoryStore.RevokeSubject(ctx, subject, at, reason)
	return lostValue(v, err, late)
}

func (s *faultyStore) Sessions(ctx context.Context, subject string) ([]*refresh.Session, error) {
	early, late := s.fault("Sessions")
	if early != nil {
		return nil, early
	}
	v, err := s.MemoryStore.Sessions(ctx, subject)
	return lostValue(v, err, late)
}

func (s *faultyStore) DeleteExpired(ctx context.Context, before time.Time, limit int) (int, error) {
	early, late := s.fault("DeleteExpired")
	if early != nil {
		return 0, early
	}
	v, err := s.MemoryStore.DeleteExpired(ctx, before, limit)
	return lostValue(v, err, late)
}

func (s *faultyStore) DeleteStale(ctx context.Context, expiredBy, idleBy, revokedBy time.Time, limit int) (int, error) {
	early, late := s.fault("DeleteStale")
	if early != nil {
		return 0, early
	}
	v, err := s.MemoryStore.DeleteStale(ctx, expiredBy, idleBy, revokedBy, limit)
	return lostValue(v, err, late)
}

func (s *faultyStore) RecordProof(ctx context.Context, id string, now, expires time.Time) error {
	early, late := s.fault("RecordProof")
	if early != nil {
		return early
	}
	return lost(s.MemoryStore.RecordProof(ctx, id, now, expires), late)
}

func (s *faultyStore) DeleteExpiredProofs(ctx context.Context, before time.Time, limit int) (int, error) {
	early, late := s.fault("DeleteExpiredProofs")
	if early != nil {
		return 0, early
	}
	v, err := s.MemoryStore.DeleteExpiredProofs(ctx, before, limit)
	return lostValue(v, err, late)
}
