"""Admission through the API: the emulator calls the operator's webhooks over HTTPS.

The operator self-registers its webhooks (development mode, self-signed TLS), exactly as kopf
does on a kind cluster; creating pods and AssumedRoles through the API then goes through them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import kubernetes.client
import pytest
from kubernetes.client.exceptions import ApiException

from rolecall import constants as c
from rolecall.config import Settings
from tests.harness.k8s import K8s
from tests.harness.operator_fixtures import ROLE_PREFIX
from tests.harness.sts import STSFaultProxy, free_port
from tests.harness.wait import wait_for

ROLE = ROLE_PREFIX + "team-a-s3-reader"


@pytest.fixture
def webhook_operator(start_operator: Any, k8s: K8s) -> Iterator[Any]:
    # The operator's default configuration name: the one the chart lets it patch (RBAC
    # resourceNames); it is deleted at teardown, so tests do not share it.
    name = Settings().webhook_configuration_name
    op = start_operator(
        webhook_enabled=True,
        webhook_host="127.0.0.1",
        webhook_port=free_port(),
        webhook_url_host="127.0.0.1",
    )
    adm = kubernetes.client.AdmissionregistrationV1Api(k8s.api)

    def serving(configs: Any, resource: str) -> bool:
        # kopf creates the configuration first and fills in its webhooks a moment later
        for config in configs.items:
            if config.metadata.name != name:
                continue
            for hook in config.webhooks or []:
                if any(resource in (rule.resources or []) for rule in hook.rules or []):
                    return True
        return False

    wait_for(
        lambda: serving(adm.list_mutating_webhook_configuration(), "pods"),
        timeout=20,
        message="pod webhook never registered",
    )
    wait_for(
        lambda: serving(adm.list_validating_webhook_configuration(), "assumedroles"),
        timeout=20,
        message="AssumedRole webhook never registered",
    )
    yield op
    # the configurations are cluster-wide: remove them so other tests do not call a dead server
    adm.delete_mutating_webhook_configuration(name)
    adm.delete_validating_webhook_configuration(name)


def service_accounts(k8s: K8s, namespace: str, *names: str) -> None:
    for name in names:
        k8s.core.create_namespaced_service_account(namespace, {"metadata": {"name": name}})


def pod(name: str, sa: str = "app", **annotations: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {
            "serviceAccountName": sa,
            "containers": [
                {
                    "name": "app",
                    "image": "python:3.11-slim",
                    "env": [{"name": "AWS_REGION", "value": "eu-west-1"}],
                }
            ],
        },
    }


def test_pod_of_a_bound_service_account_is_stored_injected(
    webhook_operator: Any, k8s: K8s, namespace: str, policy: str, sts: STSFaultProxy
) -> None:
    k8s.create_ar(
        namespace,
        "s3",
        {"roleArn": ROLE, "subjects": [{"kind": "ServiceAccount", "name": "app"}], "region": "us-east-1"},
    )
    service_accounts(k8s, namespace, "app", "someone-else", "intruder")
    wait_for(lambda: webhook_operator.app.index.for_service_account(namespace, "app"), timeout=10)
    stored = k8s.api.sanitize_for_serialization(k8s.core.create_namespaced_pod(namespace, pod("web")))
    spec = stored["spec"]
    sidecars = [ct for ct in spec.get("initContainers") or [] if ct.get("restartPolicy") == "Always"]
    assert len(sidecars) == 1 and sidecars[0]["command"][:2] == ["rolecall", "sidecar"]
    env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
    assert env["AWS_CONTAINER_CREDENTIALS_FULL_URI"] == f"http://127.0.0.1:{c.SIDECAR_PORT}/v1/credentials"
    assert env["AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"] == f"{c.DEFAULT_MOUNT_PATH}/token"
    assert env["AWS_REGION"] == "eu-west-1", "an env var the container sets is never overwritten"
    assert any(v.get("secret", {}).get("secretName") == "s3" for v in spec["volumes"])
    assert stored["metadata"]["annotations"][c.ANN_POD_INJECTED] == "sidecar"
    # a pod of another ServiceAccount is left alone
    other = k8s.api.sanitize_for_serialization(
        k8s.core.create_namespaced_pod(namespace, pod("other", sa="someone-else"))
    )
    assert not other["spec"].get("initContainers") and c.ANN_POD_INJECTED not in (
        other["metadata"].get("annotations") or {}
    )
    # a pod annotated for a binding whose subjects do not include its ServiceAccount is refused the credentials
    sneaky = k8s.api.sanitize_for_serialization(
        k8s.core.create_namespaced_pod(
            namespace, pod("sneaky", sa="intruder", **{c.ANN_POD_ASSUMED_ROLE: "s3"})
        )
    )
    assert not sneaky["spec"].get("initContainers")


def test_unadmitted_assumed_role_is_rejected_at_apply_time(
    webhook_operator: Any, k8s: K8s, namespace: str, sts: STSFaultProxy
) -> None:
    with pytest.raises(ApiException) as info:
        k8s.create_ar(namespace, "denied", {"roleArn": ROLE_PREFIX + "admin"})
    assert info.value.status == 422
    assert f"namespace '{namespace}' is not permitted to assume role '{ROLE_PREFIX}admin'" in info.value.body
    assert k8s.get_ar(namespace, "denied") is None
    assert sts.requests(action="AssumeRole") == []


def test_a_policy_the_watch_has_not_delivered_yet_is_honoured(
    webhook_operator: Any, k8s: K8s, namespace: str, policy: str
) -> None:
    """`kubectl apply -f dir/` creates the policy and the binding milliseconds apart: the
    webhook must not refuse the binding because its watch has not delivered the policy yet."""
    wait_for(lambda: webhook_operator.call(lambda: policy in webhook_operator.app.cache.policies), timeout=10)
    webhook_operator.call(lambda: webhook_operator.app.cache.policies.clear())  # the watch lags
    created = k8s.create_ar(namespace, "fresh", {"roleArn": ROLE})
    assert created["metadata"]["name"] == "fresh"
    assert webhook_operator.call(lambda: policy in webhook_operator.app.cache.policies)


def test_invalid_spec_is_rejected_with_the_field_named(
    webhook_operator: Any, k8s: K8s, namespace: str, policy: str
) -> None:
    with pytest.raises(ApiException) as info:
        k8s.create_ar(namespace, "bad", {"roleArn": ROLE, "sessionPolicy": "{nope"})
    assert "spec.sessionPolicy: invalid value '{nope': must be a JSON IAM policy document" in info.value.body


def test_pods_started_while_the_webhook_was_down_are_reported(
    k8s: K8s, namespace: str, policy: str, start_operator: Any, sts: STSFaultProxy
) -> None:
    # no webhook registered: the pod starts without credentials, as with failurePolicy Ignore
    service_accounts(k8s, namespace, "app")
    k8s.core.create_namespaced_pod(namespace, pod("missed"))
    k8s.core.create_namespaced_pod(namespace, pod("opted-out", **{c.ANN_POD_INJECT: "false"}))
    start_operator()
    k8s.create_ar(namespace, "s3", {"roleArn": ROLE, "subjects": [{"kind": "ServiceAccount", "name": "app"}]})
    body = wait_for(
        lambda: (b := k8s.get_ar(namespace, "s3")) and (b.get("status") or {}).get("uninjectedPods") and b,
        timeout=10,
    )
    assert body["status"]["uninjectedPods"] == 1
    events = [e for e in k8s.events(namespace) if e.get("reason") == "PodsNotInjected"]
    assert len(events) == 1 and "missed" in events[0]["message"] and "opted-out" not in events[0]["message"]
