"""``make bench``: the real operator, as a process, against the API emulator and the local STS.

    python -m bench.run            # quick: N = 1 000 (a few minutes on 2 cores)
    python -m bench.run --large    # N = 10 000
    python -m bench.run --n 200    # any N

Phases (each prints progress): baseline (a bare threads + boto3 + kubernetes-client script on
a fresh emulator), operator cold start, idle window, one refresh round (a spec change per
binding), restart with N valid bindings, idle apply → Ready latency, the sidecar, then
fairness (bench.fairness: a 2 000-binding flood in one namespace at the default STS rate, and
how long another namespace waits). Writes
``bench/out/latest.json`` and ``bench/out/latest.md`` (and a timestamped copy of each).
"""

from __future__ import annotations

import argparse
import base64
import collections
import datetime
import http.client
import json
import math
import os
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import fairness, report
from bench.env import ACCOUNT, CPU, OUT, STS, T_START, WRITES, Emulator, Operator, operator_env, say
from bench.kube import POLICY, Kube, ar_path, is_ready
from bench.procs import (
    PYTHON,
    Profiler,
    free_port,
    git_revision,
    http_text,
    machine,
    spawn,
    top_frames,
)


@dataclass
class Settings:
    n: int
    namespaces: int = 10
    sts_rate: float = 200.0
    sts_burst: int = 20
    workers: int = 16
    sts_concurrency: int = 8
    duration_seconds: int = 3600
    idle_window_s: float = 10.0
    apply_samples: int = 50
    sidecar_requests: int = 500
    timeout_s: float = 600.0
    profile: bool = False
    fairness_n: int = 2000  # 0: no fairness phase


# --------------------------------------------------------------------------- objects


def namespaces(s: Settings) -> list[str]:
    return [f"bench-{i:02d}" for i in range(s.namespaces)]


def assumed_role(s: Settings, i: int, namespace: str, name: str) -> dict[str, Any]:
    return {
        "apiVersion": "rolecall.dev/v1alpha1",
        "kind": "AssumedRole",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "roleArn": f"arn:aws:iam::{ACCOUNT}:role/bench-role-{i % 50}",
            "subjects": [{"kind": "ServiceAccount", "name": "app"}],
            "durationSeconds": s.duration_seconds,
            "sessionTags": {"cost-center": "1234"},
        },
    }


def populate(s: Settings, kube: Kube) -> float:
    """Namespaces, the AssumedRolePolicy admitting them, and N AssumedRoles (4 threads)."""
    t0 = time.monotonic()
    for ns in [*namespaces(s), "bench-apply"]:
        kube.ensure("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    kube.ensure(
        f"/apis/rolecall.dev/v1alpha1/{POLICY}",
        {
            "apiVersion": "rolecall.dev/v1alpha1",
            "kind": "AssumedRolePolicy",
            "metadata": {"name": "bench"},
            "spec": {
                "namespaces": ["bench-*"],
                "roleArns": [f"arn:aws:iam::{ACCOUNT}:role/bench-*"],
                "maxDurationSeconds": 43200,
                "sessionTagKeys": ["cost-center", "bench-round"],
            },
        },
    )
    spaces = namespaces(s)

    def create(i: int) -> None:
        ns = spaces[i % len(spaces)]
        kube.create(ar_path(ns), assumed_role(s, i, ns, f"ar-{i:05d}"))

    with ThreadPoolExecutor(4) as pool:
        for k, _ in enumerate(pool.map(create, range(s.n)), 1):
            if k % 2000 == 0:
                say(f"  created {k}/{s.n} AssumedRoles")
    return time.monotonic() - t0


def list_ars(kube: Kube) -> list[dict[str, Any]]:
    return list(kube.list_all("/apis/rolecall.dev/v1alpha1/assumedroles"))


def count_ready(kube: Kube, generation: int | None = None) -> int:
    return sum(
        1
        for ar in list_ars(kube)
        if ar["metadata"]["namespace"] != "bench-apply" and is_ready(ar, generation)
    )


