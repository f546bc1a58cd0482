"""Fixtures that run the real operator against the emulator and the local STS.

- ``crds`` (session): the CRDs from deploy/crds applied to the emulator.
- ``clock``: a FakeClock the test moves; the operator schedules by it.
- ``k8s``: test-side API helpers (:class:`tests.harness.k8s.K8s`).
- ``policy``: an AssumedRolePolicy admitting this test's namespace for team roles.
- ``start_operator(**settings)``: starts an operator watching this test's namespace;
  every operator started is stopped at teardown, and its logs, the namespace's events and
  the AssumedRoles' status are scanned for secret material (access keys, tokens).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rolecall.clock import FakeClock
from rolecall.config import Settings
from tests.harness.k8s import K8s
from tests.harness.operator import LogCapture, OperatorThread

ROOT = Path(__file__).resolve().parents[2]
ACCOUNT = "123456789012"
ROLE_PREFIX = f"arn:aws:iam::{ACCOUNT}:role/"


@pytest.fixture(scope="session")
def crds(kube_api: Any) -> None:
    from tests.harness.kube_fixtures import apply_crds

    apply_crds(kube_api, ROOT / "deploy" / "crds")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def k8s(kube_api: Any, crds: None) -> K8s:
    return K8s(kube_api)


@pytest.fixture
def policy(k8s: K8s, namespace: str) -> Iterator[str]:
    name = f"p-{namespace}"
    k8s.create_policy(
        name, {"namespaces": [namespace], "roleArns": [ROLE_PREFIX + "team-*"], "maxDurationSeconds": 43200}
    )
    yield name
    k8s.delete_policy(name)


@pytest.fixture
def log_capture() -> Iterator[LogCapture]:
    handler = LogCapture()
    root = logging.getLogger()
    old_level = root.level
    root.setLevel(logging.DEBUG)
    root.addHandler(handler)
    yield handler
    root.removeHandler(handler)
    root.setLevel(old_level)


def secret_material(k8s: K8s, namespace: str) -> set[str]:
    """Every secret value rolecall wrote in the namespace (keys, tokens, sidecar token)."""
    found: set[str] = set()
    for item in k8s.core.list_namespaced_secret(
        namespace, label_selector="app.kubernetes.io/managed-by=rolecall"
    ).items:
        data = k8s.secret_data(namespace, item.metadata.name) or {}
        for key in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "token"):
            if data.get(key):
                found.add(data[key])
    return found


def assert_no_secrets_leaked(k8s: K8s, namespace: str, logs: str, extra: set[str] = frozenset()) -> None:  # type: ignore[assignment]
    material = secret_material(k8s, namespace) | set(extra)
    events = "\n".join(str(e) for e in k8s.events(namespace))
    statuses = "\n".join(
        str(ar.get("status"))
        for ar in k8s.custom.list_namespaced_custom_object(
            "rolecall.dev", "v1alpha1", namespace, "assumedroles"
        )["items"]
    )
    for value in material:
        assert value not in logs, "a secret value appeared in the operator's logs"
        assert value not in events, "a secret value appeared in an event"
        assert value not in statuses, "a secret value appeared in an AssumedRole status"


@pytest.fixture
def start_operator(
    crds: None,
    sts: Any,
    kubeconfig_path: Any,
    namespace: str,
    clock: FakeClock,
    k8s: K8s,
    log_capture: LogCapture,
) -> Iterator[Callable[..., OperatorThread]]:
    started: list[OperatorThread] = []

    def start(**overrides: Any) -> OperatorThread:
        settings = Settings(
            namespaces=(namespace,),
            kubeconfig=str(kubeconfig_path),
            ha="none",
            health_host="127.0.0.1",
            health_port=0,
            metrics_host="127.0.0.1",
            metrics_port=0,
            sts_rate=100.0,
            sts_burst=100,
            workers=4,
            identity=f"test-{uuid.uuid4().hex[:6]}",
        )
        for key, value in overrides.items():
            setattr(settings, key, value)
        op = OperatorThread(settings, clock=overrides.pop("clock", clock)).start()
        started.append(op)
        return op

    yield start
    errors = []
    for op in started:
        try:
            op.stop()
        except AssertionError as exc:
            errors.append(exc)
    assert_no_secrets_leaked(k8s, namespace, log_capture.text())
    assert not errors, errors
