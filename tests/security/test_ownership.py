"""Attack: winning Secret races. A namespace admin creates, forges or renames Secrets to get
rolecall to overwrite their data, to hand one ServiceAccount another role's credentials, or
to keep live credentials after their access was withdrawn.

Defence (managed_secret.py, state.py, reconcile.py): every replace is a compare-and-swap on
the owner UID, also after 409s; adoption is by owner UID only, never by labels; a stored
expiry is clamped to issue time + duration; renaming secretName deletes the old Secret; two
bindings naming one Secret: the first owner keeps it, the other reports SecretConflict.
"""

from __future__ import annotations

import base64
import datetime
import json
import secrets
from typing import Any

from rolecall import constants as c
from rolecall.clock import FakeClock
from rolecall.model import build_assume_request, parse_assumed_role, spec_hash
from rolecall.timefmt import format_time, parse_time
from tests.harness.k8s import K8s
from tests.harness.operator_fixtures import ROLE_PREFIX
from tests.harness.sts import Fault, STSFaultProxy
from tests.harness.wait import wait_for

ROLE = ROLE_PREFIX + "team-a-s3"
OTHER_ROLE = ROLE_PREFIX + "team-a-admin"


def reason(k8s: K8s, namespace: str, name: str) -> str | None:
    cond = k8s.condition(namespace, name)
    return cond["reason"] if cond else None


def in_flight(sts: STSFaultProxy) -> bool:
    """The slowed AssumeRole has arrived at the STS front (and is being held there)."""
    return any((f["seen"] if isinstance(f, dict) else f.seen) >= 1 for f in sts.faults())


def assumes(sts: STSFaultProxy) -> int:
    return len([r for r in sts.requests(action="AssumeRole") if r.status == 200])


def test_a_secret_created_while_sts_answers_is_never_overwritten(
    k8s: K8s, namespace: str, policy: str, start_operator: Any, sts: STSFaultProxy
) -> None:
    sts.add_fault(Fault(slow=3.0, action="AssumeRole", role_arn=ROLE))
    start_operator()
    k8s.create_ar(namespace, "s3", {"roleArn": ROLE})
    wait_for(lambda: in_flight(sts), timeout=10, message="no STS call")
    # the tenant wins the race: their Secret exists before the operator's create
    k8s.core.create_namespaced_secret(namespace, {"metadata": {"name": "s3"}, "stringData": {"mine": "keep"}})
    wait_for(
        lambda: reason(k8s, namespace, "s3") == "SecretConflict", timeout=15, message="no SecretConflict"
    )
    assert k8s.secret_data(namespace, "s3") == {"mine": "keep"}, "the tenant's Secret was overwritten"
    secret = k8s.secret(namespace, "s3")
    assert secret is not None and not secret["metadata"].get("ownerReferences"), (
        "an owner reference would let the garbage collector delete the tenant's Secret"
    )


def test_two_bindings_naming_one_secret_first_owner_keeps_it(
    k8s: K8s, namespace: str, policy: str, start_operator: Any
) -> None:
    start_operator()
    k8s.create_ar(namespace, "first", {"roleArn": ROLE, "secretName": "shared"})
    wait_for(lambda: reason(k8s, namespace, "first") == "CredentialsIssued", timeout=15)
    k8s.create_ar(namespace, "second", {"roleArn": OTHER_ROLE, "secretName": "shared"})
    wait_for(lambda: reason(k8s, namespace, "second") == "SecretConflict", timeout=15)
    secret = k8s.secret(namespace, "shared")
    assert secret is not None
    assert secret["metadata"]["annotations"][c.ANN_ROLE_ARN] == ROLE
    first_uid = k8s.get_ar(namespace, "first")["metadata"]["uid"]  # type: ignore[index]
    assert [r["uid"] for r in secret["metadata"]["ownerReferences"]] == [first_uid]
    assert reason(k8s, namespace, "first") == "CredentialsIssued", "the first owner must stay Ready"


