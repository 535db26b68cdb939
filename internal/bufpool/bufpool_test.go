package bufpool

import (
	"sync"
	"testing"

	"github.com/wsfleet/wsfleet/internal/israce"
)

func TestClassSizes(t *testing.T) {
	cases := []struct {
		n, wantCap int
	}{
		{0, 64}, {1, 64}, {64, 64}, {65, 128}, {1000, 1024}, {1024, 1024}, {1025, 2048},
		{MaxPooled, MaxPooled}, {MaxPooled + 1, MaxPooled + 1},
	}
	for _, tc := range cases {
		b := Get(tc.n)
		if len(*b) != 0 || cap(*b) != tc.wantCap {
			t.Errorf("Get(%d): len %d cap %d, want cap %d", tc.n, len(*b), cap(*b), tc.wantCap)
		}
		Put(b)
	}
}

func TestGrowKeepsBytes(t *testing.T) {
	b := Get(10)
	*b = append(*b, "hello"...)
	b = Grow(b, 1000)
	if string(*b) != "hello" || cap(*b)-len(*b) < 1000 {
		t.Fatalf("Grow: %q cap %d", *b, cap(*b))
	}
	Put(b)
}

func TestSharedRefs(t *testing.T) {
	s := GetShared(100)
	s.B = append(s.B, "frame"...)
	s.Retain()
	s.Release()
	if string(s.B) != "frame" {
		t.Fatal("buffer released while referenced")
	}
	s.Release()
	if s.B != nil {
		t.Fatal("last release kept the buffer")
	}
	defer func() {
		if recover() == nil {
			t.Fatal("over-release did not panic")
		}
	}()
	s2 := GetShared(1)
	s2.Release()
	s2.refs.Store(0)
	s2.Release()
}

func TestAllocsPooledPath(t *testing.T) {
	if israce.Enabled {
		t.Skip("sync.Pool drops items at random under -race; counted without it")
	}
	Put(Get(512))
	sh := GetShared(512)
	sh.Release()
	allocs := testing.AllocsPerRun(1000, func() {
		b := Get(512)
		*b = append(*b, 'x')
		Put(b)
		s := GetShared(512)
		s.B = append(s.B, "yyyyyyyy"...)
		s.B = s.B[3:] // re-sliced, as frames built with room in front are
		s.Retain()
		s.Release()
		s.Release()
	})
	if allocs > 0 {
		t.Fatalf("%.1f allocations per Get/Put round", allocs)
	}
}

func TestSharedAlt(t *testing.T) {
	s := GetShared(16)
	s.B = append(s.B, "frame"...)
	builds := 0
	encode := func(b []byte) *Shared {
		builds++
		a := GetShared(len(b) + 4)
		a.B = append(append(a.B, "alt:"...), b...)
		return a
	}
	a := s.Alt(encode)
	if string(a.B) != "alt:frame" {
		t.Fatalf("alt = %q", a.B)
	}
	if s.Alt(encode) != a || builds != 1 {
		t.Fatalf("alt built %d times, want once", builds)
	}
	a.Retain() // a queue holds the alt past the original
	s.Release()
	if string(a.B) != "alt:frame" {
		t.Fatal("the original's release freed an alt still queued")
	}
	a.Release()
	if a.B != nil {
		t.Fatal("the alt's last release kept its buffer")
	}
}

func TestSharedAltConcurrent(t *testing.T) {
	s := GetShared(16)
	s.B = append(s.B, "x"...)
	var wg sync.WaitGroup
	got := make([]*Shared, 8)
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i] = s.Alt(func(b []byte) *Shared {
				a := GetShared(1)
				a.B = append(a.B, b...)
				return a
			})
		}()
	}
	wg.Wait()
	for _, a := range got {
		if a != got[0] {
			t.Fatal("goroutines got different alts")
		}
	}
	s.Release()
}
