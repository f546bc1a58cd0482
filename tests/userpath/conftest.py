"""The user-path tier: a user's commands, run with the real ``kubectl`` (1.33) and ``helm`` (4)
against the Kubernetes API emulator, with the operator started from what was installed.

Each test module gets its own emulator (a fresh "cluster"); the local STS is shared. Nothing
here talks to the API except kubectl and helm, and the kubelet stand-in
(``tests/harness/kubeapi/kubelet.py``) that runs the installed Deployment's operator process.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness.kubeapi import KubeAPIEmulator
from tests.harness.kubeapi.kubelet import DeploymentRunner
from tests.harness.tools import REPO, ensure_helm, ensure_kubectl

NAMESPACE = "rolecall-system"
RELEASE = "rolecall"


class CommandFailed(AssertionError):
    pass


class Cluster:
    """kubectl and helm pointed at one emulator, each with its own caches."""

    def __init__(self, emulator: KubeAPIEmulator, home: Path) -> None:
        self.emulator = emulator
        self.home = home
        self.kubeconfig = emulator.write_kubeconfig(home / "kubeconfig")
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "KUBECONFIG": str(self.kubeconfig),
            "KUBECACHEDIR": str(home / "kube-cache"),
            "HELM_CACHE_HOME": str(home / "helm-cache"),
            "HELM_CONFIG_HOME": str(home / "helm-config"),
            "HELM_DATA_HOME": str(home / "helm-data"),
        }
        self.kubectl_bin = str(ensure_kubectl())
        self.helm_bin = str(ensure_helm())
        self.runners: list[DeploymentRunner] = []

    def _run(
        self, argv: list[str], check: bool, timeout: float, stdin: str | None
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            argv, env=self.env, capture_output=True, text=True, timeout=timeout, cwd=REPO, input=stdin
        )
        if check and done.returncode != 0:
            raise CommandFailed(
                f"$ {' '.join(argv[1:])}\nexit {done.returncode}\n{done.stdout}\n{done.stderr}".rstrip()
            )
        return done

    def kubectl(
        self, *args: str, check: bool = True, timeout: float = 60, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return self._run([self.kubectl_bin, *args], check, timeout, stdin)

    def helm(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return self._run([self.helm_bin, *args], check, timeout, None)

    def get_json(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def exists(self, *args: str) -> bool:
        done = self.kubectl("get", *args, "--ignore-not-found", "-o", "name", check=False)
        if done.returncode != 0:
            raise CommandFailed(done.stderr)
        return bool(done.stdout.strip())

    def run_deployment(self, namespace: str, name: str, node_env: dict[str, str]) -> DeploymentRunner:
        """Run the installed Deployment's pods (the kubelet's part) and wait until they are ready."""
        runner = DeploymentRunner(self.emulator, namespace, name, self.home / f"pods-{name}", node_env)
        self.runners.append(runner)
        runner.start()
        runner.wait_healthy()
        return runner

    def wait_for(self, what: str, predicate: Callable[[], bool], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}")
            time.sleep(0.2)

    def webhooks_serving(self, name: str = RELEASE) -> None:
        """Until the operator has written caBundle and the wanted failurePolicy (both webhook
        configurations start with Ignore and no caBundle)."""
        for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
            wanted = self.get_json(kind, name)["metadata"]["annotations"]["rolecall.dev/failure-policy"]
            for condition in (
                "{.webhooks[0].clientConfig.caBundle}",
                "{.webhooks[0].failurePolicy}=" + wanted,
            ):
                self.kubectl(
                    "wait", f"{kind}/{name}", "--timeout=60s", f"--for=jsonpath={condition}", timeout=90
                )

    def stop_all(self) -> None:
        for runner in self.runners:
            runner.stop()


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
