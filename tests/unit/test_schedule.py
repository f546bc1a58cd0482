"""The refresh decision and backoff, as tables with readable ids (no I/O, no real time)."""

from __future__ import annotations

import datetime

import pytest

from rolecall import schedule
from rolecall.schedule import Stored

T0 = datetime.datetime(2026, 11, 27, 12, 0, tzinfo=datetime.UTC)
HOUR = datetime.timedelta(hours=1)
MIN = datetime.timedelta(minutes=1)


def stored(
    issued: datetime.datetime = T0,
    lifetime: datetime.timedelta = HOUR,
    digest: str = "h1",
    complete: bool = True,
) -> Stored:
    return Stored(spec_hash=digest, issued_at=issued, expiration=issued + lifetime, complete=complete)


CASES = [
    ("asks for credentials when nothing is stored", None, "h1", T0, "SecretMissing"),
    (
        "asks again when the stored credentials are unreadable",
        stored(complete=False),
        "h1",
        T0 + MIN,
        "SecretIncomplete",
    ),
    ("re-assumes at once when the spec changed", stored(), "h2", T0 + MIN, "SpecChanged"),
    ("does nothing for fresh credentials with 59 min left", stored(), "h1", T0 + MIN, None),
    ("does nothing for credentials with 40 min left", stored(), "h1", T0 + 20 * MIN, None),
    ("refreshes a 1 h session after 30 min", stored(), "h1", T0 + 30 * MIN, "RefreshDue"),
    ("refreshes when only 5 min are left", stored(), "h1", T0 + 55 * MIN, "RefreshDue"),
    ("calls expired credentials expired", stored(), "h1", T0 + HOUR, "CredentialsExpired"),
    ("spec change wins over expiry", stored(), "h2", T0 + 2 * HOUR, "SpecChanged"),
    ("does nothing for a 12 h session after 5 h", stored(lifetime=12 * HOUR), "h1", T0 + 5 * HOUR, None),
    ("refreshes a 12 h session after 6 h", stored(lifetime=12 * HOUR), "h1", T0 + 6 * HOUR, "RefreshDue"),
]


@pytest.mark.parametrize(
    ("stored_", "digest", "now", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_needs_assume(
    stored_: Stored | None, digest: str, now: datetime.datetime, expected: str | None
) -> None:
    verdict = schedule.needs_assume(stored_, digest, now, "team-a/s3-reader")
    assert (verdict[0] if verdict else None) == expected


@pytest.mark.parametrize(
    ("lifetime", "earliest", "latest"),
    [
        (HOUR, 27 * MIN, 30 * MIN),
        (15 * MIN, 6.75 * MIN, 7.5 * MIN),
        (12 * HOUR, 5.4 * HOUR, 6 * HOUR),
    ],
    ids=[
        "1 h refreshes between 27 and 30 min",
        "15 min refreshes between 6.75 and 7.5 min",
        "12 h refreshes between 5.4 and 6 h",
    ],
)
def test_refresh_point_is_half_the_lifetime_minus_up_to_ten_percent(
    lifetime: datetime.timedelta, earliest: datetime.timedelta, latest: datetime.timedelta
) -> None:
    points = [schedule.refresh_at(stored(lifetime=lifetime), f"ns/binding-{i}") - T0 for i in range(500)]
    assert all(earliest <= p <= latest for p in points)
    # spread: 500 bindings created together do not refresh together
    assert max(points) - min(points) > (latest - earliest) * 0.8
    # whole seconds: as many distinct refresh seconds as the window allows
    assert len(set(points)) >= min(400, 0.8 * (latest - earliest).total_seconds())


def test_refresh_point_is_stable_across_restarts() -> None:
    assert schedule.refresh_at(stored(), "team-a/x") == schedule.refresh_at(stored(), "team-a/x")
    assert schedule.refresh_at(stored(), "team-a/x") != schedule.refresh_at(stored(), "team-a/y")


@pytest.mark.parametrize(
    ("attempt", "unit", "expected"),
    [
        (1, 0.0, 1.0),
        (1, 0.999, 1.999),
        (2, 0.5, 3.0),
        (5, 0.0, 16.0),
        (8, 1.0, 256.0),
        (9, 0.0, 150.0),
        (50, 1.0, 300.0),
    ],
    ids=[
        "first retry after 1-2 s",
        "jitter adds up to half",
        "second retry about 3 s",
        "fifth retry 16-32 s",
        "eighth up to 256 s",
        "ninth hits the cap",
        "never more than 5 min",
    ],
)
def test_backoff(attempt: int, unit: float, expected: float) -> None:
    assert schedule.backoff_seconds(attempt, unit) == pytest.approx(expected)


def test_time_format_round_trip() -> None:
    text = schedule.format_time(T0)
    assert text == "2026-11-27T12:00:00Z"
    assert schedule.parse_time(text) == T0
    assert schedule.parse_time("2026-11-27T12:00:00") == T0
