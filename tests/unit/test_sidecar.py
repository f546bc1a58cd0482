"""The credentials sidecar: protocol logic without sockets, then the server on loopback."""

from __future__ import annotations

import http.client
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rolecall import sidecar
from rolecall.sidecar import (
    Credentials,
    CredentialsDir,
    Unavailable,
    build_server,
    format_expiration,
    parse_credentials,
    parse_expiration,
    respond,
)

NOW = datetime(2026, 11, 27, 22, 0, tzinfo=UTC)
TOKEN = "Zm9vYmFyLXJvbGVjYWxsLXRva2VuLTMyLWJ5dGVzLW9mLWVudHJvcHk"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYSECRETKEY"
SESSION_TOKEN = "FwoGZXIvYXdzEXAMPLESESSIONTOKEN"


def credentials_json(
    access_key_id: str = "ASIAFIRSTKEY0000001",
    expiration: datetime | str = NOW + timedelta(hours=1),
    **extra: Any,
) -> str:
    if isinstance(expiration, datetime):
        expiration = format_expiration(expiration)
    return json.dumps(
        {
            "Version": 1,
            "AccessKeyId": access_key_id,
            "SecretAccessKey": SECRET,
            "SessionToken": SESSION_TOKEN,
            "Expiration": expiration,
            **extra,
        }
    )


class KubeletDir:
    """A Secret volume as the kubelet writes it: ``key -> ..data/key``, ``..data -> ..<ts>``.

    ``publish`` swaps the whole content atomically, the way kubelet's AtomicWriter does: a new
    timestamped directory, a ``..data_tmp`` symlink to it renamed over ``..data``, then the
    old directory removed.
    """

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.generation = 0

    def publish(self, files: dict[str, str | bytes]) -> None:
        self.generation += 1
        stamp = f"..2026_11_27_22_00_00.{os.getpid()}{self.generation:06d}"
        target = self.root / stamp
        target.mkdir()
        for name, content in files.items():
            data = content.encode() if isinstance(content, str) else content
            (target / name).write_bytes(data)
        data_link = self.root / "..data"
        old = os.readlink(data_link) if data_link.is_symlink() else None
        tmp = self.root / "..data_tmp"
        tmp.symlink_to(stamp)
        os.replace(tmp, data_link)
        for name in files:
            link = self.root / name
            if not link.is_symlink():
                link.symlink_to(f"..data/{name}")
        if old is not None:
            shutil.rmtree(self.root / old)
            for link in self.root.iterdir():
                if link.is_symlink() and not link.exists():
                    link.unlink()

    def publish_credentials(
        self, access_key_id: str, expiration: datetime, token: str = TOKEN, **extra: Any
    ) -> None:
        self.publish(
            {
                "credentials.json": credentials_json(access_key_id, expiration, **extra),
                "token": token,
                "AWS_ACCESS_KEY_ID": access_key_id,
            }
        )


# --- parsing ---------------------------------------------------------------------------------


def test_parse_credentials() -> None:
    creds = parse_credentials(credentials_json().encode())
    assert creds.access_key_id == "ASIAFIRSTKEY0000001"
    assert creds.secret_access_key == SECRET
    assert creds.session_token == SESSION_TOKEN
    assert creds.expiration == NOW + timedelta(hours=1)
    assert creds.account_id is None and creds.role_arn is None
    assert SECRET not in repr(creds) and SESSION_TOKEN not in repr(creds)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"", id="empty file"),
        pytest.param(b"{not json", id="not JSON"),
        pytest.param(b"[]", id="not an object"),
        pytest.param(credentials_json(Version=2).encode(), id="unknown Version"),
        pytest.param(credentials_json(access_key_id="").encode(), id="empty AccessKeyId"),
        pytest.param(credentials_json(SessionToken=None).encode(), id="null SessionToken"),
        pytest.param(credentials_json(SecretAccessKey=7).encode(), id="number as secret"),
        pytest.param(credentials_json(expiration="tomorrow").encode(), id="bad Expiration"),
        pytest.param(
            json.dumps({"AccessKeyId": "A", "SecretAccessKey": "S", "SessionToken": "T"}).encode(),
            id="no Expiration",
        ),
    ],
)
def test_parse_credentials_refuses(raw: bytes) -> None:
    with pytest.raises(Unavailable) as exc:
        parse_credentials(raw)
    assert exc.value.code == "InvalidCredentials"
    assert SECRET not in exc.value.message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-27T23:00:00Z", datetime(2026, 11, 27, 23, 0, tzinfo=UTC)),
        ("2026-11-27T23:00:00.123456Z", datetime(2026, 11, 27, 23, 0, 0, 123456, tzinfo=UTC)),
        ("2026-11-28T00:00:00+01:00", datetime(2026, 11, 27, 23, 0, tzinfo=UTC)),
        ("2026-11-27T23:00:00", datetime(2026, 11, 27, 23, 0, tzinfo=UTC)),  # naive: UTC
    ],
)
def test_parse_expiration(text: str, expected: datetime) -> None:
    assert parse_expiration(text) == expected


