"""``rolecall sidecar``: the container-credentials endpoint that runs in every injected pod.

The operator keeps the pod's rolecall Secret up to date; the kubelet mounts it as a directory
and swaps its content atomically (a ``..data`` symlink to a timestamped directory). This
server answers the ECS container-credentials protocol from those files, which every AWS SDK
re-reads before expiry (``AWS_CONTAINER_CREDENTIALS_FULL_URI`` plus
``AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE``), with no shell or binary needed in the app image.

- ``GET /v1/credentials`` with ``Authorization: <content of the token file>`` answers
  ``{"AccessKeyId", "SecretAccessKey", "Token", "Expiration"}`` (+ ``AccountId``/``RoleArn``
  when the Secret carries them). 401 without the header, 403 with a wrong one.
- A token this process has read from the file before stays accepted (the first
  ``MAX_REMEMBERED_TOKENS``): an app container's ``AWS_CONTAINER_AUTHORIZATION_TOKEN`` was
  resolved from the Secret when it started and never changes, and SDKs before late 2023 send
  only that one (newer JavaScript SDKs prefer it to the file). The operator keeps the token for
  the AssumedRole's life; this covers a Secret re-created with a new one while the pod runs.
- ``GET /healthz`` (or ``/ready``): 200 while unexpired credentials and the token are present.
- Both files are re-read on every request, so a kubelet swap is served at once.
- Missing, unreadable or expired credentials answer 503 ``{"Code", "Message"}``, never 200:
  on a 200 with an expired ``Expiration``, botocore raises a bare ``RuntimeError``
  ("refreshed credentials are still expired"); a 503 makes it retry and then report
  "Received non 200 response 503 ... <our message>", and keeps its current credentials
  while they are still outside its mandatory refresh window.

Stdlib only (it runs in every pod: no boto3, kopf or kubernetes import; small RSS). Listens on
loopback only. Logs method, path and status; never a credential or the token.
"""

from __future__ import annotations

import argparse
import hmac
import ipaddress
import json
import logging
import signal
import socket
import socketserver
import sys
import threading
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path
from types import FrameType
from typing import Protocol

DEFAULT_DIR = "/var/run/secrets/rolecall.dev/aws"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9911
CREDENTIALS_FILE = "credentials.json"  # the Secret's keys (README: The Secret)
TOKEN_FILE = "token"
CREDENTIALS_PATH = "/v1/credentials"
HEALTH_PATHS = frozenset({"/healthz", "/ready"})
MAX_FILE_BYTES = 64 * 1024
MAX_REMEMBERED_TOKENS = 8

