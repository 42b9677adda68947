// Ground truth for a cgo program: Go allocations (runtime.mallocgc) and C allocations
// (glibc's malloc, from C code in the same binary), each from a named function, in
// workloads/gt.h's format on the file GROUND_TRUTH names.
package main

/*
#cgo CFLAGS: -O1 -fno-omit-frame-pointer
#include <stdlib.h>

void *volatile c_sink;

__attribute__((noinline)) void c_alloc(int n, int size) {
	for (int i = 0; i < n; i++) {
		void *p = malloc(size);
		c_sink = p;
		free(p);
	}
}
*/
import "C"

import (
	"fmt"
	"os"
	"strings"
)

type node struct {
	a, b, c int64
	next    *node
}

var sink *node

//go:noinline
func goAlloc(n int) {
	for i := 0; i < n; i++ {
		sink = &node{a: int64(i)}
	}
}

func main() {
	goAlloc(3000)
	C.c_alloc(700, 48)
	C.c_alloc(300, 5000)
	var b strings.Builder
	fmt.Fprintf(&b, "pid %d\n", os.Getpid())
	fmt.Fprintf(&b, "site main.goAlloc allocs=3000 bytes=96000 frees=0 freed_bytes=0 size_hist=6:3000\n")
	fmt.Fprintf(&b, "site c_alloc allocs=1000 bytes=1533600 frees=1000 freed_bytes=1533600 size_hist=6:700,13:300\n")
	fmt.Println("cgo done")
	if p := os.Getenv("GROUND_TRUTH"); p != "" {
		os.WriteFile(p, []byte(b.String()), 0o644)
	}
}
