"""The default install's webhook TLS, through the API: no cert-manager, no certificate given.

The test creates the webhook configurations as the Helm chart does (no caBundle,
``failurePolicy: Ignore``, the wanted policy in an annotation); two replicas start together,
agree on one CA kept in a Secret, fill in the caBundle, and the emulator then calls them over
HTTPS, verifying their certificate with that caBundle like an API server. A rotation (the fake
clock moved by most of a year) changes the serving certificate without a failed review.
"""

from __future__ import annotations

import base64
import datetime
import ssl
import threading
import time
from collections.abc import Iterator
from typing import Any

import kubernetes.client
import pytest
from kubernetes.client.exceptions import ApiException

from rolecall import tls, webhookcerts
from rolecall.clock import FakeClock
from tests.harness.k8s import K8s
from tests.harness.operator import LogCapture
from tests.harness.operator_fixtures import ROLE_PREFIX
from tests.harness.sts import free_port
from tests.harness.wait import wait_for

DAY = 86400.0


def chart_like_configurations(adm: Any, name: str, namespace: str, port: int) -> None:
    """What templates/webhooks.yaml renders by default, pointed at a local port."""
    selector = {
        "matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In", "values": [namespace]}]
    }
    common = {
        "admissionReviewVersions": ["v1"],
        "sideEffects": "None",
        "timeoutSeconds": 5,
        "failurePolicy": "Ignore",
        "namespaceSelector": selector,
    }
    meta = {"name": name, "annotations": {webhookcerts.ANN_FAILURE_POLICY: "Fail"}}
    adm.create_validating_webhook_configuration(
        {
            "metadata": meta,
            "webhooks": [
                {
                    **common,
                    "name": "validate-assumedroles.rolecall.dev",
                    "clientConfig": {"url": f"https://127.0.0.1:{port}/validate-assumedroles"},
                    "rules": [
                        {
                            "apiGroups": ["rolecall.dev"],
                            "apiVersions": ["v1alpha1"],
                            "resources": ["assumedroles"],
                            "operations": ["CREATE", "UPDATE"],
                        }
                    ],
                }
            ],
        }
    )
    adm.create_mutating_webhook_configuration(
        {
            "metadata": meta,
            "webhooks": [
                {
                    **common,
                    "name": "mutate-pods.rolecall.dev",
                    "clientConfig": {"url": f"https://127.0.0.1:{port}/mutate-pods"},
                    "rules": [
                        {
                            "apiGroups": [""],
                            "apiVersions": ["v1"],
                            "resources": ["pods"],
                            "operations": ["CREATE"],
                        }
                    ],
                }
            ],
        }
    )


@pytest.fixture
def setup(k8s: K8s, namespace: str) -> Iterator[tuple[str, int, Any]]:
    port = free_port()
    name = "rolecall"  # the chart's Service and webhook configurations (rbac.yaml resourceNames)
    adm = kubernetes.client.AdmissionregistrationV1Api(k8s.api)
    chart_like_configurations(adm, name, namespace, port)
    yield name, port, adm
    adm.delete_mutating_webhook_configuration(name)
    adm.delete_validating_webhook_configuration(name)


def served_certificate(port: int) -> bytes:
    return ssl.get_server_certificate(("127.0.0.1", port)).encode()


def denied(k8s: K8s, namespace: str, name: str) -> ApiException:
    with pytest.raises(ApiException) as info:
        k8s.create_ar(namespace, name, {"roleArn": ROLE_PREFIX + "admin"})
    return info.value


def test_replicas_issue_one_ca_publish_it_and_rotate_without_a_gap(
    start_operator: Any,
    k8s: K8s,
    namespace: str,
    setup: tuple[str, int, Any],
    clock: FakeClock,
    log_capture: LogCapture,
) -> None:
    name, port, adm = setup
    # the operators' time starts 250 days ago, so that moving it on to now renews the serving
    # certificate while the emulator's TLS (real time) still accepts every certificate issued
    clock.set(clock.now() - datetime.timedelta(days=250))
    # before any replica serves, the webhook does not block writes (failurePolicy Ignore)
    k8s.create_ar(namespace, "before", {"roleArn": ROLE_PREFIX + "admin"})

    common = {
        "webhook_enabled": True,
        "webhook_host": "127.0.0.1",
        "webhook_service": f"{namespace}/{name}",
        "ha": "lease",
    }
    started: list[Any] = []
    began = time.monotonic()
    threads = [
        threading.Thread(target=lambda p=p: started.append(start_operator(webhook_port=p, **common)))
        for p in (port, free_port())
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(started) == 2

    def published() -> bytes | None:
        hook = adm.read_validating_webhook_configuration(name).webhooks[0]
        if hook.failure_policy != "Fail" or not hook.client_config.ca_bundle:
            return None
        return base64.b64decode(hook.client_config.ca_bundle)

    bundle = wait_for(published, timeout=20, message="caBundle never published with failurePolicy Fail")
    assert time.monotonic() - began < 20, "a fresh install serves its webhooks within seconds"
    mutating = adm.read_mutating_webhook_configuration(name).webhooks[0]
    assert mutating.failure_policy == "Fail" and base64.b64decode(mutating.client_config.ca_bundle) == bundle

    secret = k8s.core.read_namespaced_secret(f"{name}-webhook-tls", namespace)
    cert = base64.b64decode(secret.data["tls.crt"])
    assert base64.b64decode(secret.data["ca.crt"]) == bundle
    assert [op.app.webhook_certs._loaded for op in started] == [cert, cert], "one CA, one certificate"
    assert tls.verifies(bundle, served_certificate(port)), "Fail only once a replica answers"

    # the API server (the emulator) verifies the served certificate with the caBundle
    refused = denied(k8s, namespace, "after")
    assert refused.status == 422 and "is not permitted to assume role" in refused.body
    # a denial is an answer, not an operator error
    lines = [ln for ln in log_capture.lines if "is not permitted to assume role" in ln]
    assert lines and all(ln.startswith("INFO ") for ln in lines), lines

    # most of a year later every replica serves a renewed certificate of the same CA
    clock.advance(250 * DAY - 60)
    renewed = wait_for(
        lambda: (
            (s := k8s.core.read_namespaced_secret(f"{name}-webhook-tls", namespace).data["tls.crt"])
            and base64.b64decode(s) != cert
            and base64.b64decode(s)
        ),
        timeout=20,
        message="serving certificate never renewed",
    )
    wait_for(lambda: served_certificate(port) == tls.first(renewed), timeout=20, message="never reloaded")
    wait_for(lambda: all(op.app.webhook_certs._loaded == renewed for op in started), timeout=20)
    assert published() == bundle, "same CA: the caBundle does not change"
    again = denied(k8s, namespace, "renewed")
    assert again.status == 422, again.body
