"""The benchmark's JSON document (figures, targets, machine, settings) and its markdown table."""

from __future__ import annotations

import math
from typing import Any

from bench.fairness import READY_GOAL_S, WITHDRAW_GOAL_S
from bench.fairness import notes as fairness_notes
from bench.fairness import rows as fairness_rows


def _target(value: Any, op: str, limit: float, unit: str = "") -> dict[str, Any]:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        met = None
    elif op == "<=":
        met = value <= limit
    elif op == "<":
        met = value < limit
    else:
        met = value == limit
    return {"value": value, "target": f"{op} {limit:g}{unit}".replace("== ", "= "), "met": met}


def _ours(cpu: dict[str, float]) -> float:
    """CPU seconds of the processes that do the work (operator or baseline, emulator, STS)."""
    return sum(v for k, v in cpu.items() if k not in ("others", "wall_s", "driver"))


def _busy_share(cpu: dict[str, float], nproc: int) -> float:
    """Share of the machine's CPU used by processes outside the benchmark during a phase."""
    return round(cpu.get("others", 0.0) / max(1e-9, cpu.get("wall_s", 0.0) * nproc), 3)


def build(
    s: Any, settings: dict[str, Any], r: dict[str, Any], machine: dict[str, Any], stamp: str, total_s: float
) -> dict[str, Any]:
    cold, base = r["cold_start"], r["baseline"]
    overhead = round(cold["time_s"] / base["time_s"], 2)
    cpu_overhead = round(_ours(cold["cpu_s"]) / _ours(base["cpu_s"]), 2)
    nproc = int(machine.get("affinity") or machine.get("nproc") or 1)
    contention = {
        k: _busy_share(r[k]["cpu_s"], nproc) for k in ("baseline", "cold_start", "refresh", "restart")
    }
    peak = max(
        v
        for v in (
            r.get("peak_rss_first_operator_mib"),
            r.get("peak_rss_restarted_operator_mib"),
            cold.get("peak_rss_mib"),
        )
        if v is not None
    )
    rss_limit = 150.0 if s.n <= 1000 else 400.0
    targets = {
        "overhead_ratio": _target(overhead, "<=", 1.3),
        "peak_rss_mib": _target(peak, "<=", rss_limit, " MiB"),
        "api_writes_per_refresh": _target(r["refresh"]["api_writes_per_refresh"], "<=", 2),
        "requests_between_refreshes": _target(r["idle"]["requests_between_refreshes"], "==", 0),
        "restart_sts_calls": _target(r["restart"]["sts_calls"], "==", 0),
        "apply_to_ready_p99_s": _target(r["apply"]["p99_s"], "<=", 1.0, " s"),
        "sidecar_rss_mib": _target(r["sidecar"]["peak_rss_mib"], "<=", 20, " MiB"),
    }
    if s.n != 1000:
        targets["overhead_ratio"]["note"] = "the target is stated for N = 1 000"
    fair = r.get("fairness") or {}
    for scenario in ("working", "failing"):
        if scenario in fair:
            f = fair[scenario]
            for key, goal in (("new_ready_s", READY_GOAL_S), ("withdrawn_secret_gone_s", WITHDRAW_GOAL_S)):
                target = _target(f[key], "<", goal, " s")
                if f[key] is None:  # gave up waiting: a miss, not an unknown
                    target.update(value=f"> {f['timeout_s']:g}", met=False)
                targets[f"fairness_{scenario}_{key}"] = target
    return {
        "n": s.n,
        "overhead_ratio": overhead,
        "cpu_overhead_ratio": cpu_overhead,
        "cold_start_s": cold["time_s"],
        "baseline_s": base["time_s"],
        "cold_start_sts_calls": cold["sts_calls"],
        "peak_rss_mib": peak,
        "operator_cpu_s": cold["cpu_s"]["operator"],
        "api_writes_per_refresh": r["refresh"]["api_writes_per_refresh"],
        "sts_calls_per_refresh": r["refresh"]["sts_calls_per_refresh"],
        "sts_calls_per_binding_per_hour": r["schedule"]["sts_calls_per_binding_per_hour"],
        "requests_between_refreshes": r["idle"]["requests_between_refreshes"],
        "restart_sts_calls": r["restart"]["sts_calls"],
        "restart_idle_s": r["restart"]["idle_s"],
        "apply_to_ready_p50_s": r["apply"]["p50_s"],
        "apply_to_ready_p99_s": r["apply"]["p99_s"],
        "sidecar_rss_mib": r["sidecar"]["peak_rss_mib"],
        "sidecar_p50_ms": r["sidecar"]["p50_ms"],
        "sidecar_p99_ms": r["sidecar"]["p99_ms"],
        "targets": targets,
        "machine": machine,
        "foreign_cpu_share": contention,
        "settings": settings,
        "run": {"started": stamp, "total_s": round(total_s, 1)},
        "phases": r,
    }


