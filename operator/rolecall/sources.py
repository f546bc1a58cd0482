"""Where the keys that sign a binding's AssumeRole come from (README: The AssumedRole, ``spec.source``).

Three sources: the operator's own identity (default), static keys in a Secret of the
binding's namespace (``secretRef``), or the live session of another AssumedRole of the same
namespace (``assumedRoleRef``, role chaining). Resolved on a worker before the binding waits
for its STS turn, so a missing source costs no STS token and says exactly what is missing.
"""

from __future__ import annotations

import datetime
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from rolecall import constants as c
from rolecall import render
from rolecall.constants import Reason
from rolecall.kube import KubeAdapter
from rolecall.managed_secret import owned_by
from rolecall.model import AssumedRoleSpec, Credentials, SpecError, parse_assumed_role
from rolecall.sts import StaticKeys, STSError

IO = Callable[..., Awaitable[Any]]

OPERATOR_IDENTITY = "the operator's own AWS identity"


def _unavailable(message: str) -> STSError:
    return STSError(Reason.SOURCE_UNAVAILABLE, "SourceMissing", message)


def keys_from_secret_data(data: Mapping[str, str]) -> StaticKeys | None:
    """Static keys in the env-variable or the ini spelling; None when incomplete."""
    akid = data.get(c.KEY_ACCESS_KEY_ID) or data.get("aws_access_key_id")
    sak = data.get(c.KEY_SECRET_ACCESS_KEY) or data.get("aws_secret_access_key")
    if not akid or not sak:
        return None
    token = data.get(c.KEY_SESSION_TOKEN) or data.get("aws_session_token") or ""
    return StaticKeys(akid.strip(), sak.strip(), token.strip())


async def resolve(
    *,
    kube: KubeAdapter,
    io: IO,
    namespace: str,
    spec: AssumedRoleSpec,
    assumed_roles: Mapping[tuple[str, str], Mapping[str, Any]],
    now: datetime.datetime,
) -> tuple[StaticKeys | None, str]:
    """The keys to sign with (None: the operator's identity) and a label naming the source
    (shown in error messages; never the keys themselves). Raises STSError(SourceUnavailable)."""
    src = spec.source
    if src.secret_name:
        return await _from_secret(kube, io, namespace, src.secret_name)
    if src.assumed_role_name:
        return await _from_binding(kube, io, namespace, src.assumed_role_name, assumed_roles, now)
    return None, OPERATOR_IDENTITY


async def _from_secret(kube: KubeAdapter, io: IO, namespace: str, name: str) -> tuple[StaticKeys, str]:
    label = f"the keys in Secret {namespace}/{name} (spec.source.secretRef)"
    secret = await io(kube.get_secret, namespace, name)
    keys = keys_from_secret_data(render.decode_data(secret.get("data") if secret else None))
    if keys is None:
        missing = (
            "does not exist"
            if not secret
            else f"lacks the keys {c.KEY_ACCESS_KEY_ID} and {c.KEY_SECRET_ACCESS_KEY}"
        )
        raise _unavailable(f"spec.source.secretRef: Secret {name!r} in namespace {namespace!r} {missing}")
    return keys, label


async def _from_binding(
    kube: KubeAdapter,
    io: IO,
    namespace: str,
    name: str,
    assumed_roles: Mapping[tuple[str, str], Mapping[str, Any]],
    now: datetime.datetime,
) -> tuple[StaticKeys, str]:
    label = f"the session of AssumedRole {namespace}/{name} (spec.source.assumedRoleRef)"
    creds, problem = await _chained_credentials(
        kube, io, namespace, name, assumed_roles.get((namespace, name)), now
    )
    if creds is None:
        raise _unavailable(
            f"spec.source.assumedRoleRef: AssumedRole {name!r} in namespace {namespace!r} {problem}"
        )
    return StaticKeys(creds.access_key_id, creds.secret_access_key, creds.session_token), label


async def _chained_credentials(
    kube: KubeAdapter,
    io: IO,
    namespace: str,
    name: str,
    other: Mapping[str, Any] | None,
    now: datetime.datetime,
) -> tuple[Credentials | None, str]:
    if other is None:
        return None, "does not exist"
    try:
        other_spec = parse_assumed_role(namespace, name, other.get("spec"))
    except SpecError:
        return None, "has an invalid spec"
    secret = await io(kube.get_secret, namespace, other_spec.secret_name)
    owner_uid = str((other.get("metadata") or {}).get("uid") or "")
    if secret is None or not owned_by(secret, owner_uid):
        return None, "has no credentials yet"
    _, creds, _ = render.read_stored(secret)
    if creds is None:
        return None, "has no readable credentials"
    if creds.expiration <= now:
        return None, "has only expired credentials"
    return creds, ""
