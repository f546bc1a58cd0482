"""The operator waits for its CRDs instead of crash-looping without them.

The CRDs ship apart from the operator (removing the operator never removes them, and they
may be installed after it). Without them kopf cannot watch AssumedRoles: at start it would
serve nothing and retry its startup every minute with a bare ``404``, and when they are
deleted under it its watchers fail and the operator stops with three tracebacks.

:func:`supervise` runs the operator only while the CRDs are served:

- before starting, it checks API discovery (open to every authenticated client, no RBAC on
  CRDs needed) and, when a CRD is missing, logs once, at WARNING, which one and how to
  install it, keeps answering ``/healthz`` (so the liveness probe does not restart the pod)
  and polls every few seconds until it is back;
- when kopf stops because a watched resource vanished (``404``), it logs once which CRD was
  deleted, waits the same way, and starts a fresh operator when the CRD is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

from aiohttp import web

from rolecall import constants as c
from rolecall.config import Settings
from rolecall.kube import KubeAdapter, KubeError, load_configuration

logger = logging.getLogger("rolecall.crds")

CRDS = {
    c.PLURAL_ASSUMED_ROLE: f"{c.PLURAL_ASSUMED_ROLE}.{c.GROUP}",
    c.PLURAL_POLICY: f"{c.PLURAL_POLICY}.{c.GROUP}",
}
INSTALL_HINT = "install the CRDs with: kubectl apply -f deploy/manifests/crds/ (docs/install.md)"
POLL_SECONDS = 2.0
RUNNING_POLL_SECONDS = 10.0
VANISH_GRACE_SECONDS = 30.0  # a deleted CRD terminates (its objects go first) before it goes
# kopf's messages when a watched resource answers 404; replaced by ours while we handle it
_KOPF_LOGGERS = ("kopf._core.reactor.orchestration", "kopf._core.reactor.running", "asyncio")


def missing(kube: KubeAdapter) -> list[str]:
    """The CRDs whose resources the API server does not serve (blocking)."""
    served = kube.served_resources(c.API_VERSION) or set()
    return [name for plural, name in CRDS.items() if plural not in served]


class _DropNotFound(logging.Filter):
    """Drops kopf's tracebacks for a watch that answered 404 (its CRD was deleted)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not (exc is not None and type(exc).__name__ == "APINotFoundError")


def _quiet_kopf_not_found() -> None:
    """For the life of the process: some are logged late, when kopf's tasks are collected."""
    for name in _KOPF_LOGGERS:
        log = logging.getLogger(name)
        if not any(isinstance(f, _DropNotFound) for f in log.filters):
            log.addFilter(_DropNotFound())


class Waiter:
    """Waits until every CRD is served, saying once what is missing."""

    def __init__(
        self,
        kube: KubeAdapter,
        *,
        poll: float = POLL_SECONDS,
        health: tuple[str, int] | None = None,
    ) -> None:
        self.kube = kube
        self.poll = poll
        self.health = health
        self.waiting_for: list[str] = []
        self._unreachable = False

    async def missing(self) -> list[str] | None:
        """The CRDs not served; None when the API server cannot be asked (said once)."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(None, missing, self.kube)
        except KubeError as exc:
            if not self._unreachable:
                logger.warning(
                    "Cannot ask the API server for the CRDs (%s %s); retrying", exc.status, exc.reason
                )
            self._unreachable = True
            return None

    async def wait(self, stop: asyncio.Event, *, deleted: bool = False) -> bool:
        """True once every CRD is served; False when ``stop`` is set first."""
        self._unreachable = False
        absent = await self.missing()
        if absent == []:
            return True
        self.waiting_for = absent or list(CRDS.values())
        if absent:
            plural = len(absent) > 1
            what = f"CustomResourceDefinition{'s' if plural else ''} {', '.join(absent)}"
            if deleted:
                logger.warning(
                    "%s %s deleted, and with %s every object of %s kind: the operator stopped and "
                    "starts again when %s back (%s)",
                    what,
                    "were" if plural else "was",
                    "them" if plural else "it",
                    "their" if plural else "its",
                    "they are" if plural else "it is",
                    INSTALL_HINT,
                )
            else:
                logger.warning(
                    "Waiting for the %s, which the API server does not serve: the operator starts "
                    "when it does; %s",
                    what,
                    INSTALL_HINT,
                )
        async with self._healthz():
            while absent != []:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self.poll)
                if stop.is_set():
                    return False
                absent = await self.missing()
        logger.info("Found the CustomResourceDefinitions %s; starting", ", ".join(self.waiting_for))
        self.waiting_for = []
        return True

    @contextlib.asynccontextmanager
    async def _healthz(self) -> AsyncIterator[None]:
        """Answer the liveness probe while waiting (the operator's own server is not up)."""
        if self.health is None or self.health[1] < 0:
            yield
            return

        async def healthz(_: web.Request) -> web.Response:
            body = {"ok": True, "waiting": f"CRDs not served: {', '.join(self.waiting_for)}"}
            return web.Response(text=json.dumps(body), content_type="application/json")

        app = web.Application()
        app.router.add_get("/healthz", healthz)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.health[0], self.health[1]).start()
        except OSError as exc:
            logger.debug("No /healthz while waiting: %s", exc)
        try:
            yield
        finally:
            await runner.cleanup()


