"""AWS SDK releases at the edges of support, each installed into its own cached directory.

The compatibility tier (``tests/sdk``) runs each release as an application in a pod would.
Python releases come from PyPI (``pip install --target``), JavaScript releases from npm
(``npm ci`` against a committed ``package-lock.json`` under ``locks/<name>/``). Each lands in
``<tools dir>/sdk-<name>/`` (``.tools`` at the repository root, git-ignored, or
``ROLECALL_TOOLS_DIR``), built in a private staging directory under an exclusive lock and
moved into place with one rename, so parallel pytest processes and worktrees sharing the
tools directory are safe. A failed install raises :class:`PrerequisiteError` (the tests fail
with the reason; they never skip).

``python -m tests.harness.sdk.versions`` installs them all (and prints where).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.harness.sdk import SDK_DIR, PrerequisiteError, _run
from tests.harness.tools import _locked, tools_dir

LOCKS = SDK_DIR / "locks"
JS_V3_PACKAGES = ["@aws-sdk/client-sts", "@aws-sdk/credential-provider-node"]
_STAMP = ".rolecall-sdk-installed"
PIP_TIMEOUT = 600.0
NPM_TIMEOUT = 600.0


@dataclass(frozen=True)
class Release:
    """One SDK release: ``name`` is the cache directory suffix and the test id."""

    name: str
    language: str  # "python" | "js-v2" | "js-v3"
    version: str  # what the client must report about itself
    requirements: tuple[str, ...] = ()  # pip requirements (python)

    @property
    def directory(self) -> Path:
        return tools_dir() / f"sdk-{self.name}"


# botocore 1.32 (boto3 1.29, November 2023) is the first to read
# AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE; the CLI v1 1.29 bundles botocore 1.31.
BOTOCORE_1_31 = Release("botocore-1.31", "python", "1.31.85", ("boto3==1.28.85", "botocore==1.31.85"))
BOTOCORE_1_32 = Release("botocore-1.32", "python", "1.32.0", ("boto3==1.29.0", "botocore==1.32.0"))
AWSCLI_1_29 = Release("awscli-1.29", "python", "1.31.85", ("awscli==1.29.85",))
# the JavaScript SDK v2 reads the token file from 2.1550; v3 from 3.504 (its default chain,
# @aws-sdk/credential-provider-node, tries @aws-sdk/credential-provider-http first from 3.503.1)
JS_V2_2_1549 = Release("js-v2-2.1549", "js-v2", "2.1549.0")
JS_V2_2_1550 = Release("js-v2-2.1550", "js-v2", "2.1550.0")
JS_V3_3_502 = Release("js-v3-3.502", "js-v3", "3.502.0")
JS_V3_3_504 = Release("js-v3-3.504", "js-v3", "3.504.0")

RELEASES = (
    BOTOCORE_1_31,
    BOTOCORE_1_32,
    AWSCLI_1_29,
    JS_V2_2_1549,
    JS_V2_2_1550,
    JS_V3_3_502,
    JS_V3_3_504,
)


def ensure(release: Release) -> Path:
    """The release's install directory, installed first if needed."""
    target = release.directory
    if (target / _STAMP).exists():
        return target
    build: Callable[[Release, Path], None] = _pip if release.language == "python" else _npm
    target.parent.mkdir(parents=True, exist_ok=True)
    with _locked(target.parent / f"sdk-{release.name}.lock"):
        if (target / _STAMP).exists():  # another process finished while we waited
            return target
        staging = Path(tempfile.mkdtemp(prefix=f".sdk-{release.name}-", dir=target.parent))
        try:
            build(release, staging)
            (staging / _STAMP).write_text(release.version)
            if target.exists():  # an interrupted older attempt
                shutil.rmtree(target)
            os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _pip(release: Release, staging: Path) -> None:
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-compile",
            "--target",
            str(staging),
            *release.requirements,
        ],
        cwd=staging,
        timeout=PIP_TIMEOUT,
        what=f"installing {' '.join(release.requirements)}",
    )


def _npm(release: Release, staging: Path) -> None:
    lock_dir = LOCKS / release.name
    for name in ("package.json", "package-lock.json"):
        if not (lock_dir / name).exists():
            raise PrerequisiteError(f"{lock_dir / name} is missing: run `npm install` there to pin {release}")
        shutil.copy(lock_dir / name, staging / name)
    npm = shutil.which("npm")
    if not npm:
        raise PrerequisiteError("npm is not installed: it installs the JavaScript SDKs for tests/sdk")
    _run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=staging,
        timeout=NPM_TIMEOUT,
        what=f"installing {release.name} (npm ci in {lock_dir})",
    )
    # JS v3: the default chain is @aws-sdk/credential-provider-node, which clients before 3.504
    # take as a peer dependency of any version; an app of that time had the same release of both
    packages = ["aws-sdk"] if release.language == "js-v2" else JS_V3_PACKAGES
    for package in packages:
        installed = json.loads((staging / "node_modules" / package / "package.json").read_text())["version"]
        if installed != release.version:
            raise PrerequisiteError(f"{lock_dir} installs {package} {installed}, not {release.version}")


def main() -> int:
    for release in RELEASES:
        print(f"{release.name}: {ensure(release)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
