"""When to call STS for a binding, and when to try again after a failure (pure).

The renewal decision is a chain of small named checks, each taking the clock reading as an
argument and answering ``(reason, message)`` when new credentials are needed. The refresh
point is half the lifetime minus a jitter of up to 10 % of that half (a 1 h session is
replaced 27-30 min after issue, docs/architecture.md); the jitter is derived from the
binding's identity and the expiration, so it is the same after an operator restart (no STS
call on restart) yet spreads 1 000 bindings created together over 10 % of their lifetime.
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from rolecall.constants import Reason
from rolecall.timefmt import format_time, parse_time

__all__ = ["format_time", "parse_time"]  # re-exported: older call sites import them from here

REFRESH_FRACTION = 0.5
JITTER_FRACTION = 0.05  # of the lifetime: 10 % of the refresh interval
BACKOFF_BASE_SECONDS = 2.0
BACKOFF_CAP_SECONDS = 300.0
# failures a retry cannot fix (trust policy, malformed request): start at a minute, cap at
# 30 minutes — still retried, since a trust policy can be fixed in IAM without any change
# the operator can see, but a namespace of them no longer spends the STS budget
PERMANENT_BACKOFF_BASE_SECONDS = 60.0
PERMANENT_BACKOFF_CAP_SECONDS = 1800.0
PERMANENT_REASONS = frozenset(
    {
        Reason.ACCESS_DENIED,
        Reason.INVALID_SPEC,
        Reason.MALFORMED_POLICY,
        Reason.PACKED_POLICY_TOO_LARGE,
        Reason.REGION_DISABLED,
    }
)
# never let credentials live closer to expiry than this before replacing them, whatever
# the lifetime (SDK refresh windows are 5-15 minutes, kubelet propagation up to ~2)
MIN_REMAINING_SECONDS = 20 * 60


@dataclass(frozen=True)
class Stored:
    """What the managed Secret holds, as far as the schedule cares."""

    spec_hash: str
    issued_at: datetime.datetime
    expiration: datetime.datetime
    complete: bool = True  # every key present and consistent with credentials.json


def stable_unit(*parts: str) -> float:
    """A number in [0, 1) derived from the parts: deterministic jitter."""
    digest = hashlib.sha256("\x00".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def refresh_at(stored: Stored, jitter_key: str) -> datetime.datetime:
    """When credentials issued at ``issued_at`` and expiring at ``expiration`` are replaced."""
    lifetime = (stored.expiration - stored.issued_at).total_seconds()
    if lifetime <= 0:
        return stored.issued_at
    jitter = JITTER_FRACTION * stable_unit(jitter_key, stored.expiration.isoformat())
    at = stored.issued_at + datetime.timedelta(seconds=lifetime * (REFRESH_FRACTION - jitter))
    latest = stored.expiration - datetime.timedelta(seconds=min(MIN_REMAINING_SECONDS, lifetime / 2))
    return whole_second(min(at, latest))


def whole_second(moment: datetime.datetime) -> datetime.datetime:
    """Round up to a whole second: the status shows seconds, and shows the exact deadline."""
    if moment.microsecond:
        moment = moment.replace(microsecond=0) + datetime.timedelta(seconds=1)
    return moment


Check = Callable[[Stored | None, str, datetime.datetime, str], tuple[str, str] | None]


def secret_missing(
    stored: Stored | None, spec_hash: str, now: datetime.datetime, key: str
) -> tuple[str, str] | None:
    if stored is None:
        return "SecretMissing", "no credentials stored yet"
    return None


def secret_incomplete(
    stored: Stored | None, spec_hash: str, now: datetime.datetime, key: str
) -> tuple[str, str] | None:
    if stored is not None and not stored.complete:
        return "SecretIncomplete", "the stored credentials are missing or unreadable"
    return None


def spec_changed(
    stored: Stored | None, spec_hash: str, now: datetime.datetime, key: str
) -> tuple[str, str] | None:
    if stored is not None and stored.spec_hash != spec_hash:
        return "SpecChanged", "the spec changed since the stored credentials were issued"
    return None


def credentials_expired(
    stored: Stored | None, spec_hash: str, now: datetime.datetime, key: str
) -> tuple[str, str] | None:
    if stored is not None and now >= stored.expiration:
        return (
            "CredentialsExpired",
            f"the stored credentials expired at {format_time(stored.expiration)}",
        )
    return None


def refresh_due(
    stored: Stored | None, spec_hash: str, now: datetime.datetime, key: str
) -> tuple[str, str] | None:
    if stored is not None and now >= refresh_at(stored, key):
        return "RefreshDue", f"refresh was due at {format_time(refresh_at(stored, key))}"
    return None


CHECKS: tuple[Check, ...] = (
    secret_missing,
    secret_incomplete,
    spec_changed,
    credentials_expired,
    refresh_due,
)


def needs_assume(
    stored: Stored | None, spec_hash: str, now: datetime.datetime, key: str
) -> tuple[str, str] | None:
    """The first check that asks for new credentials, or None when the stored ones serve."""
    for check in CHECKS:
        verdict = check(stored, spec_hash, now, key)
        if verdict is not None:
            return verdict
    return None


def backoff_seconds(attempt: int, unit: float) -> float:
    """Delay before retry number ``attempt`` (1-based): exponential, capped, jittered.

    ``unit`` in [0, 1) comes from the caller's random source; half the delay is fixed and
    half is jitter, so retries from many bindings spread out but never fire too early.
    """
    ceiling = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** max(0, attempt - 1))
    return float(ceiling / 2 + unit * ceiling / 2)


def permanent_backoff_seconds(attempt: int, unit: float) -> float:
    """Like :func:`backoff_seconds`, for failures a retry cannot fix: 1 min → 30 min."""
    ceiling = min(PERMANENT_BACKOFF_CAP_SECONDS, PERMANENT_BACKOFF_BASE_SECONDS * 2 ** max(0, attempt - 1))
    return float(ceiling / 2 + unit * ceiling / 2)
