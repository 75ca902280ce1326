#!/usr/bin/env python3
"""Side-by-side benchmark of hourglass against the direct call, nginx, LiteLLM and Portkey.

Run through `bench/run` (it installs what is missing first). Everything talks to loopback only,
every load is bounded in count and time, and every process started here is stopped by its PID.
Prints tables (medians over interleaved repetitions, ratios to the direct call and to nginx) and
writes bench/out/results.json. Numbers are reported, never asserted.
"""

import argparse
import http.client
import json
import os
import pathlib
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
HOURGLASS = ROOT / "target" / "release" / "hourglass"
USER = [{"role": "user", "content": "hi"}]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Service:
    """A process started by the harness, stopped by its PID."""

    def __init__(self, name, cmd, env=None, ready_url=None, ready_timeout=60):
        self.name = name
        self.log = open(OUT / f"{name}.log", "w")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env or os.environ.copy())
        if ready_url:
            try:
                wait_http(ready_url, ready_timeout, self)
            except BaseException:
                self.stop()  # started but never ready: not left running
                raise

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()

    def tree(self):
        """The PIDs of this process and its descendants (nginx and LiteLLM fork workers)."""
        pids, parents = {self.proc.pid}, {}
        for entry in pathlib.Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                    parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    pass
        grew = True
        while grew:
            grew = False
            for pid, ppid in parents.items():
                if ppid in pids and pid not in pids:
                    pids.add(pid)
                    grew = True
        return pids

    def rss_mb(self):
        total = 0
        for pid in self.tree():
            try:
                for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            except OSError:
                pass
        return total / 1024

    def cpu_s(self):
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0.0
        for pid in self.tree():
            try:
                fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / ticks
            except (OSError, IndexError, ValueError):
                pass
        return total


def wait_http(url, timeout, service=None):
    host, port, path = split(url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if service and not service.alive():
            raise SystemExit(f"{service.name} exited; see {service.log.name}")
        try:
            conn = http.client.HTTPConnection(host, port, timeout=2)
            conn.request("GET", path)
            conn.getresponse().read()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not answer within {timeout}s")


def split(url):
    rest = url.split("://", 1)[1]
    hostport, _, path = rest.partition("/")
    host, port = hostport.rsplit(":", 1)
    return host, int(port), "/" + path


def oha(url, body, *, duration, connections, rate=None, headers=(), body_file=None, requests=None, timeout="60s"):
    cmd = ["oha", "--no-tui", "--output-format", "json", "-c", str(connections), "-m", "POST",
           "-t", timeout, "-H", "content-type: application/json"]
    cmd += ["-n", str(requests)] if requests else ["-z", duration]
    if rate:
        cmd += ["-q", str(rate), "--latency-correction"]
    for header in headers:
        cmd += ["-H", header]
    cmd += ["-D", str(body_file)] if body_file else ["-d", json.dumps(body)]
    cmd.append(url)
    return run_oha(cmd, timeout=600)


def run_oha(cmd, *, timeout):
    """Runs an oha command line (JSON output) and returns its throughput, success rate,
    percentiles and status counts."""
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"oha failed: {result.stderr[:500]}")
    data = json.loads(result.stdout)
    summary, latency = data["summary"], data.get("latencyPercentiles") or {}
    return {
        "rps": summary.get("requestsPerSec") or 0.0,
        "success": summary.get("successRate") or 0.0,
        "p50_ms": (latency.get("p50") or 0) * 1000,
        "p99_ms": (latency.get("p99") or 0) * 1000,
        "statuses": data.get("statusCodeDistribution", {}),
    }


def write_report(name, results, report):
    """Writes bench/out/NAME.json and NAME.md and prints the report."""
    (OUT / f"{name}.json").write_text(json.dumps(results, indent=2))
    (OUT / f"{name}.md").write_text(report)
    print(report)


FIRST_TOKEN = re.compile(rb'"content":"[^"]')


def timed_call(url, body, headers=None, stream_end=True):
    """One request: seconds to the response head (first byte), to the first body chunk, to the
    first content token (a delta with text) and to the end of the body."""
    host, port, path = split(url)
    conn = http.client.HTTPConnection(host, port, timeout=60)
    start = time.perf_counter()
    conn.request("POST", path, body=json.dumps(body), headers={"content-type": "application/json", **(headers or {})})
    response = conn.getresponse()
    head = time.perf_counter() - start
    first_chunk = first_token = None
    seen = b""
    while True:
        chunk = response.read1(65536) if hasattr(response, "read1") else response.read(65536)
        now = time.perf_counter() - start
        if first_chunk is None:
            first_chunk = now
        if first_token is None and chunk:
            seen = seen[-64:] + chunk
            if FIRST_TOKEN.search(seen):
                first_token = now
        if not chunk:
            break
    end = time.perf_counter() - start
    conn.close()
    return {"status": response.status, "head": head, "first_chunk": first_chunk,
            "first_token": first_token if first_token is not None else end, "end": end}