log = logging.getLogger("rolecall.sidecar")

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class Unavailable(Exception):
    """Credentials cannot be served; ``code`` and ``message`` go into the 503 answer."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Credentials:
    access_key_id: str
    secret_access_key: str
    session_token: str
    expiration: datetime
    account_id: str | None = None
    role_arn: str | None = None

    def to_container_format(self) -> dict[str, str]:
        """The ECS container-credentials answer (what botocore and the JS SDK parse)."""
        answer = {
            "AccessKeyId": self.access_key_id,
            "SecretAccessKey": self.secret_access_key,
            "Token": self.session_token,
            "Expiration": format_expiration(self.expiration),
        }
        if self.account_id:
            answer["AccountId"] = self.account_id
        if self.role_arn:
            answer["RoleArn"] = self.role_arn
        return answer

    def __repr__(self) -> str:  # never print secrets by accident
        return f"Credentials(access_key_id={self.access_key_id!r}, expiration={self.expiration})"


def format_expiration(moment: datetime) -> str:
    """RFC 3339 in UTC with a ``Z`` (the JS SDK accepts nothing else), whole seconds."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_expiration(text: str) -> datetime:
    """ISO 8601 / RFC 3339 (``Z`` or an offset; a time without zone is taken as UTC)."""
    moment = datetime.fromisoformat(text.strip())
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def parse_credentials(raw: bytes) -> Credentials:
    """``credentials.json`` (the ``credential_process`` format, Version 1)."""
    try:
        data = json.loads(raw)
    except ValueError:
        raise Unavailable("InvalidCredentials", f"{CREDENTIALS_FILE} is not valid JSON") from None
    if not isinstance(data, dict):
        raise Unavailable("InvalidCredentials", f"{CREDENTIALS_FILE} is not a JSON object")
    if data.get("Version", 1) != 1:
        raise Unavailable("InvalidCredentials", f"{CREDENTIALS_FILE}: unsupported Version")
    fields = {}
    for key in ("AccessKeyId", "SecretAccessKey", "SessionToken", "Expiration"):
        value = data.get(key)
        if not isinstance(value, str) or not value:
            raise Unavailable("InvalidCredentials", f"{CREDENTIALS_FILE}: {key} missing or empty")
        fields[key] = value
    try:
        expiration = parse_expiration(fields["Expiration"])
    except ValueError:
        raise Unavailable(
            "InvalidCredentials", f"{CREDENTIALS_FILE}: Expiration is not an RFC 3339 time"
        ) from None
    optional = {k: data.get(k) for k in ("AccountId", "RoleArn")}
    return Credentials(
        access_key_id=fields["AccessKeyId"],
        secret_access_key=fields["SecretAccessKey"],
        session_token=fields["SessionToken"],
        expiration=expiration,
        account_id=v if isinstance(v := optional["AccountId"], str) else None,
        role_arn=v if isinstance(v := optional["RoleArn"], str) else None,
    )


class Source(Protocol):
    def token(self) -> bytes | None: ...

    def tokens(self) -> tuple[bytes, ...]: ...

    def credentials(self) -> Credentials: ...

    def now(self) -> datetime: ...


class CredentialsDir:
    """The mounted Secret: every call re-reads the files (following kubelet's symlinks)."""

    def __init__(self, directory: str | Path, clock: Clock = utc_now) -> None:
        self.directory = Path(directory)
        self._clock = clock
        self._seen: list[bytes] = []
        self._seen_lock = threading.Lock()

    def now(self) -> datetime:
        return self._clock()

    def _read(self, name: str) -> bytes:
        path = self.directory / name
        try:
            with open(path, "rb") as fh:
                data = fh.read(MAX_FILE_BYTES + 1)
        except FileNotFoundError:
            raise Unavailable("CredentialsUnavailable", f"{path} does not exist (yet)") from None
        except OSError as exc:
            raise Unavailable("CredentialsUnavailable", f"cannot read {path}: {exc.strerror}") from None
        if len(data) > MAX_FILE_BYTES:
            raise Unavailable("InvalidCredentials", f"{path} is larger than {MAX_FILE_BYTES} B")
        return data

    def token(self) -> bytes | None:
        """The token file's bytes; None when it is missing or empty (then nobody is let in)."""
        try:
            token = self._read(TOKEN_FILE)
        except Unavailable:
            return None
        if token:
            with self._seen_lock:
                if token not in self._seen and len(self._seen) < MAX_REMEMBERED_TOKENS:
                    self._seen.append(token)
        return token or None

    def tokens(self) -> tuple[bytes, ...]:
        """The tokens a request may carry: the file's, then those read before; () without one."""
        current = self.token()
        if current is None:
            return ()
        with self._seen_lock:
            return (current, *(t for t in self._seen if t != current))

    def credentials(self) -> Credentials:
        """The current, unexpired credentials, or :class:`Unavailable`."""
        creds = parse_credentials(self._read(CREDENTIALS_FILE))
        if creds.expiration <= self.now():
            raise Unavailable(
                "CredentialsExpired",
                f"the mounted credentials expired at {format_expiration(creds.expiration)}; "
                "is the rolecall operator refreshing this AssumedRole?",
            )
        return creds


