"""Generated bad AssumedRole specs, through every layer that sees them.

Hypothesis mutates a valid spec — wrong types, huge and unicode strings, invalid ARNs and
partitions, out-of-range durations, 51 session tags, malformed and oversized session
policies, invalid session names and more — and sends the result through

(a) the CRD schema (a dry-run POST to the API emulator): accepted, or 422 naming the field;
(b) the validating webhook's decision, ``rolecall.admission.review_assumed_role`` (pure);
(c) the reconciler's parser, ``rolecall.model.parse_assumed_role`` (pure), and, end to end,
    a running operator: a few generated bad specs next to a good binding.

Every case is accepted or rejected with a message naming the field (``spec.<field>``);
nothing raises anything else. Counts go to ``$ROLECALL_FIGURES_DIR`` (docs/reliability.md).
"""

from __future__ import annotations

import collections
import copy
import json
import os
import random
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubernetes.client.exceptions import ApiException

from rolecall.admission import review_assumed_role
from rolecall.model import (
    ARN_ROLE_RE,
    DNS_SUBDOMAIN_RE,
    EXTERNAL_ID_RE,
    PROFILE_RE,
    REGION_RE,
    SESSION_NAME_RE,
    SOURCE_IDENTITY_RE,
    TAG_KEY_RE,
    TAG_VALUE_RE,
    PolicySpec,
    SpecError,
    parse_assumed_role,
)
from tests.harness.k8s import K8s
from tests.harness.kube_fixtures import create_test_namespace, delete_test_namespace, raw_request
from tests.harness.kubeproxy import write_figures
from tests.harness.operator_fixtures import ROLE_PREFIX
from tests.harness.sts import STSFaultProxy
from tests.harness.wait import wait_for

NS = "team-a"
NAME = "app-creds"
GOOD_ROLE = ROLE_PREFIX + "team-a-s3-reader"
BASE: dict[str, Any] = {
    "roleArn": GOOD_ROLE,
    "subjects": [{"kind": "ServiceAccount", "name": "app"}],
    "region": "us-east-1",
}
INT64 = (-(2**63), 2**63 - 1)
EXPECTED_TYPE = {
    "roleArn": str,
    "subjects": list,
    "sessionName": str,
    "durationSeconds": int,
    "region": str,
    "externalId": str,
    "sessionPolicy": str,
    "policyArns": list,
    "sessionTags": dict,
    "transitiveTagKeys": list,
    "automaticSessionTags": bool,
    "sourceIdentity": str,
    "source": dict,
    "secretName": str,
    "profile": str,
    "mountPath": str,
    "injection": dict,
    "suspend": bool,
}


@dataclass(frozen=True)
class Mutation:
    """Set ``spec[field] = value``; ``invalid``: every layer of the operator must refuse it."""

    field: str
    value: Any
    invalid: bool


# --- value strategies ------------------------------------------------------------------------


def texts(*, huge: bool = True) -> st.SearchStrategy[str]:
    """Any text: unicode (all planes, controls, NUL), and now and then a very long one."""
    parts = [st.text(max_size=80), st.text(st.characters(codec="utf-8"), max_size=80)]
    if huge:
        parts.append(
            st.builds(
                lambda ch, n: ch * n, st.sampled_from("aé\u4e2d😀/"), st.sampled_from([65, 300, 2049, 70_000])
            )
        )
    return st.one_of(*parts)


def scalars(big_ints: bool) -> st.SearchStrategy[Any]:
    lo, hi = (None, None) if big_ints else INT64
    return st.one_of(
        st.booleans(),
        st.integers(min_value=lo, max_value=hi),
        st.floats(allow_nan=False, allow_infinity=False),
        texts(huge=False),
    )


def json_values(big_ints: bool) -> st.SearchStrategy[Any]:
    """Any JSON value (scalars, short lists and objects, one level of nesting)."""
    leaf = scalars(big_ints)
    return st.one_of(
        leaf,
        st.lists(leaf, max_size=3),
        st.dictionaries(st.text(max_size=8), st.one_of(leaf, st.lists(leaf, max_size=2)), max_size=3),
    )


