package main

import (
	"errors"
	"sync"

	"golang.org/x/crypto/bcrypt"
)

// bcryptCost is the cost of the hashes a password change stores, the
// cost of the demo's built-in ones.
var bcryptCost = 10

// accounts are the demo's users as one service instance knows them:
// alice and bob with the passwords of users, until POST /password changes
// one (in memory: a restart brings the built-in passwords back). Each
// account's version counts its password changes, so that a sign-in can
// tell whether the password it checked is still the account's (see
// loginHandler). Safe for concurrent use.
type accounts struct {
	mu sync.RWMutex // guards m and the accounts in it
	m  map[string]*account
}

type account struct {
	hash    []byte
	roles   []string
	version uint64
}

func newAccounts() *accounts {
	a := &accounts{m: map[string]*account{}}
	for name, u := range users {
		a.m[name] = &account{hash: u.hash, roles: u.roles}
	}
	return a
}

// check compares password with username's and returns the account's roles
// and the version of the password it matched. An unknown user costs a
// bcrypt comparison too, so that a wrong user name takes as long as a
// wrong password.
func (a *accounts) check(username, password string) (roles []string, version uint64, ok bool) {
	a.mu.RLock()
	acc, known := a.m[username]
	hash := dummyHash
	if known {
		hash, roles, version = acc.hash, acc.roles, acc.version
	}
	a.mu.RUnlock()
	if bcrypt.CompareHashAndPassword(hash, []byte(password)) != nil || !known {
		return nil, 0, false
	}
	return roles, version, true
}

// current reports whether username is an account whose password is still
// at version: false once the password changed, and for an account that is
// gone.
func (a *accounts) current(username string, version uint64) bool {
	a.mu.RLock()
	defer a.mu.RUnlock()
	acc, ok := a.m[username]
	return ok && acc.version == version
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
// returns when both are in place: from then on a sign-in checked against
// the old password, however far along, can no longer end with a live
// session (loginHandler compares versions after Issue).
func (a *accounts) setPassword(username, password string) error {
	if len(password) < minPasswordLen || len(password) > maxPasswordLen {
		return errWeakPassword
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcryptCost)
	if err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	acc, ok := a.m[username]
	if !ok {
		return errNoAccount
	}
	acc.hash = hash
	acc.version++
	return nil
}
