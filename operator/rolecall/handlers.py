"""kopf registrations only: each handler is its decorator plus one typed call into the app.

Handlers are registered into a given registry (not kopf's global one), so that tests can
run several operator instances in one process, as an HA pair would run. They reach the
:class:`~rolecall.app.App` through :func:`app_of`, typed, so a renamed App method fails the
type check instead of a running operator.
"""

from __future__ import annotations

from typing import Any

import kopf

from rolecall import constants as c
from rolecall.app import App


def app_of(memo: Any) -> App:
    """The App this operator instance runs (put in kopf's memo by runtime.run_operator)."""
    app = memo["app"] if isinstance(memo, dict) else getattr(memo, "app", None)
    if not isinstance(app, App):
        raise TypeError(f"kopf memo holds {type(app).__name__}, not rolecall's App")
    return app


def register(registry: kopf.OperatorRegistry, *, webhooks: bool = False) -> None:
    @kopf.on.startup(registry=registry)
    async def operator_startup(memo: Any, settings: kopf.OperatorSettings, **_: Any) -> None:
        await app_of(memo).startup_kopf(settings)

    @kopf.on.cleanup(registry=registry)
    async def operator_cleanup(memo: Any, **_: Any) -> None:
        await app_of(memo).cleanup()

    @kopf.on.login(registry=registry)
    def operator_login(memo: Any, **kwargs: Any) -> kopf.ConnectionInfo | None:
        return app_of(memo).login(**kwargs)

    @kopf.on.event(c.GROUP, c.VERSION, c.PLURAL_ASSUMED_ROLE, registry=registry)
    async def assumedrole_event(event: kopf.RawEvent, memo: Any, **_: Any) -> None:
        app_of(memo).on_assumed_role(dict(event))

    # the watch is filtered server-side (app.startup_kopf): no client-side label filter here,
    # or the DELETED event of a Secret whose label was removed by hand would be dropped
    @kopf.on.event("", "v1", "secrets", registry=registry)
    async def secret_event(event: kopf.RawEvent, memo: Any, **_: Any) -> None:
        app_of(memo).on_secret(dict(event))

    @kopf.on.event(c.GROUP, c.VERSION, c.PLURAL_POLICY, registry=registry)
    async def assumedrolepolicy_event(event: kopf.RawEvent, memo: Any, **_: Any) -> None:
        app_of(memo).on_policy(dict(event))

    @kopf.on.event("", "v1", "namespaces", registry=registry)
    async def namespace_event(event: kopf.RawEvent, memo: Any, **_: Any) -> None:
        app_of(memo).on_namespace(dict(event))

    if not webhooks:
        return

    @kopf.on.mutate(
        "",
        "v1",
        "pods",
        id="mutate-pods",
        operations=["CREATE"],
        side_effects=False,
        ignore_failures=True,
        registry=registry,
    )
    def pod_mutate(body: kopf.Body, patch: kopf.Patch, warnings: list[str], memo: Any, **_: Any) -> None:
        app_of(memo).mutate_pod(body, patch, warnings)

    @kopf.on.validate(
        c.GROUP,
        c.VERSION,
        c.PLURAL_ASSUMED_ROLE,
        id="validate-assumedroles",
        operations=["CREATE", "UPDATE"],
        side_effects=False,
        ignore_failures=True,  # self-registered (development) only; the Helm chart sets Fail
        registry=registry,
    )
    async def assumedrole_validate(body: kopf.Body, warnings: list[str], memo: Any, **kwargs: Any) -> None:
        await app_of(memo).validate_assumed_role(
            body, kwargs.get("old"), kwargs.get("operation", ""), warnings
        )
