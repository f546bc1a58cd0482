"""The user-path tier: a user's commands, run with the real ``kubectl`` (1.33) and ``helm`` (4)
against the Kubernetes API emulator, with the operator started from what was installed.

Each test module gets its own emulator (a fresh "cluster"); the local STS is shared. Nothing
here talks to the API except kubectl and helm, and the kubelet stand-in
(``tests/harness/kubeapi/kubelet.py``) that runs the installed Deployment's operator process.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rolecall.tls import generate_self_signed
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

    def run_deployment(self, namespace: str, name: str, env: dict[str, str]) -> DeploymentRunner:
        """Start the installed Deployment's operator (the kubelet's part) and wait until healthy."""
        runner = DeploymentRunner(self.emulator, namespace, name, self.home / f"pod-{name}", env)
        self.runners.append(runner)
        runner.start()
        runner.wait_healthy()
        return runner

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


@pytest.fixture(scope="module")
def webhook_tls(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A serving certificate for the chart's Service (cert-manager is not in this cluster)."""
    host = f"{RELEASE}.{NAMESPACE}.svc"
    cert, key = generate_self_signed([host, f"{host}.cluster.local"])
    directory = tmp_path_factory.mktemp("webhook-tls")
    (directory / "tls.crt").write_bytes(cert)
    (directory / "tls.key").write_bytes(key)
    return {
        "cert": str(directory / "tls.crt"),
        "key": str(directory / "tls.key"),
        "ca_bundle": base64.b64encode(cert).decode(),
        "secret": f"{RELEASE}-webhook-tls",
    }


def operator_env(aws_env: dict[str, str]) -> dict[str, str]:
    """The operator's own AWS identity and the local STS (what IRSA or a Secret gives it)."""
    return {k: v for k, v in aws_env.items() if k.startswith("AWS_")}
