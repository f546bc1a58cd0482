"""The image tier: build the Dockerfile with buildah, run the image, measure it.

Opt-in, like the e2e tier: these tests are deselected unless the marker expression names
``image`` (``make image-test`` runs ``pytest -m image tests/image``). They need root (apt-get,
buildah's storage, the mounts of tests/image/container.py) and the package index (pip runs
inside the build).

The measurements of a run (build time, size and layers, the operator's and the sidecar's
figures in the image) are written to ``bench/out/image.json`` at the end of the session; the
output of every process run from the image is in ``bench/out/image-logs/``.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.image import buildah

RESULTS = buildah.ROOT / "bench" / "out" / "image.json"
LOGS = buildah.ROOT / "bench" / "out" / "image-logs"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "image: builds the Dockerfile with buildah and runs the image (opt-in: make image-test)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "image" in (config.option.markexpr or ""):
        return
    skipped = [item for item in items if item.get_closest_marker("image")]
    if skipped:
        config.hook.pytest_deselected(items=skipped)
        items[:] = [item for item in items if not item.get_closest_marker("image")]


@pytest.fixture(scope="session")
def results() -> Iterator[dict[str, Any]]:
    """Figures the tests measured; written to bench/out/image.json when the session ends."""
    data: dict[str, Any] = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    started = time.monotonic()
    yield data
    data["session_s"] = round(time.monotonic() - started, 1)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


@pytest.fixture(scope="session")
def image(results: dict[str, Any]) -> buildah.Built:
    started = time.monotonic()
    built = buildah.build()
    results["build"] = {
        "ref": built.ref,
        "base": built.base,
        "build_s": round(built.seconds, 1),
        "setup_s": round(time.monotonic() - started, 1),
        "rebuilt": built.seconds > 0,
    }
    return built


@pytest.fixture(scope="session")
def rootfs(image: buildah.Built) -> Iterator[Path]:
    """The image's root filesystem; the containers of tests/image/container.py mount it read-only."""
    with buildah.mounted(image.ref) as path:
        yield path


@pytest.fixture(scope="session")
def logs() -> Path:
    """Where the output of the processes run from the image goes (kept after the session)."""
    shutil.rmtree(LOGS, ignore_errors=True)
    LOGS.mkdir(parents=True)
    return LOGS