def test_expiration_is_served_as_rfc3339_utc_z() -> None:
    moment = datetime(2026, 11, 28, 0, 0, 0, 999999, tzinfo=UTC) + timedelta(hours=0)
    assert format_expiration(moment) == "2026-11-28T00:00:00Z"
    plus_one = datetime.fromisoformat("2026-11-28T01:00:00+01:00")
    assert format_expiration(plus_one) == "2026-11-28T00:00:00Z"


def test_container_format() -> None:
    creds = parse_credentials(
        credentials_json(
            expiration="2026-11-28T00:00:00+01:00",
            AccountId="123456789012",
            RoleArn="arn:aws:iam::123456789012:role/r",
        ).encode()
    )
    assert creds.to_container_format() == {
        "AccessKeyId": "ASIAFIRSTKEY0000001",
        "SecretAccessKey": SECRET,
        "Token": SESSION_TOKEN,
        "Expiration": "2026-11-27T23:00:00Z",
        "AccountId": "123456789012",
        "RoleArn": "arn:aws:iam::123456789012:role/r",
    }
    plain = parse_credentials(credentials_json().encode()).to_container_format()
    assert set(plain) == {"AccessKeyId", "SecretAccessKey", "Token", "Expiration"}


# --- the protocol, without sockets ---------------------------------------------------------


@dataclass
class FakeSource:
    """In-memory stand-in for the mounted directory."""

    token_bytes: bytes | None = TOKEN.encode()
    creds: Credentials | None = field(default_factory=lambda: parse_credentials(credentials_json().encode()))
    failure: Unavailable = field(
        default_factory=lambda: Unavailable("CredentialsUnavailable", "no credentials.json")
    )
    clock: datetime = NOW

    def token(self) -> bytes | None:
        return self.token_bytes

    def tokens(self) -> tuple[bytes, ...]:
        return () if self.token_bytes is None else (self.token_bytes,)

    def credentials(self) -> Credentials:
        if self.creds is None:
            raise self.failure
        return self.creds

    def now(self) -> datetime:
        return self.clock


CASES = [
    # (id, source, method, path, authorization, status, body code or None)
    ("no Authorization header: 401", FakeSource(), "GET", "/v1/credentials", None, 401),
    ("empty Authorization header: 401", FakeSource(), "GET", "/v1/credentials", "", 401),
    ("wrong token: 403", FakeSource(), "GET", "/v1/credentials", "nope", 403),
    ("token prefix: 403", FakeSource(), "GET", "/v1/credentials", TOKEN[:-1], 403),
    ("token plus suffix: 403", FakeSource(), "GET", "/v1/credentials", TOKEN + "x", 403),
    ("non latin-1 header: 403", FakeSource(), "GET", "/v1/credentials", "tök€n", 403),
    ("right token: 200", FakeSource(), "GET", "/v1/credentials", TOKEN, 200),
    ("query string ignored", FakeSource(), "GET", "/v1/credentials?x=1", TOKEN, 200),
    (
        "token file missing: 503 whatever the header",
        FakeSource(token_bytes=None),
        "GET",
        "/v1/credentials",
        TOKEN,
        503,
    ),
    (
        "credentials unavailable: 503",
        FakeSource(creds=None),
        "GET",
        "/v1/credentials",
        TOKEN,
        503,
    ),
    (
        "unavailable but no token: still 401",
        FakeSource(creds=None),
        "GET",
        "/v1/credentials",
        None,
        401,
    ),
    ("POST: 405", FakeSource(), "POST", "/v1/credentials", TOKEN, 405),
    ("healthz with credentials: 200", FakeSource(), "GET", "/healthz", None, 200),
    ("ready with credentials: 200", FakeSource(), "GET", "/ready", None, 200),
    ("healthz HEAD: 200", FakeSource(), "HEAD", "/healthz", None, 200),
    ("healthz without credentials: 503", FakeSource(creds=None), "GET", "/healthz", None, 503),
    ("healthz without token: 503", FakeSource(token_bytes=None), "GET", "/healthz", None, 503),
    ("healthz DELETE: 405", FakeSource(), "DELETE", "/healthz", None, 405),
    ("other path: 404", FakeSource(), "GET", "/latest/meta-data/", TOKEN, 404),
    ("root: 404", FakeSource(), "GET", "/", None, 404),
    ("trailing slash is another path: 404", FakeSource(), "GET", "/v1/credentials/", TOKEN, 404),
]


