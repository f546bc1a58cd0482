"""Real AWS clients read rolecall's Secret as an injected pod sees it, and follow rotations.

boto3, the AWS CLI v1 and the AWS SDK for JavaScript v3 call STS GetCallerIdentity against the
local STS (moto behind the recording proxy) with credentials from an AssumeRole, delivered
the way a pod gets them:

- the Secret's keys come from ``render.secret_data``, written into a directory laid out like
  a kubelet Secret volume (``..data`` symlink swap), mounted at the AssumedRole's mountPath;
- each client's environment is the app container's env from ``inject.plan_injection``, and
  in sidecar mode the sidecar runs with the planned container's command and must pass its
  planned startup probe.

Rotation: a long-running boto3 and a long-running JavaScript client keep calling while a
second AssumeRole is published by an atomic swap; both switch to the new key without a
restart and without one failed call. The credentials are rendered with an ``Expiration``
four minutes ahead, inside every SDK's refresh window (botocore: 15 min advisory / 10 min
mandatory; JS v3: 5 min), so each call re-reads them instead of waiting for real time.

The clients are installed on first use (``tests/harness/sdk``); an install that fails makes
the tests fail with the reason, never skip.
"""

from __future__ import annotations

import copy
import datetime
import json
import os
import secrets
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import jsonpatch
import pytest

from rolecall.index import BindingIndex
from rolecall.inject import SIDECAR_NAME, plan_injection
from rolecall.model import AssumedRoleSpec, Credentials, Subject
from rolecall.render import secret_data
from tests.harness import sdk
from tests.harness.sdk.volume import KubeletVolume
from tests.harness.sts import STSFaultProxy, free_port, sts_client
from tests.harness.wait import wait_for

# The first run installs the JS SDK (npm ci) and the AWS CLI (pip) inside a fixture; the
# tests themselves bound every wait far below this.
pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[2]
ACCOUNT = "123456789012"
ROLE_NAME = "team-a-s3"
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/{ROLE_NAME}"
SESSION = "team-a.s3"
EXPECTED_ARN = f"arn:aws:sts::{ACCOUNT}:assumed-role/{ROLE_NAME}/{SESSION}"
REGION = "us-east-1"
NAMESPACE = "team-a"
IMAGE = "rolecall:test"
CLIENT_TIMEOUT = 30.0
EXPIRES_IN = datetime.timedelta(minutes=4)  # inside botocore's and JS v3's refresh windows


# --- installed clients ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def node() -> str:
    try:
        sdk.node_modules()
        return sdk.node()
    except sdk.PrerequisiteError as exc:
        pytest.fail(f"the AWS SDK for JavaScript v3 is not available: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def aws_cli() -> Path:
    try:
        return sdk.aws_cli()
    except sdk.PrerequisiteError as exc:
        pytest.fail(f"the AWS CLI is not available: {exc}", pytrace=False)


# --- the binding as a pod sees it ----------------------------------------------------------------


def assume(sts: STSFaultProxy) -> Credentials:
    """AssumeRole through the proxy with the harness's base keys; Expiration brought close."""
    answer = sts_client(sts.url).assume_role(RoleArn=ROLE_ARN, RoleSessionName=SESSION, DurationSeconds=3600)
    raw = answer["Credentials"]
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    return Credentials(
        access_key_id=raw["AccessKeyId"],
        secret_access_key=raw["SecretAccessKey"],
        session_token=raw["SessionToken"],
        expiration=now + EXPIRES_IN,
        assumed_role_arn=answer["AssumedRoleUser"]["Arn"],
    )


def app_pod() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "app-", "namespace": NAMESPACE},
        "spec": {"serviceAccountName": "app", "containers": [{"name": "app", "image": "app:1"}]},
    }


