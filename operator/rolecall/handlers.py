"""kopf registrations only: each handler is its decorator plus one call into the app.

Handlers are registered into a given registry (not kopf's global one), so that tests can
run several operator instances in one process, as an HA pair would run.
"""

from __future__ import annotations

from typing import Any

import kopf

from rolecall import constants as c


def register(registry: kopf.OperatorRegistry) -> None:
    @kopf.on.startup(registry=registry)
    async def operator_startup(memo: kopf.Memo, settings: kopf.OperatorSettings, **_: Any) -> None:
        await memo.app.startup_kopf(settings)

    @kopf.on.cleanup(registry=registry)
    async def operator_cleanup(memo: kopf.Memo, **_: Any) -> None:
        await memo.app.cleanup()

    @kopf.on.login(registry=registry)
    def operator_login(memo: kopf.Memo, **kwargs: Any) -> kopf.ConnectionInfo | None:
        return memo.app.login(**kwargs)  # type: ignore[no-any-return]

    @kopf.on.event(c.GROUP, c.VERSION, c.PLURAL_ASSUMED_ROLE, registry=registry)
    async def assumedrole_event(event: kopf.RawEvent, memo: Any, **_: Any) -> None:
        memo.app.on_assumed_role(dict(event))

    @kopf.on.event("", "v1", "secrets", labels={c.LABEL_MANAGED_BY: c.MANAGED_BY}, registry=registry)
    async def secret_event(event: kopf.RawEvent, memo: Any, **_: Any) -> None:
        memo.app.on_secret(dict(event))

    @kopf.on.event(c.GROUP, c.VERSION, c.PLURAL_POLICY, registry=registry)
    async def assumedrolepolicy_event(event: kopf.RawEvent, memo: Any, **_: Any) -> None:
        memo.app.on_policy(dict(event))

    @kopf.on.event("", "v1", "namespaces", registry=registry)
    async def namespace_event(event: kopf.RawEvent, memo: Any, **_: Any) -> None:
        memo.app.on_namespace(dict(event))