@pytest.mark.parametrize(
    ("source", "method", "path", "authorization", "status"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_respond(source: FakeSource, method: str, path: str, authorization: str | None, status: int) -> None:
    response = respond(source, method, path, authorization)
    assert response.status == status
    if status == 200 and path.startswith("/v1/credentials"):
        assert response.body == {
            "AccessKeyId": "ASIAFIRSTKEY0000001",
            "SecretAccessKey": SECRET,
            "Token": SESSION_TOKEN,
            "Expiration": format_expiration(NOW + timedelta(hours=1)),
        }
        assert ("Cache-Control", "no-store") in response.headers
    else:  # errors and health answers never carry a credential
        assert SECRET not in json.dumps(response.body)
        assert "SecretAccessKey" not in response.body
    if status != 200:
        assert set(response.body) == {"Code", "Message"}  # what the JS SDK reads on 4xx


def test_unavailable_answer_says_why() -> None:
    failure = Unavailable("CredentialsExpired", "expired at 2026-11-27T21:00:00Z")
    response = respond(FakeSource(creds=None, failure=failure), "GET", "/v1/credentials", TOKEN)
    assert response == sidecar.Response(
        503, {"Code": "CredentialsExpired", "Message": "expired at 2026-11-27T21:00:00Z"}
    )


# --- the mounted directory ---------------------------------------------------------------------


@pytest.fixture
def mount(tmp_path: Path) -> KubeletDir:
    kubelet = KubeletDir(tmp_path / "aws")
    kubelet.publish_credentials("ASIAFIRSTKEY0000001", NOW + timedelta(hours=1))
    return kubelet


def test_reads_the_kubelet_layout(mount: KubeletDir) -> None:
    source = CredentialsDir(mount.root, clock=lambda: NOW)
    assert (mount.root / "credentials.json").is_symlink()
    assert source.token() == TOKEN.encode()
    assert source.credentials().access_key_id == "ASIAFIRSTKEY0000001"


def test_follows_an_atomic_swap_at_once(mount: KubeletDir) -> None:
    source = CredentialsDir(mount.root, clock=lambda: NOW)
    first_target = os.readlink(mount.root / "..data")
    mount.publish_credentials("ASIASECONDKEY000002", NOW + timedelta(hours=2))
    assert os.readlink(mount.root / "..data") != first_target
    assert not (mount.root / first_target).exists()
    assert source.credentials().access_key_id == "ASIASECONDKEY000002"


def test_expired_credentials_are_unavailable(mount: KubeletDir) -> None:
    later = NOW + timedelta(hours=1)
    source = CredentialsDir(mount.root, clock=lambda: later)  # expiration == now: expired
    with pytest.raises(Unavailable) as exc:
        source.credentials()
    assert exc.value.code == "CredentialsExpired"
    assert "2026-11-27T23:00:00Z" in exc.value.message
    just_before = CredentialsDir(mount.root, clock=lambda: later - timedelta(seconds=1))
    assert just_before.credentials()


def test_missing_directory(tmp_path: Path) -> None:
    source = CredentialsDir(tmp_path / "nothing-mounted")
    assert source.token() is None
    with pytest.raises(Unavailable) as exc:
        source.credentials()
    assert exc.value.code == "CredentialsUnavailable"


def test_a_token_read_before_stays_accepted_after_the_secret_changes_it(mount: KubeletDir) -> None:
    """An app's AWS_CONTAINER_AUTHORIZATION_TOKEN was fixed when it started; it must keep working."""
    first, second = "a" * 43, "b" * 43
    mount.publish_credentials("ASIAFIRSTKEY0000001", NOW + timedelta(hours=1), token=first)
    source = CredentialsDir(mount.root, clock=lambda: NOW)
    assert respond(source, "GET", "/v1/credentials", first).status == 200
    mount.publish_credentials("ASIAFIRSTKEY0000001", NOW + timedelta(hours=1), token=second)
    assert respond(source, "GET", "/v1/credentials", second).status == 200
    assert respond(source, "GET", "/v1/credentials", first).status == 200, "the env var's token"
    assert respond(source, "GET", "/v1/credentials", "c" * 43).status == 403
    fresh = CredentialsDir(mount.root, clock=lambda: NOW)
    assert respond(fresh, "GET", "/v1/credentials", first).status == 403, "only tokens it has read"
    mount.publish({"credentials.json": credentials_json()})
    assert respond(source, "GET", "/v1/credentials", first).status == 503, "no token file: nobody"


def test_remembered_tokens_are_bounded(mount: KubeletDir) -> None:
    source = CredentialsDir(mount.root, clock=lambda: NOW)
    for n in range(sidecar.MAX_REMEMBERED_TOKENS + 3):
        mount.publish_credentials("ASIAFIRSTKEY0000001", NOW + timedelta(hours=1), token=f"{n:043d}")
        assert source.tokens()[0] == f"{n:043d}".encode()
    assert len(source.tokens()) == sidecar.MAX_REMEMBERED_TOKENS + 1  # the first ones + the current


def test_empty_token_lets_nobody_in(tmp_path: Path) -> None:
    kubelet = KubeletDir(tmp_path / "aws")
    kubelet.publish({"credentials.json": credentials_json(), "token": ""})
    source = CredentialsDir(kubelet.root, clock=lambda: NOW)
    assert source.token() is None
    assert respond(source, "GET", "/v1/credentials", "x").status == 503
    assert respond(source, "GET", "/healthz", None).status == 503


def test_oversized_file_is_refused(tmp_path: Path) -> None:
    kubelet = KubeletDir(tmp_path / "aws")
    kubelet.publish({"credentials.json": b" " * (sidecar.MAX_FILE_BYTES + 1), "token": TOKEN})
    with pytest.raises(Unavailable, match="larger"):
        CredentialsDir(kubelet.root).credentials()


# --- the server on loopback --------------------------------------------------------------------


@pytest.fixture
def server(mount: KubeletDir) -> Iterator[tuple[str, int]]:
    srv = build_server(mount.root, "127.0.0.1", 0, clock=lambda: NOW)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        host, port = srv.server_address[:2]
        yield str(host), port
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)


def get(
    address: tuple[str, int], path: str, token: str | None = None, method: str = "GET"
) -> tuple[int, dict[str, str], dict[str, Any]]:
    conn = http.client.HTTPConnection(*address, timeout=5)
    try:
        headers = {} if token is None else {"Authorization": token}
        conn.request(method, path, headers=headers)
        response = conn.getresponse()
        raw = response.read()
        body = json.loads(raw) if raw else {}
        return response.status, dict(response.getheaders()), body
    finally:
        conn.close()


def test_server_answers(server: tuple[str, int], mount: KubeletDir, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="rolecall.sidecar")
    assert get(server, "/v1/credentials")[0] == 401
    assert get(server, "/v1/credentials", "wrong")[0] == 403
    status, headers, body = get(server, "/v1/credentials", TOKEN)
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert body["AccessKeyId"] == "ASIAFIRSTKEY0000001"
    assert body["Token"] == SESSION_TOKEN
    assert get(server, "/healthz")[0] == 200
    assert get(server, "/healthz", method="HEAD")[0] == 200
    assert get(server, "/nope")[0] == 404

    mount.publish_credentials("ASIASECONDKEY000002", NOW + timedelta(minutes=11))
    assert get(server, "/v1/credentials", TOKEN)[2]["AccessKeyId"] == "ASIASECONDKEY000002"

    mount.publish_credentials("ASIAEXPIREDKEY00003", NOW - timedelta(seconds=1))
    status, _, body = get(server, "/v1/credentials", TOKEN)
    assert (status, body["Code"]) == (503, "CredentialsExpired")
    assert get(server, "/healthz")[0] == 503

    # the access log: method, path and status, never a secret or the token
    assert "GET /v1/credentials 401" in caplog.text
    assert "GET /v1/credentials 200" in caplog.text
    assert "GET /healthz 503" in caplog.text
    for secret in (TOKEN, SECRET, SESSION_TOKEN, "wrong"):
        assert secret not in caplog.text


def test_malformed_requests_are_not_echoed(server: tuple[str, int], caplog: pytest.LogCaptureFixture) -> None:
    import socket

    caplog.set_level(logging.DEBUG, logger="rolecall.sidecar")
    for request, status in (
        (f"GET /v1/credentials HTTP/1.{TOKEN}\r\nAuthorization: {TOKEN}\r\n\r\n", b"400"),
        (f"GET /v1/credentials HTTP/1.0 {TOKEN}\r\n\r\n", b"400"),
        (f"GET /v1/credentials HTTP/1.0\r\nX: {'y' * 70000}\r\n\r\n", b"431"),
    ):
        with socket.create_connection(server, timeout=5) as sock:
            sock.sendall(request.encode())
            answer = b""
            while chunk := sock.recv(4096):
                answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.split(b"\r\n")[0].split(b" ")[1] == status, answer
        assert json.loads(body)["Code"]
        assert TOKEN.encode() not in answer
    assert TOKEN not in caplog.text


def test_concurrent_requests(server: tuple[str, int], mount: KubeletDir) -> None:
    statuses: list[int] = []
    lock = threading.Lock()

    def hammer() -> None:
        for _ in range(25):
            status = get(server, "/v1/credentials", TOKEN)[0]
            with lock:
                statuses.append(status)

    threads = [threading.Thread(target=hammer) for _ in range(16)]
    for t in threads:
        t.start()
    for _ in range(5):  # swaps while they run: every answer is still complete
        mount.publish_credentials(f"ASIAROTATED{mount.generation:08d}", NOW + timedelta(hours=1))
    for t in threads:
        t.join(timeout=30)
    assert statuses == [200] * 16 * 25


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "::", "pod.example"])
def test_refuses_non_loopback(tmp_path: Path, host: str) -> None:
    with pytest.raises(ValueError, match="refusing to listen"):
        build_server(tmp_path, host, 0)