def wrong_type(field: str, big_ints: bool) -> st.SearchStrategy[Mutation]:
    """A value of another JSON type than the field's (never null: null means 'unset')."""
    lo, hi = (None, None) if big_ints else INT64
    by_type: dict[type, st.SearchStrategy[Any]] = {
        bool: st.booleans(),
        int: st.integers(min_value=lo, max_value=hi),
        float: st.floats(allow_nan=False, allow_infinity=False),
        str: texts(huge=False),
        list: st.lists(scalars(big_ints), max_size=3),
        dict: st.dictionaries(st.text(max_size=8), scalars(big_ints), max_size=3),
    }
    expected = EXPECTED_TYPE[field]
    others = [strategy for kind, strategy in by_type.items() if kind is not expected]
    if expected is int:  # a float is not an integer either (bool stays: JSON true is no number)
        others = [by_type[bool], by_type[str], by_type[list], by_type[dict], by_type[float]]
    return st.one_of(*others).map(lambda v: Mutation(field, v, True))


def arns() -> st.SearchStrategy[Mutation]:
    partition = st.sampled_from(["aws", "aws-cn", "aws-us-gov", "aws-iso", "aws-iso-b", "AWS", "", "awss"])
    account = st.text("0123456789", min_size=0, max_size=14)
    resource = st.sampled_from(["role/", "user/", "policy/", "role", "assumed-role/", "role/path/"])
    name = st.one_of(st.text(max_size=20), st.from_regex(r"\A[\w+=,.@-]{1,70}\Z"))
    built = st.builds(lambda p, a, r, n: f"arn:{p}:iam::{a}:{r}{n}", partition, account, resource, name)
    sts_arn = st.just("arn:aws:sts::123456789012:assumed-role/x/y")
    return (
        st.one_of(built, sts_arn, texts())
        .filter(lambda v: v != "")
        .map(lambda v: Mutation("roleArn", v, not (len(v) <= 2048 and ARN_ROLE_RE.fullmatch(v))))
    )


def durations(big_ints: bool) -> st.SearchStrategy[Mutation]:
    lo, hi = (-(2**100), 2**100) if big_ints else INT64
    return (
        st.integers(min_value=lo, max_value=hi)
        .filter(lambda d: not 900 <= d <= 43200)
        .map(lambda d: Mutation("durationSeconds", d, True))
    )


TAG_KEY = st.from_regex(r"\A[a-z][a-z0-9-]{0,20}\Z")


def tags() -> st.SearchStrategy[Mutation]:
    many = st.dictionaries(TAG_KEY, st.text("abc", max_size=5), min_size=51, max_size=60).map(
        lambda d: Mutation("sessionTags", d, True)
    )
    reserved = st.sampled_from(["kubernetes-namespace", "Rolecall-Assumed-Role", "aws:foo", "AWS:bar"]).map(
        lambda k: Mutation("sessionTags", {k: "x"}, True)
    )
    bad_key = (
        st.text(min_size=0, max_size=140)
        .filter(lambda k: not TAG_KEY_RE.fullmatch(k))
        .map(lambda k: Mutation("sessionTags", {k: "v"}, True))
    )
    bad_value = st.one_of(
        st.text(min_size=1, max_size=10).filter(lambda v: not TAG_VALUE_RE.fullmatch(v)),
        st.just("x" * 257),
    ).map(lambda v: Mutation("sessionTags", {"team": v}, True))
    dup = st.just(Mutation("sessionTags", {"Team": "a", "team": "b"}, True))
    maybe = st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=5).map(
        lambda d: Mutation("sessionTags", d, False)
    )
    return st.one_of(many, reserved, bad_key, bad_value, dup, maybe)


