//go:build !race

package impl

// raceEnabled: the race detector is on, and allocation counts are its own.
const raceEnabled = false