def test_non_loopback_allowed_when_asked(tmp_path: Path) -> None:
    srv = build_server(tmp_path, "0.0.0.0", 0, allow_non_loopback=True)
    srv.server_close()


def test_ipv6_loopback(tmp_path: Path) -> None:
    try:
        srv = build_server(tmp_path, "::1", 0)
    except OSError:
        pytest.skip("no IPv6 loopback here")
    srv.server_close()


def test_main_refuses_non_loopback(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert sidecar.main(["--dir", str(tmp_path), "--host", "0.0.0.0", "--port", "0"]) == 2
    assert "--allow-non-loopback" in capsys.readouterr().err


def test_once_check(mount: KubeletDir, capsys: pytest.CaptureFixture[str]) -> None:
    # real clock here: NOW-based credentials in the mount are far in the past or future
    mount.publish_credentials("ASIAVALIDKEY0000001", datetime.now(UTC) + timedelta(minutes=5))
    assert sidecar.main(["--once-check", "--dir", str(mount.root)]) == 0
    mount.publish_credentials("ASIAEXPIREDKEY00001", datetime.now(UTC) - timedelta(seconds=1))
    assert sidecar.main(["--once-check", "--dir", str(mount.root)]) == 1
    assert "expired" in capsys.readouterr().err
    assert sidecar.main(["--once-check", "--dir", str(mount.root / "missing")]) == 1


def test_defaults() -> None:
    assert (sidecar.DEFAULT_DIR, sidecar.DEFAULT_HOST, sidecar.DEFAULT_PORT) == (
        "/var/run/secrets/rolecall.dev/aws",
        "127.0.0.1",
        9911,
    )


def test_module_stays_small() -> None:
    """The sidecar runs in every pod: importing it must not pull the operator's stack."""
    code = (
        "import sys, rolecall.sidecar; "
        "heavy = {'boto3', 'botocore', 'kopf', 'kubernetes', 'aiohttp', 'yaml', 'cryptography'}; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"


def test_runs_as_a_process_and_stops_on_sigterm(mount: KubeletDir) -> None:
    mount.publish_credentials("ASIAPROCESSKEY00001", datetime.now(UTC) + timedelta(hours=1))
    process = subprocess.Popen(
        [sys.executable, "-m", "rolecall.sidecar", "--dir", str(mount.root), "--port", "0"],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    try:
        line = process.stderr.readline()
        assert "serving" in line, line
        port = int(line.rsplit(":", 1)[1].split("/")[0])
        status, _, body = get(("127.0.0.1", port), "/v1/credentials", TOKEN)
        assert (status, body["AccessKeyId"]) == (200, "ASIAPROCESSKEY00001")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        log = line + process.stderr.read()
        assert "GET /v1/credentials 200" in log
        assert TOKEN not in log and SECRET not in log
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        process.stderr.close()
