"""Leader election on a coordination.k8s.io/v1 Lease: several replicas, one acting.

Every replica watches and keeps its caches warm (so each can answer admission reviews);
only the holder of the Lease reconciles. The holder renews every third of the lease
duration and steps down by itself if it cannot renew before its lease runs out, so a
partitioned replica stops writing before another may take over. A standby takes the Lease
once the holder's last renewal is older than the lease duration.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Callable
from typing import Any

from rolecall.clock import Clock
from rolecall.kube import Conflict, KubeAdapter, KubeError
from rolecall.timefmt import format_micro_time, parse_time

logger = logging.getLogger("rolecall.leader")


_micro = format_micro_time


def _parse(text: str | None) -> datetime.datetime | None:
    if not text:
        return None
    try:
        return parse_time(text)
    except ValueError:
        return None


class LeaderElector:
    def __init__(
        self,
        kube: KubeAdapter,
        clock: Clock,
        *,
        namespace: str,
        name: str,
        identity: str,
        lease_seconds: float,
        on_change: Callable[[bool], None],
    ) -> None:
        self.kube = kube
        self.clock = clock
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_seconds = max(3.0, lease_seconds)
        self.on_change = on_change
        self.leader = False
        self._renewed: datetime.datetime | None = None

    def _body(
        self, current: dict[str, Any] | None, now: datetime.datetime, transitions: int
    ) -> dict[str, Any]:
        spec = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": int(self.lease_seconds),
            "renewTime": _micro(now),
            "acquireTime": _micro(now),
            "leaseTransitions": transitions,
        }
        if current is not None and (current.get("spec") or {}).get("holderIdentity") == self.identity:
            spec["acquireTime"] = current["spec"].get("acquireTime") or spec["acquireTime"]
        meta: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if current is not None:
            meta["resourceVersion"] = current["metadata"]["resourceVersion"]
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta, "spec": spec}

    def try_acquire_or_renew(self) -> bool:
        """One round (blocking I/O): True when this replica holds the Lease afterwards."""
        now = self.clock.now()
        current = self.kube.get_lease(self.namespace, self.name)
        if current is None:
            try:
                self.kube.create_lease(self._body(None, now, 0))
            except Conflict:
                return False
            self._renewed = now
            return True
        spec = current.get("spec") or {}
        holder = spec.get("holderIdentity")
        renewed = _parse(spec.get("renewTime"))
        duration = float(spec.get("leaseDurationSeconds") or self.lease_seconds)
        expired = renewed is None or (now - renewed).total_seconds() > duration
        if holder != self.identity and holder and not expired:
            return False
        transitions = int(spec.get("leaseTransitions") or 0) + (0 if holder == self.identity else 1)
        try:
            self.kube.replace_lease(self._body(current, now, transitions))
        except Conflict:
            return False
        self._renewed = now
        return True

    def _still_valid(self) -> bool:
        if self._renewed is None:
            return False
        return (self.clock.now() - self._renewed).total_seconds() < self.lease_seconds * 0.8

    async def run(self, loop_executor: Any = None) -> None:
        loop = asyncio.get_running_loop()
        period = self.lease_seconds / 3
        while True:
            try:
                held = await loop.run_in_executor(loop_executor, self.try_acquire_or_renew)
            except KubeError as exc:
                logger.warning("Lease %s/%s: %s", self.namespace, self.name, exc.reason)
                held = self.leader and self._still_valid()
            if held != self.leader:
                self.leader = held
                logger.info(
                    "%s %s the lease %s/%s",
                    self.identity,
                    "acquired" if held else "lost",
                    self.namespace,
                    self.name,
                )
                self.on_change(held)
            await asyncio.sleep(period)

    def release(self) -> None:
        """Give the Lease up on a clean shutdown, so a standby takes over at once."""
        if not self.leader:
            return
        try:
            current = self.kube.get_lease(self.namespace, self.name)
            if current is None or (current.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            body = self._body(
                current, self.clock.now(), int((current.get("spec") or {}).get("leaseTransitions") or 0)
            )
            body["spec"]["holderIdentity"] = None
            body["spec"]["renewTime"] = None
            self.kube.replace_lease(body)
        except KubeError as exc:
            logger.info("Could not release lease: %s", exc.reason)
        self.leader = False