@dataclass
class Binding:
    """One AssumedRole: its Secret as a mounted volume, and the pod rolecall would make."""

    volume: KubeletVolume
    mode: str
    port: int
    token: str = field(default_factory=lambda: secrets.token_urlsafe(32))

    @property
    def spec(self) -> AssumedRoleSpec:
        return AssumedRoleSpec(
            role_arn=ROLE_ARN,
            subjects=(Subject("ServiceAccount", "app"),),
            region=REGION,
            secret_name="s3",
            mount_path=str(self.volume.path),
            injection_mode=self.mode,
        )

    def publish(self, creds: Credentials) -> None:
        """What the kubelet does when the operator updates the Secret: an atomic swap."""
        self.volume.write(secret_data(creds, self.spec, REGION, self.token))

    def pod(self) -> dict[str, Any]:
        index = BindingIndex()
        index.put(NAMESPACE, "s3", self.spec)
        pod = app_pod()
        plan = plan_injection(
            pod, NAMESPACE, index, sidecar_image=IMAGE, sidecar_port=self.port, native_sidecars=True
        )
        assert plan.inject and plan.mode == self.mode, plan
        mutated: dict[str, Any] = jsonpatch.apply_patch(copy.deepcopy(pod), plan.patch)
        return mutated

    def app_env(self) -> dict[str, str]:
        """The client's environment: the harness's (endpoint, no keys) plus the injected env."""
        [app] = self.pod()["spec"]["containers"]
        injected = {e["name"]: e["value"] for e in app["env"]}
        return {**sdk.environment_without_credentials(), **injected}

    def sidecar(self) -> dict[str, Any]:
        inits: list[dict[str, Any]] = self.pod()["spec"].get("initContainers", [])
        [sidecar] = [c for c in inits if c["name"] == SIDECAR_NAME]
        return sidecar


def rolecall_command(command: list[str]) -> list[str]:
    """A planned ``rolecall ...`` command, run with this venv's interpreter."""
    assert command[0] == "rolecall", command
    return [sys.executable, "-m", "rolecall.cli", *command[1:]]


@pytest.fixture
def binding_factory(tmp_path: Path) -> Iterator[Any]:
    made: list[Binding] = []

    def make(mode: str) -> Binding:
        volume = KubeletVolume(tmp_path / f"aws-{mode}-{len(made)}")
        binding = Binding(volume, mode, free_port())
        made.append(binding)
        return binding

    yield make


# --- processes -----------------------------------------------------------------------------------


class Background:
    """A process whose stdout JSON lines are collected by a thread; stopped at teardown."""

    def __init__(self, cmd: list[str], env: dict[str, str], log: Path) -> None:
        self.cmd = cmd
        self.log_path = log
        self._log: IO[bytes] = open(log, "wb")  # noqa: SIM115 (closed in stop())
        self.records: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.process = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._log
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                record = json.loads(line)
            except ValueError:
                record = {"ok": False, "error": f"not JSON: {line[:200]!r}"}
            with self._lock:
                self.records.append(record)

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.records)

    def stderr(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-3000:]

    def describe(self) -> str:
        return f"{Path(self.cmd[1]).name if len(self.cmd) > 1 else self.cmd[0]}: {self.snapshot()[-3:]} stderr: {self.stderr()}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._reader.join(5)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._log.close()


@pytest.fixture
def background(tmp_path: Path) -> Iterator[Any]:
    started: list[Background] = []

    def start(cmd: list[str], env: dict[str, str]) -> Background:
        proc = Background(cmd, env, tmp_path / f"process-{len(started)}.log")
        started.append(proc)
        return proc

    yield start
    for proc in reversed(started):
        proc.stop()


def run_once(cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=CLIENT_TIMEOUT, check=False
    )
    assert done.returncode == 0, f"{cmd} exited {done.returncode}:\n{done.stdout}\n{done.stderr[-3000:]}"
    return done


