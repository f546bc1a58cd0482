"""AssumedRolePolicy evaluation: default deny, patterns, selectors, duration caps and
attribution (no I/O)."""

from __future__ import annotations

from typing import Any

import pytest

from rolecall.access import Decision, evaluate, pattern_matches
from rolecall.model import PolicySpec, SpecError, parse_assumed_role, parse_policy

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


def decide(
    ns: str, arn: str, policies: list[PolicySpec], labels: dict[str, str] | None = None, **spec: Any
) -> Decision:
    parsed = parse_assumed_role(ns, "binding", {"roleArn": arn, **spec})
    return evaluate(namespace=ns, namespace_labels=labels or {}, spec=parsed, policies=policies)


@pytest.mark.parametrize(
    ("ns", "labels", "arn", "duration", "allowed", "text"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_evaluate(ns: str, labels: dict[str, str], arn: str, duration: int, allowed: bool, text: str) -> None:
    decision = decide(ns, arn, POLICIES, labels, durationSeconds=duration)
    assert decision.allowed is allowed
    assert text in (decision.policy if allowed else decision.message)


def test_default_deny_without_policies() -> None:
    assert not decide("a", "arn:aws:iam::123456789012:role/x", []).allowed


def test_enforcement_off_admits_everything() -> None:
    spec = parse_assumed_role("a", "b", {"roleArn": "arn:aws:iam::123456789012:role/x", "externalId": "zz"})
    assert evaluate(namespace="a", namespace_labels={}, spec=spec, policies=[], enforce=False).allowed


@pytest.mark.parametrize(
    ("pattern", "value", "matches"),
    [
        ("arn:aws:iam::123456789012:role/team-a-*", "arn:aws:iam::123456789012:role/team-a-s3", True),
        # * never crosses / or :
        (
            "arn:aws:iam::123456789012:role/team-a-*",
            "arn:aws:iam::123456789012:role/team-a-x/prod-admin",
            False,
        ),
        ("arn:aws:iam::*:role/x", "arn:aws:iam::123456789012:role/x", True),
        ("arn:aws:iam::*:role/x", "arn:aws:iam::1:2:role/x", False),
        ("arn:aws:iam::123456789012:role/*", "arn:aws:iam::123456789012:role/path/x", False),
        ("arn:aws:iam::123456789012:role/*/*", "arn:aws:iam::123456789012:role/path/x", True),
        # ** crosses everything
        ("arn:aws:iam::123456789012:role/**", "arn:aws:iam::123456789012:role/path/x", True),
        ("arn:**", "arn:aws:iam::123456789012:role/path/x", True),
        ("arn:aws:iam::123456789012:role/x?", "arn:aws:iam::123456789012:role/x1", True),
        ("arn:aws:iam::123456789012:role/x?", "arn:aws:iam::123456789012:role/x/", False),
        # everything else is literal (fnmatch's [seq] is not a class here)
        ("arn:aws:iam::123456789012:role/[ab]", "arn:aws:iam::123456789012:role/a", False),
        ("arn:aws:iam::123456789012:role/a.b", "arn:aws:iam::123456789012:role/aXb", False),
        # the prefix caveat: team-a-* also covers team-a-b-...
        ("team-a-*", "team-a-b-payments", True),
        ("team-a", "team-a-b", False),
    ],
)
def test_patterns_match_part_by_part(pattern: str, value: str, matches: bool) -> None:
    assert pattern_matches(pattern, value) is matches


def test_namespace_placeholder_binds_each_namespace_to_its_own_roles() -> None:
    policy = parse_policy(
        "own",
        {"namespaces": ["*"], "roleArns": ["arn:aws:iam::123456789012:role/k8s/{namespace}/*"]},
    )
    own = "arn:aws:iam::123456789012:role/k8s/team-a/s3"
    assert decide("team-a", own, [policy]).allowed
    assert not decide("team-b", own, [policy]).allowed
    assert not decide("team-a", "arn:aws:iam::123456789012:role/k8s/team-a-b/s3", [policy]).allowed
    assert pattern_matches("x-{namespace}", "x-a.b*", "a.b*")
    assert not pattern_matches("x-{namespace}", "x-aXb", "a.b")


def test_policy_patterns_are_validated() -> None:
    with pytest.raises(SpecError) as info:
        parse_policy(
            "bad",
            {
                "namespaces": ["Team_A", "{namespace}"],
                "roleArns": ["arn:aws:iam::1:role/{name}", "role/x"],
                "externalIds": ["{ns}"],
            },
        )
    text = str(info.value)
    assert "spec.namespaces[0]: invalid value 'Team_A'" in text
    assert "spec.namespaces[1]: invalid value '{namespace}': placeholders are not allowed here" in text
    assert (
        "spec.roleArns[0]: invalid value 'arn:aws:iam::1:role/{name}': the only placeholder is {namespace}"
        in text
    )
    assert (
        "spec.roleArns[1]: invalid value 'role/x': must be a role ARN or a pattern starting with arn:" in text
    )
    assert "spec.externalIds[0]" in text


ROLE = "arn:aws:iam::123456789012:role/team-a-s3"
PLAIN = parse_policy("plain", {"namespaces": ["team-a"], "roleArns": [ROLE]})
GENEROUS = parse_policy(
    "generous",
    {
        "namespaces": ["team-a"],
        "roleArns": [ROLE],
        "allowAutomaticTagOptOut": True,
        "sessionTagKeys": ["cost-center", "{namespace}:*"],
        "sourceIdentities": ["ci-*"],
        "externalIds": ["{namespace}-ext", "partner-*"],
    },
)


@pytest.mark.parametrize(
    ("spec", "field", "how"),
    [
        (
            {"automaticSessionTags": False},
            "spec.automaticSessionTags is false",
            "spec.allowAutomaticTagOptOut: true",
        ),
        ({"sessionTags": {"team": "b"}}, "spec.sessionTags key 'team' is not allowed", "spec.sessionTagKeys"),
        ({"sourceIdentity": "team-b"}, "spec.sourceIdentity 'team-b' is not allowed", "(the default)"),
        ({"sourceIdentity": "team-a-b"}, "spec.sourceIdentity 'team-a-b'", "{namespace} = 'team-a'"),
        ({"externalId": "team-b-ext"}, "spec.externalId 'team-b-ext' is not allowed", "spec.externalIds []"),
    ],
)
def test_attribution_is_the_policy_call(spec: dict[str, Any], field: str, how: str) -> None:
    decision = decide("team-a", ROLE, [PLAIN], **spec)
    assert not decision.allowed and decision.policy == "plain"
    assert field in decision.message and how in decision.message
    assert "namespace 'team-a' may assume role" in decision.message


@pytest.mark.parametrize(
    "spec",
    [
        {"sourceIdentity": "team-a"},
        {"sourceIdentity": "team-a.alice"},
        {"sessionName": "team-b.reader"},  # allowed: the namespace prefix is added anyway
    ],
)
def test_attribution_tied_to_the_namespace_needs_no_grant(spec: dict[str, Any]) -> None:
    assert decide("team-a", ROLE, [PLAIN], **spec).allowed


@pytest.mark.parametrize(
    "spec",
    [
        {"automaticSessionTags": False},
        {"sessionTags": {"cost-center": "1", "team-a:owner": "x"}},
        {"sourceIdentity": "ci-runner"},
        {"externalId": "team-a-ext"},
        {"externalId": "partner-42"},
    ],
)
def test_a_policy_grants_attribution_choices(spec: dict[str, Any]) -> None:
    assert decide("team-a", ROLE, [PLAIN, GENEROUS], **spec).policy == "generous"


def test_grants_do_not_combine_across_policies() -> None:
    """The opt-out granted for one role does not carry over to a role another policy admits."""
    other_role = "arn:aws:iam::123456789012:role/team-a-other"
    narrow = parse_policy(
        "opt-out",
        {"namespaces": ["team-a"], "roleArns": [other_role], "allowAutomaticTagOptOut": True},
    )
    assert not decide("team-a", ROLE, [PLAIN, narrow], automaticSessionTags=False).allowed
    assert not decide("team-b", ROLE, [GENEROUS], externalId="team-b-ext").allowed


def test_explicit_source_identities_replace_the_default() -> None:
    assert not decide("team-a", ROLE, [GENEROUS], sourceIdentity="team-a").allowed