def _verbs(counts: dict[str, int]) -> str:
    return ", ".join(f"{v} {n}" for v, n in counts.items()) or "none"


def _cpu(cpu: dict[str, float]) -> str:
    wall = cpu.get("wall_s")
    parts = [f"{k} {v:.1f}" for k, v in cpu.items() if k != "wall_s"]
    return ", ".join(parts) + (f" (wall {wall:.1f})" if wall else "")


def _scrape(m: dict[str, Any] | None) -> str:
    if not m:
        return "—"
    return f"{m['ms']:.0f} ms, {m['bytes'] / 1024:.0f} KiB, {m['series']} series"


def markdown(d: dict[str, Any]) -> str:
    p, t, m, s = d["phases"], d["targets"], d["machine"], d["settings"]
    cold, base, refresh, restart, idle = p["cold_start"], p["baseline"], p["refresh"], p["restart"], p["idle"]
    sched, apply, side = p["schedule"], p["apply"], p["sidecar"]

    def mark(key: str) -> str:
        met = t[key]["met"]
        return "—" if met is None else ("met" if met else "**missed**")

    n = d["n"]
    rows = [
        ("N (AssumedRoles)", f"{n}", "", ""),
        (
            "cold start: all N Ready",
            f"{cold['time_s']:.2f} s ({n / cold['time_s']:.0f}/s)",
            "",
            "",
        ),
        (
            "baseline (threads + boto3 + client)",
            f"{base['time_s']:.2f} s ({n / base['time_s']:.0f}/s)",
            "",
            "",
        ),
        (
            "overhead_ratio (cold start / baseline, wall time)",
            f"{d['overhead_ratio']:.2f}",
            t["overhead_ratio"]["target"],
            mark("overhead_ratio"),
        ),
        (
            "CPU ratio (operator + emulator + STS, vs the baseline's)",
            f"{d['cpu_overhead_ratio']:.2f}",
            "",
            "",
        ),
        ("metrics scrape (/metrics)", _scrape(cold.get("metrics_scrape")), "", ""),
        ("cold start STS calls", f"{cold['sts_calls']}", f"= {n}", ""),
        ("cold start API requests", _verbs(cold["api_requests"]), "", ""),
        (
            "operator CPU, cold start",
            f"{cold['cpu_s']['operator']:.1f} s ({cold['operator_cpu_ms_per_binding']:.1f} ms/binding)",
            "",
            "",
        ),
        (
            "peak RSS (operator)",
            f"{d['peak_rss_mib']:.1f} MiB",
            t["peak_rss_mib"]["target"],
            mark("peak_rss_mib"),
        ),
        (
            f"requests between refreshes ({idle['window_s']:.0f} s idle)",
            f"{idle['requests_between_refreshes']} (STS {idle['sts_calls']})",
            t["requests_between_refreshes"]["target"],
            mark("requests_between_refreshes"),
        ),
        (
            "refresh round: API writes per refresh",
            f"{refresh['api_writes_per_refresh']:.2f} ({_verbs(refresh['api_requests'])})",
            t["api_writes_per_refresh"]["target"],
            mark("api_writes_per_refresh"),
        ),
        (
            "refresh round: STS calls per refresh, time",
            f"{refresh['sts_calls_per_refresh']:.2f}, {refresh['time_s']:.1f} s",
            "",
            "",
        ),
        (
            "STS calls per binding per hour",
            f"{sched['sts_calls_per_binding_per_hour']:.2f} (refresh every "
            f"{sched['refresh_interval_s']['min'] / 60:.1f}-{sched['refresh_interval_s']['max'] / 60:.1f} min)",
            "≈ 2.1",
            "",
        ),
        (
            "restart: STS calls",
            f"{restart['sts_calls']}",
            t["restart_sts_calls"]["target"],
            mark("restart_sts_calls"),
        ),
        (
            "restart: all scheduled / idle",
            f"{restart['all_scheduled_s']:.2f} s / {restart['idle_s']:.2f} s",
            "",
            "",
        ),
        ("restart: API requests", _verbs(restart["api_requests"]), "0 writes", ""),
        (
            "idle apply → Ready p50 / p99",
            f"{apply['p50_s'] * 1000:.0f} ms / {apply['p99_s'] * 1000:.0f} ms ({apply['samples']} samples)",
            t["apply_to_ready_p99_s"]["target"] + " (p99)",
            mark("apply_to_ready_p99_s"),
        ),
        (
            "sidecar RSS",
            f"{side['peak_rss_mib']:.1f} MiB peak ({side['rss_idle_mib']:.1f} idle)",
            t["sidecar_rss_mib"]["target"],
            mark("sidecar_rss_mib"),
        ),
        (
            "sidecar GET p50 / p99",
            f"{side['p50_ms']:.2f} ms / {side['p99_ms']:.2f} ms ({side['requests']} GETs)",
            "",
            "",
        ),
    ]
    if p.get("fairness"):
        rows += fairness_rows(p["fairness"])
    lines = [
        f"# rolecall benchmark, N = {n} ({d['run']['started']}, commit {d['run'].get('commit', '?')}"
        + (", operator modified" if d["run"].get("operator_modified") else "")
        + ")",
        "",
        f"Machine: {m['nproc']} CPUs ({m['cpu_model']}), {m['memory']}, Python {m['python']}. "
        f"Settings: STS rate {s['sts_rate']:g}/s burst {s['sts_burst']}, workers {s['workers']}, "
        f"STS concurrency {s['sts_concurrency']}, durationSeconds {s['duration_seconds']}, "
        f"{s['namespaces']} namespaces. Run took {d['run']['total_s']:.0f} s.",
        "",
        "| figure | value | target | |",
        "|---|---|---|---|",
        *[f"| {a} | {b} | {c} | {e} |" for a, b, c, e in rows],
        "",
        "CPU seconds per process (the machine has "
        f"{m['nproc']} cores, so at most {m['nproc']} CPU-seconds per wall second):",
        "",
        f"- baseline: {_cpu(base['cpu_s'])}",
        f"- cold start: {_cpu(cold['cpu_s'])}",
        f"- refresh round: {_cpu(refresh['cpu_s'])}",
        f"- restart: {_cpu(restart['cpu_s'])}",
        "",
        "`others` is CPU used by processes outside the benchmark (a shared machine): "
        + ", ".join(f"{k} {v:.0%}" for k, v in d["foreign_cpu_share"].items())
        + " of the machine"
        + (
            " — **the machine was busy; times are inflated, compare CPU seconds**."
            if max(d["foreign_cpu_share"].values()) > 0.1
            else "."
        ),
        "",
        f"Baseline API requests: {_verbs(base['api_requests'])}; its peak RSS {base['peak_rss_mib']} MiB; "
        f"inside the script: {base['inner']}.",
        f"Operator /metrics up after {cold['metrics_up_s']} s (cold start), "
        f"{restart['stop_s']} s to stop on SIGTERM.",
        "",
    ]
    if p.get("fairness"):
        lines += fairness_notes(p["fairness"])
    return "\n".join(lines)
