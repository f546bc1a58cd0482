"""The README's path with Helm: install, bind a role, see it Ready, get a pod injected, upgrade,
uninstall — every step a real ``helm`` or ``kubectl`` command, as a user types it.

Tests run in file order on one cluster (one emulator for the module): each step starts from
where the previous one left the cluster, as a user's session does.
"""

from __future__ import annotations

import base64
import re
import subprocess
import sys
import urllib.request

import pytest
import yaml

from rolecall import tls
from tests.harness.kubeapi import KubeAPIEmulator
from tests.harness.sts import STSFaultProxy
from tests.harness.tools import REPO

from .conftest import NAMESPACE, RELEASE, Cluster

CHART = str(REPO / "deploy" / "helm" / "rolecall")
SAMPLES = REPO / "deploy" / "samples"
APP_NS = "team-a"
KEYS_SECRET = "rolecall-aws-keys"


def install_args(aws_env: dict[str, str]) -> list[str]:
    """The chart's defaults (the operator's own webhook certificate, two replicas), with the
    operator's static keys from a Secret (clusters outside AWS) and the local STS."""
    return [
        "--set", f"aws.credentials.existingSecret={KEYS_SECRET}",
        "--set", f"aws.stsEndpointUrl={aws_env['AWS_ENDPOINT_URL_STS']}",
    ]  # fmt: skip


def install(cluster: Cluster, aws_env: dict[str, str]) -> None:
    """docs/install.md, "Install with Helm", static keys: then the kubelet runs the pods."""
    cluster.kubectl("create", "namespace", NAMESPACE)
    cluster.kubectl(
        "-n", NAMESPACE, "create", "secret", "generic", KEYS_SECRET,
        f"--from-literal=AWS_ACCESS_KEY_ID={aws_env['AWS_ACCESS_KEY_ID']}",
        f"--from-literal=AWS_SECRET_ACCESS_KEY={aws_env['AWS_SECRET_ACCESS_KEY']}",
    )  # fmt: skip
    cluster.helm("install", RELEASE, CHART, "-n", NAMESPACE, *install_args(aws_env))
    # the node gives nothing but the network: the identity comes from the Secret
    cluster.run_deployment(NAMESPACE, RELEASE, {"AWS_EC2_METADATA_DISABLED": "true"})
    cluster.webhooks_serving()


@pytest.fixture(scope="module")
def installed(cluster: Cluster, aws_env: dict[str, str]) -> Cluster:
    install(cluster, aws_env)
    return cluster


@pytest.fixture(scope="module")
def bound(installed: Cluster) -> Cluster:
    """`kubectl apply -f deploy/samples/` in one go, with the validating webhook on (Fail)."""
    done = installed.kubectl("apply", "-f", str(SAMPLES))
    assert "assumedrole.rolecall.dev/s3-reader created" in done.stdout, done.stdout
    return installed


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
    # no cert-manager in this cluster, and none needed
    assert "certificates.cert-manager.io" not in installed.kubectl("api-resources", "-o", "name").stdout
    # helm keeps the release in a Secret it sends as protobuf
    secrets = installed.kubectl("get", "secrets", "-n", NAMESPACE, "-l", "owner=helm", "-o", "name").stdout
    assert f"secret/sh.helm.release.v1.{RELEASE}.v1" in secrets.split()


