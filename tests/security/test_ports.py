"""Attack: the operator's ports as an oracle. Anyone who reaches the webhook port could learn
other namespaces' Secret names and which roles they may bind; ``/metrics`` listed every binding
next to the health probe.

Defence: the webhook answers only well-formed AdmissionReviews (a bare 400 otherwise, no
exception text) and can require the API server's client certificate; ``/metrics`` has its own
port (closable, NetworkPolicy-restricted in the chart) and optional TokenReview +
SubjectAccessReview authentication; ``/healthz`` says only whether the process works.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from typing import Any

import pytest

from tests.harness.k8s import K8s
from tests.harness.operator_fixtures import ROLE_PREFIX
from tests.harness.sts import free_port
from tests.harness.wait import wait_for

ROLE = ROLE_PREFIX + "team-a-s3-reader"


def post(port: int, body: bytes) -> tuple[int, str] | None:
    """The answer, or None while the server is not listening yet."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    request = urllib.request.Request(
        f"https://127.0.0.1:{port}/mutate-pods", data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode()
    except urllib.error.URLError:
        return None


def get(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
        return str(answer.read().decode())


def review(namespace: str, **overrides: Any) -> dict[str, Any]:
    request = {
        "uid": "0f0f",
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "namespace": namespace,
        "operation": "CREATE",
        "userInfo": {"username": "someone"},
        "object": {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "p", "namespace": namespace},
            "spec": {"serviceAccountName": "app", "containers": [{"name": "c", "image": "x"}]},
        },
    }
    request.update(overrides)
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"{not json", id="not JSON"),
        pytest.param(b'{"request": {}}', id="JSON but no AdmissionReview"),
        pytest.param(json.dumps({"apiVersion": "v1", "kind": "List"}).encode(), id="another kind"),
        pytest.param(
            json.dumps(review("x", resource={"group": "", "version": "v1", "resource": "secrets"})).encode(),
            id="a resource rolecall does not serve",
        ),
        pytest.param(json.dumps(review("x", uid="")).encode(), id="no request uid"),
    ],
)
def test_the_webhook_answers_only_admission_reviews(
    start_operator: Any, k8s: K8s, namespace: str, policy: str, body: bytes
) -> None:
    port = free_port()
    start_operator(webhook_enabled=True, webhook_host="127.0.0.1", webhook_port=port)
    status, text = wait_for(lambda: post(port, body), timeout=10)
    assert status == 400
    assert text == "not an AdmissionReview\n", "the answer must reveal nothing (no exception text)"


def test_a_well_formed_review_is_still_served(
    start_operator: Any, k8s: K8s, namespace: str, policy: str
) -> None:
    port = free_port()
    start_operator(webhook_enabled=True, webhook_host="127.0.0.1", webhook_port=port)
    status, text = wait_for(lambda: post(port, json.dumps(review(namespace)).encode()), timeout=10)
    assert status == 200
    assert json.loads(text)["response"]["uid"] == "0f0f"


def test_metrics_are_apart_from_health_and_health_reveals_no_binding(
    start_operator: Any, k8s: K8s, namespace: str, policy: str
) -> None:
    op = start_operator()
    k8s.create_ar(namespace, "secret-project", {"roleArn": ROLE})
    wait_for(
        lambda: (cond := k8s.condition(namespace, "secret-project")) and cond["status"] == "True", timeout=10
    )
    assert op.app.metrics_port != op.app.health_port
    health = (
        urllib.request.urlopen(f"http://127.0.0.1:{op.app.health_port}/healthz", timeout=5).read().decode()
    )
    assert "secret-project" not in health and namespace not in health
    with pytest.raises(urllib.error.HTTPError) as missing:
        get(op.app.health_port, "/metrics")
    assert missing.value.code == 404
    missing.value.close()
    metrics = (
        urllib.request.urlopen(f"http://127.0.0.1:{op.app.metrics_port}/metrics", timeout=5).read().decode()
    )
    assert "secret-project" in metrics  # the metrics port is the one that must be closed off


def test_metrics_can_be_closed(start_operator: Any, namespace: str, policy: str) -> None:
    op = start_operator(metrics_port=-1)
    assert op.app.metrics_port is None


def metrics_status(port: int, token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        with exc:
            return int(exc.code)


def test_metrics_auth_admits_only_tokens_allowed_to_get_metrics(
    start_operator: Any, k8s: K8s, namespace: str, policy: str
) -> None:
    """As controller-runtime's secure serving: TokenReview says who, SubjectAccessReview
    whether they may `get` the non-resource URL /metrics (the chart's metrics-reader role)."""
    import kubernetes.client

    op = start_operator(metrics_auth=True)
    port = op.app.metrics_port
    rbac = kubernetes.client.RbacAuthorizationV1Api(k8s.api)

    def token_for(name: str) -> str:
        k8s.core.create_namespaced_service_account(namespace, {"metadata": {"name": name}})
        answer = k8s.core.create_namespaced_service_account_token(name, namespace, {"spec": {}})
        return str(answer.status.token)

    reader, stranger = token_for("prometheus"), token_for("stranger")
    role = f"metrics-reader-{namespace}"
    rbac.create_cluster_role(
        {"metadata": {"name": role}, "rules": [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]}
    )
    rbac.create_cluster_role_binding(
        {
            "metadata": {"name": role},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": "prometheus", "namespace": namespace}],
        }
    )
    try:
        assert metrics_status(port, None) == 401
        assert metrics_status(port, "not-a-token") == 403
        assert metrics_status(port, stranger) == 403
        assert metrics_status(port, reader) == 200
    finally:
        rbac.delete_cluster_role_binding(role)
        rbac.delete_cluster_role(role)
