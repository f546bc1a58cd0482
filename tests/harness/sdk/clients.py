"""The AWS clients of the compatibility tier: how to run each as an application would.

Every client calls STS GetCallerIdentity once through its SDK's default credential chain and
yields an :class:`Identity`. The STS endpoint is given on the command line (older releases
ignore ``AWS_ENDPOINT_URL_STS``); credentials come only from the environment the test builds.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass

from tests.harness import sdk
from tests.harness.sdk import versions
from tests.harness.sdk.pod import CLIENT_TIMEOUT, ROOT


@dataclass(frozen=True)
class Identity:
    ok: bool
    arn: str | None = None
    access_key_id: str | None = None
    sdk: str | None = None  # the version the client reported
    error: str = ""


@dataclass(frozen=True)
class Client:
    """``kind``: boto3 | aws-cli | js-v2 | js-v3; ``release``: None = the project's pinned one."""

    name: str
    kind: str
    release: versions.Release | None = None

    @property
    def expected_version(self) -> str | None:
        return self.release.version if self.release else None

    def prepare(self) -> None:
        """Install what the client needs (cached); raises ``sdk.PrerequisiteError``."""
        if self.release is not None:
            versions.ensure(self.release)
        elif self.kind == "aws-cli":
            sdk.aws_cli()
        elif self.kind == "js-v3":
            sdk.node_modules()

    def command(self, endpoint: str) -> tuple[list[str], dict[str, str]]:
        """(argv, extra env) for one call."""
        home = self.release.directory if self.release else None
        if self.kind == "boto3":
            argv = [sys.executable, str(sdk.PY_CALLER_IDENTITY), "--endpoint-url", endpoint]
            return argv, {"PYTHONPATH": str(home)} if home else {}
        if self.kind == "aws-cli":
            tail = ["--endpoint-url", endpoint, "sts", "get-caller-identity", "--output", "json"]
            if home:
                return [sys.executable, "-m", "awscli", *tail], {"PYTHONPATH": str(home)}
            return [str(sdk.TOOLS_VENV / "bin" / "aws"), *tail], {}
        script = sdk.JS_CALLER_IDENTITY if self.kind == "js-v3" else sdk.JS_V2_CALLER_IDENTITY
        argv = [sdk.node(), str(script), "--endpoint-url", endpoint]
        if home:
            argv += ["--modules", str(home)]
        return argv, {}

    def call(self, endpoint: str, env: dict[str, str]) -> Identity:
        argv, extra = self.command(endpoint)
        done = subprocess.run(
            argv,
            cwd=ROOT,
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=CLIENT_TIMEOUT,
            check=False,
        )
        if self.kind == "aws-cli":
            return _cli_identity(done, self.release is not None, {**env, **extra})
        lines = [line for line in done.stdout.splitlines() if line.strip()]
        if len(lines) != 1:
            return Identity(
                False, error=f"exit {done.returncode}: {done.stdout[-500:]} {done.stderr[-1500:]}"
            )
        record = json.loads(lines[0])
        if not record.get("ok"):
            return Identity(False, error=str(record.get("error")))
        return Identity(True, record["arn"], record.get("accessKeyId"), record.get("sdk"))


def _cli_identity(done: subprocess.CompletedProcess[str], pip_release: bool, env: dict[str, str]) -> Identity:
    if done.returncode != 0:
        return Identity(False, error=f"exit {done.returncode}: {done.stderr.strip()[-1500:]}")
    version = None
    if pip_release:  # which botocore the CLI ran with, from the same PYTHONPATH
        probe = [sys.executable, "-c", "import botocore; print(botocore.__version__)"]
        version = subprocess.run(
            probe, env=env, capture_output=True, text=True, timeout=CLIENT_TIMEOUT, check=False
        ).stdout.strip()
    return Identity(True, json.loads(done.stdout)["Arn"], None, version)


BOTO3 = Client("boto3-current", "boto3")
AWS_CLI = Client("aws-cli-v1-current", "aws-cli")
JS_V3 = Client("js-v3-current", "js-v3")
CLIENTS = (
    Client("botocore-1.31", "boto3", versions.BOTOCORE_1_31),
    Client("botocore-1.32", "boto3", versions.BOTOCORE_1_32),
    BOTO3,
    Client("aws-cli-v1-1.29", "aws-cli", versions.AWSCLI_1_29),
    AWS_CLI,
    Client("js-v2-2.1549", "js-v2", versions.JS_V2_2_1549),
    Client("js-v2-2.1550", "js-v2", versions.JS_V2_2_1550),
    Client("js-v3-3.502", "js-v3", versions.JS_V3_3_502),
    Client("js-v3-3.504", "js-v3", versions.JS_V3_3_504),
    JS_V3,
)
BY_NAME = {client.name: client for client in CLIENTS}