def wait_quiet(emulator: Emulator, quiet_s: float, timeout: float) -> float:
    """Wait until the emulator's non-watch request counts stop moving for ``quiet_s``.

    Returns the monotonic time of the last change seen."""
    last = sum(v for k, v in emulator.counts().items() if k != "watch")
    changed = time.monotonic()
    deadline = changed + timeout
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now_total = sum(v for k, v in emulator.counts().items() if k != "watch")
        if now_total != last:
            last, changed = now_total, time.monotonic()
        elif time.monotonic() - changed >= quiet_s:
            return changed
    raise RuntimeError("the API requests never stopped")


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def parse_time(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


# --------------------------------------------------------------------------- phases


def phase_baseline(s: Settings, sts: STS, logs: Path) -> dict[str, Any]:
    say("baseline: fresh emulator, populating")
    emulator = Emulator("emulator-baseline", logs)
    try:
        populate(s, emulator.kube)
        sts.control.clear()
        before = emulator.snapshot()
        cpu = CPU({"emulator": emulator.child.pid, "sts_proxy": sts.child.pid, "moto": sts.moto_pid})
        say(f"baseline: bare script, {s.n} AssumeRole + Secret create")
        child = spawn(
            "baseline",
            [
                PYTHON,
                "-m",
                "bench.baseline",
                "--kubeconfig",
                str(emulator.kubeconfig),
                "--workers",
                str(s.workers),
                "--sts-concurrency",
                str(s.sts_concurrency),
                "--sts-rate",
                str(s.sts_rate),
                "--sts-burst",
                str(s.sts_burst),
            ],
            logs,
            env=operator_env(sts.url),
        )
        _, status, usage = os.wait4(child.pid, 0)
        elapsed = time.monotonic() - child.started
        child.process.returncode = os.waitstatus_to_exitcode(status)
        child.stop()
        if child.process.returncode != 0:
            raise RuntimeError(f"the baseline failed:\n{child.log_text()[-3000:]}")
        inner = json.loads(child.log_text().strip().splitlines()[-1])
        phases = cpu.done(baseline=usage.ru_utime + usage.ru_stime)
        result = {
            "time_s": round(elapsed, 2),
            "inner": inner,
            "sts_calls": sts.calls(),
            "api_requests": emulator.operator_requests(before),
            "cpu_s": phases,
            "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
        }
        say(f"baseline: {elapsed:.2f}s for {s.n} ({s.n / elapsed:.0f}/s)")
        return result
    finally:
        emulator.stop()


def wait_all_ready(
    s: Settings,
    op: Operator,
    emulator: Emulator,
    before: tuple[dict[str, int], dict[str, int]],
    what: str,
    generation: int | None = None,
) -> float:
    """Wait until the operator has made N status PATCHes since ``before`` (one per binding;
    read from the emulator's counters, which costs the operator nothing), then confirm with
    a LIST that all N are Ready; returns the monotonic time of the confirmation.

    /metrics is not polled: rendering its per-binding series costs the operator CPU."""
    deadline = time.monotonic() + s.timeout_s
    last_print = 0.0
    while time.monotonic() < deadline:
        op.check()
        if op.healthy_after is None and http_text(f"http://127.0.0.1:{op.port}/healthz", 1) is not None:
            op.healthy_after = time.monotonic() - op.child.started
        patched = emulator.operator_requests(before).get("patch", 0)
        if time.monotonic() - last_print > 3:
            say(f"  {what}: {patched}/{s.n} status writes")
            last_print = time.monotonic()
        if patched >= s.n and count_ready(emulator.kube, generation) >= s.n:
            return time.monotonic()
        time.sleep(0.1 if patched < s.n else 0.25)
    raise RuntimeError(f"{what}: not all Ready within {s.timeout_s}s")


def scrape_cost(op: Operator, times: int = 5) -> dict[str, Any]:
    """What one Prometheus scrape of /metrics costs with N bindings (median of a few)."""
    durations, size = [], 0
    for _ in range(times):
        t0 = time.monotonic()
        text = http_text(f"http://127.0.0.1:{op.port}/metrics", timeout=30) or ""
        durations.append(time.monotonic() - t0)
        size = len(text)
    return {
        "ms": round(statistics.median(durations) * 1000, 1),
        "bytes": size,
        "series": sum(1 for line in text.splitlines() if line and not line.startswith("#")),
    }


def phase_cold_start(
    s: Settings, emulator: Emulator, sts: STS, logs: Path
) -> tuple[Operator, dict[str, Any]]:
    sts.control.clear()
    before = emulator.snapshot()
    cpu = CPU({"emulator": emulator.child.pid, "sts_proxy": sts.child.pid, "moto": sts.moto_pid})
    say(f"cold start: operator with {s.n} AssumedRoles and no Secrets")
    op = Operator("operator", s, emulator, sts, logs)
    profiler = Profiler(op.child.pid, logs / "profile-cold-start.txt") if s.profile else None
    done = wait_all_ready(s, op, emulator, before, "cold start")
    elapsed = done - op.child.started
    phases = cpu.done(operator=op.child.cpu())
    result = {
        "time_s": round(elapsed, 2),
        "metrics_up_s": round(op.healthy_after or float("nan"), 2),
        "sts_calls": sts.calls(),
        "api_requests": emulator.operator_requests(before),
        "cpu_s": phases,
        "operator_cpu_ms_per_binding": round(phases["operator"] / s.n * 1000, 2),
        **op.child.memory(),
    }
    if profiler is not None:
        result["profile"] = top_frames(profiler.stop())
    result["metrics_scrape"] = scrape_cost(op)
    say(f"cold start: {elapsed:.2f}s ({s.n / elapsed:.0f}/s), {result['sts_calls']} STS calls")
    return op, result


def phase_idle(s: Settings, op: Operator, emulator: Emulator, sts: STS) -> dict[str, Any]:
    wait_quiet(emulator, 1.0, 60)
    say(f"idle: {s.idle_window_s:.0f}s window")
    sts_before = sts.total()
    before = emulator.snapshot()
    cpu0 = op.child.cpu()
    time.sleep(s.idle_window_s)
    requests = emulator.operator_requests(before)
    result = {
        "window_s": s.idle_window_s,
        "api_requests": requests,
        "requests_between_refreshes": sum(n for v, n in requests.items() if v != "watch"),
        "sts_calls": sts.total() - sts_before,
        "operator_cpu_s": round(op.child.cpu() - cpu0, 2),
    }
    say(f"idle: {result['requests_between_refreshes']} API requests, {result['sts_calls']} STS calls")
    return result


def phase_refresh(s: Settings, op: Operator, emulator: Emulator, sts: STS, logs: Path) -> dict[str, Any]:
    say(f"refresh round: a spec change (session tag) on each of the {s.n} bindings")
    sts.control.clear()
    items = [ar for ar in list_ars(emulator.kube) if ar["metadata"]["namespace"] != "bench-apply"]
    before = emulator.snapshot()
    cpu = CPU({"emulator": emulator.child.pid, "sts_proxy": sts.child.pid, "moto": sts.moto_pid})
    cpu0 = op.child.cpu()
    profiler = Profiler(op.child.pid, logs / "profile-refresh.txt") if s.profile else None
    t0 = time.monotonic()

    def touch(ar: dict[str, Any]) -> None:
        meta = ar["metadata"]
        emulator.kube.request(
            "PATCH",
            ar_path(meta["namespace"], meta["name"]),
            {"spec": {"sessionTags": {"bench-round": "1"}}},
            content_type="application/merge-patch+json",
        )

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(touch, items))
    patched = time.monotonic() - t0
    done = wait_all_ready(s, op, emulator, before, "refresh round", generation=2)
    wait_quiet(emulator, 2.0, 120)
    requests = emulator.operator_requests(before)
    sts_calls = sts.calls()
    phases = cpu.done(operator=op.child.cpu() - cpu0)
    writes = sum(requests.get(v, 0) for v in WRITES)
    result = {
        "time_s": round(done - t0, 2),
        "driver_patch_s": round(patched, 2),
        "sts_calls": sts_calls,
        "sts_calls_per_refresh": round(sts_calls / s.n, 3),
        "api_requests": requests,
        "api_writes_per_refresh": round(writes / s.n, 3),
        "api_requests_per_refresh": round(sum(n for v, n in requests.items() if v != "watch") / s.n, 3),
        "cpu_s": phases,
        "operator_cpu_ms_per_refresh": round(phases["operator"] / s.n * 1000, 2),
    }
    if profiler is not None:
        result["profile"] = top_frames(profiler.stop())
    say(
        f"refresh round: {result['time_s']}s, {result['api_writes_per_refresh']} API writes and "
        f"{result['sts_calls_per_refresh']} STS calls per binding"
    )
    return result