def check(source: Source) -> Credentials:
    """What readiness means: unexpired credentials and a token to hand them out with."""
    creds = source.credentials()
    if source.token() is None:
        raise Unavailable("TokenUnavailable", f"the {TOKEN_FILE} file is missing or empty")
    return creds


@dataclass(frozen=True)
class Response:
    status: int
    body: dict[str, str]
    headers: tuple[tuple[str, str], ...] = ()


def _error(status: int, code: str, message: str, *headers: tuple[str, str]) -> Response:
    return Response(status, {"Code": code, "Message": message}, headers)


def _authorized(header: str, token: bytes) -> bool:
    try:
        given = header.encode("latin-1")  # http.server decodes header bytes as latin-1
    except UnicodeEncodeError:
        return False
    return hmac.compare_digest(given, token)


def respond(source: Source, method: str, target: str, authorization: str | None) -> Response:
    """The whole protocol, without sockets: status and JSON body for one request."""
    path = urllib.parse.urlsplit(target).path
    if path == CREDENTIALS_PATH:
        if method != "GET":
            return _error(405, "MethodNotAllowed", "use GET", ("Allow", "GET"))
        if not authorization:
            return _error(401, "Unauthorized", "the Authorization header is missing")
        tokens = source.tokens()
        if not tokens:
            return _error(503, "TokenUnavailable", f"the {TOKEN_FILE} file is missing or empty")
        if not any([_authorized(authorization, token) for token in tokens]):  # compare with all
            return _error(403, "Forbidden", "the Authorization header does not match the token")
        try:
            creds = source.credentials()
        except Unavailable as exc:
            return _error(503, exc.code, exc.message)
        return Response(200, creds.to_container_format(), (("Cache-Control", "no-store"),))
    if path in HEALTH_PATHS:
        if method not in ("GET", "HEAD"):
            return _error(405, "MethodNotAllowed", "use GET", ("Allow", "GET, HEAD"))
        try:
            creds = check(source)
        except Unavailable as exc:
            return _error(503, exc.code, exc.message)
        return Response(200, {"Status": "ok", "Expiration": format_expiration(creds.expiration)})
    return _error(404, "NotFound", f"no such path; credentials are served at {CREDENTIALS_PATH}")


def _printable(text: str, limit: int = 200) -> str:
    return "".join(c if c.isprintable() else "?" for c in text[:limit])


MAX_LINE = 8192
MAX_HEADERS = 100


class _Handler(socketserver.StreamRequestHandler):
    """A minimal HTTP/1.0 server side: one request per connection.

    Not ``http.server``: importing it (email, html, mimetypes …) alone costs ~8 MiB of RSS in
    every pod; the sidecar needs a request line, two headers and a JSON answer.
    """

    server: SidecarServer
    timeout = 10  # a client that sends nothing is dropped after this

    def handle(self) -> None:
        try:
            status, method, path, body, headers, head = self._answer()
            level = logging.DEBUG if path in HEALTH_PATHS else logging.INFO
            log.log(level, "%s %s %s", _printable(method, 16), _printable(path), status)
            if status:
                self._write(status, body, headers, head=head)
        except (OSError, ValueError):
            return

    def _answer(self) -> tuple[int, str, str, dict[str, str], tuple[tuple[str, str], ...], bool]:
        """Read one request; (status, method, path, body, extra headers, is HEAD); 0: no request."""
        request_line = self.rfile.readline(MAX_LINE + 1)
        if not request_line:
            return 0, "-", "-", {}, (), False
        if len(request_line) > MAX_LINE:
            return 414, "-", "-", _malformed(414), (), False
        parts = request_line.decode("latin-1").rstrip("\r\n").split()
        if len(parts) != 3 or parts[2] not in ("HTTP/1.0", "HTTP/1.1"):
            return 400, "-", "-", _malformed(400), (), False
        method, target = parts[0], parts[1]
        path = urllib.parse.urlsplit(target).path or "-"
        headers: dict[str, str] = {}
        for _ in range(MAX_HEADERS + 1):
            line = self.rfile.readline(MAX_LINE + 1)
            if line in (b"\r\n", b"\n", b""):
                break
            if len(line) > MAX_LINE:
                return 431, method, path, _malformed(431), (), False
            name, sep, value = line.decode("latin-1").partition(":")
            if not sep:
                return 400, method, path, _malformed(400), (), False
            headers[name.strip().lower()] = value.strip()
        else:
            return 431, method, path, _malformed(431), (), False
        response = respond(self.server.source, method, target, headers.get("authorization"))
        return response.status, method, path, response.body, response.headers, method == "HEAD"

    def _write(
        self, status: int, body: dict[str, str], headers: tuple[tuple[str, str], ...], *, head: bool
    ) -> None:
        payload = json.dumps(body).encode()
        lines = [
            f"HTTP/1.0 {status} {HTTPStatus(status).phrase}",
            "Server: rolecall-sidecar",
            "Content-Type: application/json",
            f"Content-Length: {len(payload)}",
            "Connection: close",
            *(f"{name}: {value}" for name, value in headers),
        ]
        self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head else payload))


