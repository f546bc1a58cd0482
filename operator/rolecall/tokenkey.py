"""The operator's token key: one Secret in its own namespace, shared by every replica.

Created on first start (a race between replicas is settled by the API server: the loser of
the create reads the winner's key). Without it — no permission, API down — tokens fall back
to random ones kept in each binding's Secret, which is what they were before; the operator
says so once.
"""

from __future__ import annotations

import base64
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from rolecall.kube import AlreadyExists, KubeAdapter, KubeError
from rolecall.tokens import KEY_BYTES

logger = logging.getLogger("rolecall")

IO = Callable[..., Awaitable[Any]]
DATA_KEY = "key"


def _decode(secret: dict[str, Any] | None) -> bytes | None:
    raw = ((secret or {}).get("data") or {}).get(DATA_KEY)
    try:
        key = base64.b64decode(raw or "", validate=True)
    except ValueError:
        return None
    return key if len(key) >= KEY_BYTES else None


async def load_or_create(kube: KubeAdapter, io: IO, namespace: str, name: str) -> bytes | None:
    try:
        key = _decode(await io(kube.get_secret, namespace, name))
        if key is not None:
            return key
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": {"app.kubernetes.io/name": "rolecall", "app.kubernetes.io/component": "token-key"},
            },
            "data": {DATA_KEY: base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()},
        }
        try:
            created = await io(kube.create_secret, body)
        except AlreadyExists:
            created = await io(kube.get_secret, namespace, name)
        key = _decode(created)
        if key is None:
            raise KubeError(0, "Invalid", f"Secret {namespace}/{name} holds no usable key {DATA_KEY!r}")
        logger.info("Sidecar tokens are derived with the key in Secret %s/%s", namespace, name)
        return key
    except KubeError as exc:
        logger.warning(
            "Could not read or create the token key Secret %s/%s (%s %s): sidecar tokens are random "
            "per Secret, so a Secret lost after a restart gets a new one and pods started before "
            "must be restarted. Grant the operator get/create on Secrets in its namespace.",
            namespace,
            name,
            exc.status,
            exc.reason,
        )
        return None
