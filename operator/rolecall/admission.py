"""The two admission decisions, without kopf: inject a pod, admit an AssumedRole (pure).

The kopf handlers pass the request's object and the operator's settings in and turn the
answer into kopf's terms:

- pods (mutating): ``review_pod(InjectionRequest.of(pod, namespace, index, settings, native))``; append ``review.warnings`` to kopf's ``warnings``,
  apply ``review.patch`` with ``patch.fns.append(json_patch_fn(review.patch))`` and count
  ``rolecall_pod_injections_total{mode=review.mode, result=review.result}``. A pod is never
  refused: a problem is a warning, and the pod is created without credentials.
- AssumedRoles (validating): ``review_assumed_role(...)``; when not ``allowed`` raise
  ``kopf.AdmissionError(review.message)``; the warnings go to kopf's ``warnings``.

The rejection messages are the ones the object's status would show (``SpecError`` text,
``access.evaluate``'s message), so `kubectl apply` and `kubectl describe` agree.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import jsonpatch

from rolecall import access
from rolecall.inject import MODE_ENV, Result, plan_injection
from rolecall.inject import InjectionRequest as InjectionRequest  # re-exported for the handlers
from rolecall.model import AssumedRoleSpec, PolicySpec, SpecError, parse_assumed_role

RECOMMENDED_MIN_DURATION_SECONDS = 3600
BOTOCORE_ADVISORY_REFRESH_SECONDS = 15 * 60
NATIVE_SIDECARS_SINCE = (1, 29)  # SidecarContainers: beta and on by default


@dataclass(frozen=True)
class PodReview:
    """The mutating webhook's answer for one pod (it is always allowed)."""

    patch: list[dict[str, Any]]
    warnings: list[str]
    mode: str  # the metric label: the injection mode, or "none"
    result: Result
    assumed_role: str | None = None
    reason: str = ""

    @property
    def injected(self) -> bool:
        return self.result is Result.INJECTED


@dataclass(frozen=True)
class AssumedRoleReview:
    allowed: bool
    message: str = ""
    warnings: list[str] = field(default_factory=list)


def review_pod(request: InjectionRequest) -> PodReview:
    plan = plan_injection(request)
    return PodReview(
        patch=plan.patch if plan.inject else [],
        warnings=list(plan.warnings),
        mode=plan.mode if plan.inject else "none",
        result=plan.result,
        assumed_role=plan.assumed_role,
        reason=plan.reason,
    )


def json_patch_fn(ops: list[dict[str, Any]]) -> Callable[[Any], None]:
    """A kopf ``Patch.fns`` entry applying the ops in place (kopf re-diffs the result).

    Typed ``Any`` in: kopf passes its ``RawBody`` (a TypedDict), any mutable mapping works.
    """

    def apply(body: MutableMapping[str, Any]) -> None:
        if ops:
            jsonpatch.JsonPatch(ops).apply(body, in_place=True)

    return apply


def native_sidecars_supported(major: str | int, minor: str | int) -> bool:
    """From the API server's ``/version`` (minor may read ``"29+"`` on managed clusters)."""
    digits = [re.sub(r"\D.*$", "", str(part)) for part in (major, minor)]
    if not all(digits):
        return False
    return (int(digits[0]), int(digits[1])) >= NATIVE_SIDECARS_SINCE


def _spec_of(body: Mapping[str, Any] | None) -> Any:
    return None if body is None else body.get("spec")


def review_assumed_role(
    body: Mapping[str, Any],
    *,
    operation: str,
    namespace: str,
    policies: Iterable[PolicySpec],
    namespace_labels: Mapping[str, str],
    enforce: bool = True,
    old: Mapping[str, Any] | None = None,
) -> AssumedRoleReview:
    """Admit or reject an AssumedRole CREATE/UPDATE; warn about legal but unwise settings.

    An UPDATE that leaves ``spec`` unchanged (labels, finalizers, kopf's own annotations) or
    that suspends the binding is always admitted: refusing it would keep the operator and
    the owner from managing an object that a policy change has made inadmissible.
    """
    if operation not in ("CREATE", "UPDATE"):
        return AssumedRoleReview(True)
    meta = body.get("metadata") or {}
    # with generateName the name may not be known yet; it only matters for the defaults
    name = str(meta.get("name") or meta.get("generateName") or "") or "unnamed"
    name = name.rstrip("-.") or "unnamed"
    raw_spec = body.get("spec")
    unchanged = operation == "UPDATE" and old is not None and _spec_of(old) == raw_spec
    deleting = bool(meta.get("deletionTimestamp"))

    try:
        spec = parse_assumed_role(namespace, name, raw_spec)
    except SpecError as exc:
        if unchanged or deleting:
            return AssumedRoleReview(True, warnings=[f"the stored spec is invalid: {exc}"])
        return AssumedRoleReview(False, str(exc))

    warnings = unwise_settings(spec)
    decision = access.evaluate(
        namespace=namespace,
        namespace_labels=namespace_labels,
        spec=spec,
        policies=policies,
        enforce=enforce,
    )
    if not decision.allowed:
        if unchanged or deleting or spec.suspend:
            return AssumedRoleReview(True, warnings=[decision.message, *warnings])
        return AssumedRoleReview(False, decision.message, warnings)
    return AssumedRoleReview(True, "", warnings)


def unwise_settings(spec: AssumedRoleSpec) -> list[str]:
    """Warnings for an AssumedRole that is valid but will not behave as its owner expects."""
    warnings: list[str] = []
    duration = spec.duration_seconds
    if duration < RECOMMENDED_MIN_DURATION_SECONDS:
        at_refresh = duration // 2
        warnings.append(
            f"spec.durationSeconds is {duration}: rolecall replaces credentials after about half "
            f"their lifetime, when about {at_refresh // 60} min are left, but AWS SDKs start "
            f"refreshing {BOTOCORE_ADVISORY_REFRESH_SECONDS // 60} min before expiry (botocore; "
            "10 min mandatory; JavaScript v3: 5 min), so pods would re-read the credentials on "
            f"almost every call and could briefly hold ones close to expiry. Use "
            f"{RECOMMENDED_MIN_DURATION_SECONDS} or more unless the role's maximum session is shorter"
        )
    if not spec.subjects:
        warnings.append(
            "spec.subjects is empty: no pod will get these credentials injected (the Secret is "
            "still written); add the ServiceAccounts that should use the role"
        )
    if spec.injection_mode == MODE_ENV:
        warnings.append(
            "spec.injection.mode is env: environment variables are read once and never "
            f"refreshed, so a pod keeps these credentials after they expire ({duration} s after "
            "it starts at the latest). Use it only for Jobs shorter than the session; "
            "sidecar (default) and file refresh without a restart"
        )
    return warnings
