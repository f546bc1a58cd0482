"""Which namespaces may bind which IAM roles, and with which attribution (pure).

Default deny: an AssumedRole is served only when one AssumedRolePolicy admits all of it —
its namespace (by name/pattern or label selector), its role ARN (pattern), its duration and
every attribution choice it makes (opting out of the automatic session tags, free session
tag keys, sourceIdentity, externalId). The decision carries the message shown in status and
at `kubectl apply`, naming the field, the value and how a cluster admin could admit it.

Patterns match part by part: ``*`` is any run of characters except ``/`` and ``:`` (so it
never crosses an ARN part or a role path), ``?`` one such character, ``**`` any run of
characters at all, and ``{namespace}`` stands for the binding's namespace. Everything else
is literal.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from rolecall.model import DEFAULT_SOURCE_IDENTITIES, PLACEHOLDER, AssumedRoleSpec, LabelSelector, PolicySpec

_TOKENS = re.compile(r"\*\*|\*|\?|" + re.escape(PLACEHOLDER))


@dataclass(frozen=True)
class Decision:
    allowed: bool
    message: str
    policy: str = ""


@functools.lru_cache(maxsize=4096)
def compile_pattern(pattern: str, namespace: str = "") -> re.Pattern[str]:
    """The regular expression of a policy pattern, ``{namespace}`` filled in."""
    out: list[str] = []
    pos = 0
    for token in _TOKENS.finditer(pattern):
        out.append(re.escape(pattern[pos : token.start()]))
        text = token.group()
        out.append(
            ".*"
            if text == "**"
            else "[^/:]*"
            if text == "*"
            else "[^/:]"
            if text == "?"
            else re.escape(namespace)
        )
        pos = token.end()
    out.append(re.escape(pattern[pos:]))
    return re.compile("".join(out), re.DOTALL)


def pattern_matches(pattern: str, value: str, namespace: str = "") -> bool:
    return compile_pattern(pattern, namespace).fullmatch(value) is not None


def selector_matches(selector: LabelSelector, labels: Mapping[str, str]) -> bool:
    """Kubernetes label-selector semantics (an empty selector matches everything)."""
    if any(labels.get(k) != v for k, v in selector.match_labels):
        return False
    for key, op, values in selector.match_expressions:
        present = key in labels
        if op == "In" and (not present or labels[key] not in values):
            return False
        if op == "NotIn" and present and labels[key] in values:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
    return True


def namespace_admitted(policy: PolicySpec, namespace: str, labels: Mapping[str, str]) -> bool:
    if any(pattern_matches(pattern, namespace) for pattern in policy.namespaces):
        return True
    return policy.namespace_selector is not None and selector_matches(policy.namespace_selector, labels)


def role_admitted(policy: PolicySpec, role_arn: str, namespace: str = "") -> bool:
    return any(pattern_matches(pattern, role_arn, namespace) for pattern in policy.role_arns)


def _listed(patterns: Iterable[str]) -> str:
    return "[" + ", ".join(repr(p) for p in patterns) + "]"


def attribution_problems(policy: PolicySpec, namespace: str, spec: AssumedRoleSpec) -> list[str]:
    """What of the binding's attribution and duration this (admitting) policy does not allow."""
    problems: list[str] = []
    if policy.max_duration_seconds is not None and spec.duration_seconds > policy.max_duration_seconds:
        problems.append(
            f"spec.durationSeconds is {spec.duration_seconds}, above the policy's "
            f"spec.maxDurationSeconds {policy.max_duration_seconds}: lower spec.durationSeconds "
            "or ask a cluster admin to raise the cap"
        )
    if not spec.automatic_session_tags and not policy.allow_automatic_tag_opt_out:
        problems.append(
            "spec.automaticSessionTags is false, but opting out of the automatic session tags "
            "(kubernetes-namespace, ...) is the cluster admin's call: remove it, or ask a cluster "
            "admin to set spec.allowAutomaticTagOptOut: true in an AssumedRolePolicy that admits "
            "this binding"
        )
    for key, _ in spec.session_tags:
        if not any(pattern_matches(p, key, namespace) for p in policy.session_tag_keys):
            problems.append(
                f"spec.sessionTags key {key!r} is not allowed: the policy's spec.sessionTagKeys "
                f"{_listed(policy.session_tag_keys)} does not match it (free session tags can "
                "override the role's own tags in permission checks); remove the tag or ask a "
                "cluster admin to add the key to spec.sessionTagKeys"
            )
    if spec.source_identity:
        allowed = policy.source_identities
        if allowed is None:
            allowed = DEFAULT_SOURCE_IDENTITIES
        if not any(pattern_matches(p, spec.source_identity, namespace) for p in allowed):
            default = " (the default)" if policy.source_identities is None else ""
            problems.append(
                f"spec.sourceIdentity {spec.source_identity!r} is not allowed: the policy's "
                f"spec.sourceIdentities{default} admits only {_listed(allowed)} with "
                f"{{namespace}} = {namespace!r}; use a matching value or ask a cluster admin to "
                "add it to spec.sourceIdentities"
            )
    if spec.external_id and not any(
        pattern_matches(p, spec.external_id, namespace) for p in policy.external_ids
    ):
        problems.append(
            f"spec.externalId {spec.external_id!r} is not allowed: the policy's spec.externalIds "
            f"{_listed(policy.external_ids)} does not match it with {{namespace}} = {namespace!r}; "
            "ask a cluster admin to add it to spec.externalIds"
        )
    return problems


