"""The benchmark's processes: the API emulator, the local STS and the operator, each on its own."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Protocol

from bench.kube import Kube
from bench.procs import (
    PYTHON,
    ROOT,
    children,
    cpu_seconds,
    free_port,
    http_json,
    http_text,
    machine_busy_seconds,
    spawn,
)

OUT = ROOT / "bench" / "out"
ACCOUNT = "123456789012"
VERBS = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection", "discovery")
WRITES = ("create", "update", "patch", "delete", "deletecollection")
T_START = time.monotonic()


def say(text: str) -> None:
    print(f"[{time.monotonic() - T_START:7.1f}s] {text}", flush=True)


class Rates(Protocol):
    """The operator's throughput settings (bench.run.Settings has them)."""

    sts_rate: float
    sts_burst: int
    workers: int
    sts_concurrency: int


# --------------------------------------------------------------------------- environment


class Emulator:
    """``python -m bench.emulator`` (own process) and a counting client for it."""

    def __init__(self, name: str, logs: Path) -> None:
        self.kubeconfig = logs / f"{name}.kubeconfig"
        self.child = spawn(
            name,
            [
                PYTHON,
                "-m",
                "bench.emulator",
                "--kubeconfig",
                str(self.kubeconfig),
                "--crds",
                str(ROOT / "deploy" / "crds"),
                "--history",
                "20000",
            ],
            logs,
        )
        info = json.loads(self.child.first_line())
        self.url, self.control = info["url"], info["control"]
        from tests.harness.kubeapi import DEFAULT_TOKEN

        self.kube = Kube(self.url, DEFAULT_TOKEN)

    def counts(self) -> dict[str, int]:
        return dict(http_json(f"{self.control}/counts"))

    def snapshot(self) -> tuple[dict[str, int], dict[str, int]]:
        """(emulator counts, driver counts) at one moment (the driver is synchronous here)."""
        return self.counts(), dict(self.kube.counts)

    def operator_requests(self, before: tuple[dict[str, int], dict[str, int]]) -> dict[str, int]:
        """Requests since ``before`` that were not the driver's own."""
        emu, drv = self.snapshot()
        out = {v: emu.get(v, 0) - before[0].get(v, 0) - (drv.get(v, 0) - before[1].get(v, 0)) for v in VERBS}
        return {v: n for v, n in out.items() if n}

    def stop(self) -> None:
        self.child.stop()


class STS:
    """``python -m tests.harness.sts``: moto behind the recording proxy, in their own processes."""

    def __init__(self, logs: Path) -> None:
        self.child = spawn("sts", [PYTHON, "-m", "tests.harness.sts", "--port", "0"], logs)
        info = json.loads(self.child.first_line())
        self.url = info["url"]
        from tests.harness.sts import ProxyControl

        self.control = ProxyControl(self.url, timeout=60)
        kids = children(self.child.pid)
        self.moto_pid = kids[0] if kids else None

    def calls(self) -> int:
        return len(self.control.requests(action="AssumeRole"))

    def total(self) -> int:
        return int(http_json(f"{self.url}/__proxy/status")["requests"])

    def stop(self) -> None:
        self.child.stop()


class CPU:
    """CPU seconds of every process of the benchmark over one phase, and of everything else.

    ``others`` is the machine's busy time minus ours: processes that are not part of the
    benchmark (other users' tests on a shared machine) competing for the same cores."""

    def __init__(self, procs: dict[str, int | None]) -> None:
        self.procs = {k: v for k, v in procs.items() if v}
        self.procs["driver"] = os.getpid()
        self.wall0 = time.monotonic()
        self.machine0 = machine_busy_seconds()
        self.start = {k: cpu_seconds(pid) for k, pid in self.procs.items()}

    def done(self, **extra: float) -> dict[str, float]:
        """``extra``: CPU seconds of processes that lived only inside the phase."""
        out = {k: round(cpu_seconds(pid) - self.start[k], 2) for k, pid in self.procs.items()}
        out.update({k: round(v, 2) for k, v in extra.items()})
        out["others"] = round(max(0.0, machine_busy_seconds() - self.machine0 - sum(out.values())), 2)
        out["wall_s"] = round(time.monotonic() - self.wall0, 2)
        return out


def operator_env(sts_url: str) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL_STS": sts_url,
        "AWS_ACCESS_KEY_ID": "AKIABENCHOPERATOR001",
        "AWS_SECRET_ACCESS_KEY": "bench-operator-secret",
        "AWS_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }


class Operator:
    """``rolecall run`` in a process of its own; ``operator_dir`` runs another tree's operator
    code (a before/after comparison) instead of this one's."""

    def __init__(
        self,
        name: str,
        s: Rates,
        emulator: Emulator,
        sts: STS,
        logs: Path,
        operator_dir: Path | None = None,
    ) -> None:
        self.port = free_port()
        self.child = spawn(
            name,
            [
                PYTHON,
                "-m",
                "rolecall.cli",
                "run",
                "--kubeconfig",
                str(emulator.kubeconfig),
                "--ha",
                "none",
                "--health-host",
                "127.0.0.1",
                "--health-port",
                str(self.port),
                *self._metrics_flags(operator_dir),
                "--sts-rate",
                str(s.sts_rate),
                "--sts-burst",
                str(s.sts_burst),
                "--workers",
                str(s.workers),
                "--sts-concurrency",
                str(s.sts_concurrency),
            ],
            logs,
            env=operator_env(sts.url),
            path_first=[str(operator_dir)] if operator_dir else [],
        )
        self.healthy_after: float | None = None

    def _metrics_flags(self, operator_dir: Path | None) -> list[str]:
        """/metrics on the health port (code from before --metrics-port served it there anyway)."""
        cli = (operator_dir or ROOT / "operator") / "rolecall"
        sources = "".join(p.read_text() for p in (cli / "cli.py", cli / "config.py") if p.exists())
        if "--metrics-port" not in sources:
            return []
        return ["--metrics-host", "127.0.0.1", "--metrics-port", str(self.port)]

    def metrics(self) -> dict[str, float]:
        """rolecall_assumed_roles by readiness (empty until /metrics answers)."""
        text = http_text(f"http://127.0.0.1:{self.port}/metrics", timeout=10)
        if text is None:
            return {}
        if self.healthy_after is None:
            self.healthy_after = time.monotonic() - self.child.started
        out: dict[str, float] = {}
        for m in re.finditer(r'^rolecall_assumed_roles\{ready="(true|false)"\} ([0-9.e+]+)$', text, re.M):
            out[m.group(1)] = float(m.group(2))
        return out

    def check(self) -> None:
        if not self.child.alive():
            raise RuntimeError(f"the operator exited:\n{self.child.log_text()[-3000:]}")
