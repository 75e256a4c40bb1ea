//go:build race

package sqlitestore

// raceEnabled: under the race detector a benchmark's time means nothing
// (CI runs each benchmark once there, only so that none rots), so the
// costly set-ups shrink.
const raceEnabled = true
