"""A local STS for tests: moto in server mode behind a fault-injecting HTTP proxy.

moto's STS answers AssumeRole and GetCallerIdentity but validates almost nothing and never
fails on its own (TESTING.md). The proxy in front of it records every request (action, role,
session name, tags, the caller's access key id and region from the SigV4 header, ...) and
answers chosen requests with STS's own error documents, slowly, or not at all, so tests reach
the operator's error paths through the real boto3 client, never by patching it.

Pieces:

- :class:`MotoSTS` runs ``python -m moto.server`` as a subprocess on a free loopback port.
- :class:`STSFaultProxy` is a threaded HTTP server on loopback forwarding to moto. Faults are
  :class:`Fault` rules; the request log is a list of :class:`STSRequest` records.
- The proxy also serves a JSON control API under ``/__proxy/`` on the same port, so a proxy
  in another process (demo, benchmarks, an operator subprocess) can be driven;
  :class:`ProxyControl` is a small client for it.
- With ``verify_signatures`` the proxy is also the SigV4-checking front moto lacks (moto
  accepts any signature): it recomputes each request's signature with botocore's
  ``SigV4Auth`` for the keys it knows — registered static keys (:meth:`STSFaultProxy.register_keys`,
  the control route ``POST /__proxy/keys``) and every credential STS issued through it — and
  answers ``InvalidClientTokenId`` / ``SignatureDoesNotMatch`` / ``MissingAuthenticationToken``
  as AWS does. The pytest fixtures turn it on for the whole suite.
- ``python -m tests.harness.sts --port 0`` starts moto and the proxy, prints one JSON line
  ``{"url": ..., "moto_url": ...}`` and serves until SIGTERM/SIGINT (``--verify-signatures
  --key AKID:SECRET`` turns the check on).

Note that botocore retries throttling, 500/502/503/504 and connection errors by itself
(retry mode ``standard``: 3 attempts). Tests that count calls or expect one error pass
``botocore.config.Config(retries={"total_max_attempts": 1})`` (see :func:`sts_client`);
``{"max_attempts": 1}`` means one *retry*, i.e. two attempts.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fnmatch
import hmac
import http.client
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import IO, Any

STS_XMLNS = "https://sts.amazonaws.com/doc/2011-06-15/"
CONTROL_PREFIX = "/__proxy/"

# STS error codes the proxy knows, with the HTTP status and fault type STS answers them with.
ERRORS: dict[str, tuple[int, str, str]] = {
    "Throttling": (400, "Sender", "Rate exceeded"),
    "AccessDenied": (
        403,
        "Sender",
        "User: arn:aws:iam::123456789012:user/rolecall is not authorized to perform: "
        "sts:AssumeRole on resource: {role_arn}",
    ),
    "RegionDisabledException": (
        403,
        "Sender",
        "STS is not activated in this region for account:123456789012. Your account "
        "administrator can activate STS in this region using the IAM Console.",
    ),
    "ExpiredToken": (400, "Sender", "The security token included in the request is expired"),
    "InvalidClientTokenId": (
        403,
        "Sender",
        "The security token included in the request is invalid.",
    ),
    "SignatureDoesNotMatch": (
        403,
        "Sender",
        "The request signature we calculated does not match the signature you provided. Check "
        "your AWS Secret Access Key and signing method. Consult the service documentation for details.",
    ),
    "MissingAuthenticationToken": (403, "Sender", "Request is missing Authentication Token"),
    "MalformedPolicyDocument": (400, "Sender", "The policy is not in the valid JSON format."),
    "PackedPolicyTooLarge": (
        400,
        "Sender",
        "Packed policy consumes 112% of allotted space, please use smaller policy.",
    ),
    "InternalFailure": (
        500,
        "Receiver",
        "The request processing has failed because of an unknown error, exception or failure.",
    ),
    "ServiceUnavailable": (503, "Receiver", "Service is unavailable. Please try again later."),
}

_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "content-length",
    }
)


# --------------------------------------------------------------------------------------------
# moto


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (another process may still take it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _http_answers(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            response.read()
    except urllib.error.HTTPError as exc:  # any HTTP answer means the server is up
        exc.close()
        return True
    except OSError:
        return False
    return True


class MotoSTS:
    """moto in server mode, as a subprocess on a loopback port.

    ``python -m moto.server -H 127.0.0.1 -p PORT`` with the current interpreter (the venv's).
    Its log goes to a temporary file (``log_path``), shown in the error when it fails to start.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        python: str | None = None,
        startup_timeout: float = 30.0,
        env: dict[str, str] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.python = python or sys.executable
        self.startup_timeout = startup_timeout
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path: str | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> MotoSTS:
        if self.process is not None:
            raise RuntimeError("moto is already running")
        attempts = 3 if self.port == 0 else 1
        for attempt in range(attempts):
            port = self.port or free_port(self.host)
            try:
                self._spawn(port)
                return self
            except RuntimeError:
                if attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")

    def _spawn(self, port: int) -> None:
        fd, self.log_path = tempfile.mkstemp(prefix="rolecall-moto-", suffix=".log")
        self._log = os.fdopen(fd, "wb")
        env = dict(os.environ if self.env is None else self.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        self.process = subprocess.Popen(
            [self.python, "-m", "moto.server", "-H", self.host, "-p", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        self.port = port
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            if _http_answers(f"{self.url}/moto-api/"):
                return
            time.sleep(0.05)
        log = self.read_log()
        self.stop()
        self.port = 0 if self.port == port else self.port
        raise RuntimeError(f"moto did not start on {self.host}:{port}:\n{log[-4000:]}")

    def read_log(self) -> str:
        if not self.log_path:
            return ""
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as fh:
                return fh.read()
        except OSError:
            return ""

    def reset(self) -> None:
        """Forget every role, user and session moto knows (``POST /moto-api/reset``)."""
        request = urllib.request.Request(f"{self.url}/moto-api/reset", data=b"", method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=10)
            else:
                process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        if self.log_path:
            with contextlib.suppress(OSError):
                os.unlink(self.log_path)
            self.log_path = None

    def __enter__(self) -> MotoSTS:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------------------------
# records and faults


@dataclasses.dataclass(frozen=True)
class STSRequest:
    """One request the proxy saw, parsed from its form body and its SigV4 header."""

    time: float
    method: str
    path: str
    action: str | None
    role_arn: str | None = None
    session_name: str | None = None
    duration_seconds: int | None = None
    tags: dict[str, str] = dataclasses.field(default_factory=dict)
    transitive_tag_keys: list[str] = dataclasses.field(default_factory=list)
    external_id: str | None = None
    source_identity: str | None = None
    policy: str | None = None
    policy_arns: list[str] = dataclasses.field(default_factory=list)
    serial_number: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    status: int | None = None  # None when the proxy answered nothing (drop, down)
    fault: str | None = None  # the error code, "slow", "drop" or "down"; None when forwarded
    params: dict[str, str] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> STSRequest:
        return cls(**data)


@dataclasses.dataclass
class Fault:
    """A rule: which requests it hits and what the proxy does to them.

    Matching: ``action`` (e.g. ``"AssumeRole"``) and ``role_arn`` (exact, or a glob such as
    ``"arn:aws:iam::*:role/team-a-*"``); ``None`` matches anything. Each fault counts the
    requests it matches since it was added: it applies from the ``nth`` of them on (1-based;
    ``None`` = from the first), ``times`` times (``None`` = forever). So
    ``Fault(error="Throttling", action="AssumeRole", role_arn=arn, nth=3, times=1)`` makes the
    third AssumeRole for that role answer Throttling, and only that one.

    Effect: ``slow`` seconds of delay first (then forward, unless error or drop is set too);
    ``error`` answers with STS's XML error document (a code from :data:`ERRORS`, or any code
    with an explicit ``status``); ``drop`` closes the connection without answering.
    """

    error: str | None = None
    slow: float | None = None
    drop: bool = False
    action: str | None = None
    role_arn: str | None = None
    nth: int | None = None
    times: int | None = 1
    status: int | None = None
    message: str | None = None
    id: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex[:12])
    seen: int = 0  # matching requests counted so far
    applied: int = 0  # how many times the fault was applied

    def __post_init__(self) -> None:
        if self.error is None and self.slow is None and not self.drop:
            raise ValueError("a Fault needs error=..., slow=... or drop=True")
        if self.error is not None and self.error not in ERRORS and self.status is None:
            raise ValueError(f"unknown STS error {self.error!r}: pass status=... or one of {sorted(ERRORS)}")
        if self.error is not None and self.drop:
            raise ValueError("a Fault either answers an error or drops the connection")
        if self.nth is not None and self.nth < 1:
            raise ValueError("nth is 1-based")
        if self.times is not None and self.times < 1:
            raise ValueError("times must be >= 1 or None (forever)")
        if self.slow is not None and self.slow < 0:
            raise ValueError("slow must be >= 0 seconds")

    @property
    def kind(self) -> str:
        if self.error is not None:
            return self.error
        return "drop" if self.drop else "slow"

    def matches(self, action: str | None, role_arn: str | None) -> bool:
        return _matches(self.action, self.role_arn, action, role_arn)

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.applied >= self.times

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Fault:
        names = {f.name for f in dataclasses.fields(cls)} - {"seen", "applied"}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown Fault fields: {sorted(unknown)}")
        return cls(**data)


def _matches(
    want_action: str | None, want_role: str | None, action: str | None, role_arn: str | None
) -> bool:
    """Does (action, role_arn) match the filter? ``None`` matches anything; roles may glob."""
    if want_action is not None and want_action != action:
        return False
    if want_role is not None:
        if role_arn is None:
            return False
        if want_role != role_arn and not fnmatch.fnmatchcase(role_arn, want_role):
            return False
    return True


def error_document(code: str, message: str, fault_type: str = "Sender") -> tuple[bytes, str]:
    """STS's XML error document for ``code``, and the request id in it."""
    request_id = str(uuid.uuid4())
    body = (
        f'<ErrorResponse xmlns="{STS_XMLNS}">'
        f"<Error><Type>{_xml_escape(fault_type)}</Type><Code>{_xml_escape(code)}</Code>"
        f"<Message>{_xml_escape(message)}</Message></Error>"
        f"<RequestId>{request_id}</RequestId></ErrorResponse>"
    )
    return body.encode(), request_id


def _xml_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def parse_sigv4_credential(authorization: str | None) -> tuple[str | None, str | None]:
    """``(access_key_id, region)`` from ``AWS4-HMAC-SHA256 Credential=AKID/date/region/...``."""
    if not authorization:
        return None, None
    for part in authorization.replace(",", " ").split():
        if part.startswith("Credential="):
            scope = part[len("Credential=") :].split("/")
            access_key = scope[0] or None
            region = scope[2] if len(scope) > 2 and scope[2] else None
            return access_key, region
    return None, None


def _members(params: dict[str, str], prefix: str, suffix: str = "") -> list[tuple[int, str]]:
    """``[(N, value)]`` for keys ``<prefix>.member.N<suffix>``, sorted by N."""
    found: list[tuple[int, str]] = []
    head = f"{prefix}.member."
    for key, value in params.items():
        if not key.startswith(head) or not key.endswith(suffix):
            continue
        index = key[len(head) : len(key) - len(suffix)] if suffix else key[len(head) :]
        if index.isdigit():
            found.append((int(index), value))
    return sorted(found)


def parse_request(
    method: str, path: str, headers: Any, body: bytes, *, now: float | None = None
) -> STSRequest:
    """A record for one STS query-protocol request (form body and/or query string)."""
    params: dict[str, str] = {}
    query = urllib.parse.urlsplit(path).query
    for key, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
        params[key] = value
    content_type = (headers.get("Content-Type") or "").lower()
    if body and (not content_type or "x-www-form-urlencoded" in content_type):
        text = body.decode("utf-8", errors="replace")
        for key, value in urllib.parse.parse_qsl(text, keep_blank_values=True):
            params[key] = value
    keys = dict(_members(params, "Tags", ".Key"))
    values = dict(_members(params, "Tags", ".Value"))
    tags = {keys[i]: values.get(i, "") for i in sorted(keys)}
    duration = params.get("DurationSeconds")
    access_key, region = parse_sigv4_credential(headers.get("Authorization"))
    return STSRequest(
        time=time.time() if now is None else now,
        method=method,
        path=urllib.parse.urlsplit(path).path,
        action=params.get("Action"),
        role_arn=params.get("RoleArn"),
        session_name=params.get("RoleSessionName"),
        duration_seconds=int(duration) if duration and duration.isdigit() else None,
        tags=tags,
        transitive_tag_keys=[v for _, v in _members(params, "TransitiveTagKeys")],
        external_id=params.get("ExternalId"),
        source_identity=params.get("SourceIdentity"),
        policy=params.get("Policy"),
        policy_arns=[v for _, v in _members(params, "PolicyArns", ".arn")],
        serial_number=params.get("SerialNumber"),
        region=region,
        access_key_id=access_key,
        params=params,
    )


# --------------------------------------------------------------------------------------------
# SigV4, checked the way AWS checks it

# actions AWS STS serves without a signature
UNSIGNED_ACTIONS = frozenset({"AssumeRoleWithWebIdentity", "AssumeRoleWithSAML"})
_ISSUED_RE = re.compile(
    r"<AccessKeyId>([^<]+)</AccessKeyId>\s*<SecretAccessKey>([^<]+)</SecretAccessKey>"
    r"\s*<SessionToken>([^<]+)</SessionToken>|"
    r"<SessionToken>([^<]+)</SessionToken>\s*<SecretAccessKey>([^<]+)</SecretAccessKey>"
    r"(?:\s*<Expiration>[^<]*</Expiration>)?\s*<AccessKeyId>([^<]+)</AccessKeyId>"
)
_AUTH_FIELD_RE = re.compile(r"(Credential|SignedHeaders|Signature)=([^,\s]+)")


@dataclasses.dataclass(frozen=True)
class KnownKey:
    """Key material the front accepts: a static key (no token) or issued session credentials."""

    secret_access_key: str = dataclasses.field(repr=False)
    session_token: str = dataclasses.field(default="", repr=False)


def issued_credentials(answer: bytes) -> list[tuple[str, KnownKey]]:
    """``(access key id, KnownKey)`` for every set of credentials in an STS answer."""
    text = answer.decode("utf-8", errors="replace")
    found = []
    for m in _ISSUED_RE.finditer(text):
        if m.group(1):
            found.append((m.group(1), KnownKey(m.group(2), m.group(3))))
        else:
            found.append((m.group(6), KnownKey(m.group(5), m.group(4))))
    return found


def check_signature(
    method: str, path: str, headers: Any, body: bytes, known: dict[str, KnownKey]
) -> tuple[str, str] | None:
    """None when the request is signed as AWS requires; else ``(error code, message)``.

    The signature is recomputed with botocore's :class:`SigV4Auth` over exactly the headers
    the client listed in ``SignedHeaders``, at the client's ``X-Amz-Date``, with the secret
    this front knows for the access key id: an unknown key id or a session token that does
    not belong to it gives ``InvalidClientTokenId``, any other secret
    ``SignatureDoesNotMatch`` — as AWS answers (clock skew is not checked).
    """
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    authorization = headers.get("Authorization") or ""
    fields = dict(_AUTH_FIELD_RE.findall(authorization))
    if not authorization.startswith("AWS4-HMAC-SHA256 ") or len(fields) != 3:
        return "MissingAuthenticationToken", ERRORS["MissingAuthenticationToken"][2]
    scope = fields["Credential"].split("/")
    if len(scope) != 5:
        return "IncompleteSignature", f"Credential should be scoped to a valid region: {fields['Credential']}"
    access_key, date, region, service, _ = scope
    key = known.get(access_key)
    token = headers.get("X-Amz-Security-Token") or ""
    if key is None or token != key.session_token:
        return "InvalidClientTokenId", ERRORS["InvalidClientTokenId"][2]
    timestamp = headers.get("X-Amz-Date") or ""
    if not timestamp.startswith(date):
        return "SignatureDoesNotMatch", ERRORS["SignatureDoesNotMatch"][2]
    signed = fields["SignedHeaders"].split(";")

    class _Verifier(SigV4Auth):
        def headers_to_sign(self, request: Any) -> Any:
            chosen = super().headers_to_sign(request)
            for name in list(chosen.keys()):
                if name not in signed:
                    del chosen[name]
            return chosen

    request = AWSRequest(
        method=method,
        url=f"http://{headers.get('Host', 'localhost')}{path}",
        data=body,
        headers={k: v for k, v in headers.items() if k.lower() in signed},
    )
    request.context["timestamp"] = timestamp
    auth = _Verifier(
        Credentials(access_key, key.secret_access_key, key.session_token or None), service, region
    )
    canonical = auth.canonical_request(request)
    expected = auth.signature(auth.string_to_sign(request, canonical), request)
    if not hmac.compare_digest(expected, fields["Signature"]):
        return "SignatureDoesNotMatch", ERRORS["SignatureDoesNotMatch"][2]
    return None


# --------------------------------------------------------------------------------------------
# the proxy


class _ProxyHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    allow_reuse_address = True
    proxy: STSFaultProxy


class _Drop(Exception):
    """Close the client connection without answering."""

    def __init__(self, reset: bool) -> None:
        super().__init__()
        self.reset = reset


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "rolecall-sts-proxy"
    sys_version = ""
    timeout = 300  # idle keep-alive connections are closed after this
    server: _ProxyHTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the request log is the record list

    def setup(self) -> None:
        super().setup()
        # headers and body go out in separate writes: without NODELAY, Nagle's algorithm and
        # the client's delayed ACK add ~40 ms to every answer
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.proxy._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.proxy._track(self.connection, add=False)
            self.server.proxy._close_upstream()  # this thread served its only client

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _handle(self) -> None:
        body = self._body()
        proxy = self.server.proxy
        if self.path.startswith(CONTROL_PREFIX):
            status, payload = proxy._control(self.command, self.path, body)
            self._send(status, json.dumps(payload).encode(), "application/json")
            return
        try:
            status, headers, answer = proxy._serve(self.command, self.path, self.headers, body)
        except _Drop as drop:
            self.close_connection = True
            _abort(self.connection, reset=drop.reset)
            return
        self._send(status, answer, headers=headers)

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        try:
            self.send_response(status)
            for name, value in headers or []:
                self.send_header(name, value)
            if content_type:
                self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):  # client gave up (e.g. read timeout)
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle


def _abort(sock: socket.socket, *, reset: bool) -> None:
    """Close ``sock`` now: with a TCP RST (``reset``) or a plain FIN."""
    with contextlib.suppress(OSError):
        if reset:
            # linger 0: the close sends RST. The fd really closes when the handler's
            # rfile/wfile close (they hold references), with no FIN before it.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        else:
            sock.shutdown(socket.SHUT_RDWR)


class STSFaultProxy:
    """An HTTP proxy on loopback in front of moto's STS that records and breaks requests.

    Runs its own :class:`ThreadingHTTPServer` in a background thread (one thread per client
    connection, keep-alive both ways). Thread-safe: tests add faults and read the log while
    clients call through it. ``down`` makes every STS request (not the control API) end
    with a TCP reset before any answer, as when STS is unreachable.
    """

    def __init__(
        self,
        upstream_url: str,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        max_records: int = 0,
        verify_signatures: bool = False,
    ) -> None:
        parsed = urllib.parse.urlsplit(upstream_url)
        if parsed.scheme != "http" or not parsed.hostname or not parsed.port:
            raise ValueError(f"upstream must be http://host:port, got {upstream_url!r}")
        self.upstream_url = upstream_url.rstrip("/")
        self._upstream = (parsed.hostname, parsed.port)
        self.host = host
        self._port = port
        self.max_records = max_records  # 0 = unbounded; otherwise keep the newest N
        self._lock = threading.Lock()
        self._records: list[STSRequest] = []
        self._faults: list[Fault] = []
        self._down = False
        # SigV4 checking (off: any signature passes, as with moto alone)
        self.verify_signatures = verify_signatures
        self._known: dict[str, KnownKey] = {}
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._local = threading.local()
        self._server: _ProxyHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> STSFaultProxy:
        if self._server is not None:
            raise RuntimeError("proxy already started")
        server = _ProxyHTTPServer((self.host, self._port), _ProxyHandler)
        server.proxy = self
        self._server = server
        self._port = server.server_address[1]
        self._stopping.clear()
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"sts-proxy-{self._port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        with self._lock:
            connections = list(self._connections)
        for sock in connections:  # wake handler threads blocked on idle keep-alive reads
            _abort(sock, reset=False)
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> STSFaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self._port}"

    # -- test API ----------------------------------------------------------------------------

    def add_fault(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.append(fault)
        return fault

    def remove_fault(self, fault_id: str) -> bool:
        with self._lock:
            before = len(self._faults)
            self._faults = [f for f in self._faults if f.id != fault_id]
            return len(self._faults) != before

    def faults(self) -> list[Fault]:
        with self._lock:
            return [dataclasses.replace(f) for f in self._faults]

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def set_down(self, down: bool = True) -> None:
        with self._lock:
            self._down = down

    @property
    def down(self) -> bool:
        return self._down

    def register_keys(self, access_key_id: str, secret_access_key: str, session_token: str = "") -> None:
        """Accept requests signed with these keys (the operator's, a tenant's static keys).

        Credentials that STS issues through the proxy are registered by themselves.
        """
        with self._lock:
            self._known[access_key_id] = KnownKey(secret_access_key, session_token)

    def requests(self, action: str | None = None, role_arn: str | None = None) -> list[STSRequest]:
        """A copy of the request log, oldest first, optionally filtered (role_arn: glob)."""
        with self._lock:
            records = list(self._records)
        return [r for r in records if _matches(action, role_arn, r.action, r.role_arn)]

    def clear(self) -> None:
        """Forget the request log."""
        with self._lock:
            self._records.clear()

    def reset(self) -> None:
        """No faults, not down, empty log."""
        with self._lock:
            self._faults.clear()
            self._records.clear()
            self._down = False

    # -- internals ---------------------------------------------------------------------------

    def _track(self, sock: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(sock)
            else:
                self._connections.discard(sock)

    def _close_upstream(self) -> None:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _record(self, record: STSRequest) -> None:
        with self._lock:
            self._records.append(record)
            if self.max_records and len(self._records) > self.max_records:
                del self._records[: len(self._records) - self.max_records]

    def _pick_fault(self, record: STSRequest) -> Fault | None:
        with self._lock:
            if self._down:
                return None
            chosen: Fault | None = None
            for fault in self._faults:
                if fault.exhausted or not fault.matches(record.action, record.role_arn):
                    continue
                fault.seen += 1
                if chosen is None and (fault.nth is None or fault.seen >= fault.nth):
                    fault.applied += 1
                    chosen = dataclasses.replace(fault)
            return chosen

    def _serve(
        self, method: str, path: str, headers: Any, body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        record = parse_request(method, path, headers, body)
        if self._down:
            self._record(dataclasses.replace(record, fault="down"))
            raise _Drop(reset=True)
        if self.verify_signatures and record.action not in UNSIGNED_ACTIONS:
            with self._lock:
                known = dict(self._known)
            refused = check_signature(method, path, headers, body, known)
            if refused is not None:
                code, text = refused
                answer, request_id = error_document(code, text, "Sender")
                self._record(dataclasses.replace(record, status=403, fault=code))
                return 403, [("Content-Type", "text/xml"), ("x-amzn-RequestId", request_id)], answer
        fault = self._pick_fault(record)
        if fault is not None and fault.slow:
            self._stopping.wait(fault.slow)
        if fault is not None and fault.drop:
            self._record(dataclasses.replace(record, fault=fault.kind))
            raise _Drop(reset=False)
        if fault is not None and fault.error is not None:
            status, fault_type, message = ERRORS.get(
                fault.error, (fault.status or 400, "Sender", fault.error)
            )
            status = fault.status or status
            text = fault.message or message.format(role_arn=record.role_arn or "*")
            answer, request_id = error_document(fault.error, text, fault_type)
            self._record(dataclasses.replace(record, status=status, fault=fault.kind))
            return (
                status,
                [("Content-Type", "text/xml"), ("x-amzn-RequestId", request_id)],
                answer,
            )
        try:
            status, out_headers, answer = self._forward(method, path, headers, body)
        except OSError as exc:
            answer, request_id = error_document(
                "ServiceUnavailable", f"proxy could not reach moto: {exc}", "Receiver"
            )
            self._record(dataclasses.replace(record, status=502, fault="upstream-error"))
            return 502, [("Content-Type", "text/xml")], answer
        if status == 200:
            issued = issued_credentials(answer)
            if issued:
                with self._lock:
                    self._known.update(issued)
        self._record(dataclasses.replace(record, status=status, fault=fault.kind if fault else None))
        return status, out_headers, answer

    def _forward(
        self, method: str, path: str, headers: Any, body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        out = {k: v for k, v in headers.items() if k.lower() not in _HOP_BY_HOP}
        out["Content-Length"] = str(len(body))
        for attempt in (1, 2):
            conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
            fresh = conn is None
            if conn is None:
                conn = http.client.HTTPConnection(*self._upstream, timeout=60)
                conn.connect()
                assert conn.sock is not None
                conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._local.conn = conn
            try:
                conn.request(method, path, body=body, headers=out)
                response = conn.getresponse()
                answer = response.read()
            except (http.client.HTTPException, OSError):
                conn.close()
                self._local.conn = None
                if fresh or attempt == 2:  # a reused keep-alive connection may be stale
                    raise
                continue
            if response.will_close:
                conn.close()
                self._local.conn = None
            kept = [(k, v) for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP]
            return response.status, kept, answer
        raise AssertionError("unreachable")

    def _control(self, method: str, path: str, body: bytes) -> tuple[int, Any]:
        split = urllib.parse.urlsplit(path)
        route = split.path[len(CONTROL_PREFIX) :].strip("/")
        query = dict(urllib.parse.parse_qsl(split.query))
        try:
            data = json.loads(body) if body.strip() else None
        except ValueError:
            return 400, {"error": "body is not JSON"}
        try:
            if route == "requests" and method == "GET":
                records = self.requests(query.get("action"), query.get("role_arn"))
                return 200, [r.to_json() for r in records]
            if route == "requests" and method == "DELETE":
                self.clear()
                return 200, {"cleared": True}
            if route == "faults" and method == "GET":
                return 200, [f.to_json() for f in self.faults()]
            if route == "faults" and method == "POST":
                items: list[Any] = data if isinstance(data, list) else [data]
                specs = [i for i in items if isinstance(i, dict)]
                if len(specs) != len(items):
                    return 400, {"error": "expected a fault object or a list of them"}
                added = [self.add_fault(Fault.from_json(i)) for i in specs]
                payload = [f.to_json() for f in added]
                return 201, payload if isinstance(data, list) else payload[0]
            if route == "faults" and method == "DELETE":
                self.clear_faults()
                return 200, {"cleared": True}
            if route.startswith("faults/") and method == "DELETE":
                removed = self.remove_fault(route[len("faults/") :])
                return (200 if removed else 404), {"removed": removed}
            if route == "down" and method == "GET":
                return 200, {"down": self.down}
            if route == "down" and method == "POST":
                if not isinstance(data, dict) or not isinstance(data.get("down"), bool):
                    return 400, {"error": 'expected {"down": true|false}'}
                self.set_down(data["down"])
                return 200, {"down": self.down}
            if route == "keys" and method == "POST":
                if not isinstance(data, dict) or not all(
                    isinstance(data.get(k), str) for k in ("access_key_id", "secret_access_key")
                ):
                    return 400, {"error": "expected {access_key_id, secret_access_key[, session_token]}"}
                self.register_keys(
                    data["access_key_id"], data["secret_access_key"], str(data.get("session_token") or "")
                )
                return 200, {"registered": data["access_key_id"]}
            if route == "verify" and method == "POST":
                if not isinstance(data, dict) or not isinstance(data.get("verify"), bool):
                    return 400, {"error": 'expected {"verify": true|false}'}
                self.verify_signatures = data["verify"]
                return 200, {"verify": self.verify_signatures}
            if route == "reset" and method == "POST":
                self.reset()
                return 200, {"reset": True}
            if route == "status" and method == "GET":
                with self._lock:
                    count = len(self._records)
                    faults = len(self._faults)
                return 200, {
                    "down": self.down,
                    "requests": count,
                    "faults": faults,
                    "upstream": self.upstream_url,
                }
        except (TypeError, ValueError) as exc:
            return 400, {"error": str(exc)}
        return 404, {"error": f"no control route {method} {split.path}"}


# --------------------------------------------------------------------------------------------
# clients


class ProxyControl:
    """Drive a proxy (possibly in another process) through its ``/__proxy/`` API."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _call(self, method: str, route: str, data: Any = None) -> Any:
        body = None if data is None else json.dumps(data).encode()
        request = urllib.request.Request(
            f"{self.url}{CONTROL_PREFIX}{route}",
            data=body,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            return json.loads(response.read())

    def add_fault(self, fault: Fault | dict[str, Any]) -> dict[str, Any]:
        data = fault.to_json() if isinstance(fault, Fault) else fault
        if isinstance(fault, Fault):
            data = {k: v for k, v in data.items() if k not in ("seen", "applied")}
        result: dict[str, Any] = self._call("POST", "faults", data)
        return result

    def faults(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "faults")
        return result

    def clear_faults(self) -> None:
        self._call("DELETE", "faults")

    def set_down(self, down: bool = True) -> None:
        self._call("POST", "down", {"down": down})

    def requests(self, action: str | None = None, role_arn: str | None = None) -> list[STSRequest]:
        query = urllib.parse.urlencode(
            {k: v for k, v in (("action", action), ("role_arn", role_arn)) if v is not None}
        )
        route = f"requests?{query}" if query else "requests"
        return [STSRequest.from_json(r) for r in self._call("GET", route)]

    def clear(self) -> None:
        self._call("DELETE", "requests")

    def register_keys(self, access_key_id: str, secret_access_key: str, session_token: str = "") -> None:
        self._call(
            "POST",
            "keys",
            {
                "access_key_id": access_key_id,
                "secret_access_key": secret_access_key,
                "session_token": session_token,
            },
        )

    def set_verify_signatures(self, verify: bool = True) -> None:
        self._call("POST", "verify", {"verify": verify})

    def reset(self) -> None:
        self._call("POST", "reset", {})


def sts_client(
    endpoint_url: str,
    *,
    attempts: int | None = 1,
    read_timeout: float | None = None,
    connect_timeout: float | None = None,
    region: str = "us-east-1",
    **credentials: str,
) -> Any:
    """A boto3 STS client for the harness; by default without botocore's own retries.

    ``attempts`` is botocore's ``total_max_attempts`` (1 = a single try, no retry; None =
    botocore's default, 3 in standard mode). Beware: ``Config(retries={"max_attempts": 1})``
    means one *retry* (two attempts). ``credentials`` (aws_access_key_id=..., ...) override
    the environment's.
    """
    import boto3
    from botocore.config import Config

    options: dict[str, Any] = {}
    if attempts is not None:
        options["retries"] = {"total_max_attempts": attempts, "mode": "standard"}
    if read_timeout is not None:
        options["read_timeout"] = read_timeout
    if connect_timeout is not None:
        options["connect_timeout"] = connect_timeout
    return boto3.client(
        "sts",
        endpoint_url=endpoint_url,
        region_name=region,
        config=Config(**options),
        **credentials,
    )


# --------------------------------------------------------------------------------------------
# CLI


@contextlib.contextmanager
def running(
    host: str = "127.0.0.1", port: int = 0, moto_port: int = 0, *, verify_signatures: bool = False
) -> Iterator[tuple[MotoSTS, STSFaultProxy]]:
    """moto plus the proxy in front of it, stopped on exit."""
    with (
        MotoSTS(host, moto_port) as moto,
        STSFaultProxy(moto.url, host, port, verify_signatures=verify_signatures) as proxy,
    ):
        yield moto, proxy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.harness.sts",
        description="moto STS behind a fault-injecting proxy, until SIGTERM/SIGINT",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="proxy port (0: any free port)")
    parser.add_argument("--moto-port", type=int, default=0, help="moto port (0: any)")
    parser.add_argument("--verify-signatures", action="store_true", help="check SigV4 signatures as AWS does")
    parser.add_argument(
        "--key",
        action="append",
        default=[],
        metavar="AKID:SECRET",
        help="static keys the signature check accepts (repeatable)",
    )
    args = parser.parse_args(argv)

    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        with running(args.host, args.port, args.moto_port, verify_signatures=args.verify_signatures) as (
            moto,
            proxy,
        ):
            for pair in args.key:
                akid, _, secret = pair.partition(":")
                proxy.register_keys(akid, secret)
            print(json.dumps({"url": proxy.url, "moto_url": moto.url}), flush=True)
            while not stop.wait(1.0):
                if moto.process is None or moto.process.poll() is not None:
                    print("moto exited", file=sys.stderr, flush=True)
                    return 1
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0


if __name__ == "__main__":
    sys.exit(main())
