"""A Secret volume laid out the way the kubelet writes it, with its atomic update.

The kubelet's AtomicWriter keeps every key as a symlink ``<key> -> ..data/<key>``, ``..data``
as a symlink to a timestamped directory ``..2026_11_28_00_25_28.123456789``, and updates by
writing a new timestamped directory, pointing ``..data_tmp`` at it and renaming that over
``..data`` (one atomic ``rename``), then adding/removing key symlinks and deleting the old
directory. A reader that opens ``<key>`` sees either all old or all new files, never a mix;
that is what the credentials sidecar and ``credential_process = cat ...`` rely on.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

DATA = "..data"
DATA_TMP = "..data_tmp"


class KubeletVolume:
    """``write(data)`` creates or atomically replaces the volume's content."""

    def __init__(self, path: str | Path, mode: int = 0o444) -> None:
        self.path = Path(path)
        self.mode = mode
        self.path.mkdir(parents=True, exist_ok=True)

    def _timestamped(self) -> Path:
        """A new ``..<UTC time>.<random>`` directory, as the kubelet names them."""
        stamp = time.strftime("%Y_%m_%d_%H_%M_%S", time.gmtime())
        return Path(tempfile.mkdtemp(prefix=f"..{stamp}.", dir=self.path))

    def keys(self) -> set[str]:
        data = self.path / DATA
        return {p.name for p in data.iterdir()} if data.exists() else set()

    def write(self, data: Mapping[str, str]) -> None:
        old_keys = self.keys()
        data_link = self.path / DATA
        old_dir = (self.path / os.readlink(data_link)) if data_link.is_symlink() else None

        new_dir = self._timestamped()
        new_dir.chmod(0o755)
        for key, value in data.items():
            if "/" in key or key.startswith(".."):
                raise ValueError(f"not a Secret key the kubelet would write: {key!r}")
            target = new_dir / key
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(value)
            os.chmod(target, self.mode)

        tmp_link = self.path / DATA_TMP
        if tmp_link.is_symlink():
            tmp_link.unlink()
        os.symlink(new_dir.name, tmp_link)
        os.rename(tmp_link, data_link)  # the atomic switch

        for key in data:
            link = self.path / key
            if not link.is_symlink():
                os.symlink(f"{DATA}/{key}", link)
        for key in old_keys - set(data):
            (self.path / key).unlink(missing_ok=True)
        if old_dir is not None and old_dir != new_dir:
            shutil.rmtree(old_dir, ignore_errors=True)
