"""Shared pieces of the security tier's tests."""

from __future__ import annotations

from typing import Any

from rolecall import constants as c
from tests.harness.k8s import K8s
from tests.harness.operator_fixtures import ROLE_PREFIX

ROLE = ROLE_PREFIX + "team-a-s3-reader"


def cond(k8s: K8s, ns: str, name: str, status: str, reason: str) -> dict[str, Any] | None:
    """The Ready condition when it has this status and reason, else None (for wait_for)."""
    got = k8s.condition(ns, name)
    return got if got and got["status"] == status and got["reason"] == reason else None


def ar_spec(**extra: Any) -> dict[str, Any]:
    return {"roleArn": ROLE, "subjects": [{"kind": "ServiceAccount", "name": "app"}], **extra}


def keys_secret(k8s: K8s, namespace: str, name: str, access_key_id: str, secret_access_key: str) -> None:
    """A Secret holding static keys, as a tenant writes one for ``source.secretRef``."""
    k8s.core.create_namespaced_secret(
        namespace,
        {
            "metadata": {"name": name},
            "stringData": {c.KEY_ACCESS_KEY_ID: access_key_id, c.KEY_SECRET_ACCESS_KEY: secret_access_key},
        },
    )