def schedule_figures(s: Settings, emulator: Emulator) -> dict[str, Any]:
    """STS calls per binding per hour, from each status's lastRefresh → nextRefresh."""
    intervals, fractions = [], []
    for ar in list_ars(emulator.kube):
        st = ar.get("status") or {}
        if not (st.get("lastRefresh") and st.get("nextRefresh") and st.get("expiration")):
            continue
        last, nxt, exp = (parse_time(st[k]) for k in ("lastRefresh", "nextRefresh", "expiration"))
        interval = (nxt - last).total_seconds()
        intervals.append(interval)
        fractions.append(interval / max(1.0, (exp - last).total_seconds()))
    per_hour = [3600 / i for i in intervals if i > 0]
    return {
        "bindings": len(intervals),
        "duration_seconds": s.duration_seconds,
        "refresh_interval_s": {
            "min": round(min(intervals), 1),
            "mean": round(statistics.fmean(intervals), 1),
            "max": round(max(intervals), 1),
        },
        "refresh_at_fraction_of_lifetime": {
            "min": round(min(fractions), 3),
            "max": round(max(fractions), 3),
        },
        "sts_calls_per_binding_per_hour": round(statistics.fmean(per_hour), 3),
    }


def phase_restart(
    s: Settings, op: Operator, emulator: Emulator, sts: STS, logs: Path
) -> tuple[Operator, dict[str, Any]]:
    say("restart: SIGTERM, then a new operator with N valid bindings")
    stop_s = op.child.stop()
    sts.control.clear()
    before = emulator.snapshot()
    cpu = CPU({"emulator": emulator.child.pid, "sts_proxy": sts.child.pid, "moto": sts.moto_pid})
    op2 = Operator("operator-restarted", s, emulator, sts, logs)
    profiler = Profiler(op2.child.pid, logs / "profile-restart.txt") if s.profile else None
    deadline = time.monotonic() + s.timeout_s
    last_print = 0.0
    while True:
        op2.check()
        m = op2.metrics()
        if int(m.get("true", 0)) >= s.n and int(m.get("true", 0) + m.get("false", 0)) >= s.n:
            break
        if time.monotonic() > deadline:
            raise RuntimeError("restart: the operator never knew all bindings")
        if time.monotonic() - last_print > 2:
            say(f"  restart: {int(m.get('true', 0))}/{s.n} scheduled")
            last_print = time.monotonic()
        time.sleep(0.5)  # rendering /metrics costs the operator ~N series
    scheduled = time.monotonic() - op2.child.started
    last_change = wait_quiet(emulator, 2.0, s.timeout_s)
    idle = max(last_change - op2.child.started, scheduled)
    requests = emulator.operator_requests(before)
    phases = cpu.done(operator=op2.child.cpu())
    result = {
        "stop_s": round(stop_s, 2),
        "all_scheduled_s": round(scheduled, 2),
        "idle_s": round(idle, 2),
        "sts_calls": sts.calls(),
        "api_requests": requests,
        "api_writes": sum(requests.get(v, 0) for v in WRITES),
        "cpu_s": phases,
        **op2.child.memory(),
    }
    if profiler is not None:
        result["profile"] = top_frames(profiler.stop())
    say(
        f"restart: all scheduled after {scheduled:.2f}s, idle after {idle:.2f}s, "
        f"{result['sts_calls']} STS calls, {result['api_writes']} API writes"
    )
    return op2, result


