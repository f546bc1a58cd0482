"""Attribution the admin controls (issue 11, item 4).

team-a used to be able to call itself team-b in CloudTrail and in trust policies: session
name ``team-b.reader``, ``sourceIdentity: team-b``, ``automaticSessionTags: false``, any
``externalId`` and free session tags. Now the namespace prefix of the session name is not the
tenant's, and the rest needs an AssumedRolePolicy that admits the binding to allow it.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.harness.k8s import K8s
from tests.harness.sts import STSFaultProxy
from tests.harness.wait import wait_for
from tests.security.helpers import ar_spec, cond


def test_a_spoofed_session_name_keeps_the_namespace_prefix(
    k8s: K8s, namespace: str, grant: Any, start_operator: Any, sts: STSFaultProxy
) -> None:
    grant()
    start_operator()
    k8s.create_ar(namespace, "spoof", ar_spec(sessionName="team-b.reader"))
    wait_for(lambda: cond(k8s, namespace, "spoof", "True", "CredentialsIssued"), timeout=10)
    [call] = sts.requests(action="AssumeRole")
    assert call.session_name == f"{namespace}.team-b.reader"
    assert call.tags["kubernetes-namespace"] == namespace
    status = k8s.get_ar(namespace, "spoof")["status"]  # type: ignore[index]
    assert status["assumedRoleArn"].endswith(f"/{namespace}.team-b.reader")


@pytest.mark.parametrize(
    ("spec", "field", "grant_field"),
    [
        (
            {"sourceIdentity": "team-b"},
            "spec.sourceIdentity 'team-b' is not allowed",
            "spec.sourceIdentities",
        ),
        ({"automaticSessionTags": False}, "spec.automaticSessionTags is false", "allowAutomaticTagOptOut"),
        ({"externalId": "team-b-prod"}, "spec.externalId 'team-b-prod' is not allowed", "spec.externalIds"),
        ({"sessionTags": {"team": "b"}}, "spec.sessionTags key 'team' is not allowed", "spec.sessionTagKeys"),
    ],
    ids=["source identity", "tag opt-out", "external id", "free session tag"],
)
def test_attribution_a_policy_did_not_grant_is_refused(
    k8s: K8s,
    namespace: str,
    grant: Any,
    start_operator: Any,
    sts: STSFaultProxy,
    spec: dict[str, Any],
    field: str,
    grant_field: str,
) -> None:
    grant()
    start_operator()
    k8s.create_ar(namespace, "spoof", ar_spec(**spec))
    got = wait_for(lambda: cond(k8s, namespace, "spoof", "False", "NotPermitted"), timeout=10)
    assert field in got["message"] and grant_field in got["message"], got["message"]
    assert sts.requests(action="AssumeRole") == [], "a refused binding reached STS"
    assert k8s.secret(namespace, "spoof") is None


def test_a_policy_grants_attribution_tied_to_the_namespace(
    k8s: K8s, namespace: str, grant: Any, start_operator: Any, sts: STSFaultProxy
) -> None:
    grant(
        allowAutomaticTagOptOut=True,
        externalIds=["{namespace}-prod"],
        sessionTagKeys=["cost-center"],
    )
    start_operator()
    k8s.create_ar(
        namespace,
        "granted",
        ar_spec(
            sourceIdentity=f"{namespace}.ci", externalId=f"{namespace}-prod", sessionTags={"cost-center": "7"}
        ),
    )
    k8s.create_ar(namespace, "untagged", ar_spec(automaticSessionTags=False))
    for name in ("granted", "untagged"):
        wait_for(lambda name=name: cond(k8s, namespace, name, "True", "CredentialsIssued"), timeout=10)
    calls = {r.session_name: r for r in sts.requests(action="AssumeRole")}
    granted = calls[f"{namespace}.granted"]
    assert (granted.source_identity, granted.external_id) == (f"{namespace}.ci", f"{namespace}-prod")
    assert granted.tags["cost-center"] == "7" and granted.tags["kubernetes-namespace"] == namespace
    assert calls[f"{namespace}.untagged"].tags == {}


def test_withdrawing_a_grant_withdraws_the_binding(
    k8s: K8s, namespace: str, grant: Any, start_operator: Any, sts: STSFaultProxy
) -> None:
    base = grant()
    opt_out = grant(name=f"opt-out-{namespace}", allowAutomaticTagOptOut=True)
    start_operator()
    k8s.create_ar(namespace, "untagged", ar_spec(automaticSessionTags=False))
    wait_for(lambda: cond(k8s, namespace, "untagged", "True", "CredentialsIssued"), timeout=10)
    k8s.delete_policy(opt_out)
    got = wait_for(lambda: cond(k8s, namespace, "untagged", "False", "NotPermitted"), timeout=10)
    assert f"AssumedRolePolicy '{base}'" in got["message"]
    wait_for(lambda: k8s.secret(namespace, "untagged") is None, timeout=10, message="the Secret was kept")
