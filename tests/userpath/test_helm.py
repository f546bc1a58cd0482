"""The README's path with Helm: install, bind a role, see it Ready, get a pod injected, upgrade,
uninstall — every step a real ``helm`` or ``kubectl`` command, as a user types it.

Tests run in file order on one cluster (one emulator for the module): each step starts from
where the previous one left the cluster, as a user's session does.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from tests.harness.tools import REPO

from .conftest import NAMESPACE, RELEASE, Cluster, operator_env

CHART = str(REPO / "deploy" / "helm" / "rolecall")
SAMPLES = REPO / "deploy" / "samples"
APP_NS = "team-a"


def sample_docs() -> list[dict[str, Any]]:
    return [d for p in sorted(SAMPLES.glob("*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d]


def helm_values(webhook_tls: dict[str, str], aws_env: dict[str, str]) -> list[str]:
    """cert-manager is not installed here: the chart's provided-certificate option instead."""
    return [
        "--set", "webhook.certManager.enabled=false",
        "--set", f"webhook.tls.secretName={webhook_tls['secret']}",
        "--set", f"webhook.tls.caBundle={webhook_tls['ca_bundle']}",
        "--set", f"aws.stsEndpointUrl={aws_env['AWS_ENDPOINT_URL_STS']}",
        "--set", "replicas=1",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def installed(cluster: Cluster, webhook_tls: dict[str, str], aws_env: dict[str, str]) -> Cluster:
    cluster.kubectl("create", "namespace", NAMESPACE)
    cluster.kubectl(
        "create", "secret", "tls", webhook_tls["secret"], "-n", NAMESPACE,
        "--cert", webhook_tls["cert"], "--key", webhook_tls["key"],
    )  # fmt: skip
    cluster.helm("install", RELEASE, CHART, "-n", NAMESPACE, *helm_values(webhook_tls, aws_env))
    cluster.run_deployment(NAMESPACE, RELEASE, operator_env(aws_env))
    return cluster


@pytest.fixture(scope="module")
def bound(installed: Cluster) -> Cluster:
    """The samples' binding, applied in the order that works today (see the samples test)."""
    cluster = installed
    if not cluster.exists("namespace", APP_NS):
        cluster.kubectl("create", "namespace", APP_NS)
    if not cluster.exists("serviceaccount", "app", "-n", APP_NS):
        cluster.kubectl("create", "serviceaccount", "app", "-n", APP_NS)
    cluster.kubectl("apply", "-f", str(SAMPLES / "assumedrolepolicy.yaml"))
    cluster.kubectl("apply", "-f", str(SAMPLES / "assumedrole.yaml"))
    return cluster


def test_helm_install_creates_the_chart_objects(installed: Cluster) -> None:
    listing = installed.helm("list", "-n", NAMESPACE, "-o", "json").stdout
    assert '"status":"deployed"' in listing.replace(" ", "")
    for kind in ("deployment", "serviceaccount", "service", "poddisruptionbudget", "role", "rolebinding"):
        assert installed.exists(kind, RELEASE if kind != "role" and kind != "rolebinding" else
                                f"{RELEASE}-leader-election", "-n", NAMESPACE), kind  # fmt: skip
    for kind in (
        "clusterrole",
        "clusterrolebinding",
        "mutatingwebhookconfiguration",
        "validatingwebhookconfiguration",
    ):
        assert installed.exists(kind, RELEASE), kind
    assert installed.exists("crd", "assumedroles.rolecall.dev")
    # helm keeps the release in a Secret it sends as protobuf
    secrets = installed.kubectl("get", "secrets", "-n", NAMESPACE, "-l", "owner=helm", "-o", "name").stdout
    assert f"secret/sh.helm.release.v1.{RELEASE}.v1" in secrets.split()


def test_explain_reads_the_crd_schema(installed: Cluster) -> None:
    out = installed.kubectl("explain", "assumedrole.spec.roleArn").stdout
    assert "KIND:       AssumedRole" in out and "VERSION:    v1alpha1" in out
    assert "FIELD: roleArn <string>" in out
    assert "IAM role" in out
    builtin = installed.kubectl("explain", "pod.spec.serviceAccountName").stdout
    assert "FIELD: serviceAccountName <string>" in builtin


def test_apply_is_validated_by_the_server(installed: Cluster) -> None:
    bad = yaml.safe_dump(
        {
            "apiVersion": "rolecall.dev/v1alpha1",
            "kind": "AssumedRolePolicy",
            "metadata": {"name": "typo"},
            "spec": {"namespaces": ["x"], "roleArns": ["arn:aws:iam::123456789012:role/x"], "maxDuration": 1},
        }
    )
    done = installed.kubectl("apply", "-f", "-", stdin=bad, check=False)
    assert done.returncode != 0
    assert 'unknown field "spec.maxDuration"' in done.stderr


def test_assumed_role_becomes_ready(bound: Cluster) -> None:
    done = bound.kubectl(
        "wait", "--for=condition=Ready", "assumedrole/s3-reader", "-n", APP_NS, "--timeout=60s", timeout=90
    )
    assert "condition met" in done.stdout
    secret = bound.get_json("secret", "s3-reader", "-n", APP_NS)
    assert {"config", "credentials"} <= set(secret["data"])


def _table(text: str) -> tuple[list[str], list[list[str]]]:
    lines = [line for line in text.splitlines() if line.strip()]
    starts = [m.start() for m in re.finditer(r"(?:(?<=\s\s)|^)\S", lines[0])]
    cut = [*starts, 10_000]

    def cells(line: str) -> list[str]:
        return [line[cut[i] : cut[i + 1]].strip() for i in range(len(starts))]

    return cells(lines[0]), [cells(line) for line in lines[1:]]


def test_get_assumedroles_prints_the_crd_columns(bound: Cluster) -> None:
    bound.kubectl("wait", "--for=condition=Ready", "ar/s3-reader", "-n", APP_NS, "--timeout=60s", timeout=90)
    headers, rows = _table(bound.kubectl("get", "ar", "-n", APP_NS).stdout)
    assert headers == ["NAME", "ROLE", "SECRET", "READY", "EXPIRES", "AGE"]
    row = dict(zip(headers, rows[0], strict=True))
    assert row["NAME"] == "s3-reader"
    assert row["ROLE"] == "arn:aws:iam::123456789012:role/team-a-s3-reader"
    assert row["SECRET"] == "s3-reader"
    assert row["READY"] == "True"
    assert re.fullmatch(r"\d+s", row["AGE"]), row
    wide_headers, wide_rows = _table(bound.kubectl("get", "ar", "-n", APP_NS, "-o", "wide").stdout)
    reason = dict(zip(wide_headers, wide_rows[0], strict=True))["REASON"]
    ready = bound.get_json("ar", "s3-reader", "-n", APP_NS)["status"]["conditions"]
    assert reason == next(
        c["reason"] for c in ready if c["type"] == "Ready"
    )  # priority-1 column: -o wide only
    policy_headers, policy_rows = _table(bound.kubectl("get", "assumedrolepolicies").stdout)
    policy = dict(zip(policy_headers, policy_rows[0], strict=True))
    assert policy["NAME"] == "team-a" and policy["MAX-DURATION"] == "43200"


def test_expires_column_reads_right(bound: Cluster, request: pytest.FixtureRequest) -> None:
    crd = bound.get_json("crd", "assumedroles.rolecall.dev")
    columns = {c["name"]: c for v in crd["spec"]["versions"] for c in v.get("additionalPrinterColumns") or []}
    if columns.get("Expires", {}).get("type") == "date":
        request.applymarker(
            pytest.mark.xfail(
                reason="issue 13: the Expires printer column is `type: date` on a future time, which an "
                "API server prints as <invalid>",
                strict=True,
            )
        )
    bound.kubectl("wait", "--for=condition=Ready", "ar/s3-reader", "-n", APP_NS, "--timeout=60s", timeout=90)
    headers, rows = _table(bound.kubectl("get", "ar", "-n", APP_NS).stdout)
    expires = dict(zip(headers, rows[0], strict=True)).get("EXPIRES", "")
    assert expires and expires != "<invalid>", expires


def test_kubectl_run_pod_is_injected(bound: Cluster) -> None:
    bound.kubectl("wait", "--for=condition=Ready", "ar/s3-reader", "-n", APP_NS, "--timeout=60s", timeout=90)
    overrides = '{"apiVersion": "v1", "spec": {"serviceAccountName": "app"}}'
    bound.kubectl("run", "app", "-n", APP_NS, "--image=public.ecr.aws/aws-cli/aws-cli", f"--overrides={overrides}",
                  "--command", "--", "sleep", "3600")  # fmt: skip
    pod = bound.get_json("pod", "app", "-n", APP_NS)
    volumes = {v["name"]: v for v in pod["spec"].get("volumes") or []}
    assert volumes["rolecall-credentials"]["secret"]["secretName"] == "s3-reader"
    names = [c["name"] for c in pod["spec"].get("initContainers", []) + pod["spec"]["containers"]]
    assert "rolecall-sidecar" in names, names
    # an unbound pod is left alone
    bound.kubectl("run", "other", "-n", APP_NS, "--image=busybox", "--command", "--", "sleep", "1")
    other = bound.get_json("pod", "other", "-n", APP_NS)
    assert "rolecall-credentials" not in {v["name"] for v in other["spec"].get("volumes") or []}


def test_helm_upgrade_changes_the_deployment(
    bound: Cluster, webhook_tls: dict[str, str], aws_env: dict[str, str]
) -> None:
    bound.helm(
        "upgrade", RELEASE, CHART, "-n", NAMESPACE, *helm_values(webhook_tls, aws_env), "--set", "workers=4"
    )
    deployment = bound.get_json("deployment", RELEASE, "-n", NAMESPACE)
    assert "--workers=4" in deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert deployment["metadata"]["generation"] == 2
    history = bound.helm("history", RELEASE, "-n", NAMESPACE, "-o", "json").stdout
    assert history.count('"revision"') == 2


def test_helm_uninstall_keeps_crds_bindings_and_secrets(bound: Cluster) -> None:
    bound.kubectl("wait", "--for=condition=Ready", "ar/s3-reader", "-n", APP_NS, "--timeout=60s", timeout=90)
    bound.helm("uninstall", RELEASE, "-n", NAMESPACE, "--wait", "--timeout=60s")
    bound.stop_all()  # the Deployment is gone: its pods stop
    assert not bound.exists("deployment", RELEASE, "-n", NAMESPACE)
    assert not bound.exists("validatingwebhookconfiguration", RELEASE)
    assert bound.exists("crd", "assumedroles.rolecall.dev")
    assert bound.exists("crd", "assumedrolepolicies.rolecall.dev")
    assert bound.exists("assumedrole", "s3-reader", "-n", APP_NS)
    assert bound.exists("secret", "s3-reader", "-n", APP_NS)
    # with the operator gone and its webhooks removed, the binding can still be edited
    bound.kubectl("label", "assumedrole", "s3-reader", "-n", APP_NS, "checked=yes")


def test_samples_apply_cleanly_on_a_fresh_cluster(
    tmp_path_factory: pytest.TempPathFactory,
    webhook_tls: dict[str, str],
    aws_env: dict[str, str],
    request: pytest.FixtureRequest,
) -> None:
    """`kubectl apply -f deploy/samples/` right after `helm install`, in any order."""
    from tests.harness.kubeapi import KubeAPIEmulator

    kinds = {d["kind"] for d in sample_docs()}
    if not {"Namespace", "ServiceAccount"} <= kinds:
        request.applymarker(
            pytest.mark.xfail(
                reason="issue 13: deploy/samples/ creates neither the Namespace nor the ServiceAccount "
                "it binds, and assumedrole.yaml is checked before its policy exists",
                strict=True,
            )
        )
    emulator = KubeAPIEmulator().start()
    fresh = Cluster(emulator, tmp_path_factory.mktemp("fresh"))
    try:
        fresh.kubectl("create", "namespace", NAMESPACE)
        fresh.kubectl("create", "secret", "tls", webhook_tls["secret"], "-n", NAMESPACE,
                      "--cert", webhook_tls["cert"], "--key", webhook_tls["key"])  # fmt: skip
        fresh.helm("install", RELEASE, CHART, "-n", NAMESPACE, *helm_values(webhook_tls, aws_env))
        fresh.run_deployment(NAMESPACE, RELEASE, operator_env(aws_env))
        fresh.kubectl("apply", "-f", str(SAMPLES))
        fresh.kubectl(
            "wait", "--for=condition=Ready", "ar/s3-reader", "-n", APP_NS, "--timeout=60s", timeout=90
        )
    finally:
        fresh.stop_all()
        emulator.stop()
