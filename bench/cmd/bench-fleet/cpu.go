package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// clkTck is USER_HZ, the unit of /proc's CPU times (100 on Linux).
const clkTck = 100

// procCPU is a process's user + system CPU seconds from /proc/PID/stat.
func procCPU(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	return parseProcStat(string(b))
}

// parseProcStat reads utime + stime (fields 14 and 15) of a /proc/PID/stat
// line; the command name in parentheses may hold spaces.
func parseProcStat(s string) float64 {
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:]) // f[0] is field 3 (state)
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (u + st) / clkTck
}

// procRSS is a process's resident memory from /proc/PID/statm.
func procRSS(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/statm", pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, _ := strconv.ParseFloat(f[1], 64)
	return pages * float64(os.Getpagesize())
}

// machineCPU is the busy and total CPU seconds of the machine (/proc/stat).
func machineCPU() (busy, total float64) {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	return parseMachineStat(f)
}

func parseMachineStat(r io.Reader) (busy, total float64) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 5 || f[0] != "cpu" {
			continue
		}
		for i, v := range f[1:] {
			x, _ := strconv.ParseFloat(v, 64)
			if i >= 8 { // guest and guest_nice are already in user and nice
				break
			}
			total += x
			if i != 3 && i != 4 { // idle, iowait
				busy += x
			}
		}
		break
	}
	return busy / clkTck, total / clkTck
}

// cpuSnap is the CPU of the machine and of the fleet's processes at one
// moment.
type cpuSnap struct {
	At       time.Time
	Busy     float64 // machine, CPU seconds
	Total    float64
	Gateways float64
	NATS     float64
	Router   float64
}

func (f *fleet) snap() cpuSnap {
	s := cpuSnap{At: time.Now()}
	s.Busy, s.Total = machineCPU()
	for _, g := range f.gateways {
		s.Gateways += procCPU(g.Pid())
	}
	if f.nats != nil {
		s.NATS = procCPU(f.nats.Pid())
	}
	if f.router != nil {
		s.Router = procCPU(f.router.Pid())
	}
	return s
}

// CPUSplit is where the machine's CPU went during a phase, in cores
// (CPU seconds per second). "Rest" is the machine's busy time less the
// fleet's: the load generator, and anything else running on the machine.
type CPUSplit struct {
	Phase       string  `json:"phase"`
	Seconds     float64 `json:"seconds"`
	MachineBusy float64 `json:"machine_busy_cores"`
	Gateways    float64 `json:"gateways_cores"`
	NATS        float64 `json:"nats_cores"`
	Router      float64 `json:"router_cores"`
	Rest        float64 `json:"loadtest_and_rest_cores"`
}

func split(phase string, a, b cpuSnap) *CPUSplit {
	d := b.At.Sub(a.At).Seconds()
	if d <= 0 {
		return nil
	}
	s := &CPUSplit{Phase: phase, Seconds: d, MachineBusy: (b.Busy - a.Busy) / d, Gateways: (b.Gateways - a.Gateways) / d,
		NATS: (b.NATS - a.NATS) / d, Router: (b.Router - a.Router) / d}
	s.Rest = max(0, s.MachineBusy-s.Gateways-s.NATS-s.Router)
	return s
}

func (s *CPUSplit) String() string {
	if s == nil {
		return "no CPU split"
	}
	return fmt.Sprintf("%s %.1f s: machine %.2f cores busy (gateways %.2f, NATS %.2f, router %.2f, loadtest and the rest %.2f)",
		s.Phase, s.Seconds, s.MachineBusy, s.Gateways, s.NATS, s.Router, s.Rest)
}

// phaseSnaps records a snapshot at each phase change loadtest reports.
type phaseSnaps struct {
	mu    sync.Mutex
	order []string
	at    map[string]cpuSnap
}

func (p *phaseSnaps) add(phase string, s cpuSnap) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.at == nil {
		p.at = map[string]cpuSnap{}
	}
	if _, ok := p.at[phase]; !ok {
		p.order = append(p.order, phase)
		p.at[phase] = s
	}
}

// window is the split from the start of phase from to the start of the
// phase that follows it (or of phase to, when given and seen).
func (p *phaseSnaps) window(from string, to ...string) *CPUSplit {
	p.mu.Lock()
	defer p.mu.Unlock()
	a, ok := p.at[from]
	if !ok {
		return nil
	}
	for _, t := range to {
		if b, ok := p.at[t]; ok {
			return split(from, a, b)
		}
	}
	for i, ph := range p.order {
		if ph == from && i+1 < len(p.order) {
			return split(from, a, p.at[p.order[i+1]])
		}
	}
	return nil
}

// memStats are the Go runtime's figures after a forced GC, summed over
// the gateways (the MemStats trailer of /debug/pprof/heap?debug=1).
type memStats struct {
	HeapAlloc    float64 `json:"heap_alloc"`
	HeapInuse    float64 `json:"heap_inuse"`
	HeapIdle     float64 `json:"heap_idle"`
	HeapReleased float64 `json:"heap_released"`
	StackInuse   float64 `json:"stack_inuse"`
	Sys          float64 `json:"sys"`
}

func parseMemStats(r io.Reader) (memStats, bool) {
	var m memStats
	n := 0
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "# ") {
			continue
		}
		k, v, ok := strings.Cut(line[2:], " = ")
		if !ok {
			continue
		}
		v, _, _ = strings.Cut(v, " ")
		x, err := strconv.ParseFloat(v, 64)
		if err != nil {
			continue
		}
		switch k {
		case "HeapAlloc":
			m.HeapAlloc = x
		case "HeapInuse":
			m.HeapInuse = x
		case "HeapIdle":
			m.HeapIdle = x
		case "HeapReleased":
			m.HeapReleased = x
		case "Stack":
			m.StackInuse = x
		case "Sys":
			m.Sys = x
		default:
			continue
		}
		n++
	}
	return m, n >= 5
}

// gcMemStats forces a GC in every gateway and sums their MemStats
// (/debug/pprof/heap?gc=1&debug=1: the GC, then the text profile).
func gcMemStats(ctx context.Context, admins []string) (memStats, error) {
	var sum memStats
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make([]error, len(admins))
	for i, a := range admins {
		wg.Add(1)
		go func(i int, a string) {
			defer wg.Done()
			resp, err := get(ctx, a+"/debug/pprof/heap?gc=1&debug=1")
			if err != nil {
				errs[i] = err
				return
			}
			defer resp.Body.Close()
			m, ok := parseMemStats(resp.Body)
			if !ok {
				errs[i] = fmt.Errorf("%s/debug/pprof/heap?debug=1: no MemStats", a)
				return
			}
			mu.Lock()
			sum.HeapAlloc += m.HeapAlloc
			sum.HeapInuse += m.HeapInuse
			sum.HeapIdle += m.HeapIdle
			sum.HeapReleased += m.HeapReleased
			sum.StackInuse += m.StackInuse
			sum.Sys += m.Sys
			mu.Unlock()
		}(i, a)
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return sum, err
		}
	}
	return sum, nil
}
