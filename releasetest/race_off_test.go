//go:build !race

package releasetest

// raceFlag: see race_on_test.go.
var raceFlag []string
