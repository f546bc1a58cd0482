"""The operator's own HTTP endpoints: ``/healthz`` for probes, ``/metrics`` for Prometheus.

They listen on separate ports. ``/healthz`` says only whether the process works (kubelet
probes need it from the node). ``/metrics`` names every binding (namespace and name labels),
so it has its own port that can stay closed: off by default on the command line, served
in the chart only inside the Pod network and, with ``--metrics-auth`` on, only to callers the
API server vouches for (TokenReview) and allows to ``get`` the ``/metrics`` non-resource URL
(SubjectAccessReview) — the way controller-runtime's secure serving does it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

logger = logging.getLogger("rolecall")

METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Endpoint:
    """One aiohttp server on one host:port with a few GET routes."""

    def __init__(
        self, host: str, port: int, routes: dict[str, Callable[[web.Request], Awaitable[web.StreamResponse]]]
    ) -> None:
        self.host = host
        self.requested_port = port
        self.port = port
        self._routes = routes
        self._runner: web.AppRunner | None = None

    async def start(self) -> int:
        app = web.Application()
        for path, handler in self._routes.items():
            app.router.add_get(path, handler)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.requested_port)
        await site.start()
        sockets: Any = getattr(site._server, "sockets", None) or []
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        logger.info("Serving %s on %s:%s", ", ".join(self._routes), self.host, self.port)
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def bearer_token(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""