def healthz(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def start_sidecar(binding: Binding, start: Any) -> Background:
    """The sidecar as planned for the pod, gated by its planned startup probe."""
    container = binding.sidecar()
    env = sdk.environment_without_credentials()
    proc: Background = start(rolecall_command(container["command"]), env)
    probe = rolecall_command(container["startupProbe"]["exec"]["command"])

    def probe_passes() -> bool:
        return (
            subprocess.run(probe, cwd=ROOT, env=env, capture_output=True, timeout=10, check=False).returncode
            == 0
        )

    wait_for(probe_passes, timeout=15, interval=0.1, message="the sidecar's startup probe never passed")
    wait_for(
        lambda: healthz(binding.port) or proc.process.poll() is not None,
        timeout=15,
        interval=0.05,
        message=f"the sidecar never answered /healthz on port {binding.port}",
    )
    assert proc.process.poll() is None, f"the sidecar exited: {proc.stderr()}"
    return proc


# --- clients -------------------------------------------------------------------------------------


def python_client(count: int = 1) -> list[str]:
    return [sys.executable, str(sdk.PY_CALLER_IDENTITY), "--count", str(count), "--interval", "0.5"]


def js_client(node: str, provider: str, count: int = 1) -> list[str]:
    return [
        node,
        str(sdk.JS_CALLER_IDENTITY),
        "--provider",
        provider,
        "--count",
        str(count),
        "--interval",
        "0.5",
    ]


def one_identity(cmd: list[str], env: dict[str, str]) -> dict[str, Any]:
    done = run_once(cmd, env)
    records: list[dict[str, Any]] = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    [record] = records
    assert record["ok"], f"{cmd}: {record} {done.stderr[-2000:]}"
    return record


def check_proxy_saw_only(sts: STSFaultProxy, key: str, expected_calls: int) -> None:
    calls = sts.requests(action="GetCallerIdentity")
    assert [r.access_key_id for r in calls] == [key] * expected_calls
    assert all(r.status == 200 for r in calls)


# --- file mode: AWS_CONFIG_FILE + credential_process ---------------------------------------------

SDK_CLIENTS = ["boto3", "aws-cli", "js-default-chain"]


def run_client(client: str, env: dict[str, str], node: str | None, aws: Path | None) -> dict[str, Any]:
    """One GetCallerIdentity; ``{"arn", "accessKeyId"}`` (the CLI does not say which key)."""
    if client == "boto3":
        return one_identity(python_client(), env)
    if client == "aws-cli":
        assert aws is not None
        done = run_once([str(aws), "sts", "get-caller-identity", "--output", "json"], env)
        return {"arn": json.loads(done.stdout)["Arn"], "accessKeyId": None}
    assert node is not None
    provider = client.removeprefix("js-").replace("-chain", "")
    return one_identity(js_client(node, provider), env)


@pytest.mark.parametrize("client", [*SDK_CLIENTS, "js-ini"])
def test_file_mode(
    client: str, sts: STSFaultProxy, binding_factory: Any, request: pytest.FixtureRequest
) -> None:
    node = request.getfixturevalue("node") if client.startswith("js-") else None
    aws = request.getfixturevalue("aws_cli") if client == "aws-cli" else None
    binding: Binding = binding_factory("file")
    creds = assume(sts)
    binding.publish(creds)
    env = binding.app_env()
    assert env["AWS_CONFIG_FILE"] == f"{binding.volume.path}/config"
    assert "AWS_SHARED_CREDENTIALS_FILE" not in binding.pod()["spec"]["containers"][0]["env"]
    config = (binding.volume.path / "config").read_text()
    assert f"credential_process = cat '{binding.volume.path}/credentials.json'" in config
    sts.clear()

    identity = run_client(client, env, node, aws)

    assert identity["arn"] == EXPECTED_ARN
    assert identity["accessKeyId"] in (None, creds.access_key_id)
    check_proxy_saw_only(sts, creds.access_key_id, 1)


# --- sidecar mode: the container-credentials endpoint --------------------------------------------


@pytest.mark.parametrize("client", [*SDK_CLIENTS, "js-http"])
def test_sidecar_mode(
    client: str,
    sts: STSFaultProxy,
    binding_factory: Any,
    background: Any,
    request: pytest.FixtureRequest,
) -> None:
    node = request.getfixturevalue("node") if client.startswith("js-") else None
    aws = request.getfixturevalue("aws_cli") if client == "aws-cli" else None
    binding: Binding = binding_factory("sidecar")
    creds = assume(sts)
    binding.publish(creds)
    start_sidecar(binding, background)
    env = binding.app_env()
    assert env["AWS_CONTAINER_CREDENTIALS_FULL_URI"] == f"http://127.0.0.1:{binding.port}/v1/credentials"
    assert env["AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"] == f"{binding.volume.path}/token"
    sts.clear()

    identity = run_client(client, env, node, aws)

    assert identity["arn"] == EXPECTED_ARN
    assert identity["accessKeyId"] in (None, creds.access_key_id)
    check_proxy_saw_only(sts, creds.access_key_id, 1)


def test_js_from_container_metadata_ignores_the_token_file(
    sts: STSFaultProxy, binding_factory: Any, background: Any, node: str
) -> None:
    """An SDK fact apps must know: use the default chain or ``fromHttp``, not this provider.

    ``fromContainerMetadata`` (@smithy/credential-provider-imds) sends only
    ``AWS_CONTAINER_AUTHORIZATION_TOKEN``, never the ``..._TOKEN_FILE``, so the sidecar
    refuses it (401); the default chain tries ``fromHttp`` first, which reads the file.
    """
    binding: Binding = binding_factory("sidecar")
    binding.publish(assume(sts))
    sidecar = start_sidecar(binding, background)
    done = subprocess.run(
        js_client(node, "container"),
        cwd=ROOT,
        env=binding.app_env(),
        capture_output=True,
        text=True,
        timeout=CLIENT_TIMEOUT,
        check=False,
    )
    [record] = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    assert record["ok"] is False, "fromContainerMetadata now reads the token file: update the docs"
    wait_for(
        lambda: "GET /v1/credentials 401" in sidecar.stderr(),
        timeout=5,
        message="the sidecar did not log the request without Authorization (401)",
    )


# --- rotation without restart --------------------------------------------------------------------


def keys_seen(proc: Background) -> list[str | None]:
    return [r.get("accessKeyId") for r in proc.snapshot() if r.get("ok")]


def used_or_exited(proc: Background, key: str) -> Callable[[], bool]:
    return lambda: key in keys_seen(proc) or proc.process.poll() is not None


@pytest.mark.parametrize("mode", ["file", "sidecar"])
def test_long_running_clients_follow_a_rotation(
    mode: str, sts: STSFaultProxy, binding_factory: Any, background: Any, node: str
) -> None:
    binding: Binding = binding_factory(mode)
    first = assume(sts)
    binding.publish(first)
    if mode == "sidecar":
        start_sidecar(binding, background)
    env = binding.app_env()
    clients = [
        background(python_client(count=0), env),
        background(js_client(node, "default", count=0), env),
    ]
    for proc in clients:
        wait_for(
            used_or_exited(proc, first.access_key_id),
            timeout=20,
            interval=0.1,
            message="a client never used the first credentials",
        )
        assert first.access_key_id in keys_seen(proc), proc.describe()

    second = assume(sts)
    assert second.access_key_id != first.access_key_id
    binding.publish(second)

    for proc in clients:
        wait_for(
            used_or_exited(proc, second.access_key_id),
            timeout=20,
            interval=0.1,
            message="a long-running client did not switch to the rotated credentials",
        )
        assert second.access_key_id in keys_seen(proc), proc.describe()
        assert proc.process.poll() is None, "the client was not restarted; it must still run"
        records = proc.snapshot()
        assert all(r.get("ok") for r in records), f"a call failed around the swap: {proc.describe()}"
        assert {r["arn"] for r in records} == {EXPECTED_ARN}
        seen = keys_seen(proc)
        switch = seen.index(second.access_key_id)
        assert set(seen[:switch]) == {first.access_key_id}
        assert set(seen[switch:]) == {second.access_key_id}, "never back to the old key"

    calls = sts.requests(action="GetCallerIdentity")
    used = [r.access_key_id for r in calls]
    assert second.access_key_id in used, "the proxy saw the new key in use"
    assert set(used) == {first.access_key_id, second.access_key_id}


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
