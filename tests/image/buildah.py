"""Build the project's Dockerfile with buildah, from a Debian 12 + Python 3.11 base.

No Docker engine or registry is needed (none is reachable on the test machines):

1. :func:`ensure_packages` installs Debian's ``buildah`` and ``mmdebstrap`` with apt-get when
   they are missing (root only; seconds when they are present).
2. :func:`ensure_base` makes the base image: ``mmdebstrap`` writes a minimal Debian 12 root
   filesystem with Python 3.11 and its venv module (the Debian and Python of
   ``python:3.11-slim``, which cannot be pulled here), cached as a tarball keyed by the
   command line, and imports it into buildah's storage (``localhost/rolecall-base:...``).
3. :func:`build` runs ``buildah bud`` on the Dockerfile with ``--build-arg BASE_IMAGE=<that
   base>``, chroot isolation, vfs storage and the host's network (pip reaches the package
   index; the host's CA bundle, when there is one, is the build secret ``ca-bundle``). The
   result is tagged by a digest of the Dockerfile, the build context and the base, so an
   unchanged tree is not rebuilt; ``ROLECALL_IMAGE_REBUILD=1`` forces a build.

Everything lives under ``<tools dir>/image/`` (``.tools/image`` unless ``ROLECALL_TOOLS_DIR``
says otherwise; git-ignored): the base tarball and buildah's own storage, so nothing else on
the machine is touched and ``rm -rf .tools/image`` starts over.

``python -m tests.image.buildah`` builds and prints the image's size and layers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.harness.tools import tools_dir

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
# What the Dockerfile copies, i.e. what .dockerignore lets through (a test keeps them equal).
CONTEXT = ("pyproject.toml", "constraints.txt", "README.md", "operator")
CONTEXT_SKIP = ("__pycache__", ".pyc", ".egg-info")

IMAGE_REPO = "localhost/rolecall"
BASE_REPO = "localhost/rolecall-base"
KEEP_IMAGES = 3  # test images kept in the storage (oldest removed first)

SUITE = "bookworm"
MIRRORS = (
    f"deb http://deb.debian.org/debian {SUITE} main",
    f"deb http://deb.debian.org/debian {SUITE}-updates main",
    f"deb http://deb.debian.org/debian-security {SUITE}-security main",
)
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
# The documentation, manual pages and translations python:3.11-slim does not ship either.
DPKG_OPTIONS = (
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
)
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CA_BUNDLES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt")

APT_TIMEOUT = 600.0
MMDEBSTRAP_TIMEOUT = 900.0
BUILD_TIMEOUT = 1800.0


class ImageError(RuntimeError):
    """A step of making the image failed; the message carries the command's output."""


def say(text: str) -> None:
    print(f"[image] {text}", file=sys.stderr, flush=True)


def work_dir() -> Path:
    path = tools_dir() / "image"
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def locked(name: str) -> Iterator[None]:
    with open(work_dir() / f"{name}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes
        yield


def _run(cmd: list[str], *, timeout: float, what: str, **kwargs: Any) -> str:
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, **kwargs
        )
    except subprocess.TimeoutExpired as exc:
        raise ImageError(f"{what}: timed out after {timeout:.0f}s: {' '.join(cmd)}") from exc
    except FileNotFoundError as exc:
        raise ImageError(f"{what}: {exc.filename} is not installed") from exc
    if done.returncode != 0:
        output = (done.stdout + done.stderr).strip()[-6000:]
        raise ImageError(f"{what} failed ({done.returncode}): {' '.join(cmd)}\n{output}")
    return done.stdout


# --------------------------------------------------------------------------- 1. packages


def ensure_packages() -> None:
    """buildah and mmdebstrap from Debian's archive, when they are not installed yet."""
    if shutil.which("buildah") and shutil.which("mmdebstrap"):
        return
    if os.geteuid() != 0:
        raise ImageError(
            "buildah and mmdebstrap are not installed, and installing them needs root: "
            "apt-get install buildah mmdebstrap"
        )
    if not shutil.which("apt-get"):
        raise ImageError("buildah and mmdebstrap are not installed and there is no apt-get to install them")
    with locked("apt"):
        if shutil.which("buildah") and shutil.which("mmdebstrap"):
            return
        say("installing buildah and mmdebstrap (apt-get)")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        _run(["apt-get", "update", "-q"], timeout=APT_TIMEOUT, what="apt-get update", env=env)
        _run(
            ["apt-get", "install", "-y", "-q", "buildah", "mmdebstrap"],
            timeout=APT_TIMEOUT,
            what="apt-get install buildah mmdebstrap",
            env=env,
        )


# --------------------------------------------------------------------------- storage