def phase_apply(s: Settings, op: Operator, emulator: Emulator, sts: STS) -> dict[str, Any]:
    say(f"apply → Ready: {s.apply_samples} AssumedRoles, one at a time, operator idle")
    wait_quiet(emulator, 1.0, 60)
    ns = "bench-apply"
    ready_at: dict[str, float] = {}
    arrived = collections.defaultdict(threading.Event)

    def on_event(event: dict[str, Any], at: float) -> None:
        obj = event.get("object") or {}
        name = (obj.get("metadata") or {}).get("name", "")
        if name and name not in ready_at and is_ready(obj):
            ready_at[name] = at
            arrived[name].set()

    stop = threading.Event()
    watch = emulator.kube.watch(ar_path(ns), on_event, stop)
    latencies = []
    try:
        for i in range(s.apply_samples):
            name = f"apply-{i:03d}"
            t0 = time.monotonic()
            emulator.kube.create(ar_path(ns), assumed_role(s, i, ns, name))
            if not arrived[name].wait(30):
                raise RuntimeError(f"apply: {name} not Ready after 30s")
            latencies.append(ready_at[name] - t0)
            time.sleep(0.05)
    finally:
        watch.close()
    result = {
        "samples": len(latencies),
        "p50_s": round(percentile(latencies, 50), 4),
        "p99_s": round(percentile(latencies, 99), 4),
        "max_s": round(max(latencies), 4),
        "mean_s": round(statistics.fmean(latencies), 4),
    }
    say(f"apply → Ready: p50 {result['p50_s'] * 1000:.0f} ms, p99 {result['p99_s'] * 1000:.0f} ms")
    return result


