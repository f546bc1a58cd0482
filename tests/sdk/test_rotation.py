"""Long-running clients follow a rotation without a restart; provider-specific facts.

A long-running boto3 and a long-running JavaScript v3 client keep calling while a second
AssumeRole is published by an atomic swap of the Secret volume (what the kubelet does when
the operator refreshes); both switch to the new key without a restart and without one failed
call. The credentials carry an ``Expiration`` four minutes ahead, inside every SDK's refresh
window (botocore: 15 min advisory / 10 min mandatory; JS v3: 5 min), so each call re-reads
them instead of waiting for real time.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rolecall.model import Credentials
from tests.harness import sdk
from tests.harness.sdk import clients
from tests.harness.sdk.imds import NodeMetadata
from tests.harness.sdk.pod import (
    CLIENT_TIMEOUT,
    EXPECTED_ARN,
    ROOT,
    Background,
    Binding,
    assume,
    process_env,
    start_sidecar,
)
from tests.harness.sdk.volume import KubeletVolume
from tests.harness.sts import STSFaultProxy
from tests.harness.wait import wait_for
from tests.sdk.conftest import prepared

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def background(tmp_path: Path) -> Iterator[Callable[[list[str], dict[str, str]], Background]]:
    started: list[Background] = []

    def start(cmd: list[str], env: dict[str, str]) -> Background:
        proc = Background(cmd, env, tmp_path / f"process-{len(started)}.log")
        started.append(proc)
        return proc

    yield start
    for proc in reversed(started):
        proc.stop()


def fresh_binding(tmp_path: Path, mode: str, sts: STSFaultProxy) -> Binding:
    binding = Binding(KubeletVolume(tmp_path / f"aws-{mode}"), mode)
    binding.publish(assume(sts.url))
    return binding


def js_command(provider: str, sts: STSFaultProxy, count: int = 1) -> list[str]:
    return [
        sdk.node(),
        str(sdk.JS_CALLER_IDENTITY),
        "--provider",
        provider,
        "--endpoint-url",
        sts.url,
        "--count",
        str(count),
        "--interval",
        "0.5",
    ]


def one_record(cmd: list[str], env: dict[str, str]) -> dict[str, object]:
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=CLIENT_TIMEOUT)
    [record] = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    return dict(record, stderr=done.stderr[-2000:])


# --- JavaScript v3 providers other than the default chain -----------------------------------------


@pytest.mark.parametrize(("mode", "provider"), [("file", "ini"), ("sidecar", "http")])
def test_js_v3_named_providers(
    mode: str, provider: str, sts: STSFaultProxy, tmp_path: Path, node_metadata: NodeMetadata
) -> None:
    prepared(clients.JS_V3)
    binding = fresh_binding(tmp_path, mode, sts)
    sidecar = start_sidecar(binding, tmp_path / "sidecar.log") if mode == "sidecar" else None
    try:
        env = process_env(
            tmp_path, binding.container_env(), AWS_EC2_METADATA_SERVICE_ENDPOINT=node_metadata.url
        )
        record = one_record(js_command(provider, sts), env)
    finally:
        if sidecar is not None:
            sidecar.stop()
    assert record["ok"] and record["arn"] == EXPECTED_ARN, record


def test_js_from_container_metadata_sends_the_token_variable_only(
    sts: STSFaultProxy, tmp_path: Path, node_metadata: NodeMetadata
) -> None:
    """``fromContainerMetadata`` (@smithy/credential-provider-imds) ignores the token file.

    It works in rolecall pods only because the webhook also sets
    ``AWS_CONTAINER_AUTHORIZATION_TOKEN``; without it the sidecar refuses it (401).
    """
    prepared(clients.JS_V3)
    binding = fresh_binding(tmp_path, "sidecar", sts)
    sidecar = start_sidecar(binding, tmp_path / "sidecar.log")
    try:
        base = binding.container_env()
        env = process_env(tmp_path, base, AWS_EC2_METADATA_SERVICE_ENDPOINT=node_metadata.url)
        with_variable = one_record(js_command("container", sts), env)
        without = {k: v for k, v in env.items() if k != "AWS_CONTAINER_AUTHORIZATION_TOKEN"}
        without_variable = one_record(js_command("container", sts), without)
        wait_for(
            lambda: "GET /v1/credentials 401" in sidecar.stderr(),
            timeout=10,
            message="the sidecar did not log the request without Authorization (401)",
        )
    finally:
        sidecar.stop()
    assert with_variable["ok"] and with_variable["arn"] == EXPECTED_ARN, with_variable
    assert without_variable["ok"] is False, "fromContainerMetadata now reads the token file: update docs"


# --- rotation without restart ----------------------------------------------------------------------


def keys_seen(proc: Background) -> list[str | None]:
    return [r.get("accessKeyId") for r in proc.snapshot() if r.get("ok")]


def used_or_exited(proc: Background, key: str) -> Callable[[], bool]:
    return lambda: key in keys_seen(proc) or proc.process.poll() is not None


@pytest.mark.parametrize("mode", ["file", "sidecar"])
def test_long_running_clients_follow_a_rotation(
    mode: str,
    sts: STSFaultProxy,
    tmp_path: Path,
    background: Callable[[list[str], dict[str, str]], Background],
    node_metadata: NodeMetadata,
) -> None:
    prepared(clients.JS_V3)
    binding = Binding(KubeletVolume(tmp_path / f"aws-{mode}"), mode)
    first = assume(sts.url)
    binding.publish(first)
    with contextlib.ExitStack() as stack:
        if mode == "sidecar":
            stack.callback(start_sidecar(binding, tmp_path / "sidecar.log").stop)
        check_rotation(binding, first, sts, background, node_metadata.url, tmp_path)


def check_rotation(
    binding: Binding,
    first: Credentials,
    sts: STSFaultProxy,
    background: Callable[[list[str], dict[str, str]], Background],
    imds_url: str,
    tmp_path: Path,
) -> None:
    env = process_env(tmp_path, binding.container_env(), AWS_EC2_METADATA_SERVICE_ENDPOINT=imds_url)
    python = [sys.executable, str(sdk.PY_CALLER_IDENTITY), "--endpoint-url", sts.url]
    procs = [background([*python, "--count", "0"], env), background(js_command("default", sts, count=0), env)]
    for proc in procs:
        wait_for(used_or_exited(proc, first.access_key_id), timeout=30, interval=0.1, message="no first call")
        assert first.access_key_id in keys_seen(proc), proc.describe()

    second = assume(sts.url)
    assert second.access_key_id != first.access_key_id
    binding.publish(second)

    for proc in procs:
        wait_for(
            used_or_exited(proc, second.access_key_id),
            timeout=30,
            interval=0.1,
            message="a long-running client did not switch to the rotated credentials",
        )
        assert proc.process.poll() is None, "the client was not restarted; it must still run"
        records = proc.snapshot()
        assert all(r.get("ok") for r in records), f"a call failed around the swap: {proc.describe()}"
        assert {r["arn"] for r in records} == {EXPECTED_ARN}
        seen = keys_seen(proc)
        switch = seen.index(second.access_key_id)
        assert set(seen[:switch]) == {first.access_key_id}
        assert set(seen[switch:]) == {second.access_key_id}, "never back to the old key"


def test_kubelet_volume_swap_is_atomic(tmp_path: Path) -> None:
    volume = KubeletVolume(tmp_path / "vol")
    volume.write({"a": "1", "b": "1"})
    first = os.readlink(tmp_path / "vol" / "..data")
    volume.write({"a": "2", "c": "2"})
    root = tmp_path / "vol"
    assert os.readlink(root / "a") == "..data/a"
    assert (root / "a").read_text() == "2" and (root / "c").read_text() == "2"
    assert not (root / "b").exists() and not (root / "b").is_symlink()
    assert not (root / first).exists(), "the old timestamped directory is gone"
    assert oct((root / "a").stat().st_mode & 0o777) == oct(0o444)