def forged_secret(namespace: str, name: str, owner: dict[str, Any] | None, hours: int) -> dict[str, Any]:
    """What a tenant can write: rolecall's labels and annotations, a matching spec hash, fake
    credentials with a long expiry, optionally an owner reference (the AR's UID is readable)."""
    spec = parse_assumed_role(namespace, name, {"roleArn": ROLE})
    digest = spec_hash(build_assume_request(namespace, name, spec, default_region="us-east-1"), spec.source)
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    expiry = format_time(now + datetime.timedelta(hours=hours))
    doc = {
        "Version": 1,
        "AccessKeyId": "ASIAFORGED",
        "SecretAccessKey": secrets.token_urlsafe(30),
        "SessionToken": secrets.token_urlsafe(60),
        "Expiration": expiry,
    }
    meta: dict[str, Any] = {
        "name": name,
        "labels": {c.LABEL_MANAGED_BY: c.MANAGED_BY, c.LABEL_ASSUMED_ROLE: name},
        "annotations": {
            c.ANN_EXPIRATION: expiry,
            c.ANN_ISSUED_AT: format_time(now),
            c.ANN_SPEC_HASH: digest,
            c.ANN_ROLE_ARN: ROLE,
        },
    }
    if owner is not None:
        meta["ownerReferences"] = [
            {
                "apiVersion": c.API_VERSION,
                "kind": c.KIND_ASSUMED_ROLE,
                "name": name,
                "uid": owner["metadata"]["uid"],
                "controller": True,
            }
        ]
    data = {
        c.KEY_CREDENTIALS_JSON: json.dumps(doc),
        c.KEY_ACCESS_KEY_ID: "ASIAFORGED",
        c.KEY_TOKEN: secrets.token_urlsafe(32),
    }
    return {"metadata": meta, "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


def test_a_secret_with_forged_labels_is_not_adopted(
    k8s: K8s, namespace: str, policy: str, start_operator: Any, sts: STSFaultProxy
) -> None:
    k8s.create_ar(namespace, "s3", {"roleArn": ROLE})
    k8s.core.create_namespaced_secret(namespace, forged_secret(namespace, "s3", None, hours=11))
    start_operator()
    wait_for(lambda: reason(k8s, namespace, "s3") == "SecretConflict", timeout=15)
    assert assumes(sts) == 0
    assert (k8s.secret_data(namespace, "s3") or {}).get(c.KEY_ACCESS_KEY_ID) == "ASIAFORGED", (
        "not ours: untouched"
    )


def test_a_forged_long_expiry_does_not_postpone_the_refresh(
    k8s: K8s, namespace: str, policy: str, start_operator: Any, sts: STSFaultProxy, clock: FakeClock
) -> None:
    body = k8s.create_ar(namespace, "s3", {"roleArn": ROLE, "durationSeconds": 3600})
    k8s.core.create_namespaced_secret(namespace, forged_secret(namespace, "s3", body, hours=11))
    start_operator()
    wait_for(lambda: reason(k8s, namespace, "s3") == "CredentialsIssued", timeout=15)
    shown = k8s.get_ar(namespace, "s3")["status"]  # type: ignore[index]
    lifetime = parse_time(shown["expiration"]) - parse_time(shown["lastRefresh"])
    assert lifetime <= datetime.timedelta(seconds=3600 + 300), f"an {lifetime} session on a 1 h binding"
    assert parse_time(shown["nextRefresh"]) - parse_time(shown["lastRefresh"]) <= datetime.timedelta(
        minutes=35
    )


def test_renaming_secret_name_deletes_the_old_secret(
    k8s: K8s, namespace: str, policy: str, start_operator: Any
) -> None:
    start_operator()
    k8s.create_ar(namespace, "s3", {"roleArn": ROLE, "secretName": "before"})
    wait_for(lambda: k8s.secret(namespace, "before"), timeout=15)
    k8s.patch_ar(namespace, "s3", {"spec": {"secretName": "after"}})
    wait_for(lambda: k8s.secret(namespace, "after"), timeout=15, message="no Secret under the new name")
    wait_for(
        lambda: k8s.secret(namespace, "before") is None,
        timeout=10,
        message="the old Secret still holds live credentials after the rename",
    )
    # withdrawn later: no copy of the credentials is left behind under either name
    k8s.patch_ar(namespace, "s3", {"spec": {"suspend": True}})
    wait_for(lambda: k8s.secret(namespace, "after") is None, timeout=10)
    assert k8s.secret(namespace, "before") is None
