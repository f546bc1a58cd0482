"""Child processes of the benchmark: spawning, CPU time and memory from /proc."""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of one process (not its children)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return float("nan")
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14, 15)


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy since boot (all cores; /proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / CLK_TCK


def memory_mib(pid: int) -> dict[str, float]:
    """VmRSS (now) and VmHWM (peak) in MiB."""
    out = {"rss_mib": float("nan"), "peak_rss_mib": float("nan")}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return out
    for key, name in (("VmRSS", "rss_mib"), ("VmHWM", "peak_rss_mib")):
        m = re.search(rf"^{key}:\s+(\d+) kB", text, re.M)
        if m:
            out[name] = round(int(m.group(1)) / 1024, 1)
    return out


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        m = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        model = m.group(1).strip() if m else ""
    mem = ""
    with contextlib.suppress(OSError):
        m = re.search(r"^MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
        mem = f"{int(m.group(1)) / 1024 / 1024:.1f} GiB" if m else ""
    versions = {}
    for package in ("kopf", "kubernetes", "boto3", "moto", "aiohttp"):
        with contextlib.suppress(Exception):
            versions[package] = importlib.metadata.version(package)
    return {
        "packages": versions,
        "nproc": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)),
        "cpu_model": model or platform.processor(),
        "memory": mem,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def git_revision() -> dict[str, Any]:
    """The commit measured, and whether the operator's code differed from it."""

    def git(*args: str) -> str:
        try:
            done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return done.stdout.strip()

    return {
        "commit": git("rev-parse", "--short=12", "HEAD"),
        "operator_modified": bool(git("status", "--porcelain", "--", "operator")),
    }


@dataclass
class Child:
    """A child process whose output goes to a log file."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    started: float  # time.monotonic() just before spawning
    _log: IO[bytes]

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def memory(self) -> dict[str, float]:
        return memory_mib(self.pid)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def first_line(self, timeout: float = 60.0) -> str:
        """The first line of output (children announce their address there)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log_text()
            if "\n" in text:
                return text.split("\n", 1)[0]
            if not self.alive():
                break
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not start:\n{self.log_text()[-3000:]}")

    def stop(self, timeout: float = 30.0) -> float:
        """SIGTERM, wait; SIGKILL if needed. Returns the seconds it took to exit."""
        t0 = time.monotonic()
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._log.close()
        return time.monotonic() - t0


def spawn(
    name: str,
    argv: list[str],
    log_dir: Path,
    env: dict[str, str] | None = None,
    path_first: list[str] | None = None,
) -> Child:
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    log = open(log_path, "wb")  # noqa: SIM115 - closed by Child.stop
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    pythonpath = [*(path_first or []), str(ROOT), str(ROOT / "operator")]
    if full_env.get("PYTHONPATH"):
        pythonpath.append(full_env["PYTHONPATH"])
    full_env["PYTHONPATH"] = os.pathsep.join(pythonpath)
    started = time.monotonic()
    process = subprocess.Popen(
        argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=full_env
    )
    return Child(name, process, log_path, started, log)


def http_json(url: str, method: str = "GET", data: Any = None, timeout: float = 30.0) -> Any:
    body = None if data is None else json.dumps(data).encode()
    request = urllib.request.Request(
        url, data=body, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read() or b"null")


def http_text(url: str, timeout: float = 5.0) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return str(response.read().decode())
    except (urllib.error.URLError, OSError):
        return None


class Profiler:
    """``py-spy record`` attached to a process for one phase (``--profile``; needs py-spy).

    Writes collapsed stacks (flamegraph input) to ``out``; :func:`top_frames` summarises them.
    """

    def __init__(self, pid: int, out: Path, rate: int = 100) -> None:
        self.out = out
        exe = Path(PYTHON).with_name("py-spy")
        argv = [str(exe if exe.exists() else "py-spy"), "record", "--pid", str(pid), "--rate", str(rate)]
        argv += ["--format", "raw", "--gil", "--nonblocking", "-o", str(out)]
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> Path:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        return self.out


def top_frames(collapsed: Path, limit: int = 15) -> dict[str, Any]:
    """Share of samples per function, inclusive (anywhere on the stack) and exclusive (leaf)."""
    inclusive: dict[str, int] = {}
    exclusive: dict[str, int] = {}
    total = 0
    try:
        lines = collapsed.read_text().splitlines()
    except OSError:
        return {}
    for line in lines:
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [re.sub(r" \((.*/)?([^/]+):\d+\)$", r" (\2)", f) for f in stack.split(";")]
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count
        exclusive[frames[-1]] = exclusive.get(frames[-1], 0) + count

    def top(d: dict[str, int]) -> list[tuple[str, float]]:
        return [(k, round(100 * v / total, 1)) for k, v in sorted(d.items(), key=lambda kv: -kv[1])[:limit]]

    return {"samples": total, "inclusive_pct": top(inclusive), "exclusive_pct": top(exclusive)}
