"""A Kubernetes API server emulator for tests: see ``KubeAPIEmulator``."""

from .emulator import DEFAULT_TOKEN, DEFAULT_USER, KubeAPIEmulator, read_crd_manifests
from .errors import ApiError

__all__ = ["DEFAULT_TOKEN", "DEFAULT_USER", "ApiError", "KubeAPIEmulator", "read_crd_manifests"]
