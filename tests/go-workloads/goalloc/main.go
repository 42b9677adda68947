// Ground truth for alloctrace's Go tests: named //go:noinline functions whose objects escape
// to package-level variables, each a known number of runtime.mallocgc calls of known sizes.
// Written in workloads/gt.h's format to the file GROUND_TRUTH names; frees are 0 (Go frees
// by collection, not by calls, and alloctrace does not claim any).
//
// Arguments: "wait" says ready on stdout and blocks until a byte arrives on stdin (--pid
// tests); "threads" runs the goroutine part on several OS threads.
package main

import (
	"fmt"
	"math/bits"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
)

type node struct {
	a, b, c int64
	next    *node
}

type tally struct {
	name          string
	allocs, bytes uint64
	hist          [64]uint64
	mu            sync.Mutex
}

func (t *tally) add(n uint64) {
	t.mu.Lock()
	t.allocs++
	t.bytes += n
	t.hist[bits.Len64(n)]++
	t.mu.Unlock()
}

var (
	sinkNode  *node
	sinkBytes []byte
	sinkInts  []int64
	sinkStr   string
	sinks     [64]*node

	tNodes   = &tally{name: "main.allocNodes"}
	tBytes   = &tally{name: "main.allocBytes"}
	tInts    = &tally{name: "main.allocInts"}
	tStrings = &tally{name: "main.allocStrings"}
	tDeep    = &tally{name: "main.deepAlloc"}
	tWorker  = &tally{name: "main.workerAlloc"}
	tChurn   = &tally{name: "main.churn"}
)

//go:noinline
func allocNodes(n int) {
	for i := 0; i < n; i++ {
		sinkNode = &node{a: int64(i)}
	}
	for i := 0; i < n; i++ {
		tNodes.add(32)
	}
}

//go:noinline
func allocBytes(sizes []int) {
	for _, s := range sizes {
		sinkBytes = make([]byte, s)
	}
	for _, s := range sizes {
		tBytes.add(uint64(s))
	}
}

//go:noinline
func allocInts(n, each int) {
	for i := 0; i < n; i++ {
		sinkInts = make([]int64, each)
	}
	for i := 0; i < n; i++ {
		tInts.add(uint64(8 * each))
	}
}

//go:noinline
func allocStrings(parts []string) {
	for i := 1; i < len(parts); i++ {
		sinkStr = parts[i-1] + parts[i]
	}
	for i := 1; i < len(parts); i++ {
		tStrings.add(uint64(len(parts[i-1]) + len(parts[i])))
	}
}

// recurse grows the goroutine's stack (runtime.morestack) on the way down, so deepAlloc's
// mallocgc calls run right after stack growth.
//
//go:noinline
func recurse(depth int, pad [64]int64) int64 {
	if depth == 0 {
		deepAlloc()
		return pad[0]
	}
	pad[depth%64] = int64(depth)
	return recurse(depth-1, pad) + pad[depth%64]
}

//go:noinline
func deepAlloc() {
	sinkNode = &node{b: 1}
	tDeep.add(32)
}

//go:noinline
func workerAlloc(id, n int) {
	for i := 0; i < n; i++ {
		sinks[id] = &node{c: int64(i)}
		tWorker.add(32)
	}
}

// churn allocates 25 MiB in 64 KiB buffers: several GC cycles start on their own.
//
//go:noinline
func churn(n int) {
	for i := 0; i < n; i++ {
		sinkBytes = make([]byte, 64<<10)
		tChurn.add(64 << 10)
	}
}

func main() {
	// hold: as wait, and it waits again before exiting (still running while a daemon is
	// read: its GC cycles shown live).
	hold := len(os.Args) > 1 && os.Args[1] == "hold"
	wait := hold || len(os.Args) > 1 && os.Args[1] == "wait"
	threads := len(os.Args) > 1 && os.Args[1] == "threads"
	var b [1]byte
	if wait {
		fmt.Println("ready")
		os.Stdin.Read(b[:])
	}
	allocNodes(1000)
	sizes := make([]int, 0, 300)
	for i := 0; i < 300; i++ {
		sizes = append(sizes, 1+i*37%5000)
	}
	sizes = append(sizes, 40000, 100000)
	allocBytes(sizes)
	allocInts(200, 25)
	parts := make([]string, 101)
	for i := range parts {
		parts[i] = strings.Repeat("x", i%17+1)
	}
	allocStrings(parts)
	for i := 0; i < 20; i++ {
		recurse(200+i, [64]int64{})
	}
	workers := 4
	if threads {
		runtime.GOMAXPROCS(4)
		workers = 8
	}
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(id int) {
			defer wg.Done()
			workerAlloc(id, 5000)
		}(w)
	}
	wg.Wait()
	churn(400)
	runtime.GC()
	// No cycle after the count below (the ground truth is written after it, and allocates).
	debug.SetGCPercent(-1)
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	fmt.Printf("goroutines done, stack growth done, gc cycles %d\n", ms.NumGC)
	fmt.Printf("memstats numgc %d numforcedgc %d pausetotalns %d lastgc %d\n",
		ms.NumGC, ms.NumForcedGC, ms.PauseTotalNs, ms.LastGC)
	writeTruth()
	if hold {
		fmt.Println("holding")
		os.Stdin.Read(b[:])
	}
}

func writeTruth() {
	var b strings.Builder
	fmt.Fprintf(&b, "pid %d\n", os.Getpid())
	for _, t := range []*tally{tNodes, tBytes, tInts, tStrings, tDeep, tWorker, tChurn} {
		var h []string
		for i, n := range t.hist {
			if n != 0 {
				h = append(h, fmt.Sprintf("%d:%d", i, n))
			}
		}
		fmt.Fprintf(&b, "site %s allocs=%d bytes=%d frees=0 freed_bytes=0 size_hist=%s\n",
			t.name, t.allocs, t.bytes, strings.Join(h, ","))
	}
	out := os.Stderr
	if p := os.Getenv("GROUND_TRUTH"); p != "" {
		f, err := os.Create(p)
		if err != nil {
			panic(err)
		}
		defer f.Close()
		out = f
	}
	out.WriteString(b.String())
}