def seconds(duration):
    """oha's duration (`5s`, `500ms`, `1m`) in seconds."""
    for suffix, factor in (("ms", 0.001), ("s", 1), ("m", 60)):
        if duration.endswith(suffix):
            return float(duration[: -len(suffix)]) * factor
    return float(duration)


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


# --------------------------------------------------------------------------------------------
# The setup: simulated upstreams, hourglass and its peers, all on free loopback ports.

def sim_scenario(ports):
    models = """
[[upstream.model]]
name = "bench-20"
like = "sim-instant"
output_tokens = 20

[[upstream.model]]
name = "bench-20-10ms"
like = "sim-instant"
output_tokens = 20
tokens_per_s = 100
jitter = 0.0

[[upstream.model]]
name = "bench-slow"
like = "sim-instant"
output_tokens = 20
tokens_per_s = 1
jitter = 0.0
"""
    text = ""
    for name in ("a", "b"):
        text += f'[[upstream]]\nname = "{name}"\nlisten = "127.0.0.1:{ports[name]}"\n{models}\n'
    text += f'[[upstream]]\nname = "dark"\nlisten = "127.0.0.1:{ports["dark"]}"\nblackhole = true\n'
    return text


# Models of the bench gateway that turn one protection off (the rest of the policy is the
# default chat policy).
PROTECTIONS_OFF = {
    "sim-instant-whole": "stream_upstream = false\n",
    "sim-instant-once": "retry = { max_attempts = 1 }\n",
    "sim-instant-bare": "stream_upstream = false\nretry = { max_attempts = 1 }\n",
}


def hourglass_config(ports):
    b = "b:{m}"
    lines = [
        f'[server]\nlisten = "127.0.0.1:{ports["hourglass"]}"\nmax_request_body = "16MiB"\n',
        "[retry_budget]\nratio = 1.0\nmin_per_s = 10000.0\n",
        f'[upstreams.b]\nbase_url = "http://127.0.0.1:{ports["b"]}/v1"\n',
        f'[upstreams.a]\nbase_url = "http://127.0.0.1:{ports["a"]}/v1"\n',
        f'[upstreams.dead]\nbase_url = "http://127.0.0.1:{ports["dead"]}/v1"\n',
        f'[upstreams.dark]\nbase_url = "http://127.0.0.1:{ports["dark"]}/v1"\n',
        # The same simulator spoken to in HTTP/2 (prior knowledge), as OpenAI and Anthropic are
        # over TLS: many calls share a connection.
        f'[upstreams.b2]\nbase_url = "http://127.0.0.1:{ports["b"]}/v1"\nhttp = "2"\n',
    ]
    for model in ("sim-instant", "bench-20", "bench-20-10ms"):
        lines.append(f'[models.{model}]\ntargets = ["{b.format(m=model)}"]\n')
    lines.append('[models.bench-slow]\ntargets = ["b"]\ntimeouts = { idle = "5s", total = "300s", attempt = "300s" }\n')
    lines.append('[models.bench-slow-h2]\ntargets = ["b2:bench-slow"]\n'
                 'timeouts = { idle = "5s", total = "300s", attempt = "300s" }\n')
    # The default policy with the upstream over HTTP/2, for the table of what each costs.
    lines.append('[models.sim-instant-h2]\ntargets = ["b2:sim-instant"]\n')
    # One protection off each, for the table of what each costs.
    for model, policy in PROTECTIONS_OFF.items():
        lines.append(f'[models.{model}]\ntargets = ["b:sim-instant"]\n{policy}')
    lines.append('[models.failover-refused]\ntargets = ["dead:sim-instant", "b:sim-instant"]\n')
    lines.append('[models.failover-hang]\ntargets = ["a:sim-instant", "b:sim-instant"]\n'
                 'timeouts = { first_byte = "200ms", first_token = "300ms" }\n')
    lines.append('[models.failover-dark]\ntargets = ["dark:sim-instant", "b:sim-instant"]\n'
                 'timeouts = { connect = "100ms" }\n')
    # One upstream, one try: each phase's deadline fires alone.
    lines.append('[models.deadline]\ntargets = ["a:sim-instant"]\nretry = { max_attempts = 1 }\n'
                 'timeouts = { first_byte = "200ms", first_token = "300ms", idle = "250ms", total = "20s" }\n')
    lines.append('[models.deadline-total]\ntargets = ["a:sim-instant"]\nretry = { max_attempts = 1 }\n'
                 'timeouts = { first_byte = "20s", total = "20s" }\n')
    lines.append('[models.deadline-connect]\ntargets = ["dark:sim-instant"]\nretry = { max_attempts = 1 }\n'
                 'timeouts = { connect = "100ms" }\n')
    return "\n".join(lines)