def test_the_operator_runs_as_installed(installed: Cluster) -> None:
    """docs/install.md, "Verify the install": two replicas Ready, their logs, one leader."""
    done = installed.kubectl("-n", NAMESPACE, "rollout", "status", f"deployment/{RELEASE}", "--timeout=60s")
    assert "successfully rolled out" in done.stdout, done.stdout
    pods = installed.get_json("pods", "-n", NAMESPACE, "-l", f"app.kubernetes.io/name={RELEASE}")["items"]
    assert len(pods) == 2 and all(p["status"]["phase"] == "Running" for p in pods), pods
    logs = installed.kubectl("-n", NAMESPACE, "logs", f"deployment/{RELEASE}").stdout
    assert logs.strip(), "kubectl logs shows the operator's output"
    # /metrics names every binding: with the chart's defaults (metrics.auth) it answers only a
    # bearer token allowed to get /metrics — the API server's service proxy carries none
    proxied = installed.kubectl(
        "get",
        "--raw",
        f"/api/v1/namespaces/{NAMESPACE}/services/http:{RELEASE}:http-metrics/proxy/metrics",
        check=False,
    )
    assert proxied.returncode != 0 and "# TYPE" not in proxied.stdout, proxied.stdout[:500]
    # what Prometheus does: its ServiceAccount bound to the chart's metrics-reader ClusterRole
    installed.kubectl("-n", NAMESPACE, "create", "serviceaccount", "prometheus")
    installed.kubectl(
        "create",
        "clusterrolebinding",
        "prometheus-rolecall-metrics",
        f"--clusterrole={RELEASE}-metrics-reader",
        f"--serviceaccount={NAMESPACE}:prometheus",
    )
    token = installed.kubectl("-n", NAMESPACE, "create", "token", "prometheus").stdout.strip()
    runner = installed.runners[-1]
    port = runner.pods[0].ports["metrics"]
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert "# TYPE" in answer.read().decode()
    lease = installed.get_json("lease", f"{RELEASE}-leader", "-n", NAMESPACE)
    assert lease["spec"]["holderIdentity"] in {p["metadata"]["name"] for p in pods}


def test_the_operator_issues_its_webhook_certificate(installed: Cluster) -> None:
    """Default values: no cert-manager, no certificate given. The operator's CA is in the
    Secret and in caBundle, and the API server (TLS checked against the Service's name) calls
    the webhook through the Service."""
    secret = installed.get_json("secret", f"{RELEASE}-webhook-tls", "-n", NAMESPACE)
    ca = base64.b64decode(secret["data"]["ca.crt"])
    cert = base64.b64decode(secret["data"]["tls.crt"])
    assert tls.verifies(ca, cert)
    for kind, policy in (
        ("validatingwebhookconfiguration", "Fail"),
        ("mutatingwebhookconfiguration", "Ignore"),
    ):
        hook = installed.get_json(kind, RELEASE)["webhooks"][0]
        assert base64.b64decode(hook["clientConfig"]["caBundle"]) == ca, kind
        assert hook["failurePolicy"] == policy, kind
    # the validating webhook answers through the Service: a binding no policy admits is refused
    denied = yaml.safe_dump(
        {
            "apiVersion": "rolecall.dev/v1alpha1",
            "kind": "AssumedRole",
            "metadata": {"name": "not-admitted", "namespace": "default"},
            "spec": {
                "roleArn": "arn:aws:iam::123456789012:role/other",
                "subjects": [{"kind": "ServiceAccount", "name": "default"}],
            },
        }
    )
    done = installed.kubectl("apply", "-f", "-", stdin=denied, check=False)
    assert done.returncode != 0
    assert 'admission webhook "validate-assumedroles.rolecall.dev" denied the request' in done.stderr, (
        done.stderr
    )


def test_rolecall_doctor_finds_nothing_wrong(installed: Cluster) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "rolecall.cli", "doctor"],
        env=installed.env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[fail" not in done.stdout and "answers at service rolecall-system/rolecall" in done.stdout, (
        done.stdout
    )


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


def test_expires_column_reads_right(bound: Cluster) -> None:
    bound.kubectl("wait", "--for=condition=Ready", "ar/s3-reader", "-n", APP_NS, "--timeout=60s", timeout=90)
    headers, rows = _table(bound.kubectl("get", "ar", "-n", APP_NS).stdout)
    expires = dict(zip(headers, rows[0], strict=True))["EXPIRES"]
    status = bound.get_json("ar", "s3-reader", "-n", APP_NS)["status"]
    assert expires == status["expiration"], (expires, status)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", expires), expires


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


