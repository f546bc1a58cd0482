"""Fairness: one namespace floods the operator; how long does another namespace wait?

    python -m bench.fairness                           # both scenarios, this tree's operator
    python -m bench.fairness --operator-dir ../old/operator   # the same against other code

The real operator (a process) at the default STS settings (10/s, burst 20, 8 in flight,
16 workers, read from rolecall.config) against a fresh API emulator and the local STS.
``N`` AssumedRoles (default 2 000) flood namespace ``fair-flood``; once the operator has
queued them, the driver measures in namespace ``fair-quiet``:

- **new → Ready**: from just before the POST of a new AssumedRole to the watch event that
  shows it ``Ready=True`` (it needs an STS call, like every flooding binding);
- **withdrawn → Secret gone**: a binding that was Ready before the flood; its namespace's
  AssumedRolePolicy is changed so it no longer admits the role; from just before that PATCH
  to the watch event that deletes the binding's Secret (no STS call needed).

Both start together (the POST, then at once the PATCH), so both wait behind the same backlog.

Scenario ``working``: the flood's STS calls succeed. Scenario ``failing``: every AssumeRole
of the flood's role answers AccessDenied (a fault in the STS proxy), forever.

"Queued" means the operator has decided the flooding bindings (one GET of its Secret each,
counted by the emulator: all of them, or 95 % and then no more for 2 s) or, for code that
decides only when a worker is free, that 10 s have passed since the flood was created with
its STS calls under way. The backlog at
each measurement (flood bindings created minus flood STS calls so far) is reported with it.
``bench.run`` runs this after its other phases (``--no-fairness`` skips it); run alone it
writes ``bench/out/fairness-latest.{json,md}``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.env import ACCOUNT, OUT, STS, Emulator, Operator, say
from bench.kube import POLICY, Kube, ar_path, is_ready
from bench.procs import git_revision, machine, machine_busy_seconds

FLOOD_NS = "fair-flood"
QUIET_NS = "fair-quiet"
FLOOD_ROLE = f"arn:aws:iam::{ACCOUNT}:role/fair-flood"
QUIET_ROLE = f"arn:aws:iam::{ACCOUNT}:role/fair-quiet"
WITHDRAWN_ROLE = f"arn:aws:iam::{ACCOUNT}:role/fair-withdrawn"
READY_GOAL_S = 5.0
WITHDRAW_GOAL_S = 2.0
QUEUED_FALLBACK_S = 10.0
RATE_WINDOW_S = 5.0


def default_rates() -> FairSettings:
    from rolecall.config import Settings as OperatorSettings

    d = OperatorSettings()
    return FairSettings(
        sts_rate=d.sts_rate, sts_burst=d.sts_burst, workers=d.workers, sts_concurrency=d.sts_concurrency
    )


@dataclass
class FairSettings:
    sts_rate: float
    sts_burst: int
    workers: int
    sts_concurrency: int
    n: int = 2000
    timeout_s: float = 300.0  # per measurement: code without fairness may take the whole backlog


def binding(namespace: str, name: str, role: str) -> dict[str, Any]:
    return {
        "apiVersion": "rolecall.dev/v1alpha1",
        "kind": "AssumedRole",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"roleArn": role, "subjects": [{"kind": "ServiceAccount", "name": "app"}]},
    }


def policy(name: str, namespace: str, *roles: str) -> dict[str, Any]:
    return {
        "apiVersion": "rolecall.dev/v1alpha1",
        "kind": "AssumedRolePolicy",
        "metadata": {"name": name},
        "spec": {"namespaces": [namespace], "roleArns": list(roles)},
    }


class Watcher:
    """Watch events of one path, kept with their arrival time, and waited on by predicate."""

    def __init__(self, kube: Kube, path: str) -> None:
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.changed = threading.Condition()
        self.stop = threading.Event()
        self.watch = kube.watch(path, self._on_event, self.stop)

    def _on_event(self, event: dict[str, Any], at: float) -> None:
        with self.changed:
            self.events.append((at, event))
            self.changed.notify_all()

    def first(self, match: Any, since: float, timeout: float) -> float | None:
        """Arrival time of the first event after ``since`` for which ``match(event)`` holds."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                for at, event in self.events:
                    if at >= since and match(event):
                        return at
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.changed.wait(min(left, 1.0))

    def close(self) -> None:
        self.watch.close()


def named(name: str, kind: str | None = None) -> Any:
    def match(event: dict[str, Any]) -> bool:
        obj = event.get("object") or {}
        return bool(
            (obj.get("metadata") or {}).get("name") == name and (kind is None or event.get("type") == kind)
        )

    return match


def ready_event(name: str) -> Any:
    by_name = named(name)
    return lambda event: by_name(event) and is_ready(event.get("object") or {})


def flood_calls(sts: STS) -> int:
    return len(sts.control.requests(action="AssumeRole", role_arn=FLOOD_ROLE))


