"""Reads bench/sections' traces into the sections of each call and prints a table (markdown).

    python3 bench/sections.py OUT RATE SECONDS COMMIT

OUT holds, for each proxy (hourglass, nginx), `NAME.txt` (`perf script -F comm,tid,time,event,trace`
of the proxy's serving threads and the simulator's) and `oha-NAME.json`. A proxy's serving thread
is one named `hourglass-lane-` or `nginx`; every other traced thread is the simulator's.
"""
import bisect
import collections
import json
import re
import sys

# This rig's client requests are ~260 bytes; the simulator's answers 672 (whole) or ~5,300 (a
# stream). A read of fewer bytes than this by a proxy is a request, of more an upstream answer.
ANSWER_BYTES = 400
LINE = re.compile(r"\s*(\S+)\s+(\d+)\s+([\d.]+):\s+(\S+):\s*(.*)")
FD = re.compile(r"fd: (0x[0-9a-f]+)")
NEXT = re.compile(r"next_comm=(\S+)")


def serving(comm):
    return comm.startswith("hourglass-lane") or comm == "nginx"


def events(path):
    """Every traced event, in time order: (µs, comm, tid, event, fd or None, the rest)."""
    found = []
    for line in open(path, errors="replace"):
        match = LINE.match(line)
        if not match:
            continue
        comm, tid, at, event, rest = match.groups()
        fd = FD.search(rest)
        found.append((float(at) * 1e6, comm, tid, event, fd.group(1) if fd else None, rest))
    found.sort()
    return found


def received(rest):
    """The byte count a `recvfrom` returned, or None for an error or end of stream."""
    count = int(rest.strip(), 16)
    return count if 0 < count < 2**63 else None


def chains(found):
    """Each call's timestamps: request read, sent upstream, read by the simulator, answered by
    it, the answer read by the proxy, the proxy's answer written."""
    reading = {}
    # Sockets (thread, fd) a proxy read an answer on: its upstream connections.
    upstream_sockets = set()
    for at, comm, tid, event, fd, rest in found:
        if event.endswith("enter_recvfrom"):
            reading[tid] = fd
        elif event.endswith("exit_recvfrom") and serving(comm):
            count = received(rest)
            if count and count >= ANSWER_BYTES:
                upstream_sockets.add((tid, reading.get(tid)))
    reading.clear()
    woke = {}  # proxy thread -> when its last epoll_wait returned
    open_calls = {}  # (proxy thread, client fd) -> call
    unsent = collections.defaultdict(list)  # proxy thread -> calls read, not yet sent upstream
    upstream = {}  # (proxy thread, upstream fd) -> call
    at_simulator = []  # calls sent upstream, not yet read by the simulator (oldest first)
    answering = {}  # (simulator thread, fd) -> call
    done = []
    for at, comm, tid, event, fd, rest in found:
        if event.endswith("exit_epoll_wait"):
            woke[tid] = at
            continue
        if event.endswith("enter_recvfrom"):
            reading[tid] = fd
            continue
        if event.endswith("exit_recvfrom"):
            count, fd = received(rest), reading.get(tid)
            if not count:
                continue
            if serving(comm) and count >= ANSWER_BYTES:
                call = upstream.pop((tid, fd), None)
                if call and "answered" in call:
                    call["back"] = at
                    # Woken for it, or it was there when the thread looked.
                    call["woken"] = max(woke.get(tid, 0.0), call["answered"])
            elif serving(comm):
                call = {"read": at, "client": (tid, fd)}
                open_calls[(tid, fd)] = call
                unsent[tid].append(call)
            elif at_simulator:
                call = at_simulator.pop(0)
                call["sim_read"] = at
                answering[(tid, fd)] = call
            continue
        if event.endswith("enter_sendto") or event.endswith("enter_writev"):
            if serving(comm):
                call = open_calls.get((tid, fd))
                if call and "back" in call:
                    call["written"] = at
                    done.append(open_calls.pop((tid, fd)))
                elif (tid, fd) in upstream_sockets and unsent[tid]:
                    call = unsent[tid].pop()
                    call["sent"] = at
                    upstream[(tid, fd)] = call
                    at_simulator.append(call)
                    # A call the simulator never read (traced before its start) is let go.
                    del at_simulator[:-64]
            else:
                call = answering.pop((tid, fd), None)
                if call:
                    call["answered"] = at
    return done


