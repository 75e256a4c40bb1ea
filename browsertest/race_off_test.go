//go:build !race

package browsertest

// raceFlag: see race_on_test.go.
var raceFlag []string
