# python ITERATIONS [OUT]: Debian's own /usr/bin/python3, unmodified, run by the bench with
# PYTHONMALLOC=malloc so every object allocation goes through libc's malloc: each iteration
# builds a small record (a dict, a formatted string, a list) and drops most of it, the churn of
# real Python code. Times its own loop like the C workloads; it cannot count its allocator
# calls, so it reports `events 0` and the bench takes the count from alloctrace's report.
import os
import sys
import time

n = int(sys.argv[1]) if len(sys.argv) > 1 else 100000
if os.environ.get("BENCH_WAIT"):
    # As bench.h: a tracer attaching to our pid lets the loop start with one byte on stdin.
    print("ready", flush=True)
    sys.stdin.buffer.read(1)
kept = []
start = time.perf_counter_ns()
for i in range(n // 10):
    rec = {"id": i, "name": "item-%d" % i, "tags": [i, i + 1, i + 2]}
    s = ",".join(str(x) for x in rec["tags"])
    if i % 100 == 0:
        kept.append((rec, s))
elapsed = time.perf_counter_ns() - start
out = open(sys.argv[2], "w") if len(sys.argv) > 2 else sys.stdout
out.write("elapsed_ns %d\nevents 0\n" % elapsed)
out.close()
