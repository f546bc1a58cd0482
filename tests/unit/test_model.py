"""Spec validation: every rule names the field, the value and the rule (no I/O)."""

from __future__ import annotations

from typing import Any

import pytest

from rolecall import constants as c
from rolecall.model import (
    SpecError,
    build_assume_request,
    default_session_name,
    parse_assumed_role,
    parse_policy,
    session_name_for,
    spec_hash,
)

ARN = "arn:aws:iam::123456789012:role/app"


def errors(spec: Any) -> str:
    with pytest.raises(SpecError) as info:
        parse_assumed_role("team-a", "s3", spec)
    return str(info.value)


def test_minimal_spec_gets_defaults() -> None:
    spec = parse_assumed_role("team-a", "s3", {"roleArn": ARN})
    assert spec.duration_seconds == 3600 and spec.secret_name == "s3" and spec.profile == "default"
    assert spec.mount_path == c.DEFAULT_MOUNT_PATH and spec.injection_mode == "" and not spec.suspend


@pytest.mark.parametrize(
    "arn",
    [
        ARN,
        "arn:aws-cn:iam::123456789012:role/path/to/app",
        "arn:aws-us-gov:iam::123456789012:role/a+b=c,d.e@f-g_h",
    ],
)
def test_role_arns_of_every_partition(arn: str) -> None:
    assert parse_assumed_role("ns", "n", {"roleArn": arn}).role_arn == arn


