"""Instructions per call by function, from a callgrind dump: each function's own instructions
(not those of what it calls), most first. Used by bench/instructions.

    python3 bench/callgrind_top.py DUMP CALLS [COUNT]
"""
import collections
import re
import sys


def own_instructions(path):
    """Each function's own instructions in the dump at `path`, and the total."""
    names, own, total = {}, collections.Counter(), 0
    function, skip_next = None, False
    for line in open(path, errors="replace"):
        if line.startswith(("fn=", "cfn=")):
            match = re.match(r"c?fn=\((\d+)\)(?: (.*))?", line.strip())
            if match.group(2):
                names[match.group(1)] = match.group(2)
            if line.startswith("fn="):
                function = match.group(1)
            continue
        if line.startswith("calls="):
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
    return {names.get(f, f): c for f, c in own.items()}, total


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    path, calls = sys.argv[1], int(sys.argv[2])
    count = int(sys.argv[3]) if len(sys.argv) > 3 else 40
    own, total = own_instructions(path)
    print(f"{total / calls:,.0f} instructions per call (own instructions by function, per call)")
    for name, cost in sorted(own.items(), key=lambda item: -item[1])[:count]:
        print(f"{cost / calls:10,.0f} {cost / total * 100:5.1f} %  {name[:150]}")


if __name__ == "__main__":
    main()
