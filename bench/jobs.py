#!/usr/bin/env python3
"""Background jobs on this machine: how many submissions per second the embedded store takes
(each durable before it is acknowledged), how many polls per second the gateway answers (a
running job from memory, a finished one from a store snapshot), and what having jobs enabled
costs a synchronous call (target: nothing measurable).

Run through `bench/jobs` (it builds hourglass in release and installs oha first). Loopback only,
every load bounded in time, every process stopped by its PID. Prints a table and writes
bench/out/jobs.md and bench/out/jobs.json. Numbers are reported, never asserted.
"""

import argparse
import http.client
import json
import statistics
import sys
import tempfile
import time

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from harness import HOURGLASS, OUT, Service, free_port, machine, run_oha, write_report  # noqa: E402

USER = [{"role": "user", "content": "hi"}]
CHAT = json.dumps({"model": "sim-instant", "messages": USER})


def oha(url, *, method="POST", body=None, duration, connections, headers=()):
    cmd = ["oha", "--no-tui", "--output-format", "json", "-c", str(connections), "-z", duration,
           "-m", method, "-t", "30s"]
    for header in headers:
        cmd += ["-H", header]
    if body is not None:
        cmd += ["-H", "content-type: application/json", "-d", body]
    cmd.append(url)
    return run_oha(cmd, timeout=300)


def request(port, method, path, body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request(method, path, body=body, headers={"content-type": "application/json", **(headers or {})})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, data


def gateway(name, sim_port, data_dir, jobs_enabled):
    port = free_port()
    config = OUT / f"jobs-{name}.toml"
    config.write_text(
        f'[server]\nlisten = "127.0.0.1:{port}"\n\n'
        f'[jobs]\nenabled = {"true" if jobs_enabled else "false"}\nmax_queued = 1000000\nmax_running = 64\n\n'
        '[health_check]\nmode = "off"\n\n'
        f'[upstreams.sim]\nbase_url = "http://127.0.0.1:{sim_port}/v1"\n'
    )
    service = Service(f"jobs-{name}", [str(HOURGLASS), "serve", "--config", str(config), "--data-dir", str(data_dir)],
                      ready_url=f"http://127.0.0.1:{port}/health")
    return service, port


def settle(port, job_id, limit=60):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        status, body = request(port, "GET", f"/v1/hourglass/jobs/{job_id}")
        if status != 202:
            return status
        time.sleep(0.05)
    raise SystemExit(f"job {job_id} did not end")


def stats(port):
    _, body = request(port, "GET", "/status")
    return json.loads(body).get("jobs", {})


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", default="5s", help="each measurement's length")
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="a second each, once: proves the script works")
    args = parser.parse_args()
    if args.smoke:
        args.duration, args.repetitions = "1s", 1
    OUT.mkdir(parents=True, exist_ok=True)
    sim_port = free_port()
    sim = Service("jobs-sim", [str(HOURGLASS), "sim", "--listen", f"127.0.0.1:{sim_port}"],
                  ready_url=f"http://127.0.0.1:{sim_port}/v1/models")
    services = [sim]
    results = {}
    try:
        with tempfile.TemporaryDirectory() as on_dir, tempfile.TemporaryDirectory() as off_dir:
            on, on_port = gateway("on", sim_port, on_dir, True)
            off, off_port = gateway("off", sim_port, off_dir, False)
            # A second gateway without jobs: the A/A control that shows this machine's noise.
            control, control_port = gateway("control", sim_port, off_dir, False)
            services += [on, off, control]
            # The store is open (a first job made it) before anything is measured.
            status, body = request(on_port, "POST", "/v1/chat/completions", CHAT, {"prefer": "respond-async"})
            assert status == 202, body
            first = json.loads(body)["id"]
            settle(on_port, first)

            # 1. A synchronous call with jobs enabled and disabled, interleaved.
            sync = {"jobs enabled": [], "jobs disabled": [], "jobs disabled (control)": []}
            for rep in range(args.repetitions):
                order = [("jobs enabled", on_port), ("jobs disabled", off_port),
                         ("jobs disabled (control)", control_port)]
                rotated = order[rep % 3:] + order[:rep % 3]
                for label, port in rotated:
                    r = oha(f"http://127.0.0.1:{port}/v1/chat/completions", body=CHAT, duration=args.duration, connections=64)
                    sync[label].append(r)
                    print(f"  sync, {label:<24} {r['rps']:>8.0f} req/s  p50 {r['p50_ms']:6.2f} ms  p99 {r['p99_ms']:6.2f} ms", flush=True)
            results["sync"] = sync

            # 2. Submissions: each one durable (a group commit shared with others) before its 202;
            # the jobs then run on the simulator at up to 64 at once.
            before = stats(on_port)
            submits = []
            for _ in range(args.repetitions):
                r = oha(f"http://127.0.0.1:{on_port}/v1/chat/completions", body=CHAT, duration=args.duration,
                        connections=64, headers=["prefer: respond-async"])
                submits.append(r)
                print(f"  submit          {r['rps']:>8.0f} jobs/s p50 {r['p50_ms']:6.2f} ms  p99 {r['p99_ms']:6.2f} ms  {r['statuses']}", flush=True)
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                now = stats(on_port)
                if now["queued"] == 0 and now["running"] == 0:
                    break
                time.sleep(0.5)
            after = stats(on_port)
            results["submit"] = submits
            results["drained"] = {
                "submitted": after["submitted"] - before["submitted"],
                "completed": after["ended"].get("completed", 0) - before["ended"].get("completed", 0),
                "store_file_bytes": after["store_file_bytes"],
                "store_used_bytes": after["store_used_bytes"],
            }
            print(f"  drained: {results['drained']}", flush=True)

            # 3. Polls: a finished job (a store snapshot) and a running one (memory).
            status, body = request(on_port, "POST", "/v1/chat/completions", CHAT,
                                   {"prefer": "respond-async", "x-sim-fault": "hang"})
            running = json.loads(body)["id"]
            polls = {"finished job": [], "running job": []}
            for _ in range(args.repetitions):
                for label, job_id in (("finished job", first), ("running job", running)):
                    r = oha(f"http://127.0.0.1:{on_port}/v1/hourglass/jobs/{job_id}", method="GET",
                            duration=args.duration, connections=64)
                    polls[label].append(r)
                    print(f"  poll, {label:<13} {r['rps']:>8.0f} req/s  p50 {r['p50_ms']:6.2f} ms  p99 {r['p99_ms']:6.2f} ms  {r['statuses']}", flush=True)
            request(on_port, "DELETE", f"/v1/hourglass/jobs/{running}")
            results["poll"] = polls
    finally:
        for service in services:
            service.stop()
    write_report("jobs", results, render(results, args))
    return 0


