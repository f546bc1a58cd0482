"""Fixtures of the SDK compatibility tier: one injected pod per mode, the node's metadata."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from rolecall.model import Credentials
from tests.harness import sdk
from tests.harness.sdk.clients import Client
from tests.harness.sdk.imds import NodeMetadata
from tests.harness.sdk.pod import (
    NODE_ROLE_NAME,
    Background,
    Binding,
    assume,
    node_credentials,
    process_env,
    start_sidecar,
)
from tests.harness.sdk.volume import KubeletVolume
from tests.harness.sts import STSFaultProxy


@dataclass
class RunningPod:
    binding: Binding
    creds: Credentials
    sidecar: Background | None


class Pods:
    """One injected pod per mode for the whole session (AssumeRole once, one sidecar)."""

    def __init__(self, sts_url: str, base: Path) -> None:
        self.sts_url = sts_url
        self.base = base
        self._pods: dict[str, RunningPod] = {}

    def get(self, mode: str) -> RunningPod:
        if mode not in self._pods:
            binding = Binding(KubeletVolume(self.base / f"aws-{mode}"), mode)
            creds = assume(self.sts_url)
            binding.publish(creds)
            sidecar = start_sidecar(binding, self.base / "sidecar.log") if mode == "sidecar" else None
            self._pods[mode] = RunningPod(binding, creds, sidecar)
        return self._pods[mode]

    def stop(self) -> None:
        for pod in self._pods.values():
            if pod.sidecar is not None:
                pod.sidecar.stop()


@pytest.fixture(scope="session")
def pods(
    sts_proxy: STSFaultProxy, aws_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Pods]:
    made = Pods(sts_proxy.url, tmp_path_factory.mktemp("pods"))
    yield made
    made.stop()


@pytest.fixture(scope="session")
def node_metadata(sts_proxy: STSFaultProxy, aws_env: dict[str, str]) -> Iterator[NodeMetadata]:
    """Instance metadata that answers with the node's role, reachable by every client."""
    with NodeMetadata(NODE_ROLE_NAME, node_credentials(sts_proxy.url)) as imds:
        yield imds


@pytest.fixture(scope="session")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty HOME: no ~/.aws of the developer's."""
    return tmp_path_factory.mktemp("home")


_prepared: dict[str, str] = {}


def prepared(client: Client) -> Client:
    """The client, installed (once per session); an install failure fails the test."""
    if client.name not in _prepared:
        try:
            client.prepare()
            _prepared[client.name] = ""
        except sdk.PrerequisiteError as exc:
            _prepared[client.name] = str(exc)
    if _prepared[client.name]:
        pytest.fail(f"{client.name} is not available: {_prepared[client.name]}", pytrace=False)
    return client


def pod_env(pod: RunningPod, home: Path, imds: NodeMetadata, *, drop: tuple[str, ...] = ()) -> dict[str, str]:
    """The app container's process env (minus ``drop``), on a node whose metadata answers."""
    container = {k: v for k, v in pod.binding.container_env().items() if k not in drop}
    return process_env(home, container, AWS_EC2_METADATA_SERVICE_ENDPOINT=imds.url)