def policies() -> st.SearchStrategy[Mutation]:
    not_json = st.text(min_size=1, max_size=100).filter(lambda t: not _is_json(t))
    not_policy = st.one_of(
        st.just("[]"), st.just('"x"'), st.just("42"), st.just("{}"), st.just('{"Version": "2012-10-17"}')
    )
    oversized = st.integers(min_value=2049, max_value=20_000).map(
        lambda n: json.dumps({"Version": "2012-10-17", "Statement": [], "Pad": "x" * n})
    )
    wide_chars = st.sampled_from(["\u0100", "\u4e2d", "😀", "\x00", "\x7f\x01"]).map(
        lambda ch: '{"Statement": [], "Sid": "' + ch + '"}'
    )
    return st.one_of(not_json, not_policy, oversized, wide_chars).map(
        lambda v: Mutation("sessionPolicy", v, True)
    )


def _is_json(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict) and "Statement" in json.loads(text)
    except ValueError:
        return False


def pattern_breakers(field: str, pattern: re.Pattern[str]) -> st.SearchStrategy[Mutation]:
    """Strings that break the field's rule (an empty string means 'unset'), among them
    valid values with a trailing newline."""
    valid = {
        "sessionName": "team-a.app",
        "region": "us-east-1",
        "externalId": "ext-id",
        "sourceIdentity": "me",
        "secretName": "creds",
        "profile": "p",
    }.get(field, "x")
    return st.one_of(
        texts().filter(lambda v: v != "" and not pattern.fullmatch(v)), st.just(valid + "\n")
    ).map(lambda v: Mutation(field, v, True))


def subjects() -> st.SearchStrategy[Mutation]:
    bad_one = st.one_of(
        st.fixed_dictionaries(
            {"kind": st.sampled_from(["User", "Group", "serviceaccount", ""]), "name": st.just("app")}
        ),
        st.fixed_dictionaries(
            {
                "kind": st.just("ServiceAccount"),
                "name": texts().filter(lambda n: not (n and len(n) <= 253 and DNS_SUBDOMAIN_RE.fullmatch(n))),
            }
        ),
        st.fixed_dictionaries(
            {"name": st.just("app"), "namespace": st.sampled_from(["kube-system", "other"])}
        ),
        st.just({"kind": "ServiceAccount"}),
        st.just("app"),
    )
    return st.lists(bad_one, min_size=1, max_size=3).map(lambda v: Mutation("subjects", v, True))


def sources() -> st.SearchStrategy[Mutation]:
    return st.sampled_from(
        [
            {"secretRef": {"name": "a"}, "assumedRoleRef": {"name": "b"}},
            {"secretRef": {"name": "keys", "namespace": "kube-system"}},
            {"assumedRoleRef": {"name": "hop", "namespace": "other"}},
            {"assumedRoleRef": {"name": NAME}},
            {"secretRef": {"name": "Not_A_Name"}},
            {"secretRef": {}},
            {"secretRef": "keys"},
        ]
    ).map(lambda v: Mutation("source", v, True))


def policy_arns() -> st.SearchStrategy[Mutation]:
    good = "arn:aws:iam::aws:policy/ReadOnlyAccess"
    return st.one_of(
        st.lists(st.just(good), min_size=11, max_size=15),
        st.lists(texts(huge=False).filter(lambda a: not a.startswith("arn:")), min_size=1, max_size=3),
        st.just(["arn:aws-iso:iam::aws:policy/X"]),
    ).map(lambda v: Mutation("policyArns", v, True))


