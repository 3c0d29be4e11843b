package connlimit

// DefaultMax is the connection cap when none is configured: 10000, or half the process's
// open-file limit when that is lower (every streamed task also holds a connection to its
// engine, and the daemon needs descriptors for engine processes, logs and artifacts), and never
// below 64.
func DefaultMax() int { return defaultMax(openFileLimit()) }

func defaultMax(nofile uint64) int {
	const ceiling, floor = 10000, 64
	if nofile == 0 || nofile/2 >= ceiling {
		return ceiling
	}
	return max(int(nofile/2), floor)
}
