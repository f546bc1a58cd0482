"""Helpers of the security tier: every test plays a hostile namespace admin against the real
operator, the emulator and the local STS behind its SigV4-checking front.

The fixtures themselves (``start_operator``, ``k8s``, ``sts``, ``namespace``, ...) are the
harness plugins loaded by tests/conftest.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.harness.k8s import K8s
from tests.harness.kube_fixtures import create_test_namespace, delete_test_namespace
from tests.harness.operator_fixtures import ROLE_PREFIX


@pytest.fixture
def grant(k8s: K8s, namespace: str) -> Iterator[Callable[..., str]]:
    """``grant(**spec)``: an AssumedRolePolicy for this test's namespace (deleted afterwards)."""
    made: list[str] = []

    def make(name: str = "", **spec: Any) -> str:
        name = name or f"grant-{len(made)}-{namespace}"
        k8s.create_policy(name, {"namespaces": [namespace], "roleArns": [ROLE_PREFIX + "team-*"], **spec})
        made.append(name)
        return name

    yield make
    for name in made:
        k8s.delete_policy(name)


@pytest.fixture
def other_namespace(kube_api: Any, request: pytest.FixtureRequest) -> Iterator[str]:
    """A second tenant's namespace."""
    name = create_test_namespace(kube_api, "other-" + request.node.name)
    try:
        yield name
    finally:
        delete_test_namespace(kube_api, name)