def evaluate(
    *,
    namespace: str,
    namespace_labels: Mapping[str, str],
    spec: AssumedRoleSpec,
    policies: Iterable[PolicySpec],
    enforce: bool = True,
) -> Decision:
    """Admit or deny one binding; the message names the field, the value and the way to admit it.

    One policy must admit all of the binding: a policy that grants an attribution choice
    grants it only for the namespaces and roles it admits.
    """
    if not enforce:
        return Decision(True, "access policy enforcement is off")
    role_arn = spec.role_arn
    near: list[tuple[PolicySpec, list[str]]] = []
    for policy in sorted(policies, key=lambda p: p.name):
        if not (
            namespace_admitted(policy, namespace, namespace_labels)
            and role_admitted(policy, role_arn, namespace)
        ):
            continue
        problems = attribution_problems(policy, namespace, spec)
        if not problems:
            return Decision(True, f"admitted by AssumedRolePolicy {policy.name!r}", policy.name)
        near.append((policy, problems))
    if near:
        best, problems = min(near, key=lambda item: len(item[1]))
        if len(problems) == 1 and problems[0].startswith("spec.durationSeconds"):
            capped = max(
                (p for p, probs in near if len(probs) == 1 and probs[0].startswith("spec.durationSeconds")),
                key=lambda p: p.max_duration_seconds or 0,
            )
            return Decision(
                False,
                f"namespace {namespace!r} may assume role {role_arn!r} only for up to "
                f"{capped.max_duration_seconds} seconds (AssumedRolePolicy {capped.name!r} "
                f"spec.maxDurationSeconds), but spec.durationSeconds is {spec.duration_seconds}: "
                f"lower spec.durationSeconds or ask a cluster admin to raise the cap",
                capped.name,
            )
        return Decision(
            False,
            f"namespace {namespace!r} may assume role {role_arn!r} under AssumedRolePolicy "
            f"{best.name!r}, but not as asked: " + "; ".join(problems),
            best.name,
        )
    return Decision(
        False,
        f"namespace {namespace!r} is not permitted to assume role {role_arn!r}: no "
        f"AssumedRolePolicy admits it. A cluster admin can admit it with an AssumedRolePolicy "
        f"whose spec.namespaces (or spec.namespaceSelector) matches {namespace!r} and whose "
        f"spec.roleArns matches {role_arn!r}",
    )
