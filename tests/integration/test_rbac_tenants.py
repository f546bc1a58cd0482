"""Tenants under the chart's RBAC: what a namespace admin can and cannot do with rolecall.

The chart's user roles reach people through aggregation into the built-in ``admin``, ``edit``
and ``view`` ClusterRoles; the emulator aggregates them as a cluster's controller does. A
namespace admin (a RoleBinding to ``admin``) manages AssumedRoles in its own namespace only and
can never write the AssumedRolePolicies that decide which namespace may use which IAM role, nor
the status the operator owns, nor anything of another namespace.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import kubernetes.client
import pytest

from tests.harness.k8s import K8s
from tests.harness.kube_fixtures import Identity, create_test_namespace, delete_test_namespace, raw_request
from tests.harness.operator_fixtures import ROLE_PREFIX, OperatorIdentity
from tests.harness.wait import wait_for

AR = "/apis/rolecall.dev/v1alpha1"


def bind(api: Any, namespace: str, name: str, cluster_role: str, identity: Identity) -> None:
    _, _, sa_namespace, sa_name = identity.username.split(":")
    kubernetes.client.RbacAuthorizationV1Api(api).create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_role},
            "subjects": [{"kind": "ServiceAccount", "name": sa_name, "namespace": sa_namespace}],
        },
    )


def assumed_role(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "rolecall.dev/v1alpha1",
        "kind": "AssumedRole",
        "metadata": {"name": name},
        "spec": {"roleArn": ROLE_PREFIX + "team-a", "subjects": [{"kind": "ServiceAccount", "name": "app"}]},
    }


@pytest.fixture
def other_namespace(kube_api: Any, request: pytest.FixtureRequest) -> Any:
    name = create_test_namespace(kube_api, request.node.name + "-other")
    yield name
    delete_test_namespace(kube_api, name)


def test_namespace_admin_manages_assumed_roles_only_at_home(
    k8s: K8s,
    kube_api: Any,
    namespace: str,
    other_namespace: str,
    operator_identity: OperatorIdentity,  # the chart's RBAC, user roles included
    kube_as: Callable[..., Identity],
) -> None:
    k8s.create_ar(other_namespace, "theirs", assumed_role("theirs")["spec"])
    k8s.core.create_namespaced_secret(
        other_namespace, {"metadata": {"name": "theirs"}, "stringData": {"k": "v"}}
    )
    tenant = kube_as(f"{namespace}/tenant")
    bind(kube_api, namespace, "tenant-admin", "admin", tenant)
    wait_for(
        lambda: raw_request(tenant.api, "GET", f"{AR}/namespaces/{namespace}/assumedroles").status == 200,
        timeout=10,
        message="admin did not reach AssumedRoles through the chart's aggregated rolecall-view",
    )

    created = raw_request(
        tenant.api, "POST", f"{AR}/namespaces/{namespace}/assumedroles", body=assumed_role("mine")
    )
    assert created.status == 201, created.data
    patched = raw_request(
        tenant.api,
        "PATCH",
        f"{AR}/namespaces/{namespace}/assumedroles/mine",
        body={"metadata": {"labels": {"team": "a"}}},
        content_type="application/merge-patch+json",
    )
    assert patched.status == 200, patched.data

    user = tenant.username
    refused = [
        # the operator's status is not the tenant's to write
        (
            "PATCH",
            f"{AR}/namespaces/{namespace}/assumedroles/mine/status",
            {"status": {"conditions": []}},
            f'assumedroles.rolecall.dev "mine" is forbidden: User "{user}" cannot patch resource '
            f'"assumedroles/status" in API group "rolecall.dev" in the namespace "{namespace}"',
        ),
        # policies decide which namespace may use which role: never a tenant's
        (
            "POST",
            f"{AR}/assumedrolepolicies",
            {
                "apiVersion": "rolecall.dev/v1alpha1",
                "kind": "AssumedRolePolicy",
                "metadata": {"name": "mine"},
            },
            f'assumedrolepolicies.rolecall.dev is forbidden: User "{user}" cannot create resource '
            f'"assumedrolepolicies" in API group "rolecall.dev" at the cluster scope',
        ),
        (
            "GET",
            f"{AR}/namespaces/{other_namespace}/assumedroles/theirs",
            None,
            f'assumedroles.rolecall.dev "theirs" is forbidden: User "{user}" cannot get resource '
            f'"assumedroles" in API group "rolecall.dev" in the namespace "{other_namespace}"',
        ),
        (
            "GET",
            f"/api/v1/namespaces/{other_namespace}/secrets/theirs",
            None,
            f'secrets "theirs" is forbidden: User "{user}" cannot get resource "secrets" in API group "" '
            f'in the namespace "{other_namespace}"',
        ),
        (
            "GET",
            f"{AR}/assumedroles",
            None,
            f'assumedroles.rolecall.dev is forbidden: User "{user}" cannot list resource "assumedroles" '
            f'in API group "rolecall.dev" at the cluster scope',
        ),
    ]
    for method, path, body, message in refused:
        answer = raw_request(
            tenant.api,
            method,
            path,
            body=body,
            content_type="application/merge-patch+json" if method == "PATCH" else None,
        )
        assert (answer.status, answer.json()["reason"]) == (403, "Forbidden"), (method, path, answer.data)
        assert answer.json()["message"] == message

    # view (a read-only teammate) reads AssumedRoles and writes none
    viewer = kube_as(f"{namespace}/viewer")
    bind(kube_api, namespace, "viewer-view", "view", viewer)
    wait_for(
        lambda: (
            raw_request(viewer.api, "GET", f"{AR}/namespaces/{namespace}/assumedroles/mine").status == 200
        ),
        timeout=10,
        message="view did not reach AssumedRoles",
    )
    deleted = raw_request(viewer.api, "DELETE", f"{AR}/namespaces/{namespace}/assumedroles/mine")
    assert deleted.status == 403, deleted.data
    assert raw_request(viewer.api, "GET", f"/api/v1/namespaces/{namespace}/secrets").status == 403
