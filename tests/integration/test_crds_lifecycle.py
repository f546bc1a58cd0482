"""`rolecall run` without its CRDs: it waits (one message naming them), resumes when they come,
and survives their deletion the same way, instead of crash-looping on 404s.

The test runs its own emulator: deleting the CRDs of the shared one would break other tests.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import kubernetes.client
import pytest

from tests.harness.k8s import K8s
from tests.harness.kube_fixtures import api_client_from_kubeconfig, apply_crds
from tests.harness.kubeapi import KubeAPIEmulator
from tests.harness.operator import OperatorProcess
from tests.harness.operator_fixtures import ROLE_PREFIX
from tests.harness.sts import free_port
from tests.harness.wait import wait_for

ROOT = Path(__file__).resolve().parents[2]
NS = "team-crds"
WAITING = (
    "Waiting for the CustomResourceDefinitions assumedroles.rolecall.dev, assumedrolepolicies.rolecall.dev"
)
DELETED = "CustomResourceDefinitions assumedroles.rolecall.dev, assumedrolepolicies.rolecall.dev were deleted"
STARTING = "Found the CustomResourceDefinitions"


@pytest.fixture
def bare_cluster(tmp_path: Path) -> Iterator[tuple[Path, K8s]]:
    emulator = KubeAPIEmulator().start()
    kubeconfig = emulator.write_kubeconfig(tmp_path / "kubeconfig")
    api = api_client_from_kubeconfig(kubeconfig)
    kubernetes.client.CoreV1Api(api).create_namespace({"metadata": {"name": NS}})
    try:
        yield kubeconfig, K8s(api)
    finally:
        api.close()
        emulator.stop()


def healthz(port: int) -> dict[str, object]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


def bind_and_wait_ready(k8s: K8s, name: str) -> None:
    k8s.create_ar(NS, name, {"roleArn": ROLE_PREFIX + "team-crds-app"})
    wait_for(
        lambda: (k8s.condition(NS, name) or {}).get("status") == "True",
        timeout=30,
        message=f"AssumedRole {name} never became Ready",
    )


def test_operator_waits_for_crds_and_resumes_after_they_are_deleted(
    bare_cluster: tuple[Path, K8s], aws_env: dict[str, str], tmp_path: Path
) -> None:
    kubeconfig, k8s = bare_cluster
    port = free_port()
    op = OperatorProcess(
        kubeconfig,
        NS,
        aws_env,
        tmp_path / "operator.log",
        "--health-port",
        str(port),
        "--health-host",
        "127.0.0.1",
    )
    try:
        wait_for(lambda: WAITING in op.text(), timeout=30, message="no message naming the missing CRDs")
        # alive while waiting: the liveness probe does not restart it
        assert wait_for(lambda: healthz(port), timeout=10, ignore=(OSError,))["ok"] is True
        assert op.proc.poll() is None

        apply_crds(k8s.api, ROOT / "deploy" / "crds")
        k8s.create_policy("team-crds", {"namespaces": [NS], "roleArns": [ROLE_PREFIX + "team-crds-*"]})
        wait_for(lambda: STARTING in op.text(), timeout=30, message="never noticed the CRDs")
        bind_and_wait_ready(k8s, "first")
        assert op.text().count(WAITING) == 1, "said once, not at every poll"

        # deleting the CRDs deletes every AssumedRole; the operator stops and waits, no crash
        ext = kubernetes.client.ApiextensionsV1Api(k8s.api)
        for name in ("assumedroles.rolecall.dev", "assumedrolepolicies.rolecall.dev"):
            ext.delete_custom_resource_definition(name)
        wait_for(lambda: DELETED in op.text(), timeout=30, message="no message naming the deleted CRDs")
        assert op.proc.poll() is None, "the operator must wait, not exit"
        assert wait_for(lambda: healthz(port), timeout=10, ignore=(OSError,))["ok"] is True

        apply_crds(k8s.api, ROOT / "deploy" / "crds")
        k8s.create_policy("team-crds", {"namespaces": [NS], "roleArns": [ROLE_PREFIX + "team-crds-*"]})
        wait_for(lambda: op.text().count(STARTING) == 2, timeout=30, message="never resumed")
        bind_and_wait_ready(k8s, "second")
    finally:
        op.stop()
    log = op.text()
    assert op.proc.returncode == 0, log[-3000:]
    for noise in ("Traceback", " 404", "(404)", "ERROR", "has failed"):
        # " 404" with its space: a timestamp such as 01:48:54,404 is not a status code
        assert noise not in log, f"{noise!r} in the operator's log:\n{log[-3000:]}"
