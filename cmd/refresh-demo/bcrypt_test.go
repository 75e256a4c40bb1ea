package main

import "golang.org/x/crypto/bcrypt"

// The tests in this package check passwords at bcrypt's lowest cost, 4,
// instead of the demo's 10: the scripts run them under -race, where one
// check at cost 10 takes 0.75 s of CPU (60 ms without), and those checks were
// most of this package's test time. What the tests assert about sign-ins
// (which ones pass, what they answer, how the throttle counts them) does
// not depend on the cost, except that checks sent together must overlap
// (see dummyHash below). The demo binary that TestTwoProcesses* and the
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
	bcryptCost = bcrypt.MinCost // for POST /password

	// dummyHash, which an unknown user's password is checked against, is
	// left at the demo's cost 10: TestLoginThrottleConcurrentGuesses
	// guesses for an unknown user so that each check is long enough for
	// guesses sent together to overlap (at cost 4 the throttle's old bug,
	// counting only finished checks, was caught in 4 of 5 runs; at cost 10
	// every time).
}
