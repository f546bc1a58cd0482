"""Run one operator instance: kopf underneath, our handlers, our App in kopf's memo."""

from __future__ import annotations

import asyncio
from typing import Any

import kopf

from rolecall import handlers
from rolecall.app import App
from rolecall.config import Settings


def build_registry(*, webhooks: bool = False) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    handlers.register(registry, webhooks=webhooks)
    return registry


async def run_operator(
    app: App,
    *,
    stop_flag: asyncio.Event | None = None,
    ready_flag: asyncio.Event | None = None,
) -> None:
    """Run until ``stop_flag`` is set (or a signal arrives, when run as the main program)."""
    settings: Settings = app.settings
    kwargs: dict[str, Any] = {}
    if settings.namespaces:
        kwargs["namespaces"] = list(settings.namespaces)
    else:
        kwargs["clusterwide"] = True
    await kopf.operator(
        registry=build_registry(webhooks=settings.webhook_enabled),
        # our own identity: kopf's default asks getpass.getuser(), which fails for a uid with
        # no /etc/passwd entry (a custom runAsUser, OpenShift's random uids)
        identity=settings.identity,  # type: ignore[arg-type]  # kopf's Identity is a NewType of str
        memo=kopf.Memo(app=app),
        standalone=True,
        stop_flag=stop_flag,
        ready_flag=ready_flag,
        **kwargs,
    )