def mutations(big_ints: bool) -> st.SearchStrategy[Mutation]:
    return st.one_of(
        st.sampled_from(sorted(EXPECTED_TYPE)).flatmap(lambda f: wrong_type(f, big_ints)),
        arns(),
        durations(big_ints),
        tags(),
        policies(),
        pattern_breakers("sessionName", SESSION_NAME_RE),
        pattern_breakers("region", REGION_RE),
        pattern_breakers("externalId", EXTERNAL_ID_RE),
        pattern_breakers("sourceIdentity", SOURCE_IDENTITY_RE),
        st.just(Mutation("sourceIdentity", "aws:me", True)),
        pattern_breakers("secretName", DNS_SUBDOMAIN_RE),
        pattern_breakers("profile", PROFILE_RE),
        st.sampled_from(["relative/path", "/a/../b", "/a:b", "/with space", "/" + "x" * 1100]).map(
            lambda v: Mutation("mountPath", v, True)
        ),
        st.text(max_size=10)
        .filter(lambda m: m not in ("", "sidecar", "file", "env"))
        .map(lambda m: Mutation("injection", {"mode": m}, True)),
        st.lists(texts(huge=False), min_size=1, max_size=3).map(
            lambda v: Mutation("transitiveTagKeys", v, True)
        ),
        subjects(),
        sources(),
        policy_arns(),
        st.just(Mutation("roleArn", None, True)),
        json_values(big_ints).map(lambda v: Mutation("unknownField", v, False)),
    )


@dataclass
class Case:
    spec: Any
    fields: frozenset[str]  # the top-level fields that were mutated ("spec": the whole spec)
    invalid: bool  # some layer of the operator must refuse it


AUTOMATIC_TAGS = frozenset({"kubernetes-namespace", "kubernetes-cluster-name", "rolecall-assumed-role"})


def _transitive_ok(spec: dict[str, Any]) -> bool:
    keys = spec.get("transitiveTagKeys")
    if keys is None:
        return True
    if not isinstance(keys, list):
        return False
    allowed = set(AUTOMATIC_TAGS)
    tags = spec.get("sessionTags")
    if isinstance(tags, dict):
        allowed |= {k.lower() for k in tags if isinstance(k, str)}
    return all(isinstance(k, str) and k.lower() in allowed for k in keys)


def apply(muts: list[Mutation]) -> Case:
    spec = copy.deepcopy(BASE)
    final: dict[str, Mutation] = {}
    for m in muts:
        if m.value is None:
            spec.pop(m.field, None)
        else:
            spec[m.field] = m.value
        final[m.field] = m
    invalid = any(m.invalid for f, m in final.items() if f != "transitiveTagKeys")
    if "transitiveTagKeys" in final:
        invalid = invalid or not _transitive_ok(spec)
    return Case(spec, frozenset(final), invalid)


def cases(big_ints: bool) -> st.SearchStrategy[Case]:
    whole = st.one_of(scalars(big_ints), st.lists(scalars(big_ints), max_size=3), st.just(None)).map(
        lambda v: Case(v, frozenset({"spec"}), True)
    )
    return st.one_of(st.lists(mutations(big_ints), min_size=1, max_size=3).map(apply), whole)


def named(message: str, fields: frozenset[str]) -> bool:
    """Does the message name one of the fields as ``spec.<field>`` (or the spec itself)?"""
    if "spec" in fields and re.search(r"\bspec\b", message):
        return True
    return any(re.search(rf"\bspec\.{re.escape(f)}\b", message) for f in fields)


STATS: collections.Counter[str] = collections.Counter()


# --- (c) the reconciler's parser ------------------------------------------------------------


