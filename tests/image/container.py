"""Run a process from an unpacked image the way a kubelet would, without a container engine.

There is no Docker here, and crun refuses this machine's hybrid cgroup layout; ``buildah run``
cannot make the root filesystem read-only. So this is a minimal runtime built from what
util-linux gives root: ``unshare`` makes new mount, PID, IPC and UTS namespaces (the network
stays the host's, so servers the test binds to 127.0.0.1 are reachable), and the launcher at
the bottom of this file, running inside them, prepares the mounts and then becomes the
container's process:

- the image's root filesystem bind-mounted and remounted **read-only**;
- ``/proc`` of the new PID namespace, a ``/dev`` with only null, zero, full, random and
  urandom, an empty ``/tmp`` (tmpfs: the chart's ``emptyDir``);
- the given host files or directories bind-mounted at their paths, read-only unless asked;
- ``chroot``, ``chdir`` to the working directory, every supplementary group dropped, the
  uid/gid switched (which clears every capability) and ``no_new_privs`` set, then ``execve``
  with exactly the environment given: the process is PID 1 of its namespace, as in a pod.

Needs root (mounts, chroot). The launcher is stdlib only: it runs under ``python -I``.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

DEVICES = ("null", "zero", "full", "random", "urandom")
PR_SET_NO_NEW_PRIVS = 38


@dataclasses.dataclass(frozen=True)
class Mount:
    source: Path
    target: str  # absolute path inside the container
    read_only: bool = True


@dataclasses.dataclass
class ContainerSpec:
    rootfs: Path
    args: list[str]
    env: dict[str, str]
    user: str = "65532:65532"  # uid:gid, numeric (the image's USER)
    workdir: str = "/"
    mounts: Sequence[Mount] = ()

    def to_json(self) -> str:
        uid, _, gid = self.user.partition(":")
        return json.dumps(
            {
                "rootfs": str(self.rootfs),
                "args": self.args,
                "env": self.env,
                "uid": int(uid),
                "gid": int(gid or uid),
                "workdir": self.workdir,
                "mounts": [
                    {"source": str(m.source), "target": m.target, "read_only": m.read_only}
                    for m in self.mounts
                ],
            }
        )


class Container:
    """One process started from ``spec``; its output goes to ``log``."""

    def __init__(self, spec: ContainerSpec, log: Path) -> None:
        if os.geteuid() != 0:
            raise RuntimeError("running a process from the image needs root (mounts and chroot)")
        self.spec = spec
        self.log_path = log
        self._log: IO[str] = open(log, "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                "unshare",
                "--mount",
                "--pid",
                "--ipc",
                "--uts",
                "--fork",
                "--kill-child",
                "--propagation",
                "private",
                sys.executable,
                "-I",
                __file__,
                spec.to_json(),
            ],
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def pid(self, timeout: float = 10.0) -> int:
        """The host PID of the container's process (PID 1 inside): unshare's only child."""
        deadline = time.monotonic() + timeout
        path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        while time.monotonic() < deadline:
            try:
                kids = path.read_text().split()
            except OSError:
                kids = []
            if kids:
                return int(kids[0])
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        raise AssertionError(f"the container process did not start:\n{self.text()[-3000:]}")

    def running(self) -> bool:
        return self.proc.poll() is None

    def memory_kib(self) -> dict[str, int]:
        """VmRSS and VmHWM (peak) of the container's process, from the host's /proc."""
        text = Path(f"/proc/{self.pid()}/status").read_text()
        out: dict[str, int] = {}
        for line in text.splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
        return out

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM to the process (as the kubelet does), SIGKILL after ``timeout``."""
        if self.proc.poll() is None:
            with contextlib.suppress(AssertionError, ProcessLookupError):
                os.kill(self.pid(timeout=1), signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()  # --kill-child takes the container process with it
                self.proc.wait(10)
        self._log.close()
        return self.proc.returncode

    def wait(self, timeout: float) -> int:
        code = self.proc.wait(timeout)
        self._log.close()
        return code

    def text(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def __enter__(self) -> Container:
        return self

    def __exit__(self, *_: Any) -> None:
        self.stop()


def run(spec: ContainerSpec, log: Path, timeout: float = 60.0) -> tuple[int, str]:
    """Run to completion; returns the exit code and the output."""
    container = Container(spec, log)
    try:
        code = container.wait(timeout)
    except subprocess.TimeoutExpired:
        container.stop(1)
        raise
    return code, container.text()


# --------------------------------------------------------------------------- the launcher


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True)


def in_root(rootfs: Path, target: str) -> Path:
    """``target`` as the chrooted process sees it: symlinks are followed inside ``rootfs``
    (Debian's ``/var/run -> /run`` must not lead to the host's /run)."""
    parts = [p for p in target.split("/") if p]
    current = rootfs
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == ".":
            continue
        if part == "..":
            current = current.parent if current != rootfs else rootfs
            continue
        candidate = current / part
        if candidate.is_symlink():
            hops += 1
            if hops > 40:
                raise OSError(f"{target}: too many levels of symbolic links in {rootfs}")
            link = os.readlink(candidate)
            if link.startswith("/"):
                current = rootfs
            parts = [p for p in link.split("/") if p] + parts
            continue
        current = candidate
    return current


def _bind_target(rootfs: Path, source: Path, target: str) -> Path:
    path = in_root(rootfs, target)
    if source.is_dir():
        path.mkdir(parents=True, exist_ok=True)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(exist_ok=True)
    return path


def _launch(config: dict[str, Any]) -> None:  # pragma: no cover - runs in the namespaces
    rootfs = Path(config["rootfs"])
    _mount("--bind", str(rootfs), str(rootfs))
    _mount("-t", "proc", "-o", "nosuid,nodev,noexec", "proc", str(in_root(rootfs, "/proc")))
    dev = in_root(rootfs, "/dev")
    _mount("-t", "tmpfs", "-o", "nosuid,noexec,mode=755,size=64k", "tmpfs", str(dev))
    for name in DEVICES:
        (dev / name).touch()
        _mount("--bind", f"/dev/{name}", str(dev / name))
    _mount("-t", "tmpfs", "-o", "nosuid,nodev,mode=1777,size=64m", "tmpfs", str(in_root(rootfs, "/tmp")))
    for m in config["mounts"]:
        target = _bind_target(rootfs, Path(m["source"]), m["target"])
        _mount("--bind", m["source"], str(target))
        if m["read_only"]:
            _mount("-o", "remount,bind,ro", str(target))
    _mount("-o", "remount,bind,ro,nosuid,nodev", str(rootfs))

    os.chroot(rootfs)
    os.chdir(config["workdir"])
    os.setgroups([])
    os.setgid(config["gid"])
    os.setuid(config["uid"])
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    os.execvpe(config["args"][0], config["args"], config["env"])


if __name__ == "__main__":  # pragma: no cover
    _launch(json.loads(sys.argv[1]))
