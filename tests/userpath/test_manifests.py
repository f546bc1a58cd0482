"""The README's path without Helm (docs/install.md, "Install with kubectl"): the CRDs and the
operator applied from ``deploy/manifests/``, a binding, a pod injected, then ``kubectl delete
-f deploy/manifests/`` — which removes the operator and nothing a user created (CRDs,
AssumedRoles, their Secrets).

Tests run in file order on one cluster (one emulator for the module).
"""

from __future__ import annotations

import pytest

from tests.harness.tools import REPO

from .conftest import NAMESPACE, RELEASE, Cluster, node_env

MANIFESTS = REPO / "deploy" / "manifests"
CRDS = MANIFESTS / "crds"
SAMPLES = REPO / "deploy" / "samples"
APP_NS = "team-a"


@pytest.fixture(scope="module")
def applied(cluster: Cluster, aws_env: dict[str, str]) -> Cluster:
    """`kubectl apply -f deploy/manifests/crds/` then `kubectl apply -f deploy/manifests/`, as
    docs/install.md says; the operator's identity from the SDK default chain (the node's)."""
    crds = cluster.kubectl("apply", "-f", f"{CRDS}/").stdout
    assert "customresourcedefinition.apiextensions.k8s.io/assumedroles.rolecall.dev created" in crds
    cluster.kubectl("apply", "-f", f"{MANIFESTS}/", timeout=120)
    cluster.run_deployment(NAMESPACE, RELEASE, node_env(aws_env))
    cluster.webhooks_serving()
    return cluster


def test_manifests_apply_and_a_binding_works(applied: Cluster) -> None:
    cluster = applied
    for kind in ("deployment", "service", "serviceaccount"):
        assert cluster.exists(kind, RELEASE, "-n", NAMESPACE), kind
    cluster.kubectl("-n", NAMESPACE, "rollout", "status", f"deployment/{RELEASE}", "--timeout=60s")
    cluster.kubectl("apply", "-f", f"{SAMPLES}/")
    cluster.kubectl(
        "wait", "--for=condition=Ready", "ar/s3-reader", "-n", APP_NS, "--timeout=60s", timeout=90
    )
    overrides = '{"apiVersion": "v1", "spec": {"serviceAccountName": "app"}}'
    cluster.kubectl("run", "app", "-n", APP_NS, "--image=busybox", f"--overrides={overrides}")
    pod = cluster.get_json("pod", "app", "-n", APP_NS)
    assert "rolecall-credentials" in {v["name"] for v in pod["spec"].get("volumes") or []}
    # Applying the same files again changes nothing, except what kubectl always reports as
    # configured: a PodDisruptionBudget (policy/v1 selector has patchStrategy replace, so the
    # patch is never empty, on a real cluster too), and the webhook configurations, whose
    # failurePolicy goes back to the manifest's Ignore until the operator's next sync
    # (docs/install.md, "Webhook certificates").
    again = cluster.kubectl("apply", "-f", f"{MANIFESTS}/").stdout.splitlines()
    always = ("poddisruptionbudget.policy/", "webhookconfiguration.admissionregistration.k8s.io/")
    assert all(line.endswith(" unchanged") for line in again if not any(a in line for a in always)), again
    assert "deployment.apps/rolecall unchanged" in again


def test_manifests_delete_keeps_crds_bindings_and_secrets(applied: Cluster) -> None:
    """docs/install.md, "Uninstall": `kubectl delete -f deploy/manifests/ --ignore-not-found`."""
    cluster = applied
    assert cluster.exists("assumedrole", "s3-reader", "-n", APP_NS)
    cluster.kubectl("delete", "-f", f"{MANIFESTS}/", "--ignore-not-found", "--wait=true", timeout=120)
    assert not cluster.exists("deployment", RELEASE, "-n", NAMESPACE)
    assert not cluster.exists("namespace", NAMESPACE)
    assert not cluster.exists("validatingwebhookconfiguration", RELEASE)
    assert cluster.exists("crd", "assumedroles.rolecall.dev")
    assert cluster.exists("crd", "assumedrolepolicies.rolecall.dev")
    assert cluster.exists("assumedrolepolicy", "team-a")
    assert cluster.exists("assumedrole", "s3-reader", "-n", APP_NS)
    assert cluster.exists("secret", "s3-reader", "-n", APP_NS)
    # with the operator and its webhooks gone, the binding can still be edited
    cluster.kubectl("label", "assumedrole", "s3-reader", "-n", APP_NS, "checked=yes")


def test_removing_the_crds_on_purpose(applied: Cluster) -> None:
    """docs/install.md, "Removing the CRDs on purpose": every AssumedRole goes, and with it,
    through its owner reference, the Secret rolecall managed."""
    cluster = applied
    assert "s3-reader" in cluster.kubectl("get", "assumedroles", "--all-namespaces").stdout
    cluster.kubectl("delete", "-f", f"{CRDS}/", "--wait=true", timeout=120)
    assert not cluster.exists("crd", "assumedroles.rolecall.dev")
    cluster.kubectl("wait", "--for=delete", "secret/s3-reader", "-n", APP_NS, "--timeout=60s", timeout=90)