def scenario(
    f: FairSettings, sts: STS, logs: Path, failing: bool, operator_dir: Path | None = None
) -> dict[str, Any]:
    label = "failing" if failing else "working"
    say(f"fairness ({label}): fresh emulator, {f.n} bindings to flood {FLOOD_NS}")
    sts.control.clear_faults()
    sts.control.clear()
    emulator = Emulator(f"emulator-fairness-{label}", logs)
    op: Operator | None = None
    watchers: list[Watcher] = []
    kube = emulator.kube
    try:
        for ns in (FLOOD_NS, QUIET_NS):
            kube.ensure(
                "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
            )
        kube.create(f"/apis/rolecall.dev/v1alpha1/{POLICY}", policy("flood", FLOOD_NS, FLOOD_ROLE))
        kube.create(
            f"/apis/rolecall.dev/v1alpha1/{POLICY}", policy("quiet", QUIET_NS, QUIET_ROLE, WITHDRAWN_ROLE)
        )
        if failing:
            sts.control.add_fault(
                {"error": "AccessDenied", "action": "AssumeRole", "role_arn": FLOOD_ROLE, "times": None}
            )
        op = Operator(f"operator-fairness-{label}", f, emulator, sts, logs, operator_dir)
        ars = Watcher(kube, ar_path(QUIET_NS))
        secrets = Watcher(kube, f"/api/v1/namespaces/{QUIET_NS}/secrets")
        watchers += [ars, secrets]

        t0 = time.monotonic()
        kube.create(ar_path(QUIET_NS), binding(QUIET_NS, "withdrawn", WITHDRAWN_ROLE))
        if secrets.first(named("withdrawn", "ADDED"), t0, 60) is None:
            raise RuntimeError(
                f"fairness: {QUIET_NS}/withdrawn never got its Secret:\n{op.child.log_text()[-3000:]}"
            )
        say(f"fairness ({label}): {QUIET_NS}/withdrawn holds credentials; flooding")

        before = emulator.snapshot()
        t_flood = time.monotonic()
        with ThreadPoolExecutor(4) as pool:
            list(
                pool.map(
                    lambda i: kube.create(ar_path(FLOOD_NS), binding(FLOOD_NS, f"flood-{i:05d}", FLOOD_ROLE)),
                    range(f.n),
                )
            )
        created_s = time.monotonic() - t_flood
        queued_by = wait_queued(f, op, emulator, before, sts, t_flood, label)
        queued_s = time.monotonic() - t_flood
        served_before = flood_calls(sts)
        say(f"fairness ({label}): flood queued ({queued_by}); {served_before} flood STS calls so far")

        # both at once, under the same backlog: the new binding and the withdrawal
        busy0, wall0 = machine_busy_seconds(), time.monotonic()
        t_new = time.monotonic()
        kube.create(ar_path(QUIET_NS), binding(QUIET_NS, "new", QUIET_ROLE))
        t_withdraw = time.monotonic()
        kube.request(
            "PATCH",
            f"/apis/rolecall.dev/v1alpha1/{POLICY}/quiet",
            {"spec": {"roleArns": [QUIET_ROLE]}},  # no longer WITHDRAWN_ROLE
            content_type="application/merge-patch+json",
        )
        at = secrets.first(named("withdrawn", "DELETED"), t_withdraw, f.timeout_s)
        withdraw_s = None if at is None else round(at - t_withdraw, 3)
        say(f"fairness ({label}): withdrawn binding's Secret gone after {withdraw_s} s")
        at = ars.first(ready_event("new"), t_new, max(1.0, t_new + f.timeout_s - time.monotonic()))
        ready_s = None if at is None else round(at - t_new, 3)
        say(f"fairness ({label}): new binding in {QUIET_NS} Ready after {ready_s} s")
        served_after = flood_calls(sts)
        time.sleep(RATE_WINDOW_S)  # the flood goes on being served at the configured rate
        served_end = flood_calls(sts)
        window = time.monotonic() - wall0
        others = machine_busy_seconds() - busy0
        op.check()
        return {
            "scenario": label,
            "flood": f.n,
            "flood_created_s": round(created_s, 2),
            "queued_by": queued_by,
            "queued_after_s": round(queued_s, 2),
            "backlog": max(0, f.n - served_before),
            "flood_sts_calls": {
                "before": served_before,
                "after_both": served_after,
                f"{RATE_WINDOW_S:g}_s_later": served_end,
            },
            "flood_sts_rate_per_s": round((served_end - served_before) / max(1e-9, window), 2),
            "new_ready_s": ready_s,
            "withdrawn_secret_gone_s": withdraw_s,
            "timeout_s": f.timeout_s,
            "machine_busy_share": round(others / max(1e-9, window * (os.cpu_count() or 1)), 3),
            "operator_rss_mib": op.child.memory(),
        }
    finally:
        for w in watchers:
            w.close()
        if op is not None:
            op.child.stop()
        emulator.stop()
        sts.control.clear_faults()


