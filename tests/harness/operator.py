"""Run the real operator (kopf + App) in a thread of the test process, with its own loop.

The operator talks HTTP to the emulator and to the STS proxy like it would in a cluster;
only its clock is injected (a FakeClock the test moves), so refresh timing is tested
without waiting. Several instances can run at once (an HA pair): each gets its own registry.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import subprocess
import sys
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from rolecall.app import App
from rolecall.clock import Clock
from rolecall.config import Settings
from rolecall.logs import quiet_libraries
from rolecall.runtime import run_operator


class LogCapture(logging.Handler):
    """Keeps every formatted log line (and exception text) of the operator for scanning."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record))
        except Exception:  # a log line that cannot be formatted must not break the operator
            self.lines.append(f"<unformattable {record.msg!r}>")

    def text(self) -> str:
        return "\n".join(self.lines)


class OperatorThread:
    def __init__(self, settings: Settings, clock: Clock | None = None) -> None:
        self.settings = settings
        quiet_libraries(verbose=True)  # as `rolecall run --verbose` does: the most talkative setting
        self.app = App(settings, clock=clock)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="rolecall-operator", daemon=True)
        self.error: BaseException | None = None

    def _main(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            ready = asyncio.Event()
            waiter = asyncio.create_task(ready.wait())
            waiter.add_done_callback(lambda _: self._ready.set())
            try:
                await run_operator(self.app, stop_flag=self._stop, ready_flag=ready)
            finally:
                waiter.cancel()

        try:
            asyncio.run(main())
        except BaseException as exc:  # surfaced to the test by stop()
            self.error = exc
        finally:
            self._ready.set()

    def start(self, timeout: float = 20.0) -> OperatorThread:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise AssertionError(f"operator did not become ready within {timeout}s")
        if self.error is not None:
            raise AssertionError(f"operator failed to start: {self.error!r}") from self.error
        return self

    def call(self, fn, *args):  # type: ignore[no-untyped-def]
        """Run ``fn(*args)`` on the operator's loop and return its result (thread-safe)."""
        assert self._loop is not None

        async def run():  # type: ignore[no-untyped-def]
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    def stop(self, timeout: float = 20.0) -> None:
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            with suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise AssertionError("operator did not stop in time")
        collect_closed_loop_garbage()
        if self.error is not None and not isinstance(self.error, asyncio.CancelledError):
            raise AssertionError(f"operator ended with an error: {self.error!r}") from self.error


def collect_closed_loop_garbage() -> None:
    """Collect what the stopped operator's closed event loop left behind now, in the teardown
    of the test that ran it: asyncio transports of connections a client still held when the
    loop closed warn "unclosed transport" when collected, and under ``filterwarnings = error``
    that would fail whichever later test the garbage collector happened to run in."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


@contextmanager
def running_operator(settings: Settings, clock: Clock | None = None) -> Iterator[OperatorThread]:
    op = OperatorThread(settings, clock).start()
    try:
        yield op
    finally:
        op.stop()


class OperatorProcess:
    """``rolecall run --ha none`` in a subprocess, its output in a log file.

    Extra ``args`` come last, so they override (``--ha lease`` for an HA replica).
    """

    def __init__(self, kubeconfig: Path, namespace: str, env: dict[str, str], log: Path, *args: str) -> None:
        self.log_path = log
        self._log = open(log, "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "rolecall.cli",
                "run",
                "--kubeconfig",
                str(kubeconfig),
                "--namespace",
                namespace,
                "--ha",
                "none",
                "--health-port",
                "-1",
                "--metrics-port",
                "-1",
                *args,
            ],
            env={**os.environ, **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")