def nginx_config(ports):
    prefix = OUT / "nginx"
    for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    return f"""user root;
worker_processes auto;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 30000; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    upstream sim {{ server 127.0.0.1:{ports["b"]}; keepalive 512; }}
    server {{
        listen 127.0.0.1:{ports["nginx"]};
        client_max_body_size 16m;
        client_body_buffer_size 2m;
        location / {{
            proxy_pass http://sim;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 300s;
        }}
    }}
}}
"""


def litellm_config(ports):
    text = "model_list:\n"
    for model in ("sim-instant", "bench-20", "bench-20-10ms"):
        text += (f"  - model_name: {model}\n    litellm_params:\n      model: openai/{model}\n"
                 f"      api_base: http://127.0.0.1:{ports['b']}/v1\n      api_key: sk-bench\n")
    return text + "litellm_settings:\n  drop_params: true\n  telemetry: false\n"


def start_all(args):
    ports = {name: free_port() for name in ("a", "b", "dark", "dead", "hourglass", "nginx", "litellm", "portkey")}
    services, targets, skipped = [], {}, {}
    (OUT / "sim.toml").write_text(sim_scenario(ports))
    sim = Service("sim", [str(HOURGLASS), "sim", "--scenario", str(OUT / "sim.toml")],
                  ready_url=f"http://127.0.0.1:{ports['b']}/health")
    services.append(sim)
    targets["direct"] = {"url": f"http://127.0.0.1:{ports['b']}/v1", "headers": [], "service": sim}

    (OUT / "hourglass.toml").write_text(hourglass_config(ports))
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    hg = Service("hourglass", [str(HOURGLASS), "serve", "--config", str(OUT / "hourglass.toml")], env=env,
                 ready_url=f"http://127.0.0.1:{ports['hourglass']}/health")
    services.append(hg)
    targets["hourglass"] = {"url": f"http://127.0.0.1:{ports['hourglass']}/v1", "headers": [], "service": hg}

    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if nginx:
        (OUT / "nginx.conf").write_text(nginx_config(ports))
        ng = Service("nginx", [nginx, "-p", str(OUT / "nginx"), "-c", str(OUT / "nginx.conf"), "-g", "daemon off;"],
                     ready_url=f"http://127.0.0.1:{ports['nginx']}/health")
        services.append(ng)
        targets["nginx"] = {"url": f"http://127.0.0.1:{ports['nginx']}/v1", "headers": [], "service": ng}
    else:
        skipped["nginx"] = "not installed"

    litellm = ROOT / "bench" / ".venv" / "bin" / "litellm"
    master_key = "sk-bench-" + os.urandom(24).hex()
    if args.peers and litellm.exists():
        (OUT / "litellm.yaml").write_text(litellm_config(ports))
        try:
            ll = Service("litellm", [str(litellm), "--config", str(OUT / "litellm.yaml"), "--host", "127.0.0.1",
                                     "--port", str(ports["litellm"]), "--num_workers", "1"],
                         env={**env, "LITELLM_LOG": "ERROR", "LITELLM_TELEMETRY": "False",
                              "LITELLM_MASTER_KEY": master_key},
                         ready_url=f"http://127.0.0.1:{ports['litellm']}/health/liveliness", ready_timeout=120)
            services.append(ll)
            targets["litellm"] = {"url": f"http://127.0.0.1:{ports['litellm']}/v1",
                                  "headers": [f"authorization: Bearer {master_key}"], "service": ll}
        except SystemExit as error:
            skipped["litellm"] = str(error)
    elif args.peers:
        skipped["litellm"] = "not installed (bench/run installs it)"

    portkey = ROOT / "bench" / "node" / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"
    if args.peers and portkey.exists():
        try:
            pk = Service("portkey", ["node", str(portkey), f"--port={ports['portkey']}", "--headless"],
                         env={**env, "NODE_ENV": "production"}, ready_url=f"http://127.0.0.1:{ports['portkey']}/")
            services.append(pk)
            targets["portkey"] = {"url": f"http://127.0.0.1:{ports['portkey']}/v1", "service": pk, "headers": [
                "x-portkey-provider: openai", f"x-portkey-custom-host: http://127.0.0.1:{ports['b']}/v1",
                "authorization: Bearer sk-bench"]}
        except SystemExit as error:
            skipped["portkey"] = str(error)
    elif args.peers:
        skipped["portkey"] = "not installed (bench/run installs it)"
    return ports, services, targets, skipped


