"""A fault-injecting HTTP proxy in front of the Kubernetes API (the emulator or a real server).

The operator reaches the API server through it (a kubeconfig whose server is the proxy), so
tests break its Kubernetes traffic the way a real network or API server would, without
touching the kubernetes client, kopf or the emulator:

- every request is forwarded on a keep-alive connection of its own to the upstream server;
  streaming responses (chunked watch streams) are passed through chunk by chunk, as they
  arrive, and their events are counted;
- :class:`Rule` s match method and path (regexes; the path includes the query string) and,
  from their ``nth`` match on and ``times`` times, answer a status with a Kubernetes
  ``Status`` body, drop the connection, or cut a streaming response after N events or
  seconds; ``forward=True`` lets the request reach the server first (the write happens, the
  client never learns it: a lost response);
- ``set_down(True)`` makes the API unreachable: new connections are reset as soon as they
  are accepted (``mode="reset"``, counted) or refused by a closed listener
  (``mode="refuse"``), and open connections, watch streams included, are cut;
- the request log (:class:`KubeRequest`, arrival time, method, path, answer, events
  streamed) and the connection log give per-method/path counts and rates.

The proxy runs on its own event loop in a daemon thread; its test API is thread-safe.
Sockets it creates have TCP_NODELAY set: headers and body are separate writes, and with
Nagle's algorithm against the client's delayed ACK every answer would lose ~40 ms.

Also here: :func:`write_figures`, which tests use to leave the figures quoted in
docs/reliability.md in ``$ROLECALL_FIGURES_DIR`` (default: a temporary directory).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import json
import os
import pathlib
import re
import socket
import struct
import tempfile
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterable
from typing import Any

import yaml

_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "upgrade",
    }
)

_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    409: "Conflict",
    410: "Gone",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}

_PHRASES = {
    200: "OK",
    201: "Created",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    410: "Gone",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


# --------------------------------------------------------------------------------------------
# rules and records


@dataclasses.dataclass
class Rule:
    """Which requests to break, and how.

    Matching: ``method`` is a regex matched against the whole method (``"PUT|PATCH"``),
    ``path`` a regex searched in the path with its query string
    (``r"/secrets/s3$"``, ``r"watch=true"``); ``None`` matches anything. A rule counts the
    requests it matches since it was added and applies from the ``nth`` of them on (1-based;
    ``None``: from the first), ``times`` times (``None``: forever).

    Effects (one of them; ``delay`` may come first with any):

    - ``status``: answer that HTTP status with a ``Status`` body (``reason``, ``message``);
    - ``drop``: close the connection without an answer;
    - ``cut_after_events`` / ``cut_after_seconds``: forward, and end a streaming answer after
      that many events (lines) or seconds: by closing the connection mid-stream, or with
      ``graceful=True`` by ending the chunked body as a server-side watch timeout does;
    - ``forward=True`` with ``status`` or ``drop``: the request reaches the server first and
      only the answer is replaced (the write happened; the client does not know);
    - ``hold``: forward, and hold the server's answer that many seconds before passing it on
      (the write and its watch event happen before the client hears back).
    """

    method: str | None = None
    path: str | None = None
    status: int | None = None
    reason: str | None = None
    message: str | None = None
    drop: bool = False
    forward: bool = False
    cut_after_events: int | None = None
    cut_after_seconds: float | None = None
    graceful: bool = False
    delay: float | None = None
    hold: float | None = None
    nth: int | None = None
    times: int | None = 1
    id: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex[:12])
    seen: int = 0
    applied: int = 0

    def __post_init__(self) -> None:
        effects = sum(
            [
                self.status is not None,
                self.drop,
                self.cut_after_events is not None or self.cut_after_seconds is not None,
            ]
        )
        if effects > 1:
            raise ValueError("a Rule answers a status, drops, or cuts a stream: one of them")
        if effects == 0 and self.delay is None and self.hold is None:
            raise ValueError("a Rule needs status=..., drop=True, cut_after_...=..., delay=... or hold=...")
        if self.forward and self.status is None and not self.drop:
            raise ValueError("forward=True replaces the answer: give status=... or drop=True")
        if self.nth is not None and self.nth < 1:
            raise ValueError("nth is 1-based")
        if self.times is not None and self.times < 1:
            raise ValueError("times must be >= 1 or None (forever)")
        if self.cut_after_events is not None and self.cut_after_events < 0:
            raise ValueError("cut_after_events must be >= 0")
        self._method = re.compile(self.method) if self.method else None
        self._path = re.compile(self.path) if self.path else None

    def matches(self, method: str, target: str) -> bool:
        if self._method is not None and not self._method.fullmatch(method):
            return False
        return self._path is None or self._path.search(target) is not None

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.applied >= self.times

    @property
    def kind(self) -> str:
        if self.status is not None:
            return f"status-{self.status}"
        if self.drop:
            return "drop"
        if self.cut_after_events is not None or self.cut_after_seconds is not None:
            return "cut"
        return "hold" if self.hold is not None else "delay"


@dataclasses.dataclass
class KubeRequest:
    """One request the proxy saw. ``status`` is None when no answer was sent (drop, down)."""

    time: float  # wall clock at arrival
    method: str
    path: str
    query: str
    status: int | None = None
    fault: str | None = None  # the rule's kind, "down", or None when forwarded untouched
    streaming: bool = False  # a chunked answer (a watch)
    events: int = 0  # lines streamed to the client
    ended: float | None = None  # wall clock when the answer was over

    @property
    def watch(self) -> bool:
        return "watch=true" in self.query or "watch=1" in self.query


class _Cut(Exception):
    pass


def status_body(code: int, reason: str | None = None, message: str | None = None) -> bytes:
    """A Kubernetes ``Status`` document, as the API server answers errors."""
    reason = reason or _REASONS.get(code, "InternalError")
    text = message or {
        "Conflict": "Operation cannot be fulfilled: the object has been modified; please apply "
        "your changes to the latest version and try again",
        "InternalError": "Internal error occurred: injected by the test proxy",
        "ServiceUnavailable": "the server is currently unable to handle the request",
        "TooManyRequests": "the server has received too many requests and has asked us to try again later",
    }.get(reason, f"{reason} (injected by the test proxy)")
    doc = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": text,
        "reason": reason,
        "code": code,
    }
    return json.dumps(doc).encode()


def _nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (linger 0), as a crashed or unreachable server does."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _read_head(reader: asyncio.StreamReader) -> tuple[str, list[tuple[str, str]]] | None:
    """The start line and the headers; None on a clean EOF before anything arrived."""
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise
    lines = raw.decode("latin-1").split("\r\n")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if not line:
            continue
        name, _, value = line.partition(":")
        headers.append((name.strip(), value.strip()))
    return lines[0], headers


def _header(headers: Iterable[tuple[str, str]], name: str) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0].strip(), 16)
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass
            return bytes(body)
        body += (await reader.readexactly(size + 2))[:-2]


# --------------------------------------------------------------------------------------------
# the proxy


class KubeFaultProxy:
    """See the module docstring. ``KubeFaultProxy(emulator.url).start()``; ``stop()``."""

    def __init__(self, upstream_url: str, host: str = "127.0.0.1", port: int = 0) -> None:
        parsed = urllib.parse.urlsplit(upstream_url)
        if parsed.scheme != "http" or not parsed.hostname or not parsed.port:
            raise ValueError(f"upstream must be http://host:port, got {upstream_url!r}")
        self.upstream = (parsed.hostname, parsed.port)
        self.host = host
        self.port = port
        self._lock = threading.Lock()
        self._rules: list[Rule] = []
        self._records: list[KubeRequest] = []
        self._connections: list[tuple[float, bool]] = []  # (wall time, reset because down)
        self._down = False
        self._down_mode = "reset"
        self._clients: set[asyncio.StreamWriter] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> KubeFaultProxy:
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._listen())
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=run, name="kube-fault-proxy", daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure:
            raise failure[0]
        return self

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._client, self.host, self.port, limit=1 << 20, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        loop = self._loop
        if loop is None or self._thread is None:
            return

        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for writer in list(self._clients):
                writer.transport.abort()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(10)
        self._thread = None

    def __enter__(self) -> KubeFaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def write_kubeconfig(
        self, source: str | os.PathLike[str], target: str | os.PathLike[str]
    ) -> pathlib.Path:
        """A copy of kubeconfig ``source`` whose clusters all point at this proxy."""
        config = yaml.safe_load(pathlib.Path(source).read_text())
        for cluster in config.get("clusters") or []:
            cluster["cluster"]["server"] = self.url
        path = pathlib.Path(target)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    # -- test API ----------------------------------------------------------------------------

    def add_rule(self, rule: Rule) -> Rule:
        with self._lock:
            self._rules.append(rule)
        return rule

    def remove_rule(self, rule: Rule | str) -> None:
        rid = rule if isinstance(rule, str) else rule.id
        with self._lock:
            self._rules = [r for r in self._rules if r.id != rid]

    def clear_rules(self) -> None:
        with self._lock:
            self._rules.clear()

    def rules(self) -> list[Rule]:
        with self._lock:
            return [dataclasses.replace(r, seen=r.seen, applied=r.applied) for r in self._rules]

    def applied(self, rule: Rule) -> int:
        with self._lock:
            return next((r.applied for r in self._rules if r.id == rule.id), rule.applied)

    @property
    def down(self) -> bool:
        return self._down

    def set_down(self, down: bool = True, mode: str = "reset") -> None:
        """Make the API unreachable (or reachable again).

        ``mode="reset"``: connections are accepted and reset at once (each attempt is in
        :meth:`connections`); ``mode="refuse"``: the listener is closed (connection refused;
        attempts cannot be counted). Either way open connections and streams are cut.
        """
        if mode not in ("reset", "refuse"):
            raise ValueError("mode is reset or refuse")
        loop = self._loop
        assert loop is not None, "the proxy is not running"

        async def apply() -> None:
            with self._lock:
                was, self._down, self._down_mode = self._down, down, mode
            if down:
                for writer in list(self._clients):
                    _reset(writer)
                if mode == "refuse" and self._server is not None:
                    self._server.close()
                    await self._server.wait_closed()
            elif was and self._server is not None and not self._server.is_serving():
                await self._listen()

        asyncio.run_coroutine_threadsafe(apply(), loop).result(10)

    def cut_streams(self) -> int:
        """Cut every open connection now (watch streams and idle keep-alives); how many."""
        loop = self._loop
        assert loop is not None

        async def cut() -> int:
            writers = list(self._clients)
            for writer in writers:
                _reset(writer)
            return len(writers)

        return asyncio.run_coroutine_threadsafe(cut(), loop).result(10)

    def requests(
        self,
        method: str | None = None,
        path: str | None = None,
        *,
        since: float | None = None,
        until: float | None = None,
        watch: bool | None = None,
    ) -> list[KubeRequest]:
        """A copy of the log, oldest first; ``method``/``path`` are regexes as in :class:`Rule`."""
        with self._lock:
            records = [dataclasses.replace(r) for r in self._records]
        out = []
        for r in records:
            if method is not None and not re.fullmatch(method, r.method):
                continue
            if path is not None and not re.search(path, f"{r.path}?{r.query}" if r.query else r.path):
                continue
            if since is not None and r.time < since:
                continue
            if until is not None and r.time >= until:
                continue
            if watch is not None and r.watch != watch:
                continue
            out.append(r)
        return out

    def counts(self, *, since: float | None = None, until: float | None = None) -> collections.Counter[str]:
        """Requests per ``"METHOD /path"`` (watches as ``"WATCH /path"``)."""
        return collections.Counter(
            f"{'WATCH' if r.watch else r.method} {r.path}" for r in self.requests(since=since, until=until)
        )

    def connections(
        self, *, since: float | None = None, until: float | None = None
    ) -> list[tuple[float, bool]]:
        """Connection attempts ``(wall time, reset because down)``."""
        with self._lock:
            items = list(self._connections)
        return [c for c in items if (since is None or c[0] >= since) and (until is None or c[0] < until)]

    def clear(self) -> None:
        with self._lock:
            self._records.clear()
            self._connections.clear()

    def reset(self) -> None:
        """No rules, up, empty logs."""
        if self._down:
            self.set_down(False)
        with self._lock:
            self._rules.clear()
            self._records.clear()
            self._connections.clear()

    # -- internals ---------------------------------------------------------------------------

    def _pick(self, method: str, target: str) -> Rule | None:
        with self._lock:
            chosen: Rule | None = None
            for rule in self._rules:
                if rule.exhausted or not rule.matches(method, target):
                    continue
                rule.seen += 1
                if chosen is None and (rule.nth is None or rule.seen >= rule.nth):
                    rule.applied += 1
                    chosen = dataclasses.replace(rule, seen=rule.seen, applied=rule.applied)
            return chosen

    def _log(self, record: KubeRequest) -> None:
        with self._lock:
            self._records.append(record)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self._lock:
            down = self._down
            self._connections.append((time.time(), down))
        if down:
            _reset(writer)
            return
        _nodelay(writer)
        self._clients.add(writer)
        upstream: list[Any] = [None, None]  # reader, writer
        try:
            while not self._down:
                head = await _read_head(reader)
                if head is None:
                    break
                if not await self._one(head, reader, writer, upstream):
                    break
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, _Cut):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            self._clients.discard(writer)
            if upstream[1] is not None:
                upstream[1].transport.abort()
            if not writer.transport.is_closing():
                writer.close()

    async def _upstream(self, upstream: list[Any]) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if upstream[1] is None or upstream[1].transport.is_closing():
            r, w = await asyncio.open_connection(*self.upstream, limit=1 << 20)
            _nodelay(w)
            upstream[0], upstream[1] = r, w
        return upstream[0], upstream[1]

    def _drop_upstream(self, upstream: list[Any]) -> None:
        if upstream[1] is not None:
            upstream[1].transport.abort()
        upstream[0] = upstream[1] = None

    async def _one(
        self,
        head: tuple[str, list[tuple[str, str]]],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        upstream: list[Any],
    ) -> bool:
        """Serve one request; False when the client connection must end."""
        start, headers = head
        method, target, _version = start.split(" ", 2)
        if (_header(headers, "transfer-encoding") or "").lower() == "chunked":
            body = await _read_chunked(reader)
        else:
            length = int(_header(headers, "content-length") or 0)
            body = await reader.readexactly(length) if length else b""
        split = urllib.parse.urlsplit(target)
        record = KubeRequest(time.time(), method, split.path, split.query)
        self._log(record)
        if self._down:
            record.fault = "down"
            _reset(writer)
            return False
        rule = self._pick(method, target)
        if rule is not None and rule.delay:
            await asyncio.sleep(rule.delay)
        client_close = (_header(headers, "connection") or "").lower() == "close"

        if rule is not None and (rule.status is not None or rule.drop) and not rule.forward:
            return await self._fake(rule, record, writer, client_close)

        out = [
            (k, v) for k, v in headers if k.lower() not in _HOP_BY_HOP and k.lower() != "transfer-encoding"
        ]
        out = [(k, v) for k, v in out if k.lower() not in ("content-length", "host")]
        out += [("Host", f"{self.upstream[0]}:{self.upstream[1]}"), ("Content-Length", str(len(body)))]
        request = f"{method} {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in out) + "\r\n"
        for attempt in (1, 2):
            fresh = upstream[1] is None
            up_r, up_w = await self._upstream(upstream)
            try:
                up_w.write(request.encode("latin-1") + body)
                await up_w.drain()
                answer = await _read_head(up_r)
                if answer is None:
                    raise ConnectionResetError("upstream closed the connection")
                break
            except (OSError, asyncio.IncompleteReadError):
                self._drop_upstream(upstream)
                if fresh or attempt == 2:  # a reused keep-alive connection may have gone stale
                    record.status, record.ended = 502, time.time()
                    await self._send(
                        writer, 502, status_body(503, "ServiceUnavailable", "upstream unreachable")
                    )
                    return False
        status_line, resp_headers = answer
        status = int(status_line.split(" ", 2)[1])
        if rule is not None and rule.hold:
            await asyncio.sleep(rule.hold)
        chunked = (_header(resp_headers, "transfer-encoding") or "").lower() == "chunked"
        length_text = _header(resp_headers, "content-length")
        up_close = (_header(resp_headers, "connection") or "").lower() == "close"
        no_body = method == "HEAD" or status in (204, 304) or 100 <= status < 200

        if rule is not None and rule.forward:  # the server acted; the client gets something else
            if no_body:
                pass
            elif chunked:
                await _read_chunked(up_r)
            elif length_text is not None:
                await up_r.readexactly(int(length_text))
            else:
                self._drop_upstream(upstream)
            return await self._fake(rule, record, writer, client_close)

        record.status = status
        if rule is not None:
            record.fault = rule.kind
        kept = [(k, v) for k, v in resp_headers if k.lower() not in _HOP_BY_HOP]
        if up_close or client_close or (not chunked and length_text is None and not no_body):
            kept.append(("Connection", "close"))
            keep = False
        else:
            keep = True
        writer.write(
            (status_line + "\r\n" + "".join(f"{k}: {v}\r\n" for k, v in kept) + "\r\n").encode("latin-1")
        )
        if no_body:
            await writer.drain()
        elif chunked:
            record.streaming = True
            keep = await self._stream(rule, record, up_r, reader, writer, upstream) and keep
        elif length_text is not None:
            remaining = int(length_text)
            while remaining:
                data = await up_r.read(min(remaining, 1 << 16))
                if not data:
                    raise ConnectionResetError("upstream ended the body early")
                writer.write(data)
                remaining -= len(data)
            await writer.drain()
        else:
            while data := await up_r.read(1 << 16):
                writer.write(data)
                await writer.drain()
            self._drop_upstream(upstream)
        record.ended = time.time()
        if up_close:
            self._drop_upstream(upstream)
        return keep

    async def _stream(
        self,
        rule: Rule | None,
        record: KubeRequest,
        up_r: asyncio.StreamReader,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        upstream: list[Any],
    ) -> bool:
        """Pass a chunked body through as it arrives; False when it was cut (connection over)."""
        max_events = rule.cut_after_events if rule is not None else None
        deadline = (
            asyncio.get_running_loop().time() + rule.cut_after_seconds
            if rule is not None and rule.cut_after_seconds is not None
            else None
        )

        async def cut() -> bool:
            record.fault = "cut"
            record.ended = time.time()
            self._drop_upstream(upstream)
            if rule is not None and rule.graceful:
                writer.write(b"0\r\n\r\n")
                await writer.drain()
                return True
            _reset(writer)
            raise _Cut()

        if max_events == 0:
            return await cut()
        # a client that goes away (kopf closing a watch) must end the upstream stream too
        client_gone = asyncio.ensure_future(reader.read(1))
        try:
            return await self._pump(
                rule, record, up_r, writer, upstream, client_gone, max_events, deadline, cut
            )
        finally:
            client_gone.cancel()

    async def _pump(
        self,
        rule: Rule | None,
        record: KubeRequest,
        up_r: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        upstream: list[Any],
        client_gone: asyncio.Future[bytes],
        max_events: int | None,
        deadline: float | None,
        cut: Any,
    ) -> bool:
        loop = asyncio.get_running_loop()
        while True:
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                return bool(await cut())
            next_line = asyncio.ensure_future(up_r.readuntil(b"\r\n"))
            done, _ = await asyncio.wait(
                {next_line, client_gone}, timeout=left, return_when=asyncio.FIRST_COMPLETED
            )
            if next_line not in done:
                next_line.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await next_line
                if client_gone in done:
                    record.ended = time.time()
                    self._drop_upstream(upstream)
                    raise _Cut()
                return bool(await cut())
            line = next_line.result()
            size = int(line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                trailer = b""
                while (part := await up_r.readuntil(b"\r\n")) != b"\r\n":
                    trailer += part
                writer.write(b"0\r\n" + trailer + b"\r\n")
                await writer.drain()
                return True
            data = (await up_r.readexactly(size + 2))[:-2]
            if max_events is not None and record.events + data.count(b"\n") >= max_events:
                # pass exactly up to the Nth event, then cut
                need = max_events - record.events
                end = 0
                for _ in range(need):
                    end = data.index(b"\n", end) + 1
                if end:
                    writer.write(f"{end:x}\r\n".encode() + data[:end] + b"\r\n")
                    await writer.drain()
                record.events = max_events
                return bool(await cut())
            record.events += data.count(b"\n")
            writer.write(line + data + b"\r\n")
            await writer.drain()

    async def _fake(self, rule: Rule, record: KubeRequest, writer: asyncio.StreamWriter, close: bool) -> bool:
        record.fault = rule.kind
        record.ended = time.time()
        if rule.drop:
            _reset(writer)
            return False
        assert rule.status is not None
        record.status = rule.status
        await self._send(writer, rule.status, status_body(rule.status, rule.reason, rule.message), close)
        return not close

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, status: int, body: bytes, close: bool = False) -> None:
        head = (
            f"HTTP/1.1 {status} {_PHRASES.get(status, 'Error')}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n" + ("Connection: close\r\n" if close else "") + "\r\n"
        )
        writer.write(head.encode("latin-1") + body)
        await writer.drain()


# --------------------------------------------------------------------------------------------
# figures for docs/reliability.md


def figures_dir() -> pathlib.Path:
    """Where tests leave their figures: ``$ROLECALL_FIGURES_DIR`` or a temporary directory."""
    chosen = os.environ.get("ROLECALL_FIGURES_DIR")
    path = pathlib.Path(chosen) if chosen else pathlib.Path(tempfile.gettempdir()) / "rolecall-figures"
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_figures(name: str, figures: dict[str, Any]) -> pathlib.Path:
    """Write one test's figures as JSON (and print them: ``pytest -s`` shows them)."""
    target = figures_dir() / f"{name}.json"
    target.write_text(json.dumps(figures, indent=2, sort_keys=True, default=str) + "\n")
    print(f"\nFIGURES {name}: {json.dumps(figures, sort_keys=True, default=str)}")
    return target


