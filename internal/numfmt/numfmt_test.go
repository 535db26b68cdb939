package numfmt

import (
	"math"
	"testing"
)

func TestThousands(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   int64
		want string
	}{
		{"zero", 0, "0"},
		{"three digits", 999, "999"},
		{"four digits", 1000, "1,000"},
		{"a million", 1000000, "1,000,000"},
		{"negative", -1234567, "-1,234,567"},
		{"negative three digits", -100, "-100"},
		{"largest", math.MaxInt64, "9,223,372,036,854,775,807"},
		{"smallest", math.MinInt64, "-9,223,372,036,854,775,808"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Thousands(tc.in); got != tc.want {
				t.Fatalf("Thousands(%d) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}