# --------------------------------------------------------------------------------------------
# Scenarios.

def chat(model, stream=False, **extra):
    return {"model": model, "messages": USER, "stream": stream, **extra}


def happy_path(args, targets):
    """Interleaved repetitions of every happy-path scenario on every target."""
    d = args.duration
    scenarios = [
        ("non-streaming, low fixed rate", dict(body=chat("sim-instant"), rate=args.low_rate, connections=8)),
        ("non-streaming, moderate fixed rate", dict(body=chat("sim-instant"), rate=args.moderate_rate, connections=32)),
        ("non-streaming, max throughput", dict(body=chat("sim-instant"), connections=64)),
        ("stream, 20 chunks, no gaps", dict(body=chat("bench-20", True), connections=32)),
        ("stream, 20 chunks 10 ms apart", dict(body=chat("bench-20-10ms", True), connections=32)),
        ("1 MiB prompt, fixed rate", dict(body_file=OUT / "prompt-1mib.json", rate=max(5, args.low_rate // 10), connections=4)),
    ]
    big = json.dumps(chat("sim-instant", messages=[{"role": "user", "content": "x" * (1 << 20)}]))
    (OUT / "prompt-1mib.json").write_text(big)
    runs = {name: {t: [] for t in targets} for name, _ in scenarios}
    order = list(targets)
    for rep in range(args.repetitions):
        for name, spec in scenarios:
            rotated = order[rep % len(order):] + order[:rep % len(order)]
            for target in rotated:
                t = targets[target]
                kwargs = dict(spec)
                body = kwargs.pop("body", None)
                cpu_before = t["service"].cpu_s()
                result = oha(f"{t['url']}/chat/completions", body, duration=d, headers=t["headers"], **kwargs)
                served = result["rps"] * seconds(d)
                result["cpu_us"] = (t["service"].cpu_s() - cpu_before) / served * 1e6 if served else float("nan")
                runs[name][target].append(result)
                print(f"  rep {rep + 1} {name:<34} {target:<10} {result['rps']:>9.0f} req/s  p50 {result['p50_ms']:7.2f} ms"
                      f"  p99 {result['p99_ms']:7.2f} ms  ok {result['success'] * 100:5.1f}%", flush=True)
    return runs


def first_byte_probe(args, targets):
    """Sequential calls, one at a time: time to the response head (first byte), the first chunk
    (buffering shows here), the first content token and the end. hourglass holds a stream's head
    until its first token, so that it can still fail over: its first byte is its first token.

    The targets take turns call by call (the first of each round rotates), so a slow minute of a
    shared host weighs on every target alike rather than on whichever ran then; the calls without
    gaps are sampled `--sequential` times per target. The whole answer is also asked of hourglass
    with `stream_upstream = false`: the difference is what that protection costs one call (the
    upstream streams the answer, which takes it longer, and hourglass assembles it)."""
    out = {}
    scenarios = (("non-streaming, sequential", "sim-instant", False, args.sequential),
                 ("stream, 20 chunks, no gaps", "bench-20", True, args.sequential),
                 ("stream, 20 chunks 10 ms apart", "bench-20-10ms", True, args.probes))
    for name, model, stream, count in scenarios:
        turns = [(target, target, model) for target in targets]
        if not stream and "hourglass" in targets:
            turns.insert(2, ("hourglass, stream_upstream = false", "hourglass", "sim-instant-whole"))
        samples = {label: [] for label, _, _ in turns}
        for i in range(count):
            for label, target, turn_model in turns[i % len(turns):] + turns[:i % len(turns)]:
                t = targets[target]
                headers = dict(h.split(": ", 1) for h in t["headers"])
                samples[label].append(timed_call(f"{t['url']}/chat/completions", chat(turn_model, stream), headers))
        out[name] = {
            label: {
                "head_ms": statistics.median(s["head"] for s in taken) * 1000,
                "first_chunk_ms": statistics.median(s["first_chunk"] for s in taken) * 1000,
                "first_token_ms": statistics.median(s["first_token"] for s in taken) * 1000,
                "end_ms": statistics.median(s["end"] for s in taken) * 1000,
                "samples": len(taken),
                "ok": sum(s["status"] == 200 for s in taken) / len(taken),
            }
            for label, taken in samples.items()
        }
    return out


def concurrent_streams(args, targets):
    """Many slow streams held open at once: the gateway's RSS and CPU (hourglass and nginx)."""
    out = {}
    runs = [("hourglass", "hourglass", "bench-slow"), ("hourglass, HTTP/2 upstream", "hourglass", "bench-slow-h2"),
            ("nginx", "nginx", "bench-slow")]
    for label, target, model in runs:
        if target not in targets:
            continue
        body = chat(model, True)
        t = targets[target]
        service = t["service"]
        idle_rss = service.rss_mb()
        cpu_before = service.cpu_s()
        cmd = ["oha", "--no-tui", "--output-format", "json", "-c", str(args.streams), "-n", str(args.streams),
               "-t", "120s", "-m", "POST", "-H", "content-type: application/json", "-d", json.dumps(body),
               f"{t['url']}/chat/completions"]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        peak = idle_rss
        while proc.poll() is None:
            peak = max(peak, service.rss_mb())
            time.sleep(0.25)
        stdout, _ = proc.communicate()
        data = json.loads(stdout) if stdout else {"summary": {}}
        cpu = service.cpu_s() - cpu_before
        # How much the flood leaves behind: RSS 5 s, 30 s and 60 s after the last stream ended.
        after = {}
        for at in ((1,) if args.smoke else (5, 30, 60)):
            time.sleep(at - (max(after) if after else 0))
            after[at] = service.rss_mb()
        out[label] = {
            "streams": args.streams,
            "idle_rss_mb": idle_rss,
            "peak_rss_mb": peak,
            "rss_after_mb": after,
            "cpu_s": cpu,
            "success": data["summary"].get("successRate", 0),
            "statuses": data.get("statusCodeDistribution", {}),
        }
        print(f"  {args.streams} streams via {label}: RSS {idle_rss:.1f} → {peak:.1f} MB, then "
              + ", ".join(f"{v:.1f} MB at +{k}s" for k, v in after.items())
              + f"; CPU {cpu:.1f} s, ok {out[label]['success'] * 100:.1f}%", flush=True)
    return out


def protection_costs(args, targets, ports):
    """Max throughput of whole answers with one protection off at a time, interleaved with the
    default (every protection on): what each costs. The per-call log line is process-wide, so a
    second gateway runs with it off. Beside them, the default policy with the upstream spoken to
    over HTTP/2, as OpenAI and Anthropic are over TLS, and a third gateway with no configuration
    at all (`serve` with OPENAI_BASE_URL), whose models are served by wildcard."""
    if "hourglass" not in targets:
        return {}
    quiet_port = free_port()
    text = (OUT / "hourglass.toml").read_text().replace(f'listen = "127.0.0.1:{ports["hourglass"]}"',
                                                        f'listen = "127.0.0.1:{quiet_port}"')
    (OUT / "hourglass-quiet.toml").write_text(text)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env["HOURGLASS_LOG"] = "info,hourglass::call=off"
    quiet = Service("hourglass-quiet", [str(HOURGLASS), "serve", "--config", str(OUT / "hourglass-quiet.toml")],
                    env=env, ready_url=f"http://127.0.0.1:{quiet_port}/health")
    zero_port = free_port()
    zero_env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "ANTHROPIC_"))}
    zero_env["OPENAI_BASE_URL"] = f"http://127.0.0.1:{ports['b']}/v1"
    # Its own data directory, emptied first: nothing a past run stored carries into this one.
    shutil.rmtree(OUT / "zero-data", ignore_errors=True)
    zero_env["HOURGLASS_DATA_DIR"] = str(OUT / "zero-data")
    try:
        zero = Service("hourglass-zero", [str(HOURGLASS), "serve", "--listen", f"127.0.0.1:{zero_port}"],
                       env=zero_env, ready_url=f"http://127.0.0.1:{zero_port}/health")
    except BaseException:
        quiet.stop()
        raise
    hg = targets["hourglass"]
    quiet_url = f"http://127.0.0.1:{quiet_port}/v1"
    variants = [
        ("default: every protection on", hg["url"], hg["service"], "sim-instant"),
        ("stream_upstream = false (the upstream answers whole)", hg["url"], hg["service"], "sim-instant-whole"),
        ("retries off (max_attempts = 1)", hg["url"], hg["service"], "sim-instant-once"),
        ("per-call log line off", quiet_url, quiet, "sim-instant"),
        ("all three off", quiet_url, quiet, "sim-instant-bare"),
        ("every protection on, upstream over HTTP/2 (h2c)", hg["url"], hg["service"], "sim-instant-h2"),
        ("zero configuration (the model served by wildcard)", f"http://127.0.0.1:{zero_port}/v1", zero,
         "sim-instant"),
    ]
    runs = {name: [] for name, *_ in variants}
    try:
        for rep in range(args.repetitions):
            rotated = variants[rep % len(variants):] + variants[:rep % len(variants)]
            for name, url, service, model in rotated:
                cpu_before = service.cpu_s()
                result = oha(f"{url}/chat/completions", chat(model), duration=args.duration, connections=64)
                served = result["rps"] * seconds(args.duration)
                result["cpu_us"] = (service.cpu_s() - cpu_before) / served * 1e6 if served else float("nan")
                runs[name].append(result)
                print(f"  rep {rep + 1} {name:<52} {result['rps']:>9.0f} req/s  {result['cpu_us']:6.1f} µs CPU/req",
                      flush=True)
    finally:
        quiet.stop()
        zero.stop()
    return {name: {k: statistics.median(r[k] for r in results) for k in ("rps", "cpu_us", "p50_ms", "success")}
            for name, results in runs.items()}


