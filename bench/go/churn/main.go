// The Go bench workload (`cargo xtask bench --go-only`): an allocation-heavy loop, two heap
// allocations per iteration (a 48-byte slice and a 32-byte struct, both escaping), timed with
// the monotonic clock. `churn N OUT [RATE]`: RATE sets runtime.MemProfileRate before anything
// else ("1": every allocation profiled, the guide's "Enable Allocation Profiling"; "0":
// profiling off; absent: Go's default, one sample per 512 KiB). Writes `elapsed_ns` and
// `events` (allocations made by the loop) to OUT.
package main

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"time"
)

type node struct {
	a, b, c int64
	next    *node
}

var (
	sinkBytes []byte
	sinkNode  *node
)

//go:noinline
func work(n int) {
	for i := 0; i < n; i++ {
		sinkBytes = make([]byte, 48)
		sinkNode = &node{a: int64(i)}
	}
}

func main() {
	if len(os.Args) > 3 {
		rate, err := strconv.Atoi(os.Args[3])
		if err != nil {
			panic(err)
		}
		runtime.MemProfileRate = rate
	}
	n, err := strconv.Atoi(os.Args[1])
	if err != nil {
		panic(err)
	}
	start := time.Now()
	work(n)
	elapsed := time.Since(start)
	out := fmt.Sprintf("elapsed_ns %d\nevents %d\n", elapsed.Nanoseconds(), 2*n)
	if err := os.WriteFile(os.Args[2], []byte(out), 0o644); err != nil {
		panic(err)
	}
}