def _malformed(code: int) -> dict[str, str]:
    """Malformed requests: a JSON error that does not echo the request back."""
    phrase = HTTPStatus(code).phrase
    return {"Code": phrase.replace(" ", "").replace("-", ""), "Message": phrase}


class SidecarServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], source: Source) -> None:
        self.source = source
        super().__init__(address, _Handler)


class _SidecarServerV6(SidecarServer):
    address_family = socket.AF_INET6


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_server(
    directory: str | Path,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    clock: Clock = utc_now,
    allow_non_loopback: bool = False,
) -> SidecarServer:
    """A bound, not yet serving server (port 0: any free port, see ``server_address``)."""
    if not allow_non_loopback and not is_loopback(host):
        raise ValueError(
            f"refusing to listen on {host!r}: the credentials endpoint must only be reachable "
            "from inside the pod (use 127.0.0.1 or ::1)"
        )
    cls = _SidecarServerV6 if ":" in host else SidecarServer
    return cls((host, port), CredentialsDir(directory, clock))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="rolecall sidecar",
        description="Serve the mounted rolecall credentials in the container-credentials "
        "format on loopback (AWS_CONTAINER_CREDENTIALS_FULL_URI).",
    )
    parser.add_argument("--dir", default=DEFAULT_DIR, help="the mounted Secret (%(default)s)")
    parser.add_argument("--host", default=DEFAULT_HOST, help="loopback address (%(default)s)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="(%(default)s)")
    parser.add_argument(
        "--allow-non-loopback",
        action="store_true",
        help="allow a non-loopback --host (tests only: it exposes the credentials)",
    )
    parser.add_argument(
        "--once-check",
        action="store_true",
        help="exit 0 if unexpired credentials and the token are present, else 1 (a probe)",
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING"])
    args = parser.parse_args(argv)

    source = CredentialsDir(args.dir)
    if args.once_check:
        try:
            creds = check(source)
        except Unavailable as exc:
            print(f"rolecall sidecar: {exc.message}", file=sys.stderr)
            return 1
        print(f"credentials valid until {format_expiration(creds.expiration)}")
        return 0

    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        server = build_server(args.dir, args.host, args.port, allow_non_loopback=args.allow_non_loopback)
    except ValueError as exc:
        print(f"rolecall sidecar: {exc}; --allow-non-loopback overrides", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"rolecall sidecar: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    host, port = args.host, server.server_address[1]
    netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        # serve_forever() returns once shutdown() is called from another thread; raising
        # from the handler instead could land anywhere (a lock, a half-written answer)
        threading.Thread(target=server.shutdown, daemon=True).start()

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        log.info("serving %s on http://%s%s", args.dir, netloc, CREDENTIALS_PATH)
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        log.info("stopping")
        signal.signal(signal.SIGTERM, previous)
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
