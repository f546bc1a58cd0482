"""The driver's own Kubernetes client: plain JSON over keep-alive HTTP, counting itself.

Every request the benchmark driver makes is counted here by verb, so the operator's share
of the emulator's counts is (emulator's delta) - (driver's delta) over the same window.
"""

from __future__ import annotations

import collections
import contextlib
import http.client
import json
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

GROUP_VERSION = "rolecall.dev/v1alpha1"
AR = "assumedroles"
POLICY = "assumedrolepolicies"


class ApiError(Exception):
    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"{status}: {body[:300]!r}")
        self.status = status


class Kube:
    def __init__(self, url: str, token: str) -> None:
        parsed = urllib.parse.urlsplit(url)
        self.host, self.port = parsed.hostname or "127.0.0.1", parsed.port or 80
        self.token = token
        self.counts: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()
        self._local = threading.local()

    def _conn(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = http.client.HTTPConnection(self.host, self.port, timeout=120)
        return conn

    def _count(self, verb: str) -> None:
        with self._lock:
            self.counts[verb] += 1

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        verb: str = "",
    ) -> Any:
        """One request; ``verb`` (as the emulator counts it) is needed for GET: get or list."""
        verb = verb or {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}[method]
        self._count(verb)
        data = None if body is None else json.dumps(body).encode()
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = content_type
        for attempt in (1, 2):
            conn = self._conn()
            try:
                conn.request(method, path, body=data, headers=headers)
                response = conn.getresponse()
                raw = response.read()
                break
            except (http.client.HTTPException, OSError):
                conn.close()
                self._local.conn = None
                if attempt == 2:
                    raise
        if response.status >= 400:
            raise ApiError(response.status, raw)
        return json.loads(raw) if raw else None

    # --- helpers -------------------------------------------------------------------------

    def create(self, path: str, body: Any) -> Any:
        return self.request("POST", path, body)

    def ensure(self, path: str, body: Any) -> None:
        try:
            self.create(path, body)
        except ApiError as exc:
            if exc.status != 409:
                raise

    def get(self, path: str) -> Any:
        return self.request("GET", path, verb="get")

    def list_all(self, path: str, page: int = 500) -> Iterator[dict[str, Any]]:
        token = ""
        while True:
            query = {"limit": str(page)}
            if token:
                query["continue"] = token
            answer = self.request("GET", f"{path}?{urllib.parse.urlencode(query)}", verb="list")
            yield from answer.get("items") or []
            token = (answer.get("metadata") or {}).get("continue") or ""
            if not token:
                return

    def watch(
        self,
        path: str,
        on_event: Callable[[dict[str, Any], float], None],
        stop: threading.Event,
    ) -> Watch:
        """Stream watch events of ``path`` to ``on_event(event, monotonic_time)`` in a thread."""
        self._count("watch")
        started = threading.Event()
        conn = http.client.HTTPConnection(self.host, self.port, timeout=600)

        def run() -> None:
            query = urllib.parse.urlencode({"watch": "true", "timeoutSeconds": "3600"})
            conn.request("GET", f"{path}?{query}", headers={"Authorization": f"Bearer {self.token}"})
            response = conn.getresponse()
            started.set()
            try:
                while not stop.is_set():
                    line = response.readline()
                    if not line:
                        return
                    if line.strip():
                        on_event(json.loads(line), time.monotonic())
            except (OSError, http.client.HTTPException, ValueError):
                return
            finally:
                conn.close()

        thread = threading.Thread(target=run, name="bench-watch", daemon=True)
        thread.start()
        started.wait(30)
        return Watch(conn, stop, thread)


class Watch:
    def __init__(self, conn: http.client.HTTPConnection, stop: threading.Event, thread: threading.Thread):
        self.conn, self.stop_flag, self.thread = conn, stop, thread

    def close(self) -> None:
        self.stop_flag.set()
        sock = self.conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self.thread.join(5)


def ar_path(namespace: str, name: str = "") -> str:
    base = f"/apis/{GROUP_VERSION}/namespaces/{namespace}/{AR}"
    return f"{base}/{name}" if name else base


def is_ready(body: dict[str, Any], generation: int | None = None) -> bool:
    status = body.get("status") or {}
    if generation is not None and status.get("observedGeneration") != generation:
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