def preemptions(found, calls):
    """How often a serving thread was switched out while it could still run, for each of the
    `calls` served while the trace ran, by what took its core."""
    taken = collections.Counter(
        (NEXT.search(rest).group(1) if NEXT.search(rest) else "?")
        for at, comm, tid, event, fd, rest in found
        if event == "sched:sched_switch" and serving(comm) and "prev_state=R" in rest
    )
    return {who: count / max(calls, 1) for who, count in taken.most_common(4)}


def switched_in_response(found, calls):
    """How many of `calls` had their serving thread switched out (for any reason) between its
    read of the answer and its write of its own, and the response section's p50, p90 and p99 over
    the calls that had not: the section's own length, without the other threads' turns in it."""
    switches = collections.defaultdict(list)
    for at, comm, tid, event, fd, rest in found:
        if event == "sched:sched_switch" and serving(comm):
            switches[tid].append(at)
    switched, clean = 0, []
    for call in calls:
        times = switches.get(call["client"][0], [])
        if bisect.bisect_left(times, call["written"]) > bisect.bisect_left(times, call["back"]):
            switched += 1
        else:
            clean.append(call["written"] - call["back"])
    return switched, tuple(quantile(clean, q) for q in (0.5, 0.9, 0.99))


def quantile(values, q):
    ordered = sorted(values)
    return ordered[int(q * (len(ordered) - 1))] if ordered else float("nan")


def main():
    out, rate, seconds, commit = sys.argv[1:5]
    sections = [
        ("request", "read", "sent"),
        ("to sim", "sent", "sim_read"),
        ("sim service", "sim_read", "answered"),
        ("back", "answered", "back"),
        ("back: until the proxy's thread runs", "answered", "woken"),
        ("back: from then until it reads", "woken", "back"),
        ("response", "back", "written"),
        ("in the proxy's process (request + response)", None, None),
        ("read to written", "read", "written"),
    ]
    rows, notes = {}, []
    for who in ("hourglass", "nginx"):
        found = events(f"{out}/{who}.txt")
        calls = [c for c in chains(found) if "sim_read" in c and "answered" in c]
        oha = json.load(open(f"{out}/oha-{who}.json"))
        served = sum(oha["statusCodeDistribution"].values())
        if len(calls) < served / 2:
            sys.exit(f"bench/sections: only {len(calls):,} of {who}'s {served:,} calls could be read "
                     f"from its trace ({out}/{who}.txt): were the syscall tracepoints recorded?")
        figures = {}
        for name, start, end in sections:
            if start is None:
                values = [(c["sent"] - c["read"]) + (c["written"] - c["back"]) for c in calls]
            else:
                values = [c[end] - c[start] for c in calls]
            figures[name] = tuple(quantile(values, q) for q in (0.5, 0.9, 0.99))
        latency = oha["latencyPercentiles"]
        figures["end to end (oha)"] = tuple(latency[p] * 1e6 for p in ("p50", "p90", "p99"))
        rows[who] = figures
        # Per call served: the trace covers the whole run, also the calls no chain was read for.
        taken = ", ".join(f"{w} {n:.2f}" for w, n in preemptions(found, served).items())
        switched, clean = switched_in_response(found, calls)
        notes.append(f"- {who}: {len(calls):,} calls traced of {served:,} served; serving threads "
                     f"preempted a call, by what took the core: {taken or 'none'}; the thread "
                     f"switched out within the response section of {switched:,} calls "
                     f"({switched / len(calls):.1%}); the section without them "
                     + " / ".join(f"{v:.0f}" for v in clean) + " µs")
    print(f"Sections of a whole answer at {rate} req/s, {seconds} s each, at {commit} "
          "(µs, p50 / p90 / p99):\n")
    print("| section | hourglass | nginx |")
    print("|---|---:|---:|")
    for name in rows["hourglass"]:
        cells = [" / ".join(f"{v:.0f}" for v in rows[who][name]) for who in ("hourglass", "nginx")]
        print(f"| {name} | {cells[0]} | {cells[1]} |")
    print()
    print("\n".join(notes))


if __name__ == "__main__":
    main()
