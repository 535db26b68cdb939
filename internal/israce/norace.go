//go:build !race

// Package israce tells whether the race detector is on, for tests that
// count allocations (which it changes).
package israce

// Enabled reports whether the binary was built with -race.
const Enabled = false
