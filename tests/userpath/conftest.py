"""The user-path tier: a user's commands, run with the real ``kubectl`` (1.33) and ``helm`` (4)
against the Kubernetes API emulator, with the operator started from what was installed.

Each test module gets its own emulator (a fresh "cluster"); the local STS is shared. Nothing
here talks to the API except kubectl and helm, and the kubelet stand-in
(``tests/harness/kubeapi/kubelet.py``) that runs the installed Deployment's operator process.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness.cluster import NAMESPACE, RELEASE, Cluster, CommandFailed
from tests.harness.kubeapi import KubeAPIEmulator

__all__ = ["NAMESPACE", "RELEASE", "Cluster", "CommandFailed", "cluster", "node_env"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    emulator = KubeAPIEmulator().start()
    cluster = Cluster(emulator, tmp_path_factory.mktemp("userpath"))
    try:
        yield cluster
    finally:
        cluster.stop_all()
        emulator.stop()


def node_env(aws_env: dict[str, str]) -> dict[str, str]:
    """What the node gives the operator's pods besides their spec: the local STS, and an AWS
    identity for the SDK's default chain (as IRSA or instance metadata would on EKS)."""
    keys = ("AWS_ENDPOINT_URL_STS", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_EC2_METADATA_DISABLED")
    return {k: aws_env[k] for k in keys}
