package main

import (
	"crypto/rand"

	"golang.org/x/crypto/bcrypt"
)

// The tests in this package check passwords at bcrypt's lowest cost, 4,
// instead of the demo's 10: the scripts run them under -race, where one
// check at cost 10 takes 0.75 s of CPU (60 ms without), and those checks were
// most of this package's test time. What the tests assert about sign-ins
// (which ones pass, what they answer, how the throttle counts them) does
// not depend on the cost. The demo binary that TestTwoProcesses* and the
// browser tests start is built without this file and keeps cost 10.
func init() {
	lower := func(password []byte) []byte {
		h, err := bcrypt.GenerateFromPassword(password, bcrypt.MinCost)
		if err != nil {
			panic(err)
		}
		return h
	}
	for name, pw := range map[string]string{"alice": "wonderland", "bob": "builder"} {
		u := users[name]
		if bcrypt.CompareHashAndPassword(u.hash, []byte(pw)) != nil {
			panic("bcrypt_test.go: the demo's password for " + name + " changed")
		}
		u.hash = lower([]byte(pw))
		users[name] = u
	}
	if len(users) != 2 {
		panic("bcrypt_test.go: the demo has users this file does not know")
	}
	dummyHash = lower([]byte(rand.Text())) // matches no password, as the demo's
	bcryptCost = bcrypt.MinCost            // for POST /password
}
