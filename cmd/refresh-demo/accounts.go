package main

import (
	"context"
	"errors"
	"sync"

	"golang.org/x/crypto/bcrypt"
)

// bcryptCost is the cost of the hashes a password change stores, the
// cost of the demo's built-in ones.
var bcryptCost = 10

// passwordStore keeps the password hash of each built-in account (users)
// and its version, which counts the account's password changes, where the
// sessions are: every instance on one store sees a change at once, and a
// restart keeps it (the memory store's die with the process, as its
// sessions do). Implementations seed the built-in hashes, version 0, for
// accounts they do not hold yet, and never overwrite one they hold. They
// are only ever asked about the built-in accounts' names. Safe for
// concurrent use.
type passwordStore interface {
	// password returns username's hash and version; ok is false when the
	// store holds no such account.
	password(ctx context.Context, username string) (hash []byte, version uint64, ok bool, err error)
	// setPassword stores hash as username's password and moves its
	// version on, both at once; errNoAccount when the store holds no such
	// account.
	setPassword(ctx context.Context, username string, hash []byte) error
}

// accounts are the demo's users: the built-in names and roles (users),
// with passwords from a passwordStore, so that a sign-in can tell whether
// the password it checked is still the account's (see loginHandler), on
// whichever instance the change was made. Safe for concurrent use.
type accounts struct{ st passwordStore }

// check compares password with username's and returns the account's roles
// and the version of the password it matched; err is a store fault, and
// then ok is false. An unknown user costs a bcrypt comparison too, so that
// a wrong user name takes as long as a wrong password; the store is asked
// only about the built-in names, so nothing a client sends as a user name
// reaches a database.
func (a accounts) check(ctx context.Context, username, password string) (roles []string, version uint64, ok bool, err error) {
	u, builtIn := users[username]
	hash, known := dummyHash, false
	if builtIn {
		var h []byte
		if h, version, known, err = a.st.password(ctx, username); err != nil {
			return nil, 0, false, err
		}
		if known {
			hash = h
		}
	}
	if bcrypt.CompareHashAndPassword(hash, []byte(password)) != nil || !known {
		return nil, 0, false, nil
	}
	return u.roles, version, true, nil
}

// current reports whether username is an account whose password is still
// at version: false once the password changed, and for an account that is
// gone.
func (a accounts) current(ctx context.Context, username string, version uint64) (bool, error) {
	if _, builtIn := users[username]; !builtIn {
		return false, nil
	}
	_, v, ok, err := a.st.password(ctx, username)
	return ok && v == version, err
}

// Bounds of a new password: bcrypt reads at most 72 bytes.
const (
	minPasswordLen = 8
	maxPasswordLen = 72
)

var (
	errWeakPassword = errors.New("password: 8 to 72 bytes")
	errNoAccount    = errors.New("password: no such account")
)

// setPassword gives username a new password and a new version, and
// returns when both are in place in the store: from then on a sign-in
// checked against the old password, however far along and on whichever
// instance, can no longer end with a live session (loginHandler compares
// versions after Issue).
func (a accounts) setPassword(ctx context.Context, username, password string) error {
	if len(password) < minPasswordLen || len(password) > maxPasswordLen {
		return errWeakPassword
	}
	if _, builtIn := users[username]; !builtIn {
		return errNoAccount
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcryptCost)
	if err != nil {
		return err
	}
	return a.st.setPassword(ctx, username, hash)
}

// memoryPasswords is the passwordStore of -store memory and of tests:
// one process's, gone with it.
type memoryPasswords struct {
	mu sync.RWMutex // guards m and the entries in it
	m  map[string]*storedPassword
}

type storedPassword struct {
	hash    []byte
	version uint64
}

func newMemoryPasswords() *memoryPasswords {
	p := &memoryPasswords{m: map[string]*storedPassword{}}
	for name, u := range users {
		p.m[name] = &storedPassword{hash: u.hash}
	}
	return p
}

func (p *memoryPasswords) password(_ context.Context, username string) ([]byte, uint64, bool, error) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	e, ok := p.m[username]
	if !ok {
		return nil, 0, false, nil
	}
	return e.hash, e.version, true, nil
}

func (p *memoryPasswords) setPassword(_ context.Context, username string, hash []byte) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	e, ok := p.m[username]
	if !ok {
		return errNoAccount
	}
	e.hash = hash
	e.version++
	return nil
}
