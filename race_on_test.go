//go:build race

package refresh_test

// raceEnabled: the race detector allocates on its own, so allocation
// counts are checked only without it (.ci/run runs those tests again
// without -race).
const raceEnabled = true
