"""What the operator remembers per binding between reconciles, in memory only.

Nothing here is persisted: after a restart the Secret's annotations and the AssumedRole's
status are the memory (that is what makes a restart cost no STS call). In-process memory
makes the common paths cheap (a refresh writes the Secret on the resourceVersion it knows,
no GET) and the edge cases safe (a hand-edited Secret is restored from what this process
issued, never from what the edited Secret now says).

The cache holds slim copies of the watched objects: the spec and status rolecall reads and
the identity fields it needs, never annotations or managedFields, so a tenant's huge
annotations cost the operator nothing beyond the watch event that carried them.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any

from rolecall.model import Credentials, PolicySpec
from rolecall.schedule import Stored

Key = tuple[str, str]

# STS stamps the expiry from its own clock after the call: allow for latency and skew
CLOCK_SKEW_SECONDS = 300

_KEPT_METADATA = ("name", "namespace", "uid", "generation", "resourceVersion", "deletionTimestamp")


def slim(body: dict[str, Any]) -> dict[str, Any]:
    """The part of an AssumedRole the operator uses: identity, spec and status."""
    meta = body.get("metadata") or {}
    kept: dict[str, Any] = {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": {k: meta[k] for k in _KEPT_METADATA if k in meta},
        "spec": body.get("spec"),
    }
    if body.get("status") is not None:
        kept["status"] = body.get("status")
    return kept


@dataclass(frozen=True)
class Issued:
    """Credentials this process issued for a binding: what its Secret must hold."""

    stored: Stored
    credentials: Credentials
    token: str


@dataclass
class BindingState:
    """One binding's memory. Changed only through its methods, so each transition is named."""

    attempt: int = 0  # consecutive failed attempts
    last_status: dict[str, Any] | None = None  # the status last written by us
    written_rv: str = ""  # resourceVersion of the Secret as we last wrote it
    secret_uid: str = ""  # the Secret object we last wrote (ownership after a hand edit)
    secret: dict[str, Any] | None = None  # that Secret, while nobody else has changed it
    issued: Issued | None = None  # restores hand edits and failed writes without STS
    allowed: bool | None = None  # the last access decision
    ready: bool = False
    uninjected: int | None = None  # pods of bound ServiceAccounts without rolecall, last count

    def failed(self) -> int:
        """One more failed attempt; the count drives the backoff."""
        self.attempt += 1
        return self.attempt

    def succeeded(self) -> None:
        self.attempt = 0

    def wrote(self, secret: dict[str, Any]) -> None:
        meta = secret.get("metadata") or {}
        self.written_rv = str(meta.get("resourceVersion") or "")
        self.secret_uid = str(meta.get("uid") or self.secret_uid)
        self.secret = secret

    def secret_changed_elsewhere(self) -> None:
        """Someone else touched the Secret (or a write failed): read it afresh next time."""
        self.secret = None

    def withdrawn(self) -> None:
        """Suspended or no longer permitted: never restore these credentials."""
        self.secret = None
        self.issued = None

    def status_written(self, status: dict[str, Any] | None) -> None:
        self.last_status = status


@dataclass
class Cache:
    """The operator's view of the cluster, fed by watch events (kopf) and the startup list."""

    assumed_roles: dict[Key, dict[str, Any]] = field(default_factory=dict)
    policies: dict[str, PolicySpec] = field(default_factory=dict)
    namespace_labels: dict[str, dict[str, str]] = field(default_factory=dict)
    states: dict[Key, BindingState] = field(default_factory=dict)

    def state(self, key: Key) -> BindingState:
        st = self.states.get(key)
        if st is None:
            st = self.states[key] = BindingState()
        return st

    def forget(self, key: Key) -> None:
        self.states.pop(key, None)

    def ready_count(self) -> int:
        return sum(1 for st in self.states.values() if st.ready)


def clamp(stored: Stored, duration_seconds: int, now: datetime.datetime) -> Stored:
    """Trust a stored schedule only as far as it could be true: issued no later than now, and
    expiring no later than issue time + the spec's duration (a forged 11 h expiry on a 1 h
    session must not postpone the refresh)."""
    issued = min(stored.issued_at, now)
    latest = issued + datetime.timedelta(seconds=duration_seconds + CLOCK_SKEW_SECONDS)
    if stored.expiration <= latest and issued == stored.issued_at:
        return stored
    return Stored(stored.spec_hash, issued, min(stored.expiration, latest), stored.complete)