def failure_path(args, targets):
    """What no anchor publishes: the cost of failing over, and how precisely deadlines fire."""
    url = f"{targets['hourglass']['url']}/chat/completions"
    out = {}
    n = args.probes

    def elapsed(body, headers=None):
        return [timed_call(url, body, headers)["end"] for _ in range(n)]

    base = elapsed(chat("sim-instant"))
    refused = elapsed(chat("failover-refused"))
    out["failover after a refused connect"] = {
        "added_p50_ms": (statistics.median(refused) - statistics.median(base)) * 1000,
        "added_p99_ms": (pct(refused, 0.99) - pct(base, 0.99)) * 1000,
    }
    hang = elapsed(chat("failover-hang"), {"x-sim-fault": "hang;upstream=a"})
    out["failover after a hang (first_byte 200ms)"] = {
        "added_p50_ms": (statistics.median(hang) - statistics.median(base)) * 1000,
        "added_p99_ms": (pct(hang, 0.99) - pct(base, 0.99)) * 1000,
    }
    stall = elapsed(chat("failover-hang", True), {"x-sim-fault": "stall;after_chunks=0;for=30s;upstream=a"})
    out["failover after a stall before commit (first_token 300ms)"] = {
        "added_p50_ms": (statistics.median(stall) - statistics.median(base)) * 1000,
        "added_p99_ms": (pct(stall, 0.99) - pct(base, 0.99)) * 1000,
    }

    def precision(name, configured_ms, body, headers=None):
        fired = elapsed(body, headers)
        errors = [f * 1000 - configured_ms for f in fired]
        out[f"deadline precision: {name}"] = {
            "configured_ms": configured_ms,
            "late_p50_ms": pct(errors, 0.5),
            "late_p99_ms": pct(errors, 0.99),
            "early_min_ms": min(errors),
        }

    precision("connect (blackholed upstream)", 100, chat("deadline-connect"))
    precision("first_byte (hang)", 200, chat("deadline"), {"x-sim-fault": "hang"})
    precision("first_token (keep-alives, no token)", 300, chat("deadline", True),
              {"x-sim-fault": "first_token;after=30s;keepalive=50ms"})
    precision("idle (stall after 3 tokens)", 250, chat("deadline", True), {"x-sim-fault": "stall;after_chunks=3;for=30s"})
    precision("total (x-hourglass-timeout 500ms, answered 50ms before)", 450, chat("deadline-total"),
              {"x-sim-fault": "hang", "x-hourglass-timeout": "500ms"})

    # Healthy and black-holed rounds interleaved (their order alternating), so the ratio of their
    # medians is not the host's drift between two runs made one after the other.
    healthy, dark = [], []
    for rep in range(args.repetitions):
        pair = [(healthy, "sim-instant"), (dark, "failover-dark")]
        for results, model in pair if rep % 2 == 0 else pair[::-1]:
            results.append(oha(url, chat(model), duration=args.duration, connections=64))
    healthy_rps = statistics.median(r["rps"] for r in healthy)
    dark_rps = statistics.median(r["rps"] for r in dark)
    out["throughput with the first upstream black-holed"] = {
        "healthy_rps": healthy_rps, "blackholed_rps": dark_rps,
        "ratio": dark_rps / healthy_rps if healthy_rps else 0.0,
        "round_ratios": ", ".join(f"{d['rps'] / h['rps']:.2f}" if h["rps"] else "nan"
                                  for h, d in zip(healthy, dark)),
        "success": min(r["success"] for r in dark),
    }
    for name, value in out.items():
        print(f"  {name}: " + ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in value.items()), flush=True)
    return out