def wait_queued(
    f: FairSettings,
    op: Operator,
    emulator: Emulator,
    before: tuple[dict[str, int], dict[str, int]],
    sts: STS,
    t_flood: float,
    label: str,
) -> str:
    """Until the operator has decided every flooding binding (one GET of its Secret each)."""
    deadline = t_flood + 120
    last_print, last_gets, still_since = 0.0, -1, time.monotonic()
    while time.monotonic() < deadline:
        op.check()
        gets = emulator.operator_requests(before).get("get", 0)
        if gets != last_gets:
            last_gets, still_since = gets, time.monotonic()
        if gets >= f.n:
            return f"all {f.n} decided"
        if gets >= 0.95 * f.n and time.monotonic() - still_since >= 2:
            return f"{gets} of {f.n} decided, then none for 2 s"
        if time.monotonic() - t_flood > QUEUED_FALLBACK_S and gets < 0.95 * f.n and flood_calls(sts) > 0:
            return f"{QUEUED_FALLBACK_S:.0f} s after the flood with its STS calls under way ({gets} decided)"
        if time.monotonic() - last_print > 3:
            say(f"  fairness ({label}): {gets}/{f.n} flood bindings decided")
            last_print = time.monotonic()
        time.sleep(0.2)
    raise RuntimeError("fairness: the flood never queued")


def run_fairness(f: FairSettings, sts: STS, logs: Path, operator_dir: Path | None = None) -> dict[str, Any]:
    results: dict[str, Any] = {"settings": asdict(f)}
    if operator_dir is not None:
        results["operator_dir"] = str(operator_dir)
    for failing in (False, True):
        key = "failing" if failing else "working"
        results[key] = scenario(f, sts, logs, failing, operator_dir)
    return results


def _seconds(value: float | None, timeout: float) -> str:
    return f"> {timeout:.0f} s (gave up)" if value is None else f"{value:.2f} s"


def met(value: float | None, goal: float) -> bool | None:
    return None if value is None else value < goal


def rows(r: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """Markdown rows (figure, value, target, verdict) for bench.report."""
    out = []
    for key in ("working", "failing"):
        s = r.get(key)
        if not s:
            continue
        what = f"{s['flood']} flooding bindings" + (
            " that fail forever (AccessDenied)" if key == "failing" else ""
        )
        for figure, value, goal, backlog in (
            ("new binding in another namespace → Ready", s["new_ready_s"], READY_GOAL_S, s["backlog"]),
            ("withdrawn binding's Secret gone", s["withdrawn_secret_gone_s"], WITHDRAW_GOAL_S, s["backlog"]),
        ):
            verdict = met(value, goal)
            out.append(
                (
                    f"fairness, {what}: {figure}",
                    f"{_seconds(value, s['timeout_s'])} (flood backlog {backlog})",
                    f"< {goal:g} s",
                    "missed" if verdict is False else ("met" if verdict else "—"),
                )
            )
    return out


def notes(r: dict[str, Any]) -> list[str]:
    """Markdown lines: the settings and how each scenario's flood stood while measuring."""
    st = r["settings"]
    lines = [
        f"Fairness: STS rate {st['sts_rate']:g}/s burst {st['sts_burst']}, {st['sts_concurrency']} in "
        f"flight, {st['workers']} workers; flood N = {st['n']}"
        + (f"; operator code from {r['operator_dir']}" if r.get("operator_dir") else "")
        + ".",
        "",
    ]
    for key in ("working", "failing"):
        s = r.get(key)
        if s:
            lines.append(
                f"- {key}: queued ({s['queued_by']}) {s['queued_after_s']} s after the flood began; "
                f"flood STS calls {s['flood_sts_calls']}, {s['flood_sts_rate_per_s']}/s from then on; "
                f"the machine was {s['machine_busy_share']:.0%} busy meanwhile (every process, ours included)"
            )
    return [*lines, ""]


def markdown(r: dict[str, Any], title: str) -> str:
    table = [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows(r)]
    return "\n".join(
        [f"# {title}", "", "| figure | value | target | |", "|---|---|---|---|", *table, "", *notes(r)]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fairness", description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="flooding bindings (default 2 000)")
    parser.add_argument("--operator-dir", type=Path, help="run the operator package from this directory")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per measurement")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args(argv)
    f = default_rates()
    f.n, f.timeout_s = args.n, args.timeout
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = Path(args.out)
    logs = out / f"logs-fairness-{stamp}"
    sts = STS(logs)
    try:
        results = run_fairness(f, sts, logs, args.operator_dir.resolve() if args.operator_dir else None)
    finally:
        sts.stop()
    document = {"fairness": results, "machine": machine(), "run": {"started": stamp, **git_revision()}}
    out.mkdir(parents=True, exist_ok=True)
    markdown_text = markdown(results, f"rolecall fairness, {stamp}")
    for name in ("fairness-latest", f"fairness-{stamp}"):
        (out / f"{name}.json").write_text(json.dumps(document, indent=2) + "\n")
        (out / f"{name}.md").write_text(markdown_text)
    print()
    print(markdown_text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
