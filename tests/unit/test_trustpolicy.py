"""`rolecall trust-policy`: the trust policy follows the request the operator would send."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from rolecall import doctor, trustpolicy
from rolecall.constants import Reason

ROOT = Path(__file__).resolve().parents[2]
OPERATOR = "arn:aws:iam::111122223333:role/rolecall-operator"
ROLE = "arn:aws:iam::123456789012:role/team-a-s3-reader"


def ar(name: str = "s3", **spec: Any) -> dict[str, Any]:
    return {
        "kind": "AssumedRole",
        "metadata": {"name": name, "namespace": "team-a"},
        "spec": {"roleArn": ROLE, **spec},
    }


def test_the_sample_gets_assume_and_tag_session_pinned_to_its_namespace() -> None:
    docs = yaml.safe_load_all((ROOT / "deploy" / "samples" / "team-a.yaml").read_text())
    policy, notes = trustpolicy.trust_policy(docs, operator_role=OPERATOR, cluster_name="prod-eu")
    assert policy == {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "RolecallTeamAS3Reader",
                "Effect": "Allow",
                "Principal": {"AWS": OPERATOR},
                "Action": ["sts:AssumeRole", "sts:TagSession"],
                "Condition": {
                    "StringEquals": {
                        "aws:RequestTag/kubernetes-namespace": "team-a",
                        "aws:RequestTag/kubernetes-cluster-name": "prod-eu",
                    }
                },
            }
        ],
    }
    assert notes == [f"attach it to {ROLE} (IAM → Roles → Trust relationships)"]


def test_external_id_and_source_identity_add_their_conditions_and_action() -> None:
    policy, _ = trustpolicy.trust_policy(
        [ar(externalId="ext-1", sourceIdentity="team-a")], operator_role=OPERATOR
    )
    [stmt] = policy["Statement"]
    assert stmt["Action"] == ["sts:AssumeRole", "sts:TagSession", "sts:SetSourceIdentity"]
    assert stmt["Condition"]["StringEquals"] == {
        "aws:RequestTag/kubernetes-namespace": "team-a",
        "sts:ExternalId": "ext-1",
        "sts:SourceIdentity": "team-a",
    }


def test_without_session_tags_there_is_no_tag_session_and_no_tag_condition() -> None:
    policy, _ = trustpolicy.trust_policy([ar()], operator_role=OPERATOR, session_tags=False)
    [stmt] = policy["Statement"]
    assert stmt["Action"] == ["sts:AssumeRole"] and "Condition" not in stmt


def test_a_chained_binding_trusts_its_source_role_from_the_same_file() -> None:
    source = ar("base", roleArn="arn:aws:iam::123456789012:role/team-a-base")
    chained = ar("chained", source={"assumedRoleRef": {"name": "base"}}, durationSeconds=3600)
    policy, notes = trustpolicy.trust_policy([chained, source])
    assert policy["Statement"][0]["Principal"] == {"AWS": "arn:aws:iam::123456789012:role/team-a-base"}
    assert not any("placeholder" in n for n in notes)


def test_without_operator_role_the_principal_is_a_placeholder_and_a_note_says_so() -> None:
    policy, notes = trustpolicy.trust_policy([ar()])
    assert policy["Statement"][0]["Principal"] == {"AWS": trustpolicy.PLACEHOLDER_OPERATOR}
    assert any("pass --operator-role ARN" in n for n in notes)


def test_a_file_without_an_assumed_role_is_refused() -> None:
    with pytest.raises(ValueError, match="no AssumedRole"):
        trustpolicy.trust_policy([{"kind": "Namespace"}])


@pytest.mark.parametrize(
    "reason", [r for r in Reason if r not in (Reason.CREDENTIALS_ISSUED, Reason.REFRESH_SUCCEEDED)]
)
def test_doctor_has_a_fix_for_every_failing_reason(reason: Reason) -> None:
    assert doctor.FIXES[reason]


@pytest.mark.parametrize("reason", list(Reason))
def test_troubleshooting_covers_every_reason(reason: Reason) -> None:
    doc = (ROOT / "docs" / "troubleshooting.md").read_text()
    assert f"`{reason.value}`" in doc, f"docs/troubleshooting.md: add {reason.value} (cause, fix)"
