"""The node's instance metadata service, so that a silent fallback to it is visible.

On a cluster node an SDK that finds no usable credentials of its own asks the instance
metadata service (IMDS) and acts as the node's role. This server answers the IMDSv2
protocol on loopback with real credentials of another role (``node_credentials``: an
AssumeRole at the local STS), so a client that falls back to it calls GetCallerIdentity as
``assumed-role/<node role>/...`` instead of failing. SDKs find it through
``AWS_EC2_METADATA_SERVICE_ENDPOINT`` (botocore, the JavaScript SDKs v2 and v3, Go v2, Ruby).

- ``PUT /latest/api/token``: a session token (IMDSv2).
- ``GET /latest/meta-data/iam/security-credentials/``: the role name.
- ``GET /latest/meta-data/iam/security-credentials/<role>``: the credentials document.
- anything else: 404. Every request is recorded (``paths``).
"""

from __future__ import annotations

import json
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

CREDENTIALS_PATH = "/latest/meta-data/iam/security-credentials/"


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _send(
        self, status: int, body: str, content_type: str = "text/plain", *headers: tuple[str, str]
    ) -> None:
        data = body.encode()
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_PUT(self) -> None:
        self.server.record(self.command, self.path)
        if self.path == "/latest/api/token":
            ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds") or "21600"
            self._send(
                200, self.server.session_token, "text/plain", ("X-aws-ec2-metadata-token-ttl-seconds", ttl)
            )
        else:
            self._send(404, "")

    def do_GET(self) -> None:
        self.server.record(self.command, self.path)
        if self.path == CREDENTIALS_PATH:
            self._send(200, self.server.role_name)
        elif self.path == CREDENTIALS_PATH + self.server.role_name:
            self._send(200, json.dumps(self.server.document), "application/json")
        else:
            self._send(404, "")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, role_name: str, document: dict[str, str], port: int) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.role_name = role_name
        self.document = document
        self.session_token = secrets.token_urlsafe(32)
        self.paths: list[str] = []
        self._lock = threading.Lock()

    def record(self, method: str, path: str) -> None:
        with self._lock:
            self.paths.append(f"{method} {path}")


class NodeMetadata:
    """``with NodeMetadata(role_name, credentials) as imds: imds.url``.

    ``port`` 0 picks a free one; Ruby's SDK 3.168 ignores the port of
    ``AWS_EC2_METADATA_SERVICE_ENDPOINT`` and needs 80 (which needs root).
    """

    def __init__(self, role_name: str, credentials: dict[str, Any], port: int = 0) -> None:
        expiration = credentials["Expiration"]
        document = {
            "Code": "Success",
            "LastUpdated": expiration.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "Type": "AWS-HMAC",
            "AccessKeyId": credentials["AccessKeyId"],
            "SecretAccessKey": credentials["SecretAccessKey"],
            "Token": credentials["SessionToken"],
            "Expiration": expiration.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        self._server = _Server(role_name, document, port)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def credentials_served(self) -> int:
        """How many times the credentials document was handed out."""
        with self._server._lock:
            return sum(
                p.startswith("GET ") and p.endswith(self._server.role_name) for p in self._server.paths
            )

    def __enter__(self) -> NodeMetadata:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
