"""e2e: the core scenario against a real cluster (kind, k3d, EKS …), opt-in.

    KUBECONFIG=~/.kube/config make e2e        # or: .venv/bin/pytest -m e2e tests/e2e

The operator runs on this machine against the cluster from ``KUBECONFIG`` and the local STS
(moto behind the proxy), so no AWS account is needed. It applies the CRDs, creates a
namespace and a policy, and checks the Secret, garbage collection and CRD validation — the
parts the emulator can only imitate.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from tests.harness.k8s import K8s
from tests.harness.kube_fixtures import api_client_from_kubeconfig, apply_crds
from tests.harness.wait import wait_for

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
KUBECONFIG = os.environ.get("KUBECONFIG", "")
ROLE = "arn:aws:iam::123456789012:role/team-e2e"


@pytest.fixture(scope="module")
def cluster() -> Iterator[K8s]:
    if not KUBECONFIG or not Path(KUBECONFIG.split(os.pathsep)[0]).expanduser().exists():
        pytest.skip("set KUBECONFIG to a reachable cluster to run the e2e tier")
    api = api_client_from_kubeconfig(Path(KUBECONFIG.split(os.pathsep)[0]).expanduser())
    apply_crds(api, ROOT / "deploy" / "crds")
    yield K8s(api)


@pytest.fixture
def e2e_namespace(cluster: K8s) -> Iterator[str]:
    name = f"rolecall-e2e-{uuid.uuid4().hex[:6]}"
    cluster.core.create_namespace({"metadata": {"name": name}})
    cluster.create_policy(name, {"namespaces": [name], "roleArns": [ROLE]})
    yield name
    cluster.delete_policy(name)
    cluster.core.delete_namespace(name)


@pytest.fixture
def operator(
    e2e_namespace: str, aws_env: dict[str, str], sts: Any, tmp_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    log = open(tmp_path / "operator.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rolecall.cli",
            "run",
            "--kubeconfig",
            KUBECONFIG.split(os.pathsep)[0],
            "--namespace",
            e2e_namespace,
            "--ha",
            "none",
            "--health-port",
            "-1",
            "--metrics-port",
            "-1",
        ],
        env={**os.environ, **aws_env},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    yield proc
    proc.terminate()
    proc.wait(20)
    log.close()


def test_binding_yields_secret_and_is_garbage_collected(
    cluster: K8s, e2e_namespace: str, operator: Any
) -> None:
    cluster.create_ar(e2e_namespace, "s3", {"roleArn": ROLE})
    wait_for(lambda: (cnd := cluster.condition(e2e_namespace, "s3")) and cnd["status"] == "True", timeout=60)
    data = cluster.secret_data(e2e_namespace, "s3")
    assert data and {"credentials.json", "config", "credentials", "token", "AWS_SESSION_TOKEN"} <= set(data)
    cluster.delete_ar(e2e_namespace, "s3")
    wait_for(
        lambda: cluster.secret(e2e_namespace, "s3") is None,
        timeout=120,
        message="the real garbage collector did not remove the Secret",
    )


def test_crd_schema_rejects_bad_fields(cluster: K8s, e2e_namespace: str) -> None:
    with pytest.raises(ApiException) as info:
        cluster.create_ar(e2e_namespace, "bad", {"roleArn": ROLE, "durationSeconds": 100})
    assert info.value.status == 422 and "spec.durationSeconds" in info.value.body