BAD = [
    ("missing role", {}, "spec.roleArn: required"),
    (
        "role in an unknown partition",
        {"roleArn": "arn:aws-xx:iam::123456789012:role/a"},
        "spec.roleArn: invalid value 'arn:aws-xx:iam::123456789012:role/a'",
    ),
    ("user instead of role", {"roleArn": "arn:aws:iam::123456789012:user/a"}, "must be an IAM role ARN"),
    ("short account", {"roleArn": "arn:aws:iam::12345:role/a"}, "12-digit account"),
    (
        "duration too short",
        {"roleArn": ARN, "durationSeconds": 100},
        "spec.durationSeconds: invalid value 100: must be between 900 and 43200",
    ),
    (
        "duration too long",
        {"roleArn": ARN, "durationSeconds": 43201},
        "spec.durationSeconds: invalid value 43201",
    ),
    (
        "duration as text",
        {"roleArn": ARN, "durationSeconds": "3600"},
        "spec.durationSeconds: invalid value '3600': must be an integer",
    ),
    (
        "duration as bool",
        {"roleArn": ARN, "durationSeconds": True},
        "spec.durationSeconds: invalid value true: must be an integer",
    ),
    (
        "session name with a space",
        {"roleArn": ARN, "sessionName": "a b"},
        "spec.sessionName: invalid value 'a b'",
    ),
    ("session name too long", {"roleArn": ARN, "sessionName": "a" * 65}, "1-64 characters"),
    (
        "shell characters in mountPath",
        {"roleArn": ARN, "mountPath": "/x;touch${IFS}/tmp/p"},
        "spec.mountPath: invalid value '/x;touch${IFS}/tmp/p': must be an absolute path of letters",
    ),
    ("quote in mountPath", {"roleArn": ARN, "mountPath": "/x'y"}, "spec.mountPath"),
    ("dot part in mountPath", {"roleArn": ARN, "mountPath": "/x/./y"}, "no '.' or '..' part"),
    ("root mountPath", {"roleArn": ARN, "mountPath": "/"}, "spec.mountPath"),
    (
        "EKS Pod Identity tag key",
        {"roleArn": ARN, "sessionTags": {"kubernetes-service-account": "admin"}},
        "tag keys starting with aws:, kubernetes-, rolecall-, eks- are reserved",
    ),
    ("too many subjects", {"roleArn": ARN, "subjects": [{"name": "a"}] * 65}, "at most 64 items"),
    (
        "huge policy ARN",
        {"roleArn": ARN, "policyArns": ["arn:aws:iam::aws:policy/" + "x" * 3000]},
        "at most 2048 characters",
    ),
    ("external id too short", {"roleArn": ARN, "externalId": "x"}, "spec.externalId"),
    (
        "policy not json",
        {"roleArn": ARN, "sessionPolicy": "{nope"},
        "spec.sessionPolicy: invalid value '{nope': must be a JSON IAM policy document",
    ),
    ("policy without statement", {"roleArn": ARN, "sessionPolicy": "{}"}, "with a Statement"),
    (
        "policy too large",
        {"roleArn": ARN, "sessionPolicy": '{"Statement": "' + "x" * 3000 + '"}'},
        "at most 2048 characters",
    ),
    (
        "eleven policy arns",
        {"roleArn": ARN, "policyArns": ["arn:aws:iam::aws:policy/ReadOnlyAccess"] * 11},
        "spec.policyArns: invalid value '<11 items>': must have at most 10 items",
    ),
    ("bad policy arn", {"roleArn": ARN, "policyArns": ["nope"]}, "spec.policyArns[0]"),
    (
        "51 tags",
        {"roleArn": ARN, "sessionTags": {f"k{i}": "v" for i in range(51)}},
        "at most 50 session tags",
    ),
    (
        "48 tags plus the automatic ones",
        {"roleArn": ARN, "sessionTags": {f"k{i}": "v" for i in range(48)}},
        "including rolecall's automatic tags",
    ),
    (
        "spoofed namespace tag",
        {"roleArn": ARN, "sessionTags": {"Kubernetes-Namespace": "team-b"}},
        "is set by rolecall itself",
    ),
    ("aws: tag", {"roleArn": ARN, "sessionTags": {"aws:foo": "x"}}, "must not start with aws:"),
    (
        "tag value too long",
        {"roleArn": ARN, "sessionTags": {"k": "v" * 257}},
        "tag values must be strings of 0-256",
    ),
    (
        "transitive key not a tag",
        {"roleArn": ARN, "transitiveTagKeys": ["nope"]},
        "spec.transitiveTagKeys[0]: invalid value 'nope': must name a key of spec.sessionTags",
    ),
    ("source identity aws:", {"roleArn": ARN, "sourceIdentity": "aws:me"}, "spec.sourceIdentity"),
    (
        "both sources",
        {"roleArn": ARN, "source": {"secretRef": {"name": "a"}, "assumedRoleRef": {"name": "b"}}},
        "set at most one of secretRef and assumedRoleRef",
    ),
    (
        "source secret in another namespace",
        {"roleArn": ARN, "source": {"secretRef": {"name": "keys", "namespace": "team-b"}}},
        "spec.source.secretRef.namespace: invalid value 'team-b'",
    ),
    (
        "chained from another namespace",
        {"roleArn": ARN, "source": {"assumedRoleRef": {"name": "hop", "namespace": "kube-system"}}},
        "other namespaces cannot be used",
    ),
    (
        "chained above one hour",
        {"roleArn": ARN, "durationSeconds": 7200, "source": {"assumedRoleRef": {"name": "hop"}}},
        "capped by AWS at 3600 seconds",
    ),
    (
        "chained through itself",
        {"roleArn": ARN, "source": {"assumedRoleRef": {"name": "s3"}}},
        "cannot chain through itself",
    ),
    (
        "subject in another namespace",
        {"roleArn": ARN, "subjects": [{"kind": "ServiceAccount", "name": "app", "namespace": "team-b"}]},
        "spec.subjects[0].namespace: invalid value 'team-b'",
    ),
    (
        "subject of another kind",
        {"roleArn": ARN, "subjects": [{"kind": "User", "name": "bob"}]},
        "spec.subjects[0].kind: invalid value 'User': must be ServiceAccount",
    ),
    (
        "secret name with capitals",
        {"roleArn": ARN, "secretName": "Bad"},
        "spec.secretName: invalid value 'Bad'",
    ),
    (
        "relative mount path",
        {"roleArn": ARN, "mountPath": "aws"},
        "spec.mountPath: invalid value 'aws': must be an absolute path",
    ),
    (
        "unknown mode",
        {"roleArn": ARN, "injection": {"mode": "magic"}},
        "spec.injection.mode: invalid value 'magic': must be one of sidecar, file, env",
    ),
    ("bad region", {"roleArn": ARN, "region": "mars"}, "spec.region: invalid value 'mars'"),
    ("spec not an object", ["x"], 'spec: invalid value ["x"]: must be an object'),
    (
        "huge unicode role",
        {"roleArn": "arn:aws:iam::123456789012:role/" + "é" * 5000},
        "spec.roleArn: invalid value",
    ),
]


