//go:build !race

package main

// raceFlag: see race_on_test.go.
var raceFlag []string
