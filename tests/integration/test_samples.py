"""deploy/samples/ applies cleanly on a fresh cluster with the validating webhook on: each
object in the order of the file (as `kubectl apply -f deploy/samples/` sends them), nothing
refused, and the binding becomes Ready."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes.client
import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from tests.harness.k8s import K8s
from tests.harness.sts import free_port
from tests.harness.wait import wait_for

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "deploy" / "samples"


def documents() -> list[dict[str, Any]]:
    files = sorted(SAMPLES.glob("*.yaml"))
    assert [f.name for f in files] == ["team-a.yaml"], "one self-contained file: no order to get wrong"
    return [doc for f in files for doc in yaml.safe_load_all(f.read_text()) if doc]


def create(k8s: K8s, doc: dict[str, Any]) -> None:
    """What `kubectl apply` does for an object that does not exist yet."""
    kind, ns = doc["kind"], doc["metadata"].get("namespace")
    if kind == "Namespace":
        k8s.core.create_namespace(doc)
    elif kind == "ServiceAccount":
        k8s.core.create_namespaced_service_account(ns, doc)
    elif kind == "Pod":
        k8s.core.create_namespaced_pod(ns, doc)
    elif kind == "AssumedRolePolicy":
        k8s.custom.create_cluster_custom_object("rolecall.dev", "v1alpha1", "assumedrolepolicies", doc)
    elif kind == "AssumedRole":
        k8s.custom.create_namespaced_custom_object("rolecall.dev", "v1alpha1", ns, "assumedroles", doc)
    else:
        raise AssertionError(f"the samples hold a {kind}: teach this test to create it")


@pytest.fixture
def fresh_team_a(k8s: K8s) -> Iterator[None]:
    yield
    for delete in (
        lambda: k8s.custom.delete_cluster_custom_object(
            "rolecall.dev", "v1alpha1", "assumedrolepolicies", "team-a"
        ),
        lambda: k8s.core.delete_namespace("team-a"),
    ):
        try:
            delete()
        except ApiException as exc:
            if exc.status != 404:
                raise


def test_samples_apply_cleanly_with_the_webhook_on(
    start_operator: Any, k8s: K8s, fresh_team_a: None, sts: Any
) -> None:
    docs = documents()
    assert [d["kind"] for d in docs] == [
        "Namespace",
        "ServiceAccount",
        "AssumedRolePolicy",
        "AssumedRole",
        "Pod",
    ]
    name = "rolecall.dev"  # the name the chart lets the operator manage (rbac.yaml)
    start_operator(
        namespaces=("team-a",),
        webhook_enabled=True,
        webhook_host="127.0.0.1",
        webhook_port=free_port(),
        webhook_url_host="127.0.0.1",
        webhook_configuration_name=name,
    )
    adm = kubernetes.client.AdmissionregistrationV1Api(k8s.api)
    try:
        wait_for(
            lambda: any(
                c.metadata.name == name and c.webhooks
                for c in adm.list_validating_webhook_configuration().items
            ),
            timeout=20,
            message="the validating webhook never registered",
        )
        for doc in docs:
            create(k8s, doc)  # raises on any refusal
        cond = wait_for(lambda: k8s.condition("team-a", "s3-reader"), timeout=20)
        wait_for(
            lambda: (k8s.condition("team-a", "s3-reader") or {}).get("status") == "True",
            timeout=20,
            message=f"the sample binding never became Ready: {cond}",
        )
        assert k8s.core.read_namespaced_pod("whoami", "team-a").spec.service_account_name == "app"
    finally:
        adm.delete_mutating_webhook_configuration(name)
        adm.delete_validating_webhook_configuration(name)