def median(runs, key):
    return statistics.median(r[key] for r in runs)


def render(results, args):
    sync = results["sync"]
    on, off, control = sync["jobs enabled"], sync["jobs disabled"], sync["jobs disabled (control)"]
    m = machine()
    lines = [
        f"Background jobs, {args.repetitions} × {args.duration} per measurement, 64 connections, medians; "
        f"{m['cores']} cores ({m['cpu']}), {m['versions']['hourglass']}, {m['versions']['oha']}.",
        "",
        "| measurement | per second | p50 | p99 |",
        "|---|---|---|---|",
    ]
    for label, runs in (("synchronous call, jobs enabled", on), ("synchronous call, jobs disabled", off),
                        ("synchronous call, jobs disabled (A/A control)", control)):
        lines.append(f"| {label} | {median(runs, 'rps'):,.0f} | {median(runs, 'p50_ms'):.2f} ms | {median(runs, 'p99_ms'):.2f} ms |")
    lines.append(f"| jobs submitted (durable before the 202) | {median(results['submit'], 'rps'):,.0f} | "
                 f"{median(results['submit'], 'p50_ms'):.2f} ms | {median(results['submit'], 'p99_ms'):.2f} ms |")
    for label, runs in results["poll"].items():
        lines.append(f"| polls of a {label} | {median(runs, 'rps'):,.0f} | {median(runs, 'p50_ms'):.2f} ms | {median(runs, 'p99_ms'):.2f} ms |")
    ratio = median(on, "rps") / max(1.0, median(off, "rps"))
    noise = median(control, "rps") / max(1.0, median(off, "rps"))
    drained = results["drained"]
    lines += [
        "",
        f"Synchronous throughput with jobs enabled: {ratio:.3f}× that with jobs disabled; "
        f"the A/A control (a second gateway without jobs): {noise:.3f}×. "
        f"{drained['submitted']:,} jobs submitted, {drained['completed']:,} completed once the queue drained; "
        f"store {drained['store_file_bytes'] / 1048576:.1f} MiB on disk ({drained['store_used_bytes'] / 1048576:.1f} MiB in use).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