# --------------------------------------------------------------------------------------------
# Tables.

def table(runs, targets):
    lines = ["| scenario | target | req/s | p50 ms | p99 ms | added p50 ms | added p99 ms | added p50 ÷ nginx's | req/s ÷ nginx's | CPU µs/req | CPU ÷ nginx's | ok |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    summary = {}
    for name, by_target in runs.items():
        med = {}
        for target, results in by_target.items():
            if results:
                med[target] = {k: statistics.median(r[k] for r in results) for k in ("rps", "p50_ms", "p99_ms", "success", "cpu_us")}
        summary[name] = med
        direct = med.get("direct")
        nginx = med.get("nginx")
        for target, m in med.items():
            added50 = m["p50_ms"] - direct["p50_ms"] if direct else float("nan")
            added99 = m["p99_ms"] - direct["p99_ms"] if direct else float("nan")
            n_added = nginx["p50_ms"] - direct["p50_ms"] if nginx and direct else float("nan")
            ratio_latency = added50 / n_added if target != "direct" and n_added and n_added > 0 else float("nan")
            ratio_rps = m["rps"] / nginx["rps"] if nginx and nginx["rps"] else float("nan")
            ratio_cpu = m["cpu_us"] / nginx["cpu_us"] if nginx and nginx["cpu_us"] else float("nan")
            lines.append(f"| {name} | {target} | {m['rps']:,.0f} | {m['p50_ms']:.2f} | {m['p99_ms']:.2f} | "
                         f"{added50:.2f} | {added99:.2f} | {ratio_latency:.2f} | {ratio_rps:.2f} | "
                         f"{m['cpu_us']:.1f} | {ratio_cpu:.2f} | {m['success'] * 100:.1f}% |")
    return "\n".join(lines), summary


def repetitions(runs):
    """Each repetition's figures, in the order they ran: a target's repetition i ran in the same
    round as every other target's, so the pairs say how far one round moves the medians."""
    keys = ("rps", "p50_ms", "p99_ms", "cpu_us")
    return {name: {target: [{k: r[k] for k in keys} for r in results] for target, results in by_target.items()}
            for name, by_target in runs.items()}


def beside_nginx(repeated):
    """A line per scenario: each round's hourglass ÷ nginx req/s and both p99s, where both ran."""
    lines = []
    for name, by_target in repeated.items():
        ours, theirs = by_target.get("hourglass") or [], by_target.get("nginx") or []
        if not ours or not theirs:
            continue
        rounds = list(zip(ours, theirs))
        ratios = ", ".join(f"{h['rps'] / n['rps']:.2f}" if n["rps"] else "nan" for h, n in rounds)
        p99s = ", ".join(f"{h['p99_ms']:.2f} against {n['p99_ms']:.2f}" for h, n in rounds)
        under = sum(h["p99_ms"] <= n["p99_ms"] for h, n in rounds)
        lines.append(f"| {name} | {ratios} | {p99s} | {under} of {len(rounds)} |")
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", default="10s", help="per load run (oha -z)")
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--low-rate", type=int, default=200)
    parser.add_argument("--moderate-rate", type=int, default=2000)
    parser.add_argument("--probes", type=int, default=50, help="sequential requests per failure-path measurement")
    parser.add_argument("--sequential", type=int, default=2000,
                        help="calls per target for the one-at-a-time first byte, token and end (without gaps)")
    parser.add_argument("--streams", type=int, default=10000, help="concurrent slow streams")
    parser.add_argument("--no-peers", dest="peers", action="store_false", help="skip LiteLLM and Portkey")
    parser.add_argument("--smoke", action="store_true", help="seconds-long run that only proves the harness works")
    args = parser.parse_args()
    for name in ("repetitions", "low_rate", "moderate_rate", "probes", "sequential", "streams"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    try:
        positive = seconds(args.duration) > 0
    except ValueError:
        positive = False
    if not positive:
        parser.error(f"--duration must be a positive oha duration such as 5s, got {args.duration!r}")
    if args.smoke:
        args.duration, args.repetitions, args.probes, args.streams, args.peers = "1s", 1, 5, 200, False
        args.sequential = 5
        args.low_rate, args.moderate_rate = 50, 200
    OUT.mkdir(parents=True, exist_ok=True)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 1 << 17) if hard != resource.RLIM_INFINITY else 1 << 17
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))

    ports, services, targets, skipped = start_all(args)
    results = {"machine": machine(), "skipped": skipped, "args": vars(args)}
    try:
        time.sleep(1)
        results["idle_rss_mb"] = {name: t["service"].rss_mb() for name, t in targets.items()}
        print(f"targets: {', '.join(targets)}; skipped: {skipped or 'none'}", flush=True)
        print("happy path", flush=True)
        runs = happy_path(args, targets)
        text, results["happy"] = table(runs, targets)
        results["happy_repetitions"] = repetitions(runs)
        results["first_chunk"] = first_byte_probe(args, targets)
        print("concurrent slow streams", flush=True)
        results["streams"] = concurrent_streams(args, targets)
        print("what each protection costs (hourglass)", flush=True)
        results["protections"] = protection_costs(args, targets, ports)
        print("failure path (hourglass)", flush=True)
        results["failure"] = failure_path(args, targets)
    finally:
        for service in reversed(services):
            service.stop()
    (OUT / "results.json").write_text(json.dumps(results, indent=2))
    report = render(results, text)
    (OUT / "report.md").write_text(report)
    print("\n" + report)
    print(f"bench: {len(targets)} targets, results in {OUT / 'results.json'} and {OUT / 'report.md'}")


