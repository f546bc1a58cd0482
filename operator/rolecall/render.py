"""The managed Secret and the AssumedRole status, built as plain dicts (pure).

One Secret carries the same credentials in every format a pod may read (README: The Secret). Values
here are strings; the Kubernetes adapter base64-encodes ``data`` on the way out.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from rolecall import constants as c
from rolecall.model import AssumedRoleSpec, Credentials
from rolecall.schedule import Stored, format_time, parse_time


def credentials_json(creds: Credentials) -> str:
    """The ``credential_process`` output format (Version 1)."""
    return json.dumps(
        {
            "Version": 1,
            "AccessKeyId": creds.access_key_id,
            "SecretAccessKey": creds.secret_access_key,
            "SessionToken": creds.session_token,
            "Expiration": format_time(creds.expiration),
        },
        indent=2,
    )


def credentials_ini(creds: Credentials, profile: str) -> str:
    return (
        f"[{profile}]\n"
        f"aws_access_key_id = {creds.access_key_id}\n"
        f"aws_secret_access_key = {creds.secret_access_key}\n"
        f"aws_session_token = {creds.session_token}\n"
    )


def shell_quote(text: str) -> str:
    """``text`` as one POSIX shell word, always in single quotes.

    SDKs run ``credential_process`` differently — botocore splits it like a POSIX shell
    (shlex), the JavaScript, Go and Java SDKs hand it to ``sh -c`` — and a single-quoted
    word means the same to all of them. ``spec.mountPath`` is limited to a safe character
    set already; the quoting is the second line.
    """
    return "'" + text.replace("'", "'\"'\"'") + "'"


def config_ini(profile: str, mount_path: str, region: str) -> str:
    section = "default" if profile == "default" else f"profile {profile}"
    path = f"{mount_path.rstrip('/')}/{c.KEY_CREDENTIALS_JSON}"
    lines = [f"[{section}]", f"credential_process = cat {shell_quote(path)}"]
    if region:
        lines.append(f"region = {region}")
    return "\n".join(lines) + "\n"


def secret_data(creds: Credentials, spec: AssumedRoleSpec, region: str, token: str) -> dict[str, str]:
    """Every key of the managed Secret, as text."""
    data = {
        c.KEY_ACCESS_KEY_ID: creds.access_key_id,
        c.KEY_SECRET_ACCESS_KEY: creds.secret_access_key,
        c.KEY_SESSION_TOKEN: creds.session_token,
        c.KEY_EXPIRATION: format_time(creds.expiration),
        c.KEY_CREDENTIALS: credentials_ini(creds, spec.profile),
        c.KEY_CONFIG: config_ini(spec.profile, spec.mount_path, region),
        c.KEY_CREDENTIALS_JSON: credentials_json(creds),
        c.KEY_TOKEN: token,
    }
    if region:
        data[c.KEY_REGION] = region
        data[c.KEY_DEFAULT_REGION] = region
    return data


def encode_data(data: Mapping[str, str]) -> dict[str, str]:
    return {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}


def decode_data(data: Mapping[str, Any] | None) -> dict[str, str]:
    """Decode a Secret's ``data``; undecodable values are dropped (treated as missing)."""
    out: dict[str, str] = {}
    for key, value in (data or {}).items():
        if not isinstance(value, str):
            continue
        try:
            out[key] = base64.b64decode(value, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError, ValueError):
            continue
    return out


LABEL_VALUE_MAX = 63


def binding_label_value(name: str) -> str:
    """The value of the ``rolecall.dev/assumed-role`` label for an AssumedRole ``name``.

    Object names go up to 253 characters, label values only to 63: a longer name becomes
    its first 50 characters, ``_`` and 12 hex digits of its SHA-256. ``_`` never occurs in
    an object name (DNS subdomain), so a hash form cannot equal another binding's name.
    The full name stays in the Secret's owner reference.
    """
    if len(name) <= LABEL_VALUE_MAX:
        return name
    return f"{name[:50]}_{hashlib.sha256(name.encode()).hexdigest()[:12]}"


