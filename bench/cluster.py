#!/usr/bin/env python3
"""Several gateways on this machine, with real PostgreSQL and Redis (Debian's, started here on
loopback): what sharing through Redis adds to a call (target: < 0.1 ms at p50, < 1 ms at p99),
how many job submissions and polls per second one replica takes on PostgreSQL, and how long a
cool-down learned by one replica takes to be in force on another.

Run through `bench/cluster` (it builds hourglass in release and installs oha first). Loopback
only, every load bounded in time, every process stopped by its PID. Prints a table and writes
bench/out/cluster.md and bench/out/cluster.json. Numbers are reported, never asserted.
"""

import argparse
import glob
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from harness import HOURGLASS, OUT, Service, free_port, machine, write_report  # noqa: E402
from jobs import median, oha, request, settle, stats  # noqa: E402

CHAT = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]})


class Postgres:
    """A PostgreSQL cluster of the bench's own (fsync on: as a deployment would run it)."""

    def __init__(self, root):
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
        if not bins:
            raise SystemExit("PostgreSQL is not installed: apt-get install postgresql (scripts/test does)")
        self.bin, self.dir, self.port = bins[-1], os.path.join(root, "pg"), free_port()
        os.makedirs(self.dir)
        self.prefix = []
        if os.geteuid() == 0:
            os.chmod(root, 0o711)  # the postgres user passes through the bench's own directory
            shutil.chown(self.dir, "postgres")
            self.prefix = ["runuser", "-u", "postgres", "--"]
        data = os.path.join(self.dir, "data")
        self.run("initdb", "-D", data, "-U", "hourglass", "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C")
        with open(os.path.join(data, "postgresql.auto.conf"), "a") as conf:
            conf.write(f"listen_addresses = '127.0.0.1'\nport = {self.port}\nunix_socket_directories = '{self.dir}'\n"
                       "max_connections = 200\n")
        self.run("pg_ctl", "-D", data, "-w", "-l", os.path.join(self.dir, "log"), "start")
        self.data = data
        subprocess.run([os.path.join(self.bin, "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "hourglass",
                        "-d", "postgres", "-c", "CREATE DATABASE hourglass"], check=True, capture_output=True)
        self.url = f"postgres://hourglass@127.0.0.1:{self.port}/hourglass?sslmode=disable"

    def run(self, program, *args):
        subprocess.run(self.prefix + [os.path.join(self.bin, program), *args], check=True, capture_output=True,
                       cwd="/")

    def stop(self):
        self.run("pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop")


def gateway(name, sims, data_dir, *, redis=None, postgres=None, models=""):
    sim_port, sim_b_port = sims
    port = free_port()
    config = OUT / f"cluster-{name}.toml"
    cluster = f'[cluster]\ninstance = "{name}"\n'
    if redis:
        cluster += 'redis_url_env = "BENCH_REDIS_URL"\n'
    if postgres:
        cluster += 'postgres_url_env = "BENCH_POSTGRES_URL"\n'
    config.write_text(
        f'[server]\nlisten = "127.0.0.1:{port}"\n\n{cluster}\n'
        '[client_limits]\nrequests_per_minute = 1000000000\n\n'
        '[jobs]\nmax_queued = 1000000\nmax_running = 64\n\n'
        '[health_check]\nmode = "off"\n\n'
        # The cool-down measurement meets a 429 twenty times: no breaker may eject `a` for it.
        '[breaker]\nconsecutive_failures = 1000000\nmin_calls = 1000000\n\n'
        f'[upstreams.a]\nbase_url = "http://127.0.0.1:{sim_port}/v1"\napi_key_env = "BENCH_KEY"\n'
        f'[upstreams.b]\nbase_url = "http://127.0.0.1:{sim_b_port}/v1"\napi_key_env = "BENCH_KEY"\n\n'
        '[models.m]\ntargets = ["a:sim-instant", "b:sim-instant"]\n' + models
    )
    env = dict(os.environ, BENCH_KEY="sk-bench", BENCH_REDIS_URL=redis or "", BENCH_POSTGRES_URL=postgres or "")
    service = Service(f"cluster-{name}", [str(HOURGLASS), "serve", "--config", str(config), "--data-dir", str(data_dir)],
                      env=env, ready_url=f"http://127.0.0.1:{port}/health/ready")
    return service, port


def cooldown_seen(port, connection):
    connection.request("GET", "/status")
    body = json.loads(connection.getresponse().read())
    return any(c["upstream"] == "a" for c in body.get("cluster", {}).get("cooldowns", []))


def propagation(g1, g2, repetitions):
    """From the start of a call on g1 that meets a 429 (Retry-After: 1) to the cool-down in
    force on g2, polled as fast as one connection allows."""
    times = []
    watcher = http.client.HTTPConnection("127.0.0.1", g2, timeout=10)
    for _ in range(repetitions):
        time.sleep(1.2)  # the last one has lapsed
        assert not cooldown_seen(g2, watcher)
        start = time.perf_counter()
        status, _ = request(g1, "POST", "/v1/chat/completions", CHAT,
                            {"x-sim-fault": "rate_limit;retry_after=1;p=1;upstream=a"})
        assert status == 200, status
        answered = time.perf_counter()
        while not cooldown_seen(g2, watcher):
            if time.perf_counter() - start > 5:
                raise SystemExit("the cool-down never reached the second replica")
        seen = time.perf_counter()
        times.append({"seen_ms": (seen - start) * 1000, "after_answer_ms": (seen - answered) * 1000,
                      "call_ms": (answered - start) * 1000})
    watcher.close()
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", default="5s", help="each measurement's length")
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="a second each, once: proves the script works")
    args = parser.parse_args()
    if args.smoke:
        args.duration, args.repetitions = "1s", 1
    OUT.mkdir(parents=True, exist_ok=True)
    results = {}
    services = []
    with tempfile.TemporaryDirectory() as root:
        postgres = None
        redis_port = free_port()
        redis = subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                                  "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        try:
            postgres = Postgres(root)
            # Two simulated upstreams, `a` and `b`, so a fault can name one of them.
            sim_port, sim_b_port = free_port(), free_port()
            scenario = OUT / "cluster-sims.toml"
            scenario.write_text(f'[[upstream]]\nname = "a"\nlisten = "127.0.0.1:{sim_port}"\n\n'
                                f'[[upstream]]\nname = "b"\nlisten = "127.0.0.1:{sim_b_port}"\n')
            services.append(Service("cluster-sim", [str(HOURGLASS), "sim", "--scenario", str(scenario)],
                                    ready_url=f"http://127.0.0.1:{sim_b_port}/v1/models"))
            dirs = [os.path.join(root, n) for n in ("off", "on", "control", "on2", "pg")]
            sims = (sim_port, sim_b_port)
            off, off_port = gateway("off", sims, dirs[0])
            on, on_port = gateway("redis", sims, dirs[1], redis=redis_url)
            control, control_port = gateway("control", sims, dirs[2])
            on2, on2_port = gateway("redis-2", sims, dirs[3], redis=redis_url)
            pg, pg_port = gateway("postgres", sims, dirs[4], postgres=postgres.url)
            services += [off, on, control, on2, pg]

            # 1. A synchronous call with and without Redis (cool-downs and client limits shared),
            # one call at a time and 64 at once, interleaved, with an A/A control.
            calls = {}
            for connections in (1, 64):
                runs = {"without Redis": [], "with Redis": [], "without Redis (control)": []}
                for rep in range(args.repetitions):
                    order = [("without Redis", off_port), ("with Redis", on_port), ("without Redis (control)", control_port)]
                    for label, port in order[rep % 3:] + order[:rep % 3]:
                        r = oha(f"http://127.0.0.1:{port}/v1/chat/completions", body=CHAT, duration=args.duration,
                                connections=connections, headers=["authorization: Bearer client-1"])
                        runs[label].append(r)
                        print(f"  {connections:>2} conn, {label:<24} {r['rps']:>8.0f} req/s  p50 {r['p50_ms']:6.3f} ms  "
                              f"p99 {r['p99_ms']:6.3f} ms", flush=True)
                calls[connections] = runs
            results["calls"] = calls

            # 2. Jobs on PostgreSQL: submissions (committed before the 202) and polls.
            status, body = request(pg_port, "POST", "/v1/chat/completions", CHAT, {"prefer": "respond-async"})
            assert status == 202, body
            first = json.loads(body)["id"]
            settle(pg_port, first)
            before = stats(pg_port)
            submits = []
            for _ in range(args.repetitions):
                r = oha(f"http://127.0.0.1:{pg_port}/v1/chat/completions", body=CHAT, duration=args.duration,
                        connections=64, headers=["prefer: respond-async"])
                submits.append(r)
                print(f"  submit (PostgreSQL) {r['rps']:>8.0f} jobs/s p50 {r['p50_ms']:6.2f} ms  p99 {r['p99_ms']:6.2f} ms  "
                      f"{r['statuses']}", flush=True)
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                now = stats(pg_port)
                if now["queued"] == 0 and now["running"] == 0:
                    break
                time.sleep(0.5)
            after = stats(pg_port)
            results["submit"] = submits
            results["drained"] = {
                "submitted": after["submitted"] - before["submitted"],
                "completed": after["ended"].get("completed", 0) - before["ended"].get("completed", 0),
                "store_bytes": after["store_used_bytes"],
            }
            status, body = request(pg_port, "POST", "/v1/chat/completions", CHAT,
                                   {"prefer": "respond-async", "x-sim-fault": "hang"})
            running = json.loads(body)["id"]
            polls = {"finished job": [], "running job": []}
            for _ in range(args.repetitions):
                for label, job_id in (("finished job", first), ("running job", running)):
                    r = oha(f"http://127.0.0.1:{pg_port}/v1/hourglass/jobs/{job_id}", method="GET",
                            duration=args.duration, connections=64)
                    polls[label].append(r)
                    print(f"  poll (PostgreSQL), {label:<13} {r['rps']:>8.0f} req/s  p50 {r['p50_ms']:6.2f} ms  "
                          f"{r['statuses']}", flush=True)
            request(pg_port, "DELETE", f"/v1/hourglass/jobs/{running}")
            results["poll"] = polls

            # 3. A cool-down from one replica to another.
            results["propagation_ms"] = propagation(on_port, on2_port, 3 if args.smoke else 20)
            seen = [t["seen_ms"] for t in results["propagation_ms"]]
            print(f"  cool-down in force on the other replica after {statistics.median(seen):.2f} ms "
                  f"(median), {max(seen):.2f} ms (max)", flush=True)
        finally:
            for service in services:
                service.stop()
            redis.terminate()
            redis.wait(10)
            if postgres:
                postgres.stop()
    write_report("cluster", results, render(results, args))
    return 0