@pytest.mark.parametrize(("spec", "message"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_specs_name_field_value_and_rule(spec: Any, message: str) -> None:
    assert message in errors(spec)


def test_all_errors_are_reported_at_once() -> None:
    err = errors({"roleArn": "nope", "durationSeconds": 1, "region": "x"})
    assert "spec.roleArn" in err and "spec.durationSeconds" in err and "spec.region" in err


def test_long_values_are_cut_in_messages() -> None:
    assert len(errors({"roleArn": "arn:" + "x" * 5000})) < 400


@pytest.mark.parametrize(
    ("namespace", "name", "given", "expected"),
    [
        ("team-a", "s3-reader", "", "team-a.s3-reader"),
        ("team-a", "s3-reader", "reader", "team-a.reader"),
        # the namespace prefix is never the tenant's choice
        ("team-a", "s3-reader", "team-b.reader", "team-a.team-b.reader"),
        ("team-a", "s3-reader", "team-a.reader", "team-a.reader"),
        ("ns", "a" * 100, "", None),
        ("ns", "x", "b" * 64, None),
    ],
    ids=["namespace.name", "given suffix", "spoofed prefix", "own prefix", "long name", "long suffix"],
)
def test_session_name_always_starts_with_the_namespace(
    namespace: str, name: str, given: str, expected: str | None
) -> None:
    got = session_name_for(namespace, name, given)
    assert 2 <= len(got) <= 64 and got.startswith(namespace + ".")
    if expected:
        assert got == expected
    else:
        assert got != session_name_for(namespace, name + "b", given + "b")
    spec = parse_assumed_role(namespace, name, {"roleArn": ARN, "sessionName": given})
    assert build_assume_request(namespace, name, spec).session_name == got


def test_session_name_of_a_very_long_namespace_keeps_no_dot() -> None:
    got = default_session_name("n" * 63, "abc")
    assert len(got) == 64 and got.startswith("n" * 55 + "-") and "." not in got


def test_assume_request_carries_automatic_transitive_tags() -> None:
    spec = parse_assumed_role(
        "team-a", "s3", {"roleArn": ARN, "sessionTags": {"cost": "1"}, "transitiveTagKeys": ["cost"]}
    )
    req = build_assume_request("team-a", "s3", spec, default_region="eu-west-1", cluster_name="prod")
    assert dict(req.tags) == {
        "kubernetes-namespace": "team-a",
        "kubernetes-cluster-name": "prod",
        "rolecall-assumed-role": "s3",
        "cost": "1",
    }
    assert set(req.transitive_tag_keys) == {
        "cost",
        "kubernetes-namespace",
        "kubernetes-cluster-name",
        "rolecall-assumed-role",
    }
    assert req.session_name == "team-a.s3" and req.region == "eu-west-1"
    off = parse_assumed_role("team-a", "s3", {"roleArn": ARN, "automaticSessionTags": False})
    assert build_assume_request("team-a", "s3", off).tags == ()
    assert build_assume_request("team-a", "s3", spec, automatic_tags=False).tags == (("cost", "1"),)


def test_spec_hash_changes_with_what_the_credentials_depend_on() -> None:
    base = parse_assumed_role("ns", "n", {"roleArn": ARN})
    other = parse_assumed_role("ns", "n", {"roleArn": ARN, "durationSeconds": 7200})
    renamed_profile = parse_assumed_role("ns", "n", {"roleArn": ARN, "profile": "x"})
    h = spec_hash(build_assume_request("ns", "n", base), base.source)
    assert h == spec_hash(build_assume_request("ns", "n", renamed_profile), renamed_profile.source)
    assert h != spec_hash(build_assume_request("ns", "n", other), other.source)


def test_policy_parsing() -> None:
    p = parse_policy(
        "team-a",
        {"namespaces": ["team-a"], "roleArns": ["arn:aws:iam::1:role/*"], "maxDurationSeconds": 3600},
    )
    assert p.max_duration_seconds == 3600
    with pytest.raises(SpecError, match=r"spec.roleArns: required"):
        parse_policy("x", {"namespaces": ["a"]})
    with pytest.raises(SpecError, match=r"give spec.namespaces or spec.namespaceSelector"):
        parse_policy("x", {"roleArns": ["arn:**"]})
    with pytest.raises(SpecError, match=r"matchExpressions\[0\].operator: invalid value 'Maybe'"):
        parse_policy(
            "x",
            {
                "roleArns": ["arn:*"],
                "namespaceSelector": {"matchExpressions": [{"key": "a", "operator": "Maybe"}]},
            },
        )