def test_helm_upgrade_rolls_the_operator(bound: Cluster) -> None:
    """docs/install.md, "Upgrade": --reuse-values keeps the install's values; the Deployment
    rolls, the webhooks are back to their failurePolicy, and the new replicas call no STS for
    credentials that are still valid."""
    before = bound.get_json("secret", "s3-reader", "-n", APP_NS)["metadata"]["annotations"]
    bound.helm("upgrade", RELEASE, CHART, "-n", NAMESPACE, "--reuse-values", "--set", "workers=4")
    deployment = bound.get_json("deployment", RELEASE, "-n", NAMESPACE)
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--workers=4" in args and f"--operator-keys-secret={NAMESPACE}/{KEYS_SECRET}" in args
    assert deployment["metadata"]["generation"] == 2
    bound.kubectl("-n", NAMESPACE, "rollout", "status", f"deployment/{RELEASE}", "--timeout=90s", timeout=120)
    bound.webhooks_serving()
    history = bound.helm("history", RELEASE, "-n", NAMESPACE, "-o", "json").stdout
    assert history.count('"revision"') == 2
    after = bound.get_json("secret", "s3-reader", "-n", APP_NS)["metadata"]["annotations"]
    assert after["rolecall.dev/issued-at"] == before["rolecall.dev/issued-at"], "no new STS call"


def test_helm_uninstall_keeps_crds_bindings_and_secrets(bound: Cluster) -> None:
    bound.kubectl("wait", "--for=condition=Ready", "ar/s3-reader", "-n", APP_NS, "--timeout=60s", timeout=90)
    bound.helm("uninstall", RELEASE, "-n", NAMESPACE, "--wait", "--timeout=60s")
    assert not bound.exists("deployment", RELEASE, "-n", NAMESPACE)
    # the Deployment is gone: its pods stop (the kubelet stand-in)
    bound.kubectl("-n", NAMESPACE, "wait", "--for=delete", "pods", "--all", "--timeout=60s", timeout=90)
    assert not bound.exists("validatingwebhookconfiguration", RELEASE)
    assert not bound.exists("mutatingwebhookconfiguration", RELEASE)
    assert bound.exists("crd", "assumedroles.rolecall.dev")
    assert bound.exists("crd", "assumedrolepolicies.rolecall.dev")
    assert bound.exists("assumedrole", "s3-reader", "-n", APP_NS)
    assert bound.exists("secret", "s3-reader", "-n", APP_NS)
    # with the operator gone and its webhooks removed, the binding can still be edited
    bound.kubectl("label", "assumedrole", "s3-reader", "-n", APP_NS, "checked=yes")


def test_reinstall_resumes_without_new_sts_calls(
    bound: Cluster, aws_env: dict[str, str], sts_proxy: STSFaultProxy
) -> None:
    """After `helm uninstall` (CRDs, bindings and Secrets kept), `helm install` again: the
    operator takes the bindings back and calls STS for none that is still valid."""
    before = len(sts_proxy.requests("AssumeRole"))
    bound.helm("install", RELEASE, CHART, "-n", NAMESPACE, *install_args(aws_env))
    bound.run_deployment(NAMESPACE, RELEASE, {"AWS_EC2_METADATA_DISABLED": "true"})
    bound.webhooks_serving()
    bound.kubectl("wait", "--for=condition=Ready", "ar/s3-reader", "-n", APP_NS, "--timeout=60s", timeout=90)
    assert len(sts_proxy.requests("AssumeRole")) == before


def test_samples_apply_cleanly_on_a_fresh_cluster(
    tmp_path_factory: pytest.TempPathFactory, aws_env: dict[str, str]
) -> None:
    """`kubectl apply -f deploy/samples/` in one go, right after the install, with the
    validating webhook on: every object, and the binding Ready."""
    emulator = KubeAPIEmulator().start()
    fresh = Cluster(emulator, tmp_path_factory.mktemp("fresh"))
    try:
        install(fresh, aws_env)
        done = fresh.kubectl("apply", "-f", str(SAMPLES))
        for created in ("namespace/team-a", "serviceaccount/app", "assumedrolepolicy.rolecall.dev/team-a",
                        "assumedrole.rolecall.dev/s3-reader", "pod/whoami"):  # fmt: skip
            assert f"{created} created" in done.stdout, done.stdout
        fresh.kubectl(
            "wait", "--for=condition=Ready", "ar/s3-reader", "-n", APP_NS, "--timeout=60s", timeout=90
        )
    finally:
        fresh.stop_all()
        emulator.stop()
