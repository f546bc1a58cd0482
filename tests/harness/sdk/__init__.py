"""Real AWS clients for the integration tests, installed on first use.

- The AWS SDK for JavaScript v3: a small npm project in this folder (``package.json`` with
  pinned versions, ``package-lock.json``); :func:`node_modules` runs ``npm ci`` here when
  ``node_modules`` is missing or older than the lock file.
- The AWS CLI v1: it pins its own botocore, so it cannot share the project's venv;
  :func:`aws_cli` creates ``.venv-tools`` at the repository root (git-ignored) and
  ``pip install``s a pinned ``awscli`` into it.

Older releases for the compatibility tier: :mod:`tests.harness.sdk.versions`.

A fresh clone therefore gets all of them during its first ``make test``. Anything that cannot be
installed raises :class:`PrerequisiteError` with the reason and the tool's output; tests turn
it into a failure, never a skip. Installs are serialised with a file lock (parallel workers).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

SDK_DIR = Path(__file__).resolve().parent
ROOT = SDK_DIR.parents[2]
NODE_MODULES = SDK_DIR / "node_modules"
JS_CALLER_IDENTITY = SDK_DIR / "caller_identity.js"
JS_V2_CALLER_IDENTITY = SDK_DIR / "caller_identity_v2.js"
PY_CALLER_IDENTITY = SDK_DIR / "caller_identity.py"

TOOLS_VENV = ROOT / ".venv-tools"
AWSCLI_REQUIREMENT = "awscli==1.46.3"

_STAMP = ".rolecall-installed"
NPM_TIMEOUT = 300.0
PIP_TIMEOUT = 600.0


class PrerequisiteError(RuntimeError):
    """A client needed by the tests is missing and could not be installed."""


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    digest = hashlib.sha256(str(ROOT).encode()).hexdigest()[:12]
    path = Path(tempfile.gettempdir()) / f"rolecall-{name}-{digest}.lock"
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _run(cmd: list[str], *, cwd: Path, timeout: float, what: str, env: dict[str, str] | None = None) -> None:
    try:
        done = subprocess.run(
            cmd,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as exc:
        raise PrerequisiteError(f"{what}: {cmd[0]!r} not found ({exc})") from None
    except subprocess.TimeoutExpired:
        raise PrerequisiteError(f"{what}: `{' '.join(cmd)}` took longer than {timeout:g}s") from None
    if done.returncode != 0:
        tail = (done.stdout + done.stderr)[-3000:]
        raise PrerequisiteError(f"{what}: `{' '.join(cmd)}` exited {done.returncode}:\n{tail}")


def node() -> str:
    """The ``node`` executable (Node.js 18+)."""
    found = shutil.which("node")
    if not found:
        raise PrerequisiteError(
            "Node.js is not installed (no `node` on PATH): the JavaScript SDK tests need Node.js 18+"
        )
    return found


def node_modules() -> Path:
    """``node_modules`` of this folder, installed with ``npm ci`` if missing or stale."""
    lock = (SDK_DIR / "package-lock.json").read_bytes()
    want = hashlib.sha256(lock + (SDK_DIR / "package.json").read_bytes()).hexdigest()
    stamp = NODE_MODULES / _STAMP
    with _locked("npm"):
        if stamp.exists() and stamp.read_text() == want:
            return NODE_MODULES
        node()
        npm = shutil.which("npm")
        if not npm:
            raise PrerequisiteError("npm is not installed: it installs the JavaScript SDK for the tests")
        _run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=SDK_DIR,
            timeout=NPM_TIMEOUT,
            what="installing the AWS SDK for JavaScript (tests/harness/sdk)",
        )
        for package in ("@aws-sdk/client-sts", "@aws-sdk/credential-providers"):
            if not (NODE_MODULES / package / "package.json").exists():
                raise PrerequisiteError(f"npm ci finished but {package} is not in {NODE_MODULES}")
        stamp.write_text(want)
    return NODE_MODULES


def aws_cli() -> Path:
    """The ``aws`` executable of the AWS CLI v1 in ``.venv-tools``, installed if needed."""
    aws = TOOLS_VENV / "bin" / "aws"
    stamp = TOOLS_VENV / _STAMP
    with _locked("awscli"):
        if aws.exists() and stamp.exists() and stamp.read_text() == AWSCLI_REQUIREMENT:
            return aws
        python = TOOLS_VENV / "bin" / "python"
        if not python.exists():
            # the interpreter running the tests: its stdlib venv module is known to be there
            base = getattr(sys, "_base_executable", None) or sys.executable
            _run(
                [base, "-m", "venv", str(TOOLS_VENV)],
                cwd=ROOT,
                timeout=120,
                what="creating .venv-tools for the AWS CLI",
            )
        _run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                AWSCLI_REQUIREMENT,
            ],
            cwd=ROOT,
            timeout=PIP_TIMEOUT,
            what=f"installing {AWSCLI_REQUIREMENT} into .venv-tools",
        )
        if not aws.exists():
            raise PrerequisiteError(f"pip installed {AWSCLI_REQUIREMENT} but {aws} does not exist")
        stamp.write_text(AWSCLI_REQUIREMENT)
    return aws


def environment_without_credentials(base: dict[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: ``os.environ``) minus every variable that would pick credentials.

    What stays: endpoints (``AWS_ENDPOINT_URL_STS``), region, ``AWS_EC2_METADATA_DISABLED``
    and the harness's (empty) ``AWS_CONFIG_FILE``/``AWS_SHARED_CREDENTIALS_FILE``.
    """
    env = dict(os.environ if base is None else base)
    for key in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_SECURITY_TOKEN",
        "AWS_CREDENTIAL_EXPIRATION",
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_ROLE_ARN",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
        "AWS_SDK_LOAD_CONFIG",
    ):
        env.pop(key, None)
    return env
