"""RFC 3339 times as rolecall writes and reads them, in one place.

Every time rolecall shows a user (status, Secret annotations, ``credentials.json``, events,
Leases) is UTC with a ``Z``. Kept stdlib-only: the sidecar imports it too.
"""

from __future__ import annotations

import datetime


def format_time(moment: datetime.datetime) -> str:
    """RFC 3339 in UTC with a ``Z`` and no fractional seconds."""
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_micro_time(moment: datetime.datetime) -> str:
    """RFC 3339 in UTC with microseconds (Kubernetes ``MicroTime``, e.g. Lease renewals)."""
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> datetime.datetime:
    """Parse RFC 3339 (``Z`` or an offset, fractions allowed); naive values are taken as UTC."""
    value = datetime.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=datetime.UTC)
