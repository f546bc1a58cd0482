"""Policy patterns reach no further than they read (issue 11, item 6).

``role/team-a-*`` admitted ``role/team-a-x/prod-admin`` (``*`` crossed ``/``); now ``*``
never crosses ``/`` or ``:``, and ``{namespace}`` lets one policy give each namespace only
the roles named after it — also no sibling's (``team-a`` must not get ``team-a-b``'s).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.harness.k8s import K8s
from tests.harness.kube_fixtures import create_test_namespace, delete_test_namespace
from tests.harness.operator_fixtures import ROLE_PREFIX
from tests.harness.sts import STSFaultProxy
from tests.harness.wait import wait_for
from tests.security.helpers import ar_spec, cond


@pytest.mark.parametrize(
    ("pattern", "role", "admitted"),
    [
        ("team-a-*", "team-a-s3", True),
        ("team-a-*", "team-a-x/prod-admin", False),  # * does not cross /
        ("team-a-*/*", "team-a-x/prod-admin", True),
        ("*", "path/admin", False),
    ],
)
def test_star_never_crosses_a_slash(
    k8s: K8s,
    namespace: str,
    start_operator: Any,
    sts: STSFaultProxy,
    pattern: str,
    role: str,
    admitted: bool,
) -> None:
    name = f"glob-{namespace}"
    k8s.create_policy(name, {"namespaces": [namespace], "roleArns": [ROLE_PREFIX + pattern]})
    try:
        start_operator()
        k8s.create_ar(namespace, "b", ar_spec(roleArn=ROLE_PREFIX + role))
        reason = ("True", "CredentialsIssued") if admitted else ("False", "NotPermitted")
        wait_for(lambda: cond(k8s, namespace, "b", *reason), timeout=10)
        assert bool(sts.requests(action="AssumeRole")) is admitted
    finally:
        k8s.delete_policy(name)


def test_namespace_placeholder_gives_each_namespace_only_its_own_roles(
    k8s: K8s, kube_api: Any, start_operator: Any, sts: STSFaultProxy, request: Any
) -> None:
    """One policy, ``role/k8s/{namespace}/*``: a namespace gets its roles, not a sibling's."""
    team = create_test_namespace(kube_api, "t-" + request.node.name[:20])
    name = f"own-{team}"
    k8s.create_policy(name, {"namespaces": ["t-*"], "roleArns": [ROLE_PREFIX + "k8s/{namespace}/*"]})
    try:
        start_operator(namespaces=(team,))
        k8s.create_ar(team, "own", ar_spec(roleArn=f"{ROLE_PREFIX}k8s/{team}/s3"))
        k8s.create_ar(team, "sibling", ar_spec(roleArn=f"{ROLE_PREFIX}k8s/{team}-b/s3"))
        k8s.create_ar(team, "deeper", ar_spec(roleArn=f"{ROLE_PREFIX}k8s/{team}/x/admin"))
        wait_for(lambda: cond(k8s, team, "own", "True", "CredentialsIssued"), timeout=10)
        for denied in ("sibling", "deeper"):
            wait_for(lambda d=denied: cond(k8s, team, d, "False", "NotPermitted"), timeout=10)
        assert [r.role_arn for r in sts.requests(action="AssumeRole")] == [f"{ROLE_PREFIX}k8s/{team}/s3"]
    finally:
        k8s.delete_policy(name)
        delete_test_namespace(kube_api, team)


def test_a_namespace_name_is_not_a_prefix(
    k8s: K8s, kube_api: Any, start_operator: Any, sts: STSFaultProxy, request: Any
) -> None:
    """``namespaces: [team-a]`` admits team-a only, never team-a-payments."""
    team = create_test_namespace(kube_api, "p-" + request.node.name[:20])
    longer = team + "-payments"
    k8s.core.create_namespace({"metadata": {"name": longer}})
    name = f"exact-{team}"
    k8s.create_policy(name, {"namespaces": [team], "roleArns": [ROLE_PREFIX + "team-*"]})
    try:
        start_operator(namespaces=(longer,))
        k8s.create_ar(longer, "b", ar_spec())
        wait_for(lambda: cond(k8s, longer, "b", "False", "NotPermitted"), timeout=10)
        assert sts.requests(action="AssumeRole") == []
    finally:
        k8s.delete_policy(name)
        delete_test_namespace(kube_api, longer)
        delete_test_namespace(kube_api, team)
