"""What `kubectl describe ar` shows: the status and the events, decided from facts."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

import pytest

from rolecall import status
from rolecall.constants import Reason
from rolecall.model import parse_assumed_role

NOW = datetime.datetime(2026, 12, 1, 12, 0, tzinfo=datetime.UTC)
ROLE = "arn:aws:iam::123456789012:role/team-a-s3"
SPEC = parse_assumed_role(
    "team-a", "s3", {"roleArn": ROLE, "subjects": [{"kind": "ServiceAccount", "name": "app"}]}
)
HELD = status.Held(
    "team-a.s3",
    NOW - datetime.timedelta(minutes=10),
    NOW + datetime.timedelta(minutes=50),
    NOW + datetime.timedelta(minutes=18),
)


@dataclass(frozen=True)
class Failed:
    reason: Reason
    message: str


DENIED = Failed(Reason.ACCESS_DENIED, "the trust policy must allow sts:AssumeRole")


def ctx(previous: tuple[dict[str, Any], ...] = (), uninjected: int | None = None) -> status.Context:
    return status.Context(generation=3, now=NOW, previous=previous, uninjected=uninjected)


def cond(result: dict[str, Any], ctype: str) -> dict[str, Any]:
    found = status.find_condition(result["conditions"], ctype)
    assert found is not None
    return dict(found)


def test_ready_names_the_role_the_secret_and_the_expiry() -> None:
    result = status.ready(SPEC, HELD, ctx())
    assert result["assumedRoleArn"] == "arn:aws:sts::123456789012:assumed-role/team-a-s3/team-a.s3"
    assert result["secretName"] == "s3" and result["observedGeneration"] == 3
    assert result["expiration"] == "2026-12-01T12:50:00Z" and result["nextRefresh"] == "2026-12-01T12:18:00Z"
    ready = cond(result, "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "CredentialsIssued")
    assert "valid until 2026-12-01T12:50:00Z" in ready["message"]
    assert cond(result, "RefreshFailing")["status"] == "False"
    assert result["uninjectedPods"] is None


def test_a_failing_refresh_keeps_ready_and_says_why() -> None:
    result = status.ready(SPEC, HELD, ctx(), failing=DENIED)
    assert cond(result, "Ready")["status"] == "True"
    assert "replacing them is failing" in cond(result, "Ready")["message"]
    failing = cond(result, "RefreshFailing")
    assert (failing["status"], failing["reason"], failing["message"]) == (
        "True",
        "AccessDenied",
        DENIED.message,
    )


@pytest.mark.parametrize(
    ("reason", "shows_secret"),
    [
        pytest.param(Reason.NOT_PERMITTED, False, id="a denied binding names no Secret (it was deleted)"),
        pytest.param(Reason.SUSPENDED, False, id="a suspended binding names no Secret"),
        pytest.param(Reason.SECRET_CONFLICT, False, id="a conflicting Secret is not ours to name"),
        pytest.param(Reason.ACCESS_DENIED, True, id="a binding that never got credentials names its Secret"),
    ],
)
def test_not_ready_names_the_secret_only_when_it_is_ours(reason: Reason, shows_secret: bool) -> None:
    result = status.not_ready(SPEC, reason, "why", ctx())
    assert (result["secretName"] == "s3") is shows_secret
    assert result["assumedRoleArn"] is None and result["expiration"] is None


def test_not_ready_with_a_retry_shows_when() -> None:
    retry = NOW + datetime.timedelta(seconds=90)
    result = status.not_ready(SPEC, Reason.ACCESS_DENIED, "denied", ctx(), failing=DENIED, retry_at=retry)
    assert result["nextRefresh"] == "2026-12-01T12:01:30Z"
    assert cond(result, "RefreshFailing")["status"] == "True"


def test_transition_time_moves_only_when_the_status_changes() -> None:
    earlier = "2026-12-01T11:00:00Z"
    previous = ({"type": "Ready", "status": "True", "lastTransitionTime": earlier},)
    assert cond(status.ready(SPEC, HELD, ctx(previous)), "Ready")["lastTransitionTime"] == earlier
    flipped = status.not_ready(SPEC, Reason.NOT_PERMITTED, "no", ctx(previous))
    assert cond(flipped, "Ready")["lastTransitionTime"] == "2026-12-01T12:00:00Z"


def ready_cond(state: str, reason: str) -> dict[str, Any]:
    return {"type": "Ready", "status": state, "reason": reason, "message": f"{reason} text"}


def failing_cond(state: str, reason: str = "AccessDenied") -> dict[str, Any]:
    return {"type": "RefreshFailing", "status": state, "reason": reason, "message": f"{reason} text"}


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        pytest.param(
            [],
            [ready_cond("True", "CredentialsIssued"), failing_cond("False", "RefreshSucceeded")],
            [("Normal", "CredentialsIssued")],
            id="first issue: one Normal event",
        ),
        pytest.param(
            [ready_cond("True", "CredentialsIssued"), failing_cond("False", "RefreshSucceeded")],
            [ready_cond("True", "CredentialsIssued"), failing_cond("False", "RefreshSucceeded")],
            [],
            id="a refresh that changes nothing: no event",
        ),
        pytest.param(
            [ready_cond("True", "CredentialsIssued"), failing_cond("False", "RefreshSucceeded")],
            [ready_cond("True", "CredentialsIssued"), failing_cond("True")],
            [("Warning", "RefreshFailing")],
            id="refresh starts failing: one Warning",
        ),
        pytest.param(
            [ready_cond("True", "CredentialsIssued"), failing_cond("True")],
            [ready_cond("True", "CredentialsIssued"), failing_cond("True")],
            [],
            id="another failed retry: no event per retry",
        ),
        pytest.param(
            [ready_cond("True", "CredentialsIssued"), failing_cond("True")],
            [ready_cond("True", "CredentialsIssued"), failing_cond("False", "RefreshSucceeded")],
            [("Normal", "RefreshRecovered")],
            id="recovery: one Normal",
        ),
        pytest.param(
            [ready_cond("True", "CredentialsIssued")],
            [ready_cond("False", "NotPermitted")],
            [("Warning", "NotPermitted")],
            id="withdrawn: a Warning naming the reason",
        ),
        pytest.param(
            [ready_cond("False", "NotPermitted")],
            [ready_cond("False", "NotPermitted")],
            [],
            id="still withdrawn: nothing",
        ),
    ],
)
def test_events_on_transitions_only(
    before: list[dict[str, Any]], after: list[dict[str, Any]], expected: list[tuple[str, str]]
) -> None:
    assert [(e.type, e.reason) for e in status.transition_events(before, after)] == expected


def test_clean_drops_nulls_like_a_merge_patch() -> None:
    assert status.clean({"a": 1, "b": None}) == {"a": 1}
    assert status.clean(None) == {}