def owner_name(secret_meta: Mapping[str, Any]) -> str | None:
    """The AssumedRole a Secret belongs to: its AssumedRole owner reference's name, else
    the ``rolecall.dev/assumed-role`` label unless that is a hash form (names > 63 chars)."""
    for ref in secret_meta.get("ownerReferences") or []:
        if ref.get("kind") == c.KIND_ASSUMED_ROLE and ref.get("name"):
            return str(ref["name"])
    label = (secret_meta.get("labels") or {}).get(c.LABEL_ASSUMED_ROLE)
    return str(label) if label and "_" not in label else None


def build_secret(
    *,
    namespace: str,
    owner: Mapping[str, Any],
    spec: AssumedRoleSpec,
    creds: Credentials,
    issued_at: datetime.datetime,
    spec_hash: str,
    region: str,
    token: str,
) -> dict[str, Any]:
    """The whole managed Secret: data, labels, annotations and the owner reference."""
    meta = owner.get("metadata", {})
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": spec.secret_name,
            "namespace": namespace,
            "labels": {
                c.LABEL_MANAGED_BY: c.MANAGED_BY,
                c.LABEL_ASSUMED_ROLE: binding_label_value(meta.get("name", "")),
            },
            "annotations": {
                c.ANN_EXPIRATION: format_time(creds.expiration),
                c.ANN_ISSUED_AT: format_time(issued_at),
                c.ANN_ROLE_ARN: spec.role_arn,
                c.ANN_SPEC_HASH: spec_hash,
            },
            "ownerReferences": [owner_reference(owner)],
        },
        "data": encode_data(secret_data(creds, spec, region, token)),
    }


def owner_reference(owner: Mapping[str, Any]) -> dict[str, Any]:
    meta = owner.get("metadata", {})
    return {
        "apiVersion": c.API_VERSION,
        "kind": c.KIND_ASSUMED_ROLE,
        "name": meta.get("name", ""),
        "uid": meta.get("uid", ""),
        "controller": True,
        "blockOwnerDeletion": False,
    }


def read_stored(secret: Mapping[str, Any] | None) -> tuple[Stored | None, Credentials | None, str]:
    """What a managed Secret holds: schedule facts, the credentials and the sidecar token.

    Anything unreadable gives ``Stored(complete=False)`` (or None with no annotations): the
    caller then re-assumes rather than trusting half-written or hand-edited data.
    """
    if not secret:
        return None, None, ""
    meta = secret.get("metadata", {})
    ann = meta.get("annotations") or {}
    data = decode_data(secret.get("data"))
    token = data.get(c.KEY_TOKEN, "")
    try:
        issued = parse_time(ann[c.ANN_ISSUED_AT])
        expiration = parse_time(ann[c.ANN_EXPIRATION])
    except (KeyError, ValueError, TypeError, AttributeError):
        return None, None, token
    spec_hash = str(ann.get(c.ANN_SPEC_HASH, ""))
    creds: Credentials | None = None
    try:
        doc = json.loads(data[c.KEY_CREDENTIALS_JSON])
        creds = Credentials(
            access_key_id=str(doc["AccessKeyId"]),
            secret_access_key=str(doc["SecretAccessKey"]),
            session_token=str(doc["SessionToken"]),
            expiration=parse_time(str(doc["Expiration"])),
            assumed_role_arn="",
        )
    except (KeyError, ValueError, TypeError, AttributeError):
        creds = None
    complete = creds is not None and creds.expiration == expiration
    return Stored(spec_hash, issued, expiration, complete), creds, token


# --- status ----------------------------------------------------------------------------


def condition(
    ctype: str,
    status: bool,
    reason: str,
    message: str,
    now: datetime.datetime,
    previous: list[dict[str, Any]] | None,
    generation: int | None,
) -> dict[str, Any]:
    """A condition whose lastTransitionTime moves only when its status changes."""
    text = "True" if status else "False"
    last = format_time(now)
    for old in previous or []:
        if old.get("type") == ctype and old.get("status") == text and old.get("lastTransitionTime"):
            last = old["lastTransitionTime"]
    cond: dict[str, Any] = {
        "type": ctype,
        "status": text,
        "reason": reason,
        "message": message,
        "lastTransitionTime": last,
    }
    if generation is not None:
        cond["observedGeneration"] = generation
    return cond


def find_condition(conditions: list[dict[str, Any]] | None, ctype: str) -> dict[str, Any] | None:
    for cond in conditions or []:
        if cond.get("type") == ctype:
            return cond
    return None