@settings(
    max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(case=cases(big_ints=True))
def test_reconciler_parser_accepts_or_names_the_field(case: Case) -> None:
    try:
        parse_assumed_role(NS, NAME, case.spec)
    except SpecError as exc:
        STATS["parser rejected"] += 1
        assert exc.errors, "a SpecError without errors"
        for err in exc.errors:
            assert named(err.field, case.fields), f"{err.field!r} is not one of {sorted(case.fields)}: {exc}"
        assert named(str(exc), case.fields)
        return
    STATS["parser accepted"] += 1
    assert not case.invalid, f"accepted an invalid spec: {case.spec!r}"[:2000]


def test_reconciler_parser_rejects_a_trailing_newline() -> None:
    """Python's '$' also matches before a final newline: the rules must not (was a bug)."""
    values = {
        "roleArn": GOOD_ROLE + "\n",
        "sessionName": "team-a.app\n",
        "region": "us-east-1\n",
        "externalId": "abc\n",
        "sourceIdentity": "me\n",
        "secretName": "creds\n",
        "profile": "p\n",
        "subjects": [{"kind": "ServiceAccount", "name": "app\n"}],
        "sessionTags": {"team\n": "a"},
    }
    accepted = []
    for field, value in values.items():
        try:
            parse_assumed_role(NS, NAME, {**BASE, field: value})
        except SpecError as exc:
            assert named(str(exc), frozenset({field})), str(exc)
        else:
            accepted.append(field)
    assert not accepted, f"accepted with a trailing newline: {accepted}"


# --- (b) the validating webhook ----------------------------------------------------------------

ADMIT_ALL = [
    PolicySpec(
        name="all",
        namespaces=("*",),
        role_arns=("arn:**",),
        allow_automatic_tag_opt_out=True,
        session_tag_keys=("**",),
        source_identities=("**",),
        external_ids=("**",),
    )
]


@settings(
    max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(case=cases(big_ints=True), operation=st.sampled_from(["CREATE", "UPDATE"]))
def test_webhook_accepts_or_names_the_field(case: Case, operation: str) -> None:
    body = {
        "apiVersion": "rolecall.dev/v1alpha1",
        "kind": "AssumedRole",
        "metadata": {"name": NAME, "namespace": NS},
        "spec": case.spec,
    }
    old = {**body, "spec": BASE} if operation == "UPDATE" else None
    review = review_assumed_role(
        body,
        operation=operation,
        namespace=NS,
        policies=ADMIT_ALL,
        namespace_labels={},
        enforce=True,
        old=old,
    )
    if review.allowed:
        STATS["webhook allowed"] += 1
        assert not case.invalid, f"admitted an invalid spec: {case.spec!r}"[:2000]
        return
    STATS["webhook rejected"] += 1
    assert named(review.message, case.fields), review.message[:500]
    assert all(isinstance(w, str) for w in review.warnings)


# --- (a) the CRD schema ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def schema_namespace(kube_api: Any, crds: None) -> Iterator[str]:
    name = create_test_namespace(kube_api, "bad-input-schema")
    yield name
    delete_test_namespace(kube_api, name)


def test_crd_schema_accepts_or_names_the_field(kube_api: Any, schema_namespace: str) -> None:
    counts: collections.Counter[str] = collections.Counter()
    discrepancies: collections.Counter[str] = collections.Counter()

    @settings(
        max_examples=150,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(case=cases(big_ints=False))
    def check(case: Case) -> None:
        body = {
            "apiVersion": "rolecall.dev/v1alpha1",
            "kind": "AssumedRole",
            "metadata": {"name": NAME},
            "spec": case.spec,
        }
        if case.spec is None:
            del body["spec"]
        answer = raw_request(
            kube_api,
            "POST",
            f"/apis/rolecall.dev/v1alpha1/namespaces/{schema_namespace}/assumedroles",
            query={"dryRun": "All"},
            body=body,
        )
        assert answer.status in (200, 201, 422), (answer.status, answer.data[:500])
        try:
            parse_assumed_role(schema_namespace, NAME, case.spec)
            parser_ok = True
        except SpecError:
            parser_ok = False
        if answer.status == 422:
            counts["schema rejected"] += 1
            message = answer.json()["message"]
            assert named(message, case.fields), message[:500]
            if parser_ok:
                discrepancies["schema rejects, parser accepts"] += 1
        else:
            counts["schema accepted"] += 1
            if not parser_ok:
                discrepancies["schema accepts, reconciler rejects (InvalidSpec)"] += 1

    started = time.monotonic()
    check()
    STATS.update(counts)
    write_figures(
        "bad-input-schema",
        {
            "test": "test_crd_schema_accepts_or_names_the_field",
            "cases": sum(counts.values()),
            **counts,
            **discrepancies,
            "seconds": round(time.monotonic() - started, 1),
        },
    )
    # nothing was stored (dry run)
    assert (
        raw_request(
            kube_api, "GET", f"/apis/rolecall.dev/v1alpha1/namespaces/{schema_namespace}/assumedroles"
        ).json()["items"]
        == []
    )


# --- (c) end to end: a running operator --------------------------------------------------------


# Bad values the CRD schema lets through: only the operator can refuse them.
SCHEMA_PASSING_BAD: dict[str, list[Any]] = {
    "sessionPolicy": ["{not json", "[]", '{"Version": "2012-10-17"}', '{"Statement": [], "S": "\u4e2d"}'],
    "sessionTags": [{"kubernetes-namespace": "other"}, {"aws:x": "y"}, {"team": "a!b"}, {"bad key!": "v"}],
    # (subjects[].namespace is not in the schema: it is pruned before the operator sees it)
    "policyArns": [["arn:aws:iam::aws:policy/with space"], ["arn:aws:iam::aws:policy/\u00e9t\u00e9"]],
    "source": [
        {"secretRef": {"name": "keys", "namespace": "other"}},
        {"assumedRoleRef": {"name": "SELF"}},
        {"secretRef": {"name": "Upper_Case"}},
    ],
    "mountPath": ["/a/../etc", "/x/.."],
    "sessionName": ["h\u00e9llo", "\u4e2d\u6587"],  # the emulator's patterns use Python's unicode \w
}


def test_running_operator_reports_invalid_spec_and_keeps_serving_the_good_one(
    k8s: K8s, namespace: str, policy: str, start_operator: Any, sts: STSFaultProxy, log_capture: Any
) -> None:
    seed = int(os.environ.get("ROLECALL_BAD_INPUT_SEED") or time.time())
    rng = random.Random(seed)
    bad = [(field, rng.choice(values)) for field, values in SCHEMA_PASSING_BAD.items()]
    print(f"bad specs (seed {seed}): {bad}")
    start_operator()
    k8s.create_ar(namespace, "good", dict(BASE))
    created: dict[str, str] = {}
    refused: dict[str, str] = {}
    for i, (field, value) in enumerate(bad):
        name = f"bad-{i}"
        if value == {"assumedRoleRef": {"name": "SELF"}}:
            value = {"assumedRoleRef": {"name": name}}
        try:
            k8s.create_ar(namespace, name, {**BASE, field: value})
            created[name] = field
        except ApiException as exc:
            message = json.loads(exc.body)["message"]
            assert exc.status == 422 and named(message, frozenset({field})), message
            refused[name] = field
    wait_for(lambda: (x := k8s.condition(namespace, "good")) and x["status"] == "True", timeout=10)
    for name, field in created.items():
        cond = wait_for(
            lambda name=name: (x := k8s.condition(namespace, name)) and x["reason"] == "InvalidSpec" and x,
            timeout=10,
            message=f"{name} never got InvalidSpec",
        )
        assert cond["status"] == "False"
        assert named(cond["message"], frozenset({field})), cond["message"]
        assert k8s.secret(namespace, name) is None
    time.sleep(0.3)
    assert (x := k8s.condition(namespace, "good")) and x["status"] == "True", "the good binding was disturbed"
    assert len(sts.requests(action="AssumeRole")) == 1, "an invalid spec reached STS"
    text = log_capture.text()
    assert "failed unexpectedly" not in text and "Traceback" not in text
    STATS["end-to-end invalid"] += len(created)
    write_figures(
        "bad-input-end-to-end",
        {
            "test": "test_running_operator_reports_invalid_spec_and_keeps_serving_the_good_one",
            "seed": seed,
            "bad_specs": len(bad),
            "reached_the_operator_invalid_spec": len(created),
            "refused_by_schema": len(refused),
            "fields": sorted(f for f, _ in bad),
            "good_binding_ready": True,
        },
    )


def test_zz_bad_input_totals() -> None:
    """Figures of the whole run (the property tests above fill STATS)."""
    write_figures(
        "bad-input-totals",
        {"test": "test_bad_input.py (all)", **STATS, "generated_cases": sum(STATS.values())},
    )
