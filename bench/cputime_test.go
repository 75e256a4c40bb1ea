package bench

import (
	"runtime/metrics"
	"syscall"
	"testing"
	"time"
)

// cpuMark is where a measured loop began: the CPU time this process had
// used, user and system on every thread, and the part of it the Go
// runtime's estimate gives to the garbage collector (its mark workers and
// assists, and its pauses).
type cpuMark struct{ all, gc time.Duration }

func cpuNow() cpuMark {
	var m cpuMark
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		m.all = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	s := []metrics.Sample{{Name: "/cpu/classes/gc/total:cpu-seconds"}}
	if metrics.Read(s); s[0].Value.Kind() == metrics.KindFloat64 {
		m.gc = time.Duration(s[0].Value.Float64() * 1e9)
	}
	return m
}

// reportCPU reports, per operation since start, the process's CPU time
// (cpu-ns/op) and the collector's share of it (gc-cpu-ns/op), beside the
// wall-clock ns/op. cpu-ns/op over ns/op is how many cores the process kept
// busy: for one goroutine anything over 1 is the runtime's work on the
// other core; for RunParallel on two cores, under 2 is time the machine
// did not give. Together they split the two-core speed-up (serial ns/op
// over parallel ns/op) into what the library costs, what the collector
// costs and what the machine gives (BENCHMARKS.md, "The parallel pair in
// CPU time").
func reportCPU(b *testing.B, start cpuMark) {
	if b.N == 0 {
		return
	}
	end := cpuNow()
	b.ReportMetric(float64(end.all-start.all)/float64(b.N), "cpu-ns/op")
	b.ReportMetric(float64(end.gc-start.gc)/float64(b.N), "gc-cpu-ns/op")
}
