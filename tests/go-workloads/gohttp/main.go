// A net/http server and its Go client. `serve` listens on 127.0.0.1 (a free port), prints
// `ready` (its address in the file GO_HTTP_ADDR names), answers every request to /work through main.handleWork (one escaping
// 1000-byte buffer per request, counted), and on end of stdin writes its ground truth
// (requests served) and exits. `client <address> <n>` makes n requests on 4 goroutines and
// exits 0 once every answer is right.
package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
)

var (
	served atomic.Int64
	sinkMu sync.Mutex
	sink   []byte
	okBody = []byte("ok 1000")
)

//go:noinline
func handleWork(w http.ResponseWriter, r *http.Request) {
	buf := make([]byte, 1000)
	buf[0] = 'k'
	sinkMu.Lock()
	sink = buf
	sinkMu.Unlock()
	served.Add(1)
	w.Write(okBody)
}

func serve() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	http.HandleFunc("/work", handleWork)
	go http.Serve(ln, nil)
	if p := os.Getenv("GO_HTTP_ADDR"); p != "" {
		if err := os.WriteFile(p, []byte(ln.Addr().String()), 0o644); err != nil {
			panic(err)
		}
	}
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin)
	n := served.Load()
	text := fmt.Sprintf("pid %d\nsite main.handleWork allocs=%d bytes=%d frees=0 freed_bytes=0 size_hist=10:%d\n",
		os.Getpid(), n, 1000*n, n)
	if n == 0 {
		text = fmt.Sprintf("pid %d\n", os.Getpid())
	}
	if p := os.Getenv("GROUND_TRUTH"); p != "" {
		os.WriteFile(p, []byte(text), 0o644)
	}
	fmt.Printf("served %d\n", n)
}

func client(addr string, n int) {
	var wg sync.WaitGroup
	var bad atomic.Int64
	per := n / 4
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < per; i++ {
				resp, err := http.Get("http://" + addr + "/work")
				if err != nil {
					bad.Add(1)
					continue
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if string(body) != "ok 1000" {
					bad.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if bad.Load() != 0 {
		fmt.Printf("%d bad answers\n", bad.Load())
		os.Exit(1)
	}
	fmt.Printf("client done %d\n", per*4)
}

func main() {
	switch os.Args[1] {
	case "serve":
		serve()
	case "client":
		n, _ := strconv.Atoi(os.Args[3])
		client(os.Args[2], n)
	}
}
