"""Instructions per call by function, from a callgrind dump: each function's own instructions
(not those of what it calls), most first; and how many times a call reads the clock and
allocates, which cost more time than their instructions say (a TSC read, a cache line of fresh
memory), and — when the dump was made with callgrind's cache simulation — how many of a call's
instruction fetches and data reads and writes missed the level-1 caches. Used by
bench/instructions.

    python3 bench/callgrind_top.py DUMP CALLS [COUNT]
"""
import collections
import re
import sys


# Callees counted per call: the clock (libc's entry to the vDSO; std, tokio and hyper all read
# it there) and the allocators (jemalloc's, glibc's for nginx).
CLOCK = ("clock_gettime",)
ALLOCATORS = ("_rjem_malloc", "_rjem_mallocx", "_rjem_calloc", "malloc", "calloc")


def read_dump(path):
    """From the dump at `path`, in one pass: each function's own instructions, their total, how
    many calls it records into each function, all by name, and the dump's total of each event."""
    names, own, calls, total = {}, collections.Counter(), collections.Counter(), 0
    function = callee = None
    skip_next = False
    events, summary = [], []
    for line in open(path, errors="replace"):
        if line.startswith("events:"):
            events = line.split()[1:]
            continue
        if line.startswith("summary:"):
            summary = [int(v) for v in line.split()[1:]]
            continue
        if line.startswith(("fn=", "cfn=")):
            match = re.match(r"c?fn=\((\d+)\)(?: (.*))?", line.strip())
            if match.group(2):
                names[match.group(1)] = match.group(2)
            if line.startswith("fn="):
                function = match.group(1)
            else:
                callee = match.group(1)
            continue
        if line.startswith("calls="):
            if callee is not None:
                calls[callee] += int(line[len("calls="):].split()[0])
            skip_next = True  # the next cost line is the call's, counted in the callee
            continue
        if line[:1] in "0123456789+-*":
            if skip_next:
                skip_next = False
                continue
            fields = line.split()
            if len(fields) >= 2 and function is not None:
                cost = int(fields[1])
                own[function] += cost
                total += cost
    def by_name(counts):
        return {names.get(f, f): n for f, n in counts.items()}

    return by_name(own), total, by_name(calls), dict(zip(events, summary))


def counted(calls, wanted):
    """Calls into the functions named `wanted` (a symbol version, `@@GLIBC_…`, ignored)."""
    return sum(n for name, n in calls.items() if name.split("@")[0] in wanted)


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    path, calls = sys.argv[1], int(sys.argv[2])
    count = int(sys.argv[3]) if len(sys.argv) > 3 else 40
    own, total, into, events = read_dump(path)
    print(f"{total / calls:,.0f} instructions per call (own instructions by function, per call)")
    misses = ""
    if "I1mr" in events:
        data = events.get("D1mr", 0) + events.get("D1mw", 0)
        misses = (f", {events['I1mr'] / calls:,.0f} instruction and {data / calls:,.0f} data"
                  " level-1 misses")
    print(f"{counted(into, CLOCK) / calls:.1f} clock readings{', ' if misses else ' and '}"
          f"{counted(into, ALLOCATORS) / calls:.1f} allocations{misses} per call")
    for name, cost in sorted(own.items(), key=lambda item: -item[1])[:count]:
        print(f"{cost / calls:10,.0f} {cost / total * 100:5.1f} %  {name[:150]}")


if __name__ == "__main__":
    main()
