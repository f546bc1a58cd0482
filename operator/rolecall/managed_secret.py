"""The managed Secret's write protocol: every replace is a compare-and-swap on its owner.

A namespace admin can create, edit and delete Secrets in their namespace at any moment,
including while an STS call is in flight. So a Secret is rolecall's to overwrite or delete
only when it is *provably* the one this AssumedRole owns:

- its controller ownerReference names the AssumedRole's UID (a UID is assigned by the API
  server and cannot be chosen; labels and annotations can be forged by anyone), or
- it is the very object this process last wrote (same Secret UID), for a Secret whose
  ownerReference was removed by hand while the operator ran.

Every replace carries the resourceVersion of the copy whose ownership was just checked, so a
change in between answers 409 and is re-checked; after ``AlreadyExists`` the existing Secret
is read and checked, never blindly replaced. Deletes carry UID and resourceVersion
preconditions. Two AssumedRoles naming one Secret: the first owner keeps it, the other is
told ``SecretConflict``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from rolecall import constants as c
from rolecall.kube import AlreadyExists, Conflict, KubeAdapter, KubeError, NotFound

T = TypeVar("T")
IO = Callable[..., Awaitable[Any]]

WRITE_ATTEMPTS = 3


class SecretTaken(Exception):
    """The Secret exists and is not this AssumedRole's: it is never overwritten."""


def owner_uid_of(secret: Mapping[str, Any]) -> str | None:
    """The UID of the AssumedRole that controls this Secret, if one does."""
    for ref in (secret.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("kind") == c.KIND_ASSUMED_ROLE and ref.get("apiVersion", c.API_VERSION).startswith(
            c.GROUP + "/"
        ):
            return str(ref.get("uid") or "") or None
    return None


def owned_by(secret: Mapping[str, Any], owner_uid: str, known_secret_uid: str = "") -> bool:
    """Is this Secret the managed Secret of the AssumedRole with ``owner_uid``?"""
    if owner_uid and owner_uid_of(secret) == owner_uid:
        return True
    meta = secret.get("metadata") or {}
    if not known_secret_uid or meta.get("uid") != known_secret_uid:
        return False
    # the object this process wrote, with its ownerReference removed by hand; if someone
    # made another AssumedRole its controller meanwhile, it is no longer ours
    return not any(ref.get("controller") for ref in meta.get("ownerReferences") or [])


def differs(current: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    """Does the stored Secret lack anything rolecall must hold in it?"""
    cm, dm = current.get("metadata") or {}, desired["metadata"]
    if (current.get("data") or {}) != desired["data"]:
        return True
    if any((cm.get("labels") or {}).get(k) != v for k, v in dm["labels"].items()):
        return True
    if any((cm.get("annotations") or {}).get(k) != v for k, v in dm["annotations"].items()):
        return True
    refs = cm.get("ownerReferences") or []
    return not any(r.get("uid") == dm["ownerReferences"][0]["uid"] for r in refs)


def replacement(current: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """The PUT body: desired content on the checked copy's resourceVersion, keeping labels and
    annotations others added (tools like Reloader annotate Secrets)."""
    cm = current.get("metadata") or {}
    dm = desired["metadata"]
    meta = dict(dm)
    meta["resourceVersion"] = cm.get("resourceVersion")
    meta["labels"] = {**(cm.get("labels") or {}), **dm["labels"]}
    meta["annotations"] = {**(cm.get("annotations") or {}), **dm["annotations"]}
    return {**desired, "metadata": meta}


class SecretWriter:
    """Create, replace and delete managed Secrets through the Kubernetes adapter."""

    def __init__(self, kube: KubeAdapter, io: IO) -> None:
        self.kube = kube
        self.io = io

    async def read(self, namespace: str, name: str) -> dict[str, Any] | None:
        result: dict[str, Any] | None = await self.io(self.kube.get_secret, namespace, name)
        return result

    async def write(
        self,
        desired: dict[str, Any],
        current: dict[str, Any] | None,
        owner_uid: str,
        known_secret_uid: str = "",
    ) -> dict[str, Any]:
        """Create the Secret, or replace it if (and while) it is ours; raise SecretTaken
        if it belongs to someone else, Conflict if it kept changing under us."""
        namespace, name = desired["metadata"]["namespace"], desired["metadata"]["name"]
        for attempt in range(WRITE_ATTEMPTS):
            if current is None:
                try:
                    created: dict[str, Any] = await self.io(self.kube.create_secret, desired)
                    return created
                except AlreadyExists:
                    current = await self.read(namespace, name)
                    continue
            if not owned_by(current, owner_uid, known_secret_uid):
                raise SecretTaken(name)
            try:
                replaced: dict[str, Any] = await self.io(
                    self.kube.replace_secret, replacement(current, desired)
                )
                return replaced
            except NotFound:
                current = None
            except Conflict:
                if attempt == WRITE_ATTEMPTS - 1:
                    raise
                current = await self.read(namespace, name)
        raise KubeError(409, "Conflict", f"Secret {namespace}/{name} kept changing; will retry")

    async def delete(self, namespace: str, name: str, owner_uid: str, known_secret_uid: str = "") -> bool:
        """Delete the Secret if it is ours, with preconditions so a Secret replaced in between
        by someone else's is never deleted. True when something was deleted."""
        for _ in range(WRITE_ATTEMPTS):
            secret = await self.read(namespace, name)
            if secret is None or not owned_by(secret, owner_uid, known_secret_uid):
                return False
            meta = secret.get("metadata") or {}
            try:
                deleted: bool = await self.io(
                    self.kube.delete_secret,
                    namespace,
                    name,
                    meta.get("uid"),
                    meta.get("resourceVersion"),
                )
                return deleted
            except Conflict:
                continue  # changed since the read: look again
        return False
