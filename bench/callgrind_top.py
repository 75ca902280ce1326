"""Instructions per call by function, from a callgrind dump: each function's own instructions
(not those of what it calls), most first; and how many times a call reads the clock and
allocates, which cost more time than their instructions say (a TSC read, a cache line of fresh
memory), and — when the dump was made with callgrind's cache simulation — how many of a call's
instruction fetches and data reads and writes missed the level-1 caches. Used by
bench/instructions.

With BINARY (a dump made with `--dump-instr=yes`): also how many atomic read-modify-writes a call
runs in that binary's code — its `lock`-prefixed instructions and `xchg` with memory, found by
objdump — and the functions that run most of them. Each is one instruction to callgrind, but
costs a pipeline drain (~10–20 cycles) where it runs, and far more when another core wrote the
same cache line last: counts of them show what instruction counts hide.

    python3 bench/callgrind_top.py DUMP CALLS [COUNT [BINARY]]
"""
import collections
import re
import subprocess
import sys


# Callees counted per call: the clock (libc's entry to the vDSO; std, tokio and hyper all read
# it there) and the allocators (jemalloc's, glibc's for nginx).
CLOCK = ("clock_gettime",)
ALLOCATORS = ("_rjem_malloc", "_rjem_mallocx", "_rjem_calloc", "malloc", "calloc")


def locked_instructions(binary):
    """The addresses of `binary`'s atomic read-modify-writes: `lock`-prefixed instructions and
    `xchg` with a memory operand (locked without a prefix)."""
    text = subprocess.run(["objdump", "-d", "--no-show-raw-insn", binary], capture_output=True,
                          text=True, check=True).stdout
    found = set()
    for line in text.splitlines():
        match = re.match(r"\s+([0-9a-f]+):\s+(lock |xchg\S*\s+\S*\()", line)
        if match:
            found.add(int(match.group(1), 16))
    return found


def step(token, value, base=10):
    """A position of a dump line: absolute, relative (`+n`, `-n`) or the same (`*`)."""
    if token == "*":
        return value
    if token[0] in "+-":
        diff = int(token[1:], 16) if token[1:].startswith("0x") else int(token[1:])
        return value + diff if token[0] == "+" else value - diff
    return int(token, 16) if token.startswith("0x") else int(token, base)


def read_dump(path, locked=None, binary=None):
    """From the dump at `path`, in one pass: each function's own instructions, their total, how
    many calls it records into each function, all by name, and the dump's total of each event;
    with `locked` (addresses in `binary`), each function's atomic read-modify-writes too."""
    names, own, calls, total = {}, collections.Counter(), collections.Counter(), 0
    atomics = collections.Counter()
    objects, current_object = {}, None
    function = callee = None
    skip_next = False
    events, summary = [], []
    positions = 1
    address = 0
    for line in open(path, errors="replace"):
        if line.startswith("positions:"):
            positions = len(line.split()[1:])
            continue
        if line.startswith("events:"):
            events = line.split()[1:]
            continue
        if line.startswith("summary:"):
            summary = [int(v) for v in line.split()[1:]]
            continue
        if line.startswith("ob="):
            match = re.match(r"ob=\((\d+)\)(?: (.*))?", line.strip())
            if match.group(2):
                objects[match.group(1)] = match.group(2)
            current_object = objects.get(match.group(1))
            continue
        if line.startswith("cob="):
            match = re.match(r"cob=\((\d+)\)(?: (.*))?", line.strip())
            if match and match.group(2):
                objects[match.group(1)] = match.group(2)
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
            fields = line.split()
            if positions == 2 and fields:
                address = step(fields[0], address, 16)
            if skip_next:
                skip_next = False
                continue
            if len(fields) > positions and function is not None:
                cost = int(fields[positions])
                own[function] += cost
                total += cost
                if (locked is not None and address in locked and current_object is not None
                        and current_object.endswith("/" + binary.rsplit("/", 1)[-1])):
                    atomics[function] += cost

    def by_name(counts):
        return {names.get(f, f): n for f, n in counts.items()}

    return by_name(own), total, by_name(calls), dict(zip(events, summary)), by_name(atomics)


def counted(calls, wanted):
    """Calls into the functions named `wanted` (a symbol version, `@@GLIBC_…`, ignored)."""
    return sum(n for name, n in calls.items() if name.split("@")[0] in wanted)


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    path, calls = sys.argv[1], int(sys.argv[2])
    count = int(sys.argv[3]) if len(sys.argv) > 3 else 40
    binary = sys.argv[4] if len(sys.argv) > 4 else None
    locked = locked_instructions(binary) if binary else None
    own, total, into, events, atomics = read_dump(path, locked, binary)
    print(f"{total / calls:,.0f} instructions per call (own instructions by function, per call)")
    misses = ""
    if "I1mr" in events:
        data = events.get("D1mr", 0) + events.get("D1mw", 0)
        misses = (f", {events['I1mr'] / calls:,.0f} instruction and {data / calls:,.0f} data"
                  " level-1 misses")
    rmw = f", {sum(atomics.values()) / calls:.1f} atomic read-modify-writes" if binary else ""
    print(f"{counted(into, CLOCK) / calls:.1f} clock readings{', ' if misses or rmw else ' and '}"
          f"{counted(into, ALLOCATORS) / calls:.1f} allocations{misses}{rmw} per call")
    for name, cost in sorted(own.items(), key=lambda item: -item[1])[:count]:
        print(f"{cost / calls:10,.0f} {cost / total * 100:5.1f} %  {name[:150]}")
    if binary:
        print(f"\natomic read-modify-writes per call, by function ({binary}'s code)")
        for name, n in sorted(atomics.items(), key=lambda item: -item[1])[:count]:
            print(f"{n / calls:10.1f}  {name[:150]}")


if __name__ == "__main__":
    main()