def render(results, args):
    m = machine()
    lines = [
        f"Several gateways, {args.repetitions} × {args.duration} per measurement, medians; "
        f"{m['cores']} cores ({m['cpu']}), {m['versions']['hourglass']}, {m['versions']['oha']}; "
        "PostgreSQL and Redis on loopback.",
        "",
        "| a synchronous call | connections | req/s | p50 | p99 |",
        "|---|---|---|---|---|",
    ]
    for connections, runs in results["calls"].items():
        for label, reps in runs.items():
            lines.append(f"| {label} | {connections} | {median(reps, 'rps'):,.0f} | {median(reps, 'p50_ms'):.3f} ms | "
                         f"{median(reps, 'p99_ms'):.3f} ms |")
    one = results["calls"][1]
    added50 = median(one["with Redis"], "p50_ms") - median(one["without Redis"], "p50_ms")
    added99 = median(one["with Redis"], "p99_ms") - median(one["without Redis"], "p99_ms")
    noise50 = median(one["without Redis (control)"], "p50_ms") - median(one["without Redis"], "p50_ms")
    lines += [
        "",
        f"Added by Redis to a call, one at a time: {added50 * 1000:+.0f} µs at p50, {added99 * 1000:+.0f} µs at p99 "
        f"(the A/A control differs by {noise50 * 1000:+.0f} µs at p50).",
        "",
        "| jobs on PostgreSQL | per second | p50 | p99 |",
        "|---|---|---|---|",
        f"| submitted (committed before the 202) | {median(results['submit'], 'rps'):,.0f} | "
        f"{median(results['submit'], 'p50_ms'):.2f} ms | {median(results['submit'], 'p99_ms'):.2f} ms |",
    ]
    for label, runs in results["poll"].items():
        lines.append(f"| polls of a {label} | {median(runs, 'rps'):,.0f} | {median(runs, 'p50_ms'):.2f} ms | "
                     f"{median(runs, 'p99_ms'):.2f} ms |")
    drained = results["drained"]
    times = [t["seen_ms"] for t in results["propagation_ms"]]
    calls = [t["call_ms"] for t in results["propagation_ms"]]
    after = [t["after_answer_ms"] for t in results["propagation_ms"]]
    lines += [
        "",
        f"{drained['submitted']:,} jobs submitted, {drained['completed']:,} completed once the queue drained; "
        f"tables {drained['store_bytes'] / 1048576:.1f} MiB.",
        "",
        f"A cool-down from one replica to another, {len(times)} times: in force on the other replica "
        f"{statistics.median(times):.2f} ms (median; max {max(times):.2f} ms) after the start of the call that met the "
        f"429 — a call that itself took {statistics.median(calls):.2f} ms (the 429, then the answer from `b`) — and "
        f"{statistics.median(after):.2f} ms (max {max(after):.2f} ms) after that call's answer, polling `/status` of "
        "the other replica as fast as one connection allows.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
