//go:build race

package main

// raceFlag is what this test binary was built with: the go commands it runs
// build with the same, so that they reuse its compiled dependencies (and a
// demo it starts runs under the race detector too).
var raceFlag = []string{"-race"}
