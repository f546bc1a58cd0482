"""Pods the webhook missed: running pods of bound ServiceAccounts that were not injected.

A webhook that is down (failurePolicy Ignore) lets pods start without credentials; they
would fall back to the node's identity (IRSA's and Pod Identity's most reported problem).
Checked when credentials are issued and once per operator start — one LIST per subject per
refresh, never a poll — and reported as a count in status, a Warning event and a metric.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from rolecall.clock import Clock
from rolecall.inject import should_have_been_injected
from rolecall.kube import KubeAdapter, KubeError
from rolecall.metrics import Metrics
from rolecall.model import AssumedRoleSpec
from rolecall.state import BindingState, Key

logger = logging.getLogger("rolecall.pods")

IO = Callable[..., Awaitable[Any]]
SHOWN = 5


def missed_message(names: list[str]) -> str:
    shown = ", ".join(sorted(names)[:SHOWN]) + (" ..." if len(names) > SHOWN else "")
    return (
        f"{len(names)} running pod(s) of the bound ServiceAccounts were not injected with "
        f"credentials ({shown}); they may be using the node's AWS identity. Was the rolecall "
        f"webhook down when they started? Restart them to inject."
    )


class PodAudit:
    def __init__(self, kube: KubeAdapter, io: IO, metrics: Metrics, clock: Clock) -> None:
        self.kube = kube
        self.io = io
        self.metrics = metrics
        self.clock = clock

    async def check(
        self, key: Key, body: Mapping[str, Any], spec: AssumedRoleSpec, state: BindingState
    ) -> None:
        """Count the missed pods into ``state.uninjected``; an event when they first appear."""
        if not spec.subjects:
            state.uninjected = 0
            return
        namespace, name = key
        missed: list[str] = []
        try:
            for subject in spec.subjects:
                pods = await self.io(self.kube.list_pods, namespace, subject.name)
                missed.extend(
                    p.get("metadata", {}).get("name", "") for p in pods if should_have_been_injected(p)
                )
        except KubeError as exc:
            logger.info("Could not list pods for %s/%s: %s", namespace, name, exc.reason)
            return
        before, state.uninjected = state.uninjected, len(missed)
        if missed:
            self.metrics.uninjected_pods.labels(namespace, name).set(len(missed))
        else:  # one series per binding with missed pods only: /metrics stays small at scale
            with contextlib.suppress(KeyError):
                self.metrics.uninjected_pods.remove(namespace, name)
        if missed and not before:
            try:
                await self.io(
                    self.kube.create_event,
                    body,
                    reason="PodsNotInjected",
                    message=missed_message(missed),
                    type_="Warning",
                    now=self.clock.now(),
                )
            except KubeError as exc:
                logger.info("Could not post event PodsNotInjected: %s", exc.reason)