def storage_args() -> list[str]:
    """buildah's global options: vfs storage of our own, under the tools directory."""
    root = work_dir() / "storage"
    # run-time state (mount counts, locks) belongs on a tmpfs that a reboot clears
    digest = hashlib.sha256(str(root).encode()).hexdigest()[:12]
    runroot = Path("/run") / f"rolecall-image-{digest}"
    return ["--root", str(root), "--runroot", str(runroot), "--storage-driver", "vfs"]


def buildah(*args: str, timeout: float = 300.0, what: str = "buildah") -> str:
    return _run(["buildah", *storage_args(), *args], timeout=timeout, what=what)


def buildah_cleanup(*args: str) -> None:
    """A clean-up command whose failure does not matter (another session may hold the object)."""
    subprocess.run(
        ["buildah", *storage_args(), *args], capture_output=True, stdin=subprocess.DEVNULL, timeout=300
    )


def image_exists(ref: str) -> bool:
    done = subprocess.run(
        ["buildah", *storage_args(), "inspect", "--type", "image", ref],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )
    return done.returncode == 0


def inspect(ref: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(buildah("inspect", "--type", "image", ref, what="buildah inspect"))
    return data


# --------------------------------------------------------------------------- 2. the base


def mmdebstrap_command(out: Path) -> list[str]:
    return [
        "mmdebstrap",
        "--variant=minbase",
        "--format=tar",
        f"--include={','.join(BASE_PACKAGES)}",
        *(f"--dpkgopt={opt}" for opt in DPKG_OPTIONS),
        SUITE,
        str(out),
        *MIRRORS,
    ]


def base_key() -> str:
    return hashlib.sha256(json.dumps(mmdebstrap_command(Path("OUT"))).encode()).hexdigest()[:12]


def ensure_base() -> str:
    """The base image's reference (Debian 12 + Python 3.11), made on first use."""
    key = base_key()
    ref = f"{BASE_REPO}:debian12-py311-{key}"
    if image_exists(ref):
        return ref
    with locked("base"):
        if image_exists(ref):
            return ref
        tarball = work_dir() / f"debian12-py311-{key}.tar"
        if not tarball.is_file():
            say(f"making the base root filesystem with mmdebstrap ({', '.join(BASE_PACKAGES)})")
            started = time.monotonic()
            staging = tarball.with_suffix(".tar.part")
            staging.unlink(missing_ok=True)
            _run(mmdebstrap_command(staging), timeout=MMDEBSTRAP_TIMEOUT, what="mmdebstrap")
            os.replace(staging, tarball)
            say(f"  {tarball.stat().st_size / 1e6:.0f} MB in {time.monotonic() - started:.0f}s")
        say(f"importing it as {ref}")
        container = buildah("from", "--name", f"rolecall-base-import-{os.getpid()}", "scratch").strip()
        try:
            mountpoint = buildah("mount", container).strip()
            _run(
                ["tar", "--numeric-owner", "-xpf", str(tarball), "-C", mountpoint],
                timeout=300,
                what="unpacking the base",
            )
            buildah("umount", container)
            buildah("config", "--env", f"PATH={BASE_PATH}", "--cmd", "python3", container)
            buildah("commit", "--quiet", container, ref, timeout=600, what="buildah commit (base)")
        finally:
            buildah_cleanup("rm", container)
    return ref


# --------------------------------------------------------------------------- 3. the image


def context_files() -> list[Path]:
    files: list[Path] = []
    for name in CONTEXT:
        path = ROOT / name
        if path.is_file():
            files.append(path)
            continue
        for item in sorted(path.rglob("*")):
            text = str(item.relative_to(ROOT))
            if item.is_file() and not any(skip in text for skip in CONTEXT_SKIP):
                files.append(item)
    return files


def context_digest(base_id: str) -> str:
    digest = hashlib.sha256(base_id.encode())
    for path in (DOCKERFILE, DOCKERIGNORE, *context_files()):
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def ca_bundle() -> str | None:
    for candidate in (os.environ.get("PIP_CERT"), os.environ.get("SSL_CERT_FILE"), *CA_BUNDLES):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


@dataclasses.dataclass
class Built:
    ref: str
    image_id: str
    base: str
    seconds: float  # 0 when the image was already there
    info: dict[str, Any]

    @property
    def config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = self.info["OCIv1"]["config"]
        return cfg

    @property
    def layers(self) -> list[dict[str, Any]]:
        manifest = json.loads(self.info["Manifest"])
        layers: list[dict[str, Any]] = manifest["layers"]
        return layers

    @property
    def size(self) -> int:
        """Bytes of the unpacked image: the sum of its (uncompressed) layers."""
        return sum(int(layer["size"]) for layer in self.layers)


def build(*, force: bool = False) -> Built:
    ensure_packages()
    remove_stale_containers()
    base = ensure_base()
    base_id = inspect(base)["FromImageID"]
    ref = f"{IMAGE_REPO}:test-{context_digest(base_id)}"
    force = force or os.environ.get("ROLECALL_IMAGE_REBUILD") == "1"
    seconds = 0.0
    with locked("build"):
        if force or not image_exists(ref):
            cmd = [
                "bud",
                "--isolation",
                "chroot",
                "--network",
                "host",
                "--pull-never",
                "--build-arg",
                f"BASE_IMAGE={base}",
                "--file",
                str(DOCKERFILE),
                "--tag",
                ref,
            ]
            if os.environ.get("PIP_INDEX_URL"):
                cmd += ["--build-arg", f"PIP_INDEX_URL={os.environ['PIP_INDEX_URL']}"]
            bundle = ca_bundle()
            if bundle:
                cmd += ["--secret", f"id=ca-bundle,src={bundle}"]
            say(f"building {ref} from the Dockerfile (base {base})")
            started = time.monotonic()
            buildah(*cmd, str(ROOT), timeout=BUILD_TIMEOUT, what="buildah bud")
            seconds = time.monotonic() - started
            say(f"  built in {seconds:.0f}s")
            prune(keep=ref)
    info = inspect(ref)
    return Built(ref=ref, image_id=info["FromImageID"], base=base, seconds=seconds, info=info)


def prune(keep: str) -> None:
    """Drop all but the newest test images (a concurrent session may still use one: skip it)."""
    listing = json.loads(buildah("images", "--json", what="buildah images") or "null") or []
    ours = [
        image
        for image in listing
        if any(name.startswith(f"{IMAGE_REPO}:test-") for name in image.get("names") or [])
    ]
    ours.sort(key=lambda image: image.get("created", 0), reverse=True)
    for image in ours[KEEP_IMAGES:]:
        if keep in (image.get("names") or []):
            continue
        buildah_cleanup("rmi", image["id"])
    # and the untagged ones a forced rebuild leaves behind
    buildah_cleanup("rmi", "--prune")


def remove_stale_containers() -> None:
    """Working containers left by a session that was killed (each is a full copy with vfs)."""
    listing = json.loads(buildah("containers", "--json", what="buildah containers") or "null") or []
    for container in listing:
        match = re.fullmatch(
            r"rolecall-(?:image-test|base-import)-(\d+)(?:-\d+)?", container.get("containername", "")
        )
        if match and not Path(f"/proc/{match.group(1)}").exists():
            buildah_cleanup("rm", container["id"])


@contextlib.contextmanager
def mounted(ref: str) -> Iterator[Path]:
    """The image's root filesystem as a directory (a working container, removed afterwards)."""
    name = f"rolecall-image-test-{os.getpid()}-{int(time.time() * 1000)}"
    buildah("from", "--pull-never", "--name", name, ref, timeout=600, what="buildah from")
    try:
        yield Path(buildah("mount", name).strip())
    finally:
        buildah_cleanup("rm", name)


def compressed_layer_sizes(ref: str) -> list[int]:
    """Each layer's size gzip-compressed (level 6, as registries store them), in bytes."""
    with tempfile.TemporaryDirectory(prefix="rolecall-image-", dir=work_dir()) as scratch:
        out = Path(scratch) / "image"
        buildah("push", "--format", "oci", ref, f"dir:{out}", timeout=900, what="buildah push dir:")
        manifest = json.loads((out / "manifest.json").read_text())
        sizes = []
        for layer in manifest["layers"]:
            blob = out / layer["digest"].split(":", 1)[1]
            sizes.append(_gzip_size(blob))
        return sizes


def _gzip_size(path: Path) -> int:
    counter = _Counter()
    with open(path, "rb") as src, gzip.GzipFile(fileobj=counter, mode="wb", compresslevel=6, mtime=0) as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    return counter.size


class _Counter:
    """A write-only file that only counts bytes."""

    def __init__(self) -> None:
        self.size = 0

    def write(self, data: bytes) -> int:
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        pass


def main() -> int:
    built = build()
    print(json.dumps({"ref": built.ref, "base": built.base, "size": built.size, "build_s": built.seconds}))
    sizes = compressed_layer_sizes(built.ref)
    for layer, packed in zip(built.layers, sizes, strict=True):
        print(
            f"  layer {layer['digest'][7:19]}  {int(layer['size']) / 1e6:7.1f} MB  gzip {packed / 1e6:6.1f} MB"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
