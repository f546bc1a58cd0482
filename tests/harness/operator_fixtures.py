"""Fixtures that run the real operator against the emulator and the local STS.

- ``crds`` (session): the CRDs from deploy/crds applied to the emulator.
- ``clock``: a FakeClock the test moves; the operator schedules by it.
- ``k8s``: test-side API helpers (:class:`tests.harness.k8s.K8s`).
- ``policy``: an AssumedRolePolicy admitting this test's namespace for team roles.
- ``operator_identity`` (session): the chart's RBAC (``helm template`` of deploy/helm/rolecall,
  release ``rolecall`` in ``rolecall-system``: ServiceAccount, ClusterRoles, Role, bindings)
  applied to the emulator, and a kubeconfig with a token of the chart's ServiceAccount.
- ``operator_kubeconfig``: that kubeconfig, for one test; at teardown every request of the
  operator's ServiceAccount that RBAC refused (403) fails the test — the operator runs with
  exactly the permissions the chart grants it, never as an admin.
- ``start_operator(**settings)``: starts an operator watching this test's namespace, logged in
  as the chart's ServiceAccount; every operator started is stopped at teardown, and its logs,
  the namespace's events and the AssumedRoles' status are scanned for secret material.

Test set-up (namespaces, AssumedRoles, policies) uses the admin login (``kube_api``, ``k8s``).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from rolecall.clock import FakeClock
from rolecall.config import Settings
from tests.harness.k8s import K8s
from tests.harness.kube_fixtures import apply_objects, kubeconfig_with_credentials, request_token
from tests.harness.kubeapi import KubeAPIEmulator
from tests.harness.operator import LogCapture, OperatorThread
from tests.harness.tools import ensure_helm

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "rolecall"
ACCOUNT = "123456789012"
ROLE_PREFIX = f"arn:aws:iam::{ACCOUNT}:role/"
RELEASE = "rolecall"
RELEASE_NAMESPACE = "rolecall-system"
RBAC_TEMPLATES = ("templates/serviceaccount.yaml", "templates/rbac.yaml")


@functools.cache
def chart_rbac(release: str = RELEASE, namespace: str = RELEASE_NAMESPACE) -> tuple[dict[str, Any], ...]:
    """The ServiceAccount and RBAC objects the chart installs (default values)."""
    show = [arg for template in RBAC_TEMPLATES for arg in ("--show-only", template)]
    done = subprocess.run(
        [str(ensure_helm()), "template", release, str(CHART), "--namespace", namespace, *show],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise AssertionError(f"helm template failed ({done.returncode}):\n{done.stderr}")
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc)


@dataclasses.dataclass(frozen=True)
class OperatorIdentity:
    """Who the operator is in the tests: the chart's ServiceAccount, with the chart's rules."""

    namespace: str  # the release namespace: the ServiceAccount and the leader Lease live here
    service_account: str
    lease_name: str
    kubeconfig: Path

    @property
    def username(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.service_account}"


def install_operator_identity(api: Any, kubeconfig: Path, directory: Path) -> OperatorIdentity:
    """Apply the chart's RBAC through the API (as the admin) and log in as its ServiceAccount."""
    import kubernetes

    try:
        kubernetes.client.CoreV1Api(api).create_namespace({"metadata": {"name": RELEASE_NAMESPACE}})
    except kubernetes.client.ApiException as e:
        if e.status != 409:
            raise
    docs = chart_rbac()
    apply_objects(api, docs)
    account = next(d for d in docs if d["kind"] == "ServiceAccount")["metadata"]["name"]
    lease_role = next(d for d in docs if d["kind"] == "Role")
    [lease_name] = {n for rule in lease_role["rules"] for n in rule.get("resourceNames") or []}
    username = f"system:serviceaccount:{RELEASE_NAMESPACE}:{account}"
    # A day-long token: the session's tests must not outlive it.
    token = request_token(api, RELEASE_NAMESPACE, account, seconds=86400)
    path = kubeconfig_with_credentials(
        kubeconfig, directory / "operator.kubeconfig", username, {"token": token}
    )
    return OperatorIdentity(RELEASE_NAMESPACE, account, lease_name, path)


def assert_no_denials(emulator: KubeAPIEmulator, username: str, since: int) -> None:
    """Fail when RBAC refused any request of ``username`` (the cursor ``since`` from
    ``emulator.denial_count()``): the chart lacks a rule the operator needs."""
    refused = [d for d in emulator.denials(since) if d.user == username]
    if refused:
        lines = "\n".join(f"  {d.method} {d.path}: {d.message}" for d in refused[:20])
        raise AssertionError(
            f"RBAC refused {len(refused)} request(s) of the operator ({username}); "
            f"deploy/helm/rolecall/templates/rbac.yaml lacks a rule:\n{lines}"
        )


@pytest.fixture(scope="session")
def operator_identity(
    kube_api: Any, kubeconfig_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> OperatorIdentity:
    return install_operator_identity(kube_api, kubeconfig_path, tmp_path_factory.mktemp("operator"))


@pytest.fixture
def operator_kubeconfig(
    operator_identity: OperatorIdentity, kube_emulator: KubeAPIEmulator
) -> Iterator[Path]:
    since = kube_emulator.denial_count()
    yield operator_identity.kubeconfig
    assert_no_denials(kube_emulator, operator_identity.username, since)


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
    operator_kubeconfig: Path,
    operator_identity: OperatorIdentity,
    namespace: str,
    clock: FakeClock,
    k8s: K8s,
    log_capture: LogCapture,
) -> Iterator[Callable[..., OperatorThread]]:
    started: list[OperatorThread] = []

    def start(**overrides: Any) -> OperatorThread:
        settings = Settings(
            namespaces=(namespace,),
            kubeconfig=str(operator_kubeconfig),
            ha="none",
            lease_namespace=operator_identity.namespace,
            lease_name=operator_identity.lease_name,
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
