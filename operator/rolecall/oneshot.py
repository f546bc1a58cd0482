"""``rolecall assume -f FILE``: the same AssumeRole, once, with local AWS credentials.

It reads an AssumedRole manifest (the first AssumedRole in the file), validates it exactly
as the operator would, calls STS with the local credentials chain, and prints the result as
shell exports, ``credential_process`` JSON, or an ini profile. It is the quickest way to test
a trust policy before deploying the binding.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from typing import Any

import yaml

from rolecall import constants as c
from rolecall import render
from rolecall.model import AssumedRoleSpec, Credentials, build_assume_request, parse_assumed_role
from rolecall.schedule import format_time
from rolecall.sts import STSAdapter

# how STS errors name the caller's identity; "no base AWS credentials for <this>" says what to do
LOCAL_CREDENTIALS = (
    "rolecall assume, which uses your AWS SDK credentials: set AWS_PROFILE (after `aws sso login` "
    "if it is an SSO profile) or export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
)


def load_assumed_role(documents: Iterable[Any]) -> tuple[str, str, AssumedRoleSpec]:
    for doc in documents:
        if isinstance(doc, dict) and doc.get("kind") == c.KIND_ASSUMED_ROLE:
            meta = doc.get("metadata") or {}
            namespace = meta.get("namespace") or "default"
            name = meta.get("name") or "assumedrole"
            return namespace, name, parse_assumed_role(namespace, name, doc.get("spec"))
    raise ValueError("the file holds no AssumedRole (kind: AssumedRole)")


def format_credentials(creds: Credentials, spec: AssumedRoleSpec, region: str, fmt: str) -> str:
    if fmt == "json":
        return render.credentials_json(creds) + "\n"
    if fmt == "ini":
        text = render.credentials_ini(creds, spec.profile)
        return text + (f"region = {region}\n" if region else "")
    lines = {
        c.KEY_ACCESS_KEY_ID: creds.access_key_id,
        c.KEY_SECRET_ACCESS_KEY: creds.secret_access_key,
        c.KEY_SESSION_TOKEN: creds.session_token,
        c.KEY_EXPIRATION: format_time(creds.expiration),
    }
    if region:
        lines[c.KEY_REGION] = region
        lines[c.KEY_DEFAULT_REGION] = region
    return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in lines.items())


def assume_once(path: str, fmt: str, *, region: str, cluster_name: str, session_tags: bool) -> str:
    with open(path, encoding="utf-8") as fh:
        namespace, name, spec = load_assumed_role(yaml.safe_load_all(fh))
    request = build_assume_request(
        namespace,
        name,
        spec,
        default_region=region,
        cluster_name=cluster_name,
        automatic_tags=session_tags,
    )
    sts = STSAdapter(default_region=region)
    creds = sts.assume_role(request, None, LOCAL_CREDENTIALS)
    return format_credentials(creds, spec, request.region, fmt)
