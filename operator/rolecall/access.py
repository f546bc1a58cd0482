"""Which namespaces may bind which IAM roles: AssumedRolePolicy evaluation (pure).

Default deny: an AssumedRole is served only when at least one policy admits its namespace
(by name/glob or label selector), its role ARN (glob) and its duration. The decision carries
the message shown in status and at `kubectl apply`, saying how a cluster admin could admit it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase

from rolecall.model import LabelSelector, PolicySpec


@dataclass(frozen=True)
class Decision:
    allowed: bool
    message: str
    policy: str = ""


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
    if any(fnmatchcase(namespace, pattern) for pattern in policy.namespaces):
        return True
    return policy.namespace_selector is not None and selector_matches(policy.namespace_selector, labels)


def role_admitted(policy: PolicySpec, role_arn: str) -> bool:
    return any(fnmatchcase(role_arn, pattern) for pattern in policy.role_arns)


def evaluate(
    *,
    namespace: str,
    namespace_labels: Mapping[str, str],
    role_arn: str,
    duration_seconds: int,
    policies: Iterable[PolicySpec],
    enforce: bool = True,
) -> Decision:
    """Admit or deny one binding; the message names namespace, ARN and the way to admit it."""
    if not enforce:
        return Decision(True, "access policy enforcement is off")
    capped: list[PolicySpec] = []
    for policy in sorted(policies, key=lambda p: p.name):
        if not (namespace_admitted(policy, namespace, namespace_labels) and role_admitted(policy, role_arn)):
            continue
        if policy.max_duration_seconds is not None and duration_seconds > policy.max_duration_seconds:
            capped.append(policy)
            continue
        return Decision(True, f"admitted by AssumedRolePolicy {policy.name!r}", policy.name)
    if capped:
        best = max(capped, key=lambda p: p.max_duration_seconds or 0)
        return Decision(
            False,
            f"namespace {namespace!r} may assume role {role_arn!r} only for up to "
            f"{best.max_duration_seconds} seconds (AssumedRolePolicy {best.name!r} "
            f"spec.maxDurationSeconds), but spec.durationSeconds is {duration_seconds}: "
            f"lower spec.durationSeconds or ask a cluster admin to raise the cap",
            best.name,
        )
    return Decision(
        False,
        f"namespace {namespace!r} is not permitted to assume role {role_arn!r}: no "
        f"AssumedRolePolicy admits it. A cluster admin can admit it with an AssumedRolePolicy "
        f"whose spec.namespaces (or spec.namespaceSelector) matches {namespace!r} and whose "
        f"spec.roleArns matches {role_arn!r}",
    )
