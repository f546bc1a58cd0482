"""kubectl, helm and the rolecall CLI pointed at one API emulator, as a user's shell is.

Used by the user-path tier (tests/userpath) and the docs check
(tests/integration/test_docs_commands.py). The emulator schedules nothing: after an install,
:meth:`Cluster.run_deployment` has the kubelet stand-in (kubeapi/kubelet.py) run the
operator's pods.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

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
        # a user's PATH: kubectl, helm and the rolecall CLI
        bin_dir = home / "bin"
        bin_dir.mkdir(parents=True, exist_ok=True)
        for tool in (self.kubectl_bin, self.helm_bin):
            link = bin_dir / Path(tool).name
            if not link.exists():
                link.symlink_to(tool)
        shim = bin_dir / "rolecall"
        shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m rolecall.cli "$@"\n')
        shim.chmod(0o755)
        self.env["PATH"] = f"{bin_dir}{os.pathsep}{self.env['PATH']}"

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

    def shell(
        self, command: str, cwd: Path, env: dict[str, str], timeout: float = 180
    ) -> subprocess.CompletedProcess[str]:
        """One command line as a user types it (pipes, ``$(...)``, quoting), in bash."""
        return subprocess.run(
            ["bash", "-o", "pipefail", "-c", command], env={**self.env, **env}, capture_output=True,
            text=True, timeout=timeout, cwd=cwd, check=False,
        )  # fmt: skip

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

    def webhooks_serving(self, name: str = RELEASE) -> None:
        """Until the operator has written caBundle and the wanted failurePolicy (the chart
        creates both webhook configurations with Ignore and no caBundle when the operator
        issues its own certificate; otherwise they are complete from the start)."""
        for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
            annotations = self.get_json(kind, name)["metadata"].get("annotations") or {}
            wanted = annotations.get("rolecall.dev/failure-policy")
            conditions = ["{.webhooks[0].clientConfig.caBundle}"]
            if wanted:
                conditions.append("{.webhooks[0].failurePolicy}=" + wanted)
            for condition in conditions:
                self.kubectl(
                    "wait", f"{kind}/{name}", "--timeout=60s", f"--for=jsonpath={condition}", timeout=90
                )

    def stop_all(self) -> None:
        for runner in self.runners:
            runner.stop()
