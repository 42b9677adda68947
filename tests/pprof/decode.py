#!/usr/bin/env python3
"""Decodes a gzipped pprof profile with the official profile.proto and prints a JSON summary.

Usage: decode.py PB2_DIR PROFILE.pb.gz

PB2_DIR holds profile_pb2.py, generated from tests/pprof/profile.proto by
`python3 -m grpc_tools.protoc -I tests/pprof --python_out=PB2_DIR tests/pprof/profile.proto`
(tests/it/pprof.rs does that in a temporary directory). Needs the `protobuf` module
(`python3 -m pip install protobuf grpcio-tools`, or `cargo xtask setup`).

The summary holds what tests/it/pprof.rs checks: sample types, per-leaf-function and total
sums of every value, every sample's stack and labels, mappings, period, times, comments, and
`problems`: every way the profile breaks profile.proto's rules (dangling ids, string_table[0]
not "", a sample with the wrong number of values, a location outside its mapping).
"""
import gzip
import json
import sys


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.path.insert(0, sys.argv[1])
    import profile_pb2  # noqa: E402 (generated at test time)

    with open(sys.argv[2], "rb") as f:
        data = f.read()
    if data[:2] != b"\x1f\x8b":
        sys.exit("not gzip-compressed (profile.proto says on-disk profiles must be)")
    p = profile_pb2.Profile()
    p.ParseFromString(gzip.decompress(data))

    problems = []
    st = list(p.string_table)
    if not st or st[0] != "":
        problems.append("string_table[0] is not the empty string")

    def s(i):
        if 0 <= i < len(st):
            return st[i]
        problems.append(f"string index {i} out of range ({len(st)} strings)")
        return f"<bad string {i}>"

    def unique(kind, items):
        ids = {}
        for x in items:
            if x.id == 0:
                problems.append(f"{kind} with id 0")
            if x.id in ids:
                problems.append(f"{kind} id {x.id} twice")
            ids[x.id] = x
        return ids

    mappings = unique("mapping", p.mapping)
    locations = unique("location", p.location)
    functions = unique("function", p.function)

    for loc in p.location:
        if loc.mapping_id:
            m = mappings.get(loc.mapping_id)
            if m is None:
                problems.append(f"location {loc.id} names missing mapping {loc.mapping_id}")
            elif not (m.memory_start <= loc.address < m.memory_limit):
                problems.append(
                    f"location {loc.id} address {loc.address:#x} outside mapping {m.id} "
                    f"[{m.memory_start:#x}, {m.memory_limit:#x})"
                )
        if not loc.line:
            problems.append(f"location {loc.id} has no line")
        for ln in loc.line:
            if ln.function_id not in functions:
                problems.append(f"location {loc.id} names missing function {ln.function_id}")

    types = [[s(t.type), s(t.unit)] for t in p.sample_type]
    names = [t[0] for t in types]
    totals = {n: 0 for n in names}
    by_leaf = {}
    samples = []
    for i, smp in enumerate(p.sample):
        if len(smp.value) != len(types):
            problems.append(f"sample {i} has {len(smp.value)} values for {len(types)} types")
            continue
        stack = []
        for lid in smp.location_id:
            loc = locations.get(lid)
            if loc is None:
                problems.append(f"sample {i} names missing location {lid}")
                stack.append("<missing>")
                continue
            # The last line is the location's own function, the others inlined into it;
            # innermost first, as the sample's locations.
            for ln in loc.line:
                fn = functions.get(ln.function_id)
                stack.append(s(fn.name) if fn is not None else "<missing>")
        if not stack:
            problems.append(f"sample {i} has no location")
        labels = {}
        for lab in smp.label:
            labels[s(lab.key)] = s(lab.str) if lab.str else lab.num
        leaf = stack[0] if stack else "<none>"
        acc = by_leaf.setdefault(leaf, {n: 0 for n in names})
        for n, v in zip(names, smp.value):
            totals[n] += v
            acc[n] += v
        samples.append({"stack": stack, "values": list(smp.value), "labels": labels})

    out = {
        "sample_types": types,
        "default_sample_type": s(p.default_sample_type),
        "period_type": [s(p.period_type.type), s(p.period_type.unit)],
        "period": p.period,
        "time_nanos": p.time_nanos,
        "duration_nanos": p.duration_nanos,
        "comments": [s(c) for c in p.comment],
        "totals": totals,
        "by_leaf": by_leaf,
        "samples": samples,
        "mappings": [
            {
                "id": m.id,
                "filename": s(m.filename),
                "build_id": s(m.build_id),
                "memory_start": m.memory_start,
                "memory_limit": m.memory_limit,
                "file_offset": m.file_offset,
                "has_functions": m.has_functions,
                "has_filenames": m.has_filenames,
                "has_line_numbers": m.has_line_numbers,
            }
            for m in p.mapping
        ],
        "locations": len(p.location),
        "functions": len(p.function),
        "problems": problems,
    }
    json.dump(out, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
