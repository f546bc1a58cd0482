"""``KubeAPIEmulator``: the API server in a daemon thread with its own event loop."""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import os
import pathlib
import ssl
import tempfile
import threading
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import yaml
from aiohttp import web

from .rbac import AUTHENTICATED, MASTERS, Denial, User, static_user
from .server import VERBS, ApiServer

T = TypeVar("T")

DEFAULT_TOKEN = "rolecall-emulator-token"
DEFAULT_USER = "emulator-admin"


class KubeAPIEmulator:
    """A Kubernetes API server emulator over HTTP on loopback.

    ``start()`` serves it from a daemon thread; ``stop()`` ends it. Any client that can read
    a kubeconfig (``write_kubeconfig``) can talk to it: the kubernetes client, kopf, kubectl.
    The admin ``token`` is ``username`` in ``system:masters``. With ``tls=True`` it serves
    HTTPS with a self-signed certificate (in the kubeconfig): kubectl and helm send their
    credentials only over TLS, so that is how they act as a user RBAC judges.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        token: str = DEFAULT_TOKEN,
        username: str = DEFAULT_USER,
        require_auth: bool = False,
        tls: bool = False,
        history_size: int = 2000,
        bookmark_interval: float = 50.0,
        default_watch_timeout: float = 1800.0,
    ) -> None:
        self.host = host
        self.port = port
        self.token = token
        self.username = username
        self.tls = tls
        self.ca_pem: bytes | None = None
        self._tls_dir: tempfile.TemporaryDirectory[str] | None = None
        self._options: dict[str, Any] = {
            "tokens": {token: User(username, (MASTERS, AUTHENTICATED))},
            "require_auth": require_auth,
            "secure": tls,
            "history_size": history_size,
            "bookmark_interval": bookmark_interval,
            "default_watch_timeout": default_watch_timeout,
        }
        self.server: ApiServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._stopped: asyncio.Event | None = None

    # ----------------------------------------------------------------- lifecycle

    async def start_async(self) -> None:
        """Start serving on the running loop (the CLI uses this directly)."""
        self._loop = asyncio.get_running_loop()
        self.server = ApiServer(**self._options)
        self._runner = web.AppRunner(
            self.server.app(),
            access_log=None,
            handle_signals=False,
            handler_cancellation=True,
            shutdown_timeout=1.0,
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=self._ssl_context())
        await site.start()
        server = site._server
        assert server is not None
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1]
        self.server.address = f"{self.host}:{self.port}"

    def _ssl_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        from rolecall.tls import generate_self_signed

        cert, key = generate_self_signed([self.host, "localhost"])
        self.ca_pem = cert
        self._tls_dir = tempfile.TemporaryDirectory(prefix="kubeapi-tls-")
        cert_path = pathlib.Path(self._tls_dir.name, "tls.crt")
        key_path = pathlib.Path(self._tls_dir.name, "tls.key")
        cert_path.write_bytes(cert)
        key_path.write_bytes(key)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert_path, key_path)
        return context

    async def stop_async(self) -> None:
        if self.server is not None:
            await self.server.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._tls_dir is not None:
            self._tls_dir.cleanup()
            self._tls_dir = None

    def start(self) -> KubeAPIEmulator:
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._stopped = asyncio.Event()
            try:
                loop.run_until_complete(self.start_async())
            except BaseException as e:
                ready.set_exception(e)
                loop.close()
                return
            ready.set_result(None)
            try:
                loop.run_until_complete(self._stopped.wait())
                loop.run_until_complete(self.stop_async())
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="kubeapi-emulator", daemon=True)
        self._thread.start()
        ready.result(timeout=30)
        return self

    def stop(self) -> None:
        if self._thread is None or self._loop is None or self._stopped is None:
            return
        self._loop.call_soon_threadsafe(self._stopped.set)
        self._thread.join(timeout=30)
        self._thread = None

    def __enter__(self) -> KubeAPIEmulator:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # ----------------------------------------------------------------- client configuration

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    def write_kubeconfig(
        self,
        path: str | os.PathLike[str],
        *,
        namespace: str = "default",
        token: str | None = None,
        user: str | None = None,
    ) -> pathlib.Path:
        """A kubeconfig for the admin, or for whoever ``token`` authenticates (named ``user``)."""
        cluster: dict[str, Any] = {"server": self.url}
        if self.ca_pem is not None:
            cluster["certificate-authority-data"] = base64.b64encode(self.ca_pem).decode()
        user_name = user or (self.username if token is None else "user")
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "emulator", "cluster": cluster}],
            "users": [{"name": user_name, "user": {"token": token or self.token}}],
            "contexts": [
                {
                    "name": "emulator",
                    "context": {"cluster": "emulator", "user": user_name, "namespace": namespace},
                }
            ],
            "current-context": "emulator",
            "preferences": {},
        }
        target = pathlib.Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(yaml.safe_dump(config, sort_keys=False))
        return target

    # ----------------------------------------------------------------- introspection (emulator-only)

    def call(self, fn: Callable[[ApiServer], T | Awaitable[T]], timeout: float = 30) -> T:
        """Run ``fn(server)`` on the emulator's loop and return its result (thread-safe)."""
        if self._loop is None or self.server is None:
            raise RuntimeError("the emulator is not running")
        server = self.server

        async def runner() -> T:
            result = fn(server)
            if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
                return await result  # type: ignore[no-any-return]
            return result  # type: ignore[return-value]

        if threading.current_thread() is self._thread:
            raise RuntimeError("call() from the emulator's own thread would deadlock")
        return asyncio.run_coroutine_threadsafe(runner(), self._loop).result(timeout)

    def request_counts(self) -> dict[str, int]:
        counts = self.call(lambda s: dict(s.counts))
        return {verb: counts.get(verb, 0) for verb in VERBS}

    def reset_counts(self) -> None:
        self.call(lambda s: s.counts.clear())

    def add_token(self, token: str, username: str, groups: Iterable[str] = ()) -> None:
        """A static token for a user (in ``groups`` and ``system:authenticated``)."""
        user = static_user(username, groups)
        self.call(lambda s: s.auth.tokens.__setitem__(token, user))

    def service_account_token(self, namespace: str, name: str, seconds: int = 3600) -> str:
        """A token for an existing ServiceAccount, as ``kubectl create token`` gets one."""
        return self.call(lambda s: s.auth.issue_service_account_token(namespace, name, seconds))[0]

    def denials(self, since: int = 0) -> list[Denial]:
        """Requests RBAC refused (403), oldest first, from the ``since``-th denial on."""

        def collect(s: ApiServer) -> list[Denial]:
            first = s.auth.denial_count - len(s.auth.denials)
            return list(s.auth.denials)[max(since - first, 0) :]

        return self.call(collect)

    def denial_count(self) -> int:
        """How many requests RBAC refused so far (a cursor for :meth:`denials`)."""
        return self.call(lambda s: s.auth.denial_count)

    def compact_history(self) -> None:
        """Forget the watch history: watches resuming from older resourceVersions get 410."""
        self.call(lambda s: s.store.compact())

    def object_count(self) -> int:
        return self.call(lambda s: s.store.count_objects())

    def cel_stats(self) -> dict[str, Any]:
        return self.call(
            lambda s: {
                "available": s.cel.available,
                "evaluated": s.cel.evaluated,
                "skipped": s.cel.skip_count,
                "skipped_rules": dict(s.cel.skipped),
            }
        )

    def webhook_calls(self) -> int:
        return self.call(lambda s: s.admission.calls)

    def route_service(self, namespace: str, name: str, port: int, host: str, target_port: int) -> None:
        """Add ``host:target_port`` to the endpoints of Service ``namespace/name:port``: webhook
        calls and service-proxy requests go to its endpoints in turn (what DNS and kube-proxy
        do in a cluster; the TLS name checked stays ``name.namespace.svc``)."""

        def add(s: ApiServer) -> None:
            endpoints = s.admission.service_routes.setdefault((namespace, name, port), [])
            if (host, target_port) not in endpoints:
                endpoints.append((host, target_port))

        self.call(add)

    def unroute_service(self, namespace: str, name: str, port: int, host: str, target_port: int) -> None:
        """Remove an endpoint added by :meth:`route_service` (its pod stopped)."""

        def remove(s: ApiServer) -> None:
            endpoints = s.admission.service_routes.get((namespace, name, port)) or []
            if (host, target_port) in endpoints:
                endpoints.remove((host, target_port))

        self.call(remove)

    def apply(self, manifests: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """Create or replace objects from manifests directly (no HTTP, no auth)."""
        docs = [m for m in manifests if m]

        async def apply_all(server: ApiServer) -> list[dict[str, Any]]:
            return [await server.apply_object(doc) for doc in docs]

        return self.call(apply_all)

    def load_crds(self, directory: str | os.PathLike[str]) -> list[str]:
        """Apply every CRD in the YAML files of a directory; returns the CRD names."""
        return [doc["metadata"]["name"] for doc in self.apply(read_crd_manifests(directory))]


def read_crd_manifests(directory: str | os.PathLike[str]) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    base = pathlib.Path(directory)
    for path in sorted([*base.glob("*.yaml"), *base.glob("*.yml")]):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                docs.append(doc)
    return docs