@contextlib.contextmanager
def _stop_on_signals(stop: asyncio.Event) -> Iterator[None]:
    """While kopf is not running, SIGTERM/SIGINT end the wait cleanly."""
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
        except (RuntimeError, ValueError, NotImplementedError):  # not the main thread
            pass
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


async def supervise(
    settings: Settings,
    run_once: Callable[[asyncio.Event], Awaitable[None]],
    *,
    stop: asyncio.Event | None = None,
    poll: float = POLL_SECONDS,
    running_poll: float = RUNNING_POLL_SECONDS,
    kube: KubeAdapter | None = None,
) -> None:
    """Run ``run_once(stop_flag)`` (a fresh operator each time) while the CRDs are served.

    A vanished CRD is noticed either way: kopf stops on the 404 of its watch, or the
    discovery poll (every ``running_poll`` seconds) sets the operator's stop flag.
    """
    stop = stop or asyncio.Event()
    kube = kube or KubeAdapter(load_configuration(settings.kubeconfig, settings.context), pool_size=2)
    waiter = Waiter(kube, poll=poll, health=(settings.health_host, settings.health_port))
    deleted = False
    _quiet_kopf_not_found()  # kopf's tracebacks for a vanished resource: ours replaces them
    with contextlib.closing(kube):
        while True:
            with _stop_on_signals(stop):
                if not await waiter.wait(stop, deleted=deleted):
                    return
            operator_stop = asyncio.Event()
            gone = asyncio.Event()
            relay = asyncio.create_task(_relay(stop, operator_stop))
            watch = asyncio.create_task(_watch(waiter, running_poll, gone, operator_stop))
            try:
                await run_once(operator_stop)
            except Exception:
                if not gone.is_set() and not await _vanished(waiter, stop):
                    raise
                gone.set()
            finally:
                relay.cancel()
                watch.cancel()
            if not gone.is_set():
                return  # stopped on request (a signal, the stop flag)
            deleted = True


async def _relay(source: asyncio.Event, target: asyncio.Event) -> None:
    await source.wait()
    target.set()


async def _watch(waiter: Waiter, interval: float, gone: asyncio.Event, operator_stop: asyncio.Event) -> None:
    """While the operator runs: stop it when a CRD is no longer served."""
    while True:
        await asyncio.sleep(interval)
        if await waiter.missing():
            gone.set()
            operator_stop.set()
            return


async def _vanished(waiter: Waiter, stop: asyncio.Event) -> bool:
    """After kopf failed: did a CRD go (allowing for its termination)?"""
    deadline = asyncio.get_running_loop().time() + VANISH_GRACE_SECONDS
    while asyncio.get_running_loop().time() < deadline and not stop.is_set():
        if await waiter.missing():
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=waiter.poll)
    return False
