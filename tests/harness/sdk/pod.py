"""An injected pod on this machine: the webhook's real patch, the kubelet's part, a real sidecar.

- :meth:`Binding.pod` sends a plain pod through ``admission.review_pod`` (the mutating
  webhook's code path) and applies the answer with ``admission.json_patch_fn`` (what kopf
  applies), so the env, mounts and sidecar are exactly what a cluster would run.
- The Secret is ``render.secret_data`` of a real AssumeRole, written as the kubelet lays out
  a Secret volume (``KubeletVolume``: ``..data`` symlink swap) at the AssumedRole's mountPath.
- :meth:`Binding.container_env` resolves the app container's ``env`` as the kubelet does:
  ``value`` as is, ``valueFrom.secretKeyRef`` from the Secret's data (env mode, the sidecar
  token). The process gets only that, plus ``PATH`` and an empty ``HOME`` (no ``~/.aws``).
- :func:`start_sidecar` runs the planned sidecar command (``rolecall sidecar ...``) and waits
  for its planned startup probe, as the kubelet does before starting the app.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from rolecall.admission import InjectionRequest, json_patch_fn, review_pod
from rolecall.index import BindingIndex
from rolecall.inject import SIDECAR_NAME
from rolecall.model import AssumedRoleSpec, Credentials, Subject
from rolecall.render import secret_data
from tests.harness.sdk.volume import KubeletVolume
from tests.harness.sts import free_port, sts_client
from tests.harness.wait import wait_for

ROOT = Path(__file__).resolve().parents[3]
ACCOUNT = "123456789012"
ROLE_NAME = "team-a-s3"
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/{ROLE_NAME}"
SESSION = "team-a.s3"
EXPECTED_ARN = f"arn:aws:sts::{ACCOUNT}:assumed-role/{ROLE_NAME}/{SESSION}"
NODE_ROLE_NAME = "eks-node-group"
NODE_ARN_PREFIX = f"arn:aws:sts::{ACCOUNT}:assumed-role/{NODE_ROLE_NAME}/"
REGION = "us-east-1"
NAMESPACE = "team-a"
SECRET_NAME = "s3"
IMAGE = "rolecall:test"
CLIENT_TIMEOUT = 60.0
EXPIRES_IN = datetime.timedelta(minutes=4)  # inside botocore's and JS v3's refresh windows


def assume(sts_url: str, role_arn: str = ROLE_ARN, session: str = SESSION) -> Credentials:
    """AssumeRole at the local STS with the harness's base keys; Expiration brought close."""
    answer = sts_client(sts_url).assume_role(RoleArn=role_arn, RoleSessionName=session, DurationSeconds=3600)
    raw = answer["Credentials"]
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    return Credentials(
        access_key_id=raw["AccessKeyId"],
        secret_access_key=raw["SecretAccessKey"],
        session_token=raw["SessionToken"],
        expiration=now + EXPIRES_IN,
        assumed_role_arn=answer["AssumedRoleUser"]["Arn"],
    )


def node_credentials(sts_url: str) -> dict[str, Any]:
    """The node's role, as instance metadata would hand it out."""
    answer = sts_client(sts_url).assume_role(
        RoleArn=f"arn:aws:iam::{ACCOUNT}:role/{NODE_ROLE_NAME}", RoleSessionName="i-0123456789abcdef0"
    )
    creds: dict[str, Any] = answer["Credentials"]
    return creds


def app_pod() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "app-", "namespace": NAMESPACE},
        "spec": {"serviceAccountName": "app", "containers": [{"name": "app", "image": "app:1"}]},
    }


@dataclass
class Binding:
    """One AssumedRole: its Secret as a mounted volume, and the pod the webhook makes of it."""

    volume: KubeletVolume
    mode: str
    port: int = field(default_factory=free_port)
    token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    data: dict[str, str] = field(default_factory=dict)

    @property
    def spec(self) -> AssumedRoleSpec:
        return AssumedRoleSpec(
            role_arn=ROLE_ARN,
            subjects=(Subject("ServiceAccount", "app"),),
            region=REGION,
            secret_name=SECRET_NAME,
            mount_path=str(self.volume.path),
            injection_mode=self.mode,
        )

    def publish(self, creds: Credentials) -> None:
        """What the kubelet does when the operator updates the Secret: an atomic swap."""
        self.data = secret_data(creds, self.spec, REGION, self.token)
        self.volume.write(self.data)

    def pod(self) -> dict[str, Any]:
        index = BindingIndex()
        index.put(NAMESPACE, SECRET_NAME, self.spec)
        pod = app_pod()
        review = review_pod(
            InjectionRequest(pod, NAMESPACE, index, sidecar_image=IMAGE, sidecar_port=self.port)
        )
        assert review.injected and review.mode == self.mode, review
        mutated = copy.deepcopy(pod)
        json_patch_fn(review.patch)(mutated)
        return mutated

    def container_env(self) -> dict[str, str]:
        """The app container's env as the kubelet resolves it (secretKeyRef from the Secret)."""
        [app] = self.pod()["spec"]["containers"]
        env: dict[str, str] = {}
        for item in app["env"]:
            if "value" in item:
                env[item["name"]] = item["value"]
                continue
            ref = item["valueFrom"]["secretKeyRef"]
            assert ref["name"] == SECRET_NAME, ref
            env[item["name"]] = self.data[ref["key"]]
        return env

    def sidecar(self) -> dict[str, Any]:
        inits: list[dict[str, Any]] = self.pod()["spec"].get("initContainers", [])
        [sidecar] = [c for c in inits if c["name"] == SIDECAR_NAME]
        return sidecar


def process_env(home: Path, container_env: dict[str, str], **extra: str) -> dict[str, str]:
    """A pod's process environment: PATH, an empty HOME, the container's env, ``extra``."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), **container_env, **extra}


def rolecall_command(command: list[str]) -> list[str]:
    """A planned ``rolecall ...`` command, run with this venv's interpreter."""
    assert command[0] == "rolecall", command
    return [sys.executable, "-m", "rolecall.cli", *command[1:]]


class Background:
    """A process whose stdout JSON lines are collected by a thread; ``stop()`` ends it."""

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
        name = Path(self.cmd[1]).name if len(self.cmd) > 1 else self.cmd[0]
        return f"{name}: {self.snapshot()[-3:]} stderr: {self.stderr()}"

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


def healthz(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def start_sidecar(binding: Binding, log: Path) -> Background:
    """The sidecar as planned for the pod, gated by its planned startup probe."""
    container = binding.sidecar()
    env = process_env(log.parent, {})
    proc = Background(rolecall_command(container["command"]), env, log)
    probe = rolecall_command(container["startupProbe"]["exec"]["command"])

    def probe_passes() -> bool:
        done = subprocess.run(probe, cwd=ROOT, env=env, capture_output=True, timeout=20, check=False)
        return done.returncode == 0

    try:
        wait_for(probe_passes, timeout=30, interval=0.1, message="the sidecar's startup probe never passed")
        wait_for(
            lambda: healthz(binding.port) or proc.process.poll() is not None,
            timeout=30,
            interval=0.05,
            message=f"the sidecar never answered /healthz on port {binding.port}",
        )
        assert proc.process.poll() is None, f"the sidecar exited: {proc.stderr()}"
    except BaseException:
        proc.stop()
        raise
    return proc
