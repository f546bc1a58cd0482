"""Clients from Debian's packages for the opt-in tier (``make test-sdks``).

- Go SDK v1 (``golang-github-aws-aws-sdk-go-dev``) and v2 (``golang-github-aws-aws-sdk-go-v2-dev``):
  ``go/v1`` and ``go/v2`` here, built offline in GOPATH mode against ``/usr/share/gocode``
  (``golang-go``) into ``<tools dir>/sdk-go-<v>-<package version>/`` on first use (locked,
  staged, renamed, like :mod:`tests.harness.sdk.versions`).
- Ruby (``ruby-aws-sdk-core``, which carries the STS client): ``caller_identity.rb``.
- The AWS CLI v2 (``awscli``): ``/usr/bin/aws``.

A missing package raises :class:`PrerequisiteError` naming the ``apt-get install`` to run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests.harness.sdk import SDK_DIR, PrerequisiteError, _run
from tests.harness.sdk.clients import Client
from tests.harness.tools import _locked, tools_dir

GOPATH = Path("/usr/share/gocode")
DEBIAN_CLI = Path("/usr/bin/aws")
RUBY_SCRIPT = SDK_DIR / "caller_identity.rb"
GO_TIMEOUT = 600.0


def package_version(package: str) -> str:
    """The installed version of a Debian package (``dpkg-query``), or PrerequisiteError."""
    done = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True, check=False
    )
    if done.returncode != 0 or not done.stdout.strip():
        raise PrerequisiteError(f"the Debian package {package} is not installed: apt-get install {package}")
    return done.stdout.strip()


@dataclass(frozen=True)
class DebianClient(Client):
    package: str = ""

    @property
    def upstream_version(self) -> str:
        return package_version(self.package).split("-")[0]

    def _binary(self) -> Path:
        return tools_dir() / f"sdk-{self.kind}-{self.upstream_version}" / "caller-identity"

    def prepare(self) -> None:
        package_version(self.package)
        if self.kind.startswith("go-"):
            package_version("golang-go")
            self._build()

    def _build(self) -> None:
        binary = self._binary()
        if binary.exists():
            return
        binary.parent.parent.mkdir(parents=True, exist_ok=True)
        with _locked(binary.parent.parent / f"{binary.parent.name}.lock"):
            if binary.exists():
                return
            staging = Path(tempfile.mkdtemp(prefix=f".{binary.parent.name}-", dir=binary.parent.parent))
            try:
                env = {
                    "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                    "HOME": str(staging),
                    "GO111MODULE": "off",  # Debian ships GOPATH sources; nothing is downloaded
                    "GOPATH": str(GOPATH),
                    "GOCACHE": str(staging / "cache"),
                    "GOFLAGS": "",
                }
                go = shutil.which("go") or "/usr/bin/go"
                source = SDK_DIR / "go" / self.kind.removeprefix("go-")
                build = [go, "build", "-o", str(staging / "out" / "caller-identity"), "."]
                _run(build, cwd=source, timeout=GO_TIMEOUT, what=f"building {source}", env=env)
                shutil.rmtree(staging / "cache", ignore_errors=True)
                os.replace(staging / "out", binary.parent)
            finally:
                shutil.rmtree(staging, ignore_errors=True)

    @property
    def expected_version(self) -> str | None:
        # the CLI does not say which version answered; the others report their SDK's
        return None if self.kind == "aws-cli" else self.upstream_version

    def command(self, endpoint: str) -> tuple[list[str], dict[str, str]]:
        if self.kind == "aws-cli":
            return [str(DEBIAN_CLI), "--endpoint-url", endpoint, "sts", "get-caller-identity"], {}
        if self.kind == "ruby":
            return ["ruby", str(RUBY_SCRIPT), "--endpoint-url", endpoint], {}
        return [str(self._binary()), "-endpoint-url", endpoint], {}


GO_V1 = DebianClient("go-v1", "go-v1", package="golang-github-aws-aws-sdk-go-dev")
GO_V2 = DebianClient("go-v2", "go-v2", package="golang-github-aws-aws-sdk-go-v2-dev")
RUBY = DebianClient("ruby", "ruby", package="ruby-aws-sdk-core")
AWS_CLI_V2 = DebianClient("aws-cli-v2", "aws-cli", package="awscli")
DEBIAN_CLIENTS = (GO_V1, GO_V2, RUBY, AWS_CLI_V2)