def machine():
    cpu = next((l.split(":", 1)[1].strip() for l in pathlib.Path("/proc/cpuinfo").read_text().splitlines()
                if l.startswith("model name")), "unknown")
    versions = {}
    for name, cmd in (("hourglass", [str(HOURGLASS), "--version"]), ("oha", ["oha", "--version"]),
                      ("nginx", ["nginx", "-v"]), ("node", ["node", "--version"])):
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            versions[name] = (r.stdout or r.stderr).strip()
        except OSError:
            versions[name] = "missing"
    return {"cpu": cpu, "cores": os.cpu_count(), "versions": versions}


def render(results, happy_table):
    lines = [f"Machine: {results['machine']['cpu']}, {results['machine']['cores']} cores; "
             + ", ".join(f"{k} {v}" for k, v in results["machine"]["versions"].items()), "",
             "Idle RSS (MB): " + ", ".join(f"{k} {v:.1f}" for k, v in results["idle_rss_mb"].items()), "",
             "### Happy path (medians of interleaved repetitions)", "", happy_table, "",
             "### Each round, hourglass beside nginx (the rounds the medians above are taken from)", "",
             "| scenario | req/s, hourglass ÷ nginx | p99 ms, hourglass against nginx | hourglass's p99 the lower or equal |",
             "|---|---|---|---:|", *beside_nginx(results["happy_repetitions"]), "",
             "### One call at a time: first byte, first token, end (medians; targets take turns call by call)", "",
             "hourglass sends a stream's head with its first token (until then it can still fail over), so its first",
             "byte is its first token; a plain proxy sends the head at once and the token when it comes.", "",
             "| scenario | target | first byte ms | first chunk ms | first token ms | end ms | added end ms | calls |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for name, by_target in results["first_chunk"].items():
        direct = by_target.get("direct")
        for target, m in by_target.items():
            added = m["end_ms"] - direct["end_ms"] if direct else float("nan")
            lines.append(f"| {name} | {target} | {m['head_ms']:.2f} | {m['first_chunk_ms']:.2f} | "
                         f"{m['first_token_ms']:.2f} | {m['end_ms']:.2f} | {added:.2f} | {m['samples']} |")
    lines += ["", "### Concurrent slow streams", "",
              "| target | streams | idle RSS MB | peak RSS MB | RSS after (MB) | CPU s | ok |",
              "|---|---:|---:|---:|---|---:|---:|"]
    for target, m in results["streams"].items():
        after = ", ".join(f"{v:.1f} at +{k}s" for k, v in m["rss_after_mb"].items())
        lines.append(f"| {target} | {m['streams']} | {m['idle_rss_mb']:.1f} | {m['peak_rss_mb']:.1f} | {after} | "
                     f"{m['cpu_s']:.1f} | {m['success'] * 100:.1f}% |")
    if results.get("protections"):
        lines += ["", "### What each protection costs (hourglass, whole answers, max throughput, medians)", "",
                  "| configuration | req/s | CPU µs/req | p50 ms | ok |", "|---|---:|---:|---:|---:|"]
        for name, m in results["protections"].items():
            lines.append(f"| {name} | {m['rps']:,.0f} | {m['cpu_us']:.1f} | {m['p50_ms']:.2f} | {m['success'] * 100:.1f}% |")
    lines += ["", "### Failure path (hourglass)", "", "| measurement | figures |", "|---|---|"]
    for name, value in results["failure"].items():
        figures = ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in value.items())
        lines.append(f"| {name} | {figures} |")
    if results["skipped"]:
        lines += ["", "Skipped: " + "; ".join(f"{k}: {v}" for k, v in results["skipped"].items())]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