def per_window(times: Iterable[float], window: float) -> int:
    """The largest number of ``times`` inside any half-open window of that length."""
    ordered = sorted(times)
    best, lo = 0, 0
    for hi, t in enumerate(ordered):
        while ordered[lo] <= t - window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


# --------------------------------------------------------------------------------------------
# stepping an in-process operator through simulated time (shared by the reliability tests)


def scheduler_idle(op: Any, clock: Any) -> bool:
    """Nothing is running and nothing is due at the FakeClock's present."""
    scheduler = op.app.scheduler
    now = clock.now()
    return bool(op.call(lambda: scheduler.idle_at(now)))


def settle(op: Any, clock: Any, timeout: float = 20.0) -> None:
    """Wait (real time) until the operator did everything due at the clock's present."""
    deadline = time.monotonic() + timeout
    while not scheduler_idle(op, clock):
        if time.monotonic() > deadline:
            raise AssertionError(f"the operator did not settle within {timeout}s")
        time.sleep(0.005)


class Timeline:
    """Samples of a counter against simulated time, for 'calls per simulated minute'."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, int]] = []  # (simulated seconds since start, count)

    def add(self, sim_seconds: float, count: int) -> None:
        self.samples.append((sim_seconds, count))

    def event_times(self) -> list[float]:
        """The simulated time at which each counted event was first seen."""
        times: list[float] = []
        previous = self.samples[0][1] if self.samples else 0
        for at, count in self.samples[1:]:
            times.extend([at] * (count - previous))
            previous = count
        return times

    def steps_per_minute(self) -> list[int]:
        """Samples (clock steps) in each simulated minute after which the count had grown."""
        if not self.samples:
            return []
        minutes = [0] * (int(self.samples[-1][0] // 60) + 1)
        for (_, before), (at, after) in zip(self.samples, self.samples[1:], strict=False):
            if after > before:
                minutes[min(int(at // 60), len(minutes) - 1)] += 1
        return minutes

    def per_minute(self) -> list[int]:
        """Events in each simulated minute [0,60), [60,120), ..."""
        if not self.samples:
            return []
        end = self.samples[-1][0]
        minutes = [0] * (int(end // 60) + 1)
        for at in self.event_times():
            minutes[min(int(at // 60), len(minutes) - 1)] += 1
        return minutes


def step_through(
    op: Any,
    clock: Any,
    seconds: float,
    *,
    step: float,
    sample: Any = None,
    timeline: Timeline | None = None,
    offset: float = 0.0,
) -> float:
    """Move the FakeClock ``seconds`` forward in ``step`` s steps, settling after each.

    ``sample()`` (a count) is recorded in ``timeline`` at the simulated time ``offset + t``.
    Returns the new offset.
    """
    moved = 0.0
    while moved < seconds - 1e-9:
        delta = min(step, seconds - moved)
        clock.advance(delta)
        moved += delta
        settle(op, clock)
        if timeline is not None and sample is not None:
            timeline.add(offset + moved, sample())
    return offset + moved
