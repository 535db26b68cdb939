//go:build race

package israce

// Enabled reports whether the binary was built with -race. Allocation counts
// are meaningless under the race detector: sync.Pool drops items at random.
const Enabled = true
