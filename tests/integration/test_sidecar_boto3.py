"""Real boto3 reads credentials from the sidecar and calls the local STS with them.

The credentials come from AssumeRole at the moto/proxy harness and are written into a
kubelet-style Secret volume; boto3 finds the sidecar through the standard
``AWS_CONTAINER_CREDENTIALS_FULL_URI`` and ``AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE``
variables (in a subprocess environment, or an explicit ``environ`` mapping for botocore's
``ContainerProvider``; nothing is patched).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import botocore.credentials
import botocore.exceptions
import botocore.session
import botocore.utils
import pytest

from rolecall.sidecar import build_server, format_expiration
from tests.harness.sts import STSFaultProxy, sts_client
from tests.unit.test_sidecar import KubeletDir

ACCOUNT = "123456789012"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/app-reader"
TOKEN = "s3cr3t-sidecar-token-with-32-bytes-of-entropy-AbCdEf"


def assumed_credentials(sts: STSFaultProxy, session: str) -> dict[str, Any]:
    answer = sts_client(sts.url).assume_role(RoleArn=ROLE, RoleSessionName=session)
    creds: dict[str, Any] = answer["Credentials"]
    return creds


def publish(mount: KubeletDir, creds: dict[str, Any], expiration: datetime) -> None:
    """Write the Secret the way the operator renders it (the keys the sidecar uses)."""
    mount.publish(
        {
            "credentials.json": json.dumps(
                {
                    "Version": 1,
                    "AccessKeyId": creds["AccessKeyId"],
                    "SecretAccessKey": creds["SecretAccessKey"],
                    "SessionToken": creds["SessionToken"],
                    "Expiration": format_expiration(expiration),
                }
            ),
            "token": TOKEN,
            "AWS_ACCESS_KEY_ID": creds["AccessKeyId"],
        }
    )


@pytest.fixture
def mount(tmp_path: Path) -> KubeletDir:
    return KubeletDir(tmp_path / "rolecall-aws")


@pytest.fixture
def sidecar_url(mount: KubeletDir) -> Iterator[str]:
    """The sidecar in this process, on a free loopback port."""
    server = build_server(mount.root, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1/credentials"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def sidecar_process(mount: KubeletDir) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``python -m rolecall.sidecar`` as its own process (for the env-var path and RSS)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "rolecall.sidecar", "--dir", str(mount.root), "--port", "0"],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    try:
        line = process.stderr.readline()
        found = re.search(r"http://127\.0\.0\.1:(\d+)/v1/credentials", line)
        assert found, line
        yield process, found.group(0)
    finally:
        process.terminate()
        process.wait(timeout=10)
        process.stderr.close()


def container_env(url: str, mount: KubeletDir) -> dict[str, str]:
    return {
        "AWS_CONTAINER_CREDENTIALS_FULL_URI": url,
        "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": str(mount.root / "token"),
    }


def sidecar_get(url: str, token: str | None = TOKEN) -> tuple[int, dict[str, Any]]:
    host_port = url.split("/")[2]
    host, port = host_port.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.request("GET", "/v1/credentials", headers={"Authorization": token} if token else {})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_boto3_in_a_pod_like_process_uses_the_sidecar(
    sts: STSFaultProxy,
    aws_env: dict[str, str],
    mount: KubeletDir,
    sidecar_process: tuple[subprocess.Popen[str], str],
) -> None:
    creds = assumed_credentials(sts, "team-a.app")
    publish(mount, creds, datetime.now(UTC) + timedelta(hours=1))
    process, url = sidecar_process
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        {
            "AWS_ENDPOINT_URL_STS": aws_env["AWS_ENDPOINT_URL_STS"],
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",  # boto3 does not read AWS_REGION
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": aws_env["AWS_CONFIG_FILE"],
            "AWS_SHARED_CREDENTIALS_FILE": aws_env["AWS_SHARED_CREDENTIALS_FILE"],
            **container_env(url, mount),
        }
    )
    script = (
        "import boto3; s = boto3.Session(); c = s.get_credentials(); "
        "print(c.method, boto3.client('sts').get_caller_identity()['Arn'])"
    )
    sts.clear()
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    method, arn = out.stdout.split()
    assert method == "container-role"
    assert arn == f"arn:aws:sts::{ACCOUNT}:assumed-role/app-reader/team-a.app"
    [call] = sts.requests(action="GetCallerIdentity")
    assert call.access_key_id == creds["AccessKeyId"]

    # the sidecar's footprint and speed, from outside
    latencies = []
    for _ in range(200):
        started = time.perf_counter()
        status, _ = sidecar_get(url)
        latencies.append(time.perf_counter() - started)
        assert status == 200
    rss_kib = int(re.findall(r"VmRSS:\s+(\d+)", Path(f"/proc/{process.pid}/status").read_text())[0])
    median_ms = statistics.median(latencies) * 1000
    p95_ms = statistics.quantiles(latencies, n=20)[-1] * 1000
    print(f"\nsidecar RSS {rss_kib / 1024:.1f} MiB; GET /v1/credentials median {median_ms:.2f} ms")
    print(f"p95 {p95_ms:.2f} ms over {len(latencies)} requests")
    assert rss_kib < 64 * 1024
    assert median_ms < 50


def test_rotation_reaches_a_long_lived_boto3_client(
    sts: STSFaultProxy, mount: KubeletDir, sidecar_url: str
) -> None:
    # Expiration 11 minutes ahead: inside botocore's 15-minute advisory window, outside the
    # 10-minute mandatory one, so the client asks the sidecar again before every call.
    first = assumed_credentials(sts, "first.session")
    publish(mount, first, datetime.now(UTC) + timedelta(minutes=11))

    provider = botocore.credentials.ContainerProvider(environ=container_env(sidecar_url, mount))
    bc_session = botocore.session.Session()
    bc_session.register_component("credential_provider", botocore.credentials.CredentialResolver([provider]))
    client = boto3.Session(botocore_session=bc_session).client(
        "sts", endpoint_url=sts.url, region_name="us-east-1"
    )
    arn = client.get_caller_identity()["Arn"]
    assert arn.endswith("/app-reader/first.session")
    assert sts.requests(action="GetCallerIdentity")[-1].access_key_id == first["AccessKeyId"]

    # the operator rotates: kubelet swaps ..data atomically
    second = assumed_credentials(sts, "second.session")
    assert second["AccessKeyId"] != first["AccessKeyId"]
    publish(mount, second, datetime.now(UTC) + timedelta(minutes=11))

    status, body = sidecar_get(sidecar_url)  # the very next request serves the new key
    assert (status, body["AccessKeyId"]) == (200, second["AccessKeyId"])

    deadline = time.monotonic() + 20
    calls = 0
    while True:  # the same client object, never recreated
        calls += 1
        arn = client.get_caller_identity()["Arn"]
        used = sts.requests(action="GetCallerIdentity")[-1].access_key_id
        if used == second["AccessKeyId"] or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert used == second["AccessKeyId"]
    assert arn.endswith("/app-reader/second.session")
    assert calls == 1  # in the advisory window botocore asks the sidecar before each call
    # a refresh happened, the client did not need a restart
    assert bc_session.get_credentials().get_frozen_credentials().access_key == used


def test_expired_credentials_fail_clearly_in_boto3(
    sts: STSFaultProxy, mount: KubeletDir, sidecar_url: str
) -> None:
    creds = assumed_credentials(sts, "stale.session")
    publish(mount, creds, datetime.now(UTC) - timedelta(seconds=5))
    status, body = sidecar_get(sidecar_url)
    assert (status, body["Code"]) == (503, "CredentialsExpired")

    fetcher = botocore.utils.ContainerMetadataFetcher(sleep=lambda seconds: None)
    provider = botocore.credentials.ContainerProvider(
        environ=container_env(sidecar_url, mount), fetcher=fetcher
    )
    with pytest.raises(botocore.exceptions.CredentialRetrievalError) as exc:
        provider.load()
    message = str(exc.value)
    assert "503" in message and "CredentialsExpired" in message
    assert creds["SecretAccessKey"] not in message


def test_wrong_token_file_is_refused(
    sts: STSFaultProxy, mount: KubeletDir, sidecar_url: str, tmp_path: Path
) -> None:
    publish(mount, assumed_credentials(sts, "x.session"), datetime.now(UTC) + timedelta(hours=1))
    wrong = tmp_path / "wrong-token"
    wrong.write_text("not-the-token")
    fetcher = botocore.utils.ContainerMetadataFetcher(sleep=lambda seconds: None)
    provider = botocore.credentials.ContainerProvider(
        environ={
            "AWS_CONTAINER_CREDENTIALS_FULL_URI": sidecar_url,
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": str(wrong),
        },
        fetcher=fetcher,
    )
    with pytest.raises(botocore.exceptions.CredentialRetrievalError, match="403"):
        provider.load()
