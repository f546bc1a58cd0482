"""AssumedRolePolicy evaluation: default deny, globs, selectors, duration caps (no I/O)."""

from __future__ import annotations

import pytest

from rolecall.access import evaluate
from rolecall.model import parse_policy

TEAM_A = parse_policy(
    "team-a",
    {
        "namespaces": ["team-a", "team-a-*"],
        "roleArns": ["arn:aws:iam::123456789012:role/team-a-*"],
        "maxDurationSeconds": 3600,
    },
)
LABELLED = parse_policy(
    "labelled",
    {
        "namespaceSelector": {
            "matchLabels": {"team": "b"},
            "matchExpressions": [{"key": "env", "operator": "In", "values": ["prod", "staging"]}],
        },
        "roleArns": ["arn:aws:iam::123456789012:role/b"],
    },
)
POLICIES = [TEAM_A, LABELLED]

CASES = [
    (
        "admits the namespace and a matching role",
        "team-a",
        {},
        "arn:aws:iam::123456789012:role/team-a-s3",
        3600,
        True,
        "team-a",
    ),
    (
        "admits a namespace glob",
        "team-a-dev",
        {},
        "arn:aws:iam::123456789012:role/team-a-s3",
        900,
        True,
        "team-a",
    ),
    (
        "denies another namespace",
        "team-b",
        {},
        "arn:aws:iam::123456789012:role/team-a-s3",
        900,
        False,
        "namespace 'team-b' is not permitted to assume role 'arn:aws:iam::123456789012:role/team-a-s3'",
    ),
    (
        "denies a role outside the globs",
        "team-a",
        {},
        "arn:aws:iam::123456789012:role/admin",
        900,
        False,
        "no AssumedRolePolicy admits it",
    ),
    (
        "denies another account",
        "team-a",
        {},
        "arn:aws:iam::999999999999:role/team-a-s3",
        900,
        False,
        "spec.roleArns matches",
    ),
    (
        "denies a duration above the cap",
        "team-a",
        {},
        "arn:aws:iam::123456789012:role/team-a-s3",
        7200,
        False,
        "only for up to 3600 seconds",
    ),
    (
        "admits by label selector",
        "anything",
        {"team": "b", "env": "prod"},
        "arn:aws:iam::123456789012:role/b",
        43200,
        True,
        "labelled",
    ),
    (
        "denies when a selector expression fails",
        "anything",
        {"team": "b", "env": "dev"},
        "arn:aws:iam::123456789012:role/b",
        900,
        False,
        "not permitted",
    ),
    (
        "glob does not cross into look-alike names",
        "team-ab",
        {},
        "arn:aws:iam::123456789012:role/team-a-s3",
        900,
        False,
        "not permitted",
    ),
]


@pytest.mark.parametrize(
    ("ns", "labels", "arn", "duration", "allowed", "text"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_evaluate(ns: str, labels: dict[str, str], arn: str, duration: int, allowed: bool, text: str) -> None:
    decision = evaluate(
        namespace=ns, namespace_labels=labels, role_arn=arn, duration_seconds=duration, policies=POLICIES
    )
    assert decision.allowed is allowed
    assert text in (decision.policy if allowed else decision.message)


def test_default_deny_without_policies() -> None:
    assert not evaluate(
        namespace="a",
        namespace_labels={},
        role_arn="arn:aws:iam::1:role/x",
        duration_seconds=900,
        policies=[],
    ).allowed


def test_enforcement_off_admits_everything() -> None:
    assert evaluate(
        namespace="a",
        namespace_labels={},
        role_arn="arn:aws:iam::1:role/x",
        duration_seconds=900,
        policies=[],
        enforce=False,
    ).allowed