def write_mount(directory: Path, data: dict[str, bytes]) -> None:
    """The Secret's keys laid out as the kubelet does: ..data → a timestamped directory."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = directory / "..2024_01_01_00_00_00.1"
    stamp.mkdir(exist_ok=True)
    for key, value in data.items():
        (stamp / key).write_bytes(value)
    data_link = directory / "..data"
    if not data_link.is_symlink():
        data_link.symlink_to(stamp.name)
    for key in data:
        link = directory / key
        if not link.is_symlink():
            link.symlink_to(f"..data/{key}")


def phase_sidecar(s: Settings, emulator: Emulator, logs: Path) -> dict[str, Any]:
    say(f"sidecar: RSS and the latency of {s.sidecar_requests} GETs")
    secret = emulator.kube.get("/api/v1/namespaces/bench-00/secrets/ar-00000")
    data = {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}
    directory = logs / "sidecar-mount"
    write_mount(directory, data)
    port = free_port()
    child = spawn(
        "sidecar",
        [PYTHON, "-m", "rolecall.cli", "sidecar", "--dir", str(directory), "--port", str(port)],
        logs,
    )
    try:
        deadline = time.monotonic() + 30
        while http_text(f"http://127.0.0.1:{port}/healthz", timeout=1) is None:
            if time.monotonic() > deadline or not child.alive():
                raise RuntimeError(f"the sidecar did not start:\n{child.log_text()[-2000:]}")
            time.sleep(0.05)
        started_s = time.monotonic() - child.started
        idle_memory = child.memory()
        token = data["token"].decode()
        latencies = []
        for _ in range(s.sidecar_requests):
            t0 = time.monotonic()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", "/v1/credentials", headers={"Authorization": token})
            response = conn.getresponse()
            body = response.read()
            conn.close()
            latencies.append(time.monotonic() - t0)
            if response.status != 200 or b"AccessKeyId" not in body:
                raise RuntimeError(f"sidecar answered {response.status}")
        cpu = child.cpu()
        memory = child.memory()
    finally:
        child.stop()
    result = {
        "requests": len(latencies),
        "start_s": round(started_s, 2),
        "p50_ms": round(percentile(latencies, 50) * 1000, 2),
        "p99_ms": round(percentile(latencies, 99) * 1000, 2),
        "rss_idle_mib": idle_memory["rss_mib"],
        **memory,
        "cpu_s": round(cpu, 2),
    }
    say(
        f"sidecar: {result['peak_rss_mib']} MiB peak RSS, p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms"
    )
    return result


# --------------------------------------------------------------------------- main


def run(s: Settings, logs: Path) -> dict[str, Any]:
    results: dict[str, Any] = {}
    sts = STS(logs)
    emulator: Emulator | None = None
    operator: Operator | None = None
    try:
        say(f"STS proxy {sts.url}; N = {s.n}, STS rate {s.sts_rate}/s burst {s.sts_burst}")
        results["baseline"] = phase_baseline(s, sts, logs)
        say("operator: fresh emulator, populating")
        emulator = Emulator("emulator", logs)
        results["populate_s"] = round(populate(s, emulator.kube), 2)
        operator, results["cold_start"] = phase_cold_start(s, emulator, sts, logs)
        results["idle"] = phase_idle(s, operator, emulator, sts)
        results["refresh"] = phase_refresh(s, operator, emulator, sts, logs)
        results["schedule"] = schedule_figures(s, emulator)
        results["peak_rss_first_operator_mib"] = operator.child.memory()["peak_rss_mib"]
        operator, results["restart"] = phase_restart(s, operator, emulator, sts, logs)
        results["apply"] = phase_apply(s, operator, emulator, sts)
        results["peak_rss_restarted_operator_mib"] = operator.child.memory()["peak_rss_mib"]
        results["sidecar"] = phase_sidecar(s, emulator, logs)
        results["emulator_rss_mib"] = emulator.child.memory()["rss_mib"]
        if s.fairness_n:
            operator.child.stop()
            emulator.stop()
            operator = emulator = None
            f = fairness.default_rates()
            f.n = s.fairness_n
            results["fairness"] = fairness.run_fairness(f, sts, logs)
    finally:
        if operator is not None:
            operator.child.stop()
        if emulator is not None:
            emulator.stop()
        sts.stop()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--large", action="store_true", help="N = 10 000")
    parser.add_argument("--n", type=int, help="number of AssumedRoles (default 1 000, --large 10 000)")
    parser.add_argument("--sts-rate", type=float, default=200.0)
    parser.add_argument("--sts-burst", type=int, default=20)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--sts-concurrency", type=int, default=8)
    parser.add_argument("--idle-window", type=float, default=10.0, help="seconds (default 10)")
    parser.add_argument("--apply-samples", type=int, default=None, help="default 50 (100 with --large)")
    parser.add_argument("--out", default=str(OUT))
    parser.add_argument(
        "--profile", action="store_true", help="py-spy the operator (pip install py-spy into .venv)"
    )
    parser.add_argument(
        "--fairness-n", type=int, default=2000, help="flooding bindings in the fairness phase (0: skip it)"
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    n = args.n or (10_000 if args.large else 1_000)
    s = Settings(
        n=n,
        sts_rate=args.sts_rate,
        sts_burst=args.sts_burst,
        workers=args.workers,
        sts_concurrency=args.sts_concurrency,
        idle_window_s=args.idle_window,
        apply_samples=args.apply_samples or (100 if args.large else 50),
        timeout_s=600.0 if n <= 2000 else 3600.0,
        profile=args.profile,
        fairness_n=args.fairness_n,
    )
    out = Path(args.out)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    logs = out / f"logs-{stamp}"
    revision = git_revision()  # before the run: the operator processes load this code
    results = run(s, logs)
    document = report.build(s, asdict(s), results, machine(), stamp, time.monotonic() - T_START)
    document["run"].update(revision)
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(document, indent=2)
    markdown = report.markdown(document)
    for name in ("latest", f"run-{stamp}-n{n}"):
        (out / f"{name}.json").write_text(text + "\n")
        (out / f"{name}.md").write_text(markdown)
    print()
    print(markdown)
    say(f"wrote {out / 'latest.json'} and {out / 'latest.md'} (logs in {logs})")
    missed = [k for k, t in document["targets"].items() if t["met"] is False]
    if missed:
        say(f"targets missed: {', '.join(missed)} (see docs/benchmarks.md)")
    return 1 if missed and args.strict else 0  # by default a missed target is a finding


if __name__ == "__main__":
    sys.exit(main())
