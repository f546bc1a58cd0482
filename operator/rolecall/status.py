"""What an AssumedRole's status and events say, decided from facts (pure).

The reconciler gathers the facts (the spec, the credentials it holds, the last failure, the
clock reading) and asks here what to write: the status, and which condition transitions
deserve an event. Keeping this apart from the I/O is what lets a table of cases pin down
every message a user reads (`kubectl describe ar`), and keeps the reconciler about order of
operations only.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from rolecall import constants as c
from rolecall.constants import Reason
from rolecall.model import AssumedRoleSpec
from rolecall.timefmt import format_time

# reasons under which the status names no Secret: there is none, or it is not ours
_NO_SECRET = frozenset({Reason.SUSPENDED, Reason.NOT_PERMITTED, Reason.SECRET_CONFLICT})


class Failure(Protocol):
    """A failed attempt to obtain credentials, as the status shows it (STSError is one)."""

    @property
    def reason(self) -> Reason: ...

    @property
    def message(self) -> str: ...


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass(frozen=True)
class Context:
    """What every status carries: the generation it describes, the clock, the conditions
    it replaces (so that lastTransitionTime moves only on a change) and the pod count."""

    generation: int | None
    now: datetime.datetime
    previous: tuple[Mapping[str, Any], ...] = ()
    uninjected: int | None = None


@dataclass(frozen=True)
class Held:
    """Credentials the Secret holds for the binding."""

    session_name: str
    issued_at: datetime.datetime
    expiration: datetime.datetime
    next_refresh: datetime.datetime


def clean(status: Mapping[str, Any] | None) -> dict[str, Any]:
    """A status without null fields: what the API server keeps after a merge patch."""
    return {k: v for k, v in (status or {}).items() if v is not None}


def condition(ctype: str, status: bool, reason: str, message: str, ctx: Context) -> dict[str, Any]:
    """A condition whose lastTransitionTime moves only when its status changes."""
    text = "True" if status else "False"
    last = format_time(ctx.now)
    for old in ctx.previous:
        if old.get("type") == ctype and old.get("status") == text and old.get("lastTransitionTime"):
            last = str(old["lastTransitionTime"])
    cond: dict[str, Any] = {
        "type": ctype,
        "status": text,
        "reason": str(reason),
        "message": message,
        "lastTransitionTime": last,
    }
    if ctx.generation is not None:
        cond["observedGeneration"] = ctx.generation
    return cond


def find_condition(conditions: Any, ctype: str) -> Mapping[str, Any] | None:
    for cond in conditions or []:
        if isinstance(cond, Mapping) and cond.get("type") == ctype:
            return cond
    return None


def assumed_role_arn(role_arn: str, session_name: str) -> str:
    """``arn:<p>:sts::<acct>:assumed-role/<role name>/<session>`` as CloudTrail shows it."""
    parts = role_arn.split(":", 5)
    role_name = parts[5].rsplit("/", 1)[-1]
    return f"arn:{parts[1]}:sts::{parts[4]}:assumed-role/{role_name}/{session_name}"


def refresh_condition(failing: Failure | None, ctx: Context) -> dict[str, Any]:
    if failing is None:
        return condition(
            c.COND_REFRESH_FAILING,
            False,
            Reason.REFRESH_SUCCEEDED,
            "the last attempt to obtain credentials succeeded",
            ctx,
        )
    return condition(c.COND_REFRESH_FAILING, True, failing.reason, failing.message, ctx)


def ready(spec: AssumedRoleSpec, held: Held, ctx: Context, failing: Failure | None = None) -> dict[str, Any]:
    """Ready=True: the Secret holds valid credentials for the current spec (or, while a
    refresh fails, still-valid ones: RefreshFailing says so)."""
    message = (
        f"credentials for {spec.role_arn} are in Secret {spec.secret_name!r}, "
        f"valid until {format_time(held.expiration)}"
    )
    if failing is not None:
        message += "; replacing them is failing (see RefreshFailing), they are kept until they expire"
    return {
        "observedGeneration": ctx.generation,
        "assumedRoleArn": assumed_role_arn(spec.role_arn, held.session_name),
        "secretName": spec.secret_name,
        "expiration": format_time(held.expiration),
        "lastRefresh": format_time(held.issued_at),
        "nextRefresh": format_time(held.next_refresh),
        "uninjectedPods": ctx.uninjected or None,
        "conditions": [
            condition(c.COND_READY, True, Reason.CREDENTIALS_ISSUED, message, ctx),
            refresh_condition(failing, ctx),
        ],
    }


def not_ready(
    spec: AssumedRoleSpec | None,
    reason: Reason,
    message: str,
    ctx: Context,
    *,
    failing: Failure | None = None,
    retry_at: datetime.datetime | None = None,
) -> dict[str, Any]:
    """Ready=False with a reason; RefreshFailing too when an attempt failed and will retry."""
    shows_secret = spec is not None and reason not in _NO_SECRET
    status: dict[str, Any] = {
        "observedGeneration": ctx.generation,
        "assumedRoleArn": None,
        "secretName": spec.secret_name if shows_secret and spec is not None else None,
        "expiration": None,
        "lastRefresh": None,
        "nextRefresh": None,
        "conditions": [condition(c.COND_READY, False, reason, message, ctx)],
    }
    if failing is not None:
        status["conditions"].append(refresh_condition(failing, ctx))
        status["nextRefresh"] = format_time(retry_at) if retry_at else None
    return status


def expired_message(secret_name: str, expiration: datetime.datetime, failing: Failure) -> str:
    return (
        f"the credentials in Secret {secret_name!r} expired at {format_time(expiration)} "
        f"and could not be replaced: {failing.message}"
    )


def conflict_message(secret_name: str, namespace: str) -> str:
    return (
        f"Secret {secret_name!r} already exists in namespace {namespace!r} and is not managed by "
        f"this AssumedRole; rolecall never overwrites it. Delete or rename that Secret, or set "
        f"spec.secretName to another name"
    )


def transition_events(before: Any, after: Any) -> list[Event]:
    """Events for condition changes only: one per transition, none per retry."""
    events: list[Event] = []
    for ctype in (c.COND_READY, c.COND_REFRESH_FAILING):
        old = find_condition(before, ctype)
        new = find_condition(after, ctype)
        if new is None:
            continue
        if old is not None and (old.get("status"), old.get("reason")) == (
            new.get("status"),
            new.get("reason"),
        ):
            continue
        is_true = new.get("status") == "True"
        if ctype == c.COND_REFRESH_FAILING and not is_true and (old is None or old.get("status") == "False"):
            continue  # nothing was failing: not worth an event
        if ctype == c.COND_READY:
            events.append(Event("Normal" if is_true else "Warning", str(new["reason"]), str(new["message"])))
        else:
            events.append(
                Event(
                    "Warning" if is_true else "Normal",
                    "RefreshFailing" if is_true else "RefreshRecovered",
                    str(new["message"]),
                )
            )
    return events


def is_ready(status: Mapping[str, Any]) -> bool:
    cond = find_condition(status.get("conditions"), c.COND_READY)
    return bool(cond and cond.get("status") == "True")
