"""One AssumedRole at a time: read state → decide → (wait for STS) → assume → write → status.

The scheduler calls :meth:`Reconciler.reconcile` with a binding's key. Everything that needs
no STS call — invalid specs, suspension, withdrawal, a Secret taken by someone else,
restoring a hand-edited Secret from credentials that still hold — is finished there, on a
worker, at once. When new credentials are needed it returns an :class:`Assume` step instead;
the scheduler runs that step when the STS lane grants the binding's namespace a turn.

It owns the guarantees of docs/architecture.md: credentials that still hold are never deleted or blanked
because of a failure, retries back off (long for failures a retry cannot fix), status and
events tell the truth, and a restart with valid stored credentials costs no STS call and no
write. Decisions are delegated: :mod:`schedule` (when), :mod:`access` (may it),
:mod:`status` (what to say), :mod:`managed_secret` (may we write it), :mod:`sources`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import random
import secrets as pysecrets
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from rolecall import access, render, schedule, sources, status, tokens
from rolecall.clock import Clock
from rolecall.config import Settings
from rolecall.constants import Reason
from rolecall.kube import KubeAdapter, KubeError, NotFound
from rolecall.managed_secret import SecretTaken, SecretWriter, differs, owned_by
from rolecall.metrics import Metrics
from rolecall.model import (
    AssumedRoleSpec,
    AssumeRequest,
    SpecError,
    build_assume_request,
    parse_assumed_role,
    spec_hash,
)
from rolecall.pods import PodAudit
from rolecall.state import BindingState, Cache, Issued, Key, clamp
from rolecall.sts import StaticKeys, STSAdapter, STSError
from rolecall.timefmt import format_time

logger = logging.getLogger("rolecall.reconcile")

T = TypeVar("T")

CONFLICT_RECHECK_SECONDS = 300.0


@dataclass
class Binding:
    """The facts of one run, gathered once and passed between the steps."""

    key: Key
    body: dict[str, Any]
    state: BindingState
    spec: AssumedRoleSpec
    now: datetime.datetime

    @property
    def namespace(self) -> str:
        return self.key[0]

    @property
    def uid(self) -> str:
        return str(self.body.get("metadata", {}).get("uid") or "")

    @property
    def generation(self) -> int | None:
        value = self.body.get("metadata", {}).get("generation")
        return value if isinstance(value, int) else None

    def context(self, now: datetime.datetime | None = None) -> status.Context:
        return _context(self.body, self.state, now or self.now)


def _context(body: dict[str, Any], state: BindingState, now: datetime.datetime) -> status.Context:
    current = state.last_status or body.get("status") or {}
    generation = body.get("metadata", {}).get("generation")
    return status.Context(
        generation=generation if isinstance(generation, int) else None,
        now=now,
        previous=tuple(current.get("conditions") or ()),
        uninjected=state.uninjected,
    )


@dataclass
class Plan:
    """What an STS call for a binding needs, decided before it waits for its turn."""

    binding: Binding
    request: AssumeRequest
    digest: str
    secret: dict[str, Any] | None
    held: Issued | None  # what the Secret holds now (kept on failure while valid)
    token: str
    source: StaticKeys | None
    source_label: str
    why: str


@dataclass
class Assume:
    """The deferred half of a run: called by the scheduler's STS lane (see scheduler.py)."""

    reconciler: Reconciler
    plan: Plan

    async def run(self) -> datetime.datetime | None:
        return await self.reconciler.assume(self.plan)


def _backoff_for(reason: Reason) -> Callable[[int, float], float]:
    if reason in schedule.PERMANENT_REASONS:
        return schedule.permanent_backoff_seconds
    return schedule.backoff_seconds


class Reconciler:
    def __init__(
        self,
        *,
        settings: Settings,
        kube: KubeAdapter,
        sts: STSAdapter,
        clock: Clock,
        cache: Cache,
        metrics: Metrics,
        executor: ThreadPoolExecutor,
        rng: Callable[[], float] = random.random,
        on_issued: Callable[[Key], None] | None = None,
        token_key: bytes | None = None,
    ) -> None:
        self.settings = settings
        self.kube = kube
        self.sts = sts
        self.clock = clock
        self.cache = cache
        self.metrics = metrics
        self.executor = executor
        self.rng = rng
        self.on_issued = on_issued
        self.token_key = token_key
        self.secrets = SecretWriter(kube, self._io)
        self.pods = PodAudit(kube, self._io, metrics, clock)

    async def _io(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, lambda: fn(*args, **kwargs))

    def _later(self, seconds: float) -> datetime.datetime:
        return self.clock.now() + datetime.timedelta(seconds=seconds)

    # --- the entry points ------------------------------------------------------------

    async def reconcile(self, key: Key) -> datetime.datetime | Assume | None:
        """Bring one binding to its desired state, or say it needs an STS turn.

        A Kubernetes API failure anywhere (unreachable, 5xx, conflicts that outlived their
        retries) backs off like an STS failure: nothing written so far is undone.
        """
        try:
            return await self._decide(key)
        except KubeError as exc:
            return self._kube_failed(key, exc)

    async def assume(self, plan: Plan) -> datetime.datetime | None:
        """The STS turn: call STS, publish the credentials, say so."""
        try:
            return await self._assume(plan)
        except KubeError as exc:
            return self._kube_failed(plan.binding.key, exc)

    def _kube_failed(self, key: Key, exc: KubeError) -> datetime.datetime:
        state = self.cache.state(key)
        attempt = state.failed()
        state.secret_changed_elsewhere()
        delay = schedule.backoff_seconds(attempt, self.rng())
        logger.warning(
            "Kubernetes API failure for %s/%s (attempt %d, retry in %.0fs): %s %s",
            key[0],
            key[1],
            attempt,
            delay,
            exc.status,
            exc.reason,
        )
        return self._later(delay)

    # --- steps on a worker -------------------------------------------------------------

    async def _decide(self, key: Key) -> datetime.datetime | Assume | None:
        b = await self._load(key)
        if b is None:
            return None
        if not await self._admit(b):
            return None
        request = build_assume_request(
            b.namespace,
            b.key[1],
            b.spec,
            default_region=self.settings.default_region,
            cluster_name=self.settings.cluster_name,
            automatic_tags=self.settings.session_tags,
        )
        digest = spec_hash(request, b.spec.source)
        await self._drop_renamed_secret(b)
        try:
            secret = await self._current_secret(b)
        except SecretTaken:
            return await self._secret_conflict(b)
        held, token = self._held(b, secret)
        jitter_key = f"{b.namespace}/{b.key[1]}"
        verdict = schedule.needs_assume(held.stored if held else None, digest, b.now, jitter_key)
        if verdict is None and held is not None:
            return await self._serve_held(b, request, digest, secret, held, token, jitter_key)
        return await self._plan(b, request, digest, secret, held, token, verdict)

    async def _load(self, key: Key) -> Binding | None:
        """The binding's facts, or None when it is gone (forget it) or its spec is invalid."""
        body = self.cache.assumed_roles.get(key)
        if body is None or body.get("metadata", {}).get("deletionTimestamp"):
            self.cache.forget(key)
            self._forget_gauge(key)
            return None
        state = self.cache.state(key)
        now = self.clock.now()
        try:
            spec = parse_assumed_role(key[0], key[1], body.get("spec"))
        except SpecError as exc:
            invalid = status.not_ready(
                None, Reason.INVALID_SPEC, f"invalid spec: {exc}", _context(body, state, now)
            )
            await self._set_status(key, body, state, invalid)
            return None
        return Binding(key, body, state, spec, now)

    async def _admit(self, b: Binding) -> bool:
        """Suspended or not permitted: remove the credentials and say why (no STS call)."""
        if b.spec.suspend:
            message = "spec.suspend is true: credentials are not refreshed and the Secret is removed"
            await self._withdraw(b, Reason.SUSPENDED, message)
            return False
        decision = self.decide_access(b.namespace, b.spec)
        b.state.allowed = decision.allowed
        if not decision.allowed:
            logger.info("Not permitted: %s/%s: %s", b.namespace, b.key[1], decision.message)
            await self._withdraw(b, Reason.NOT_PERMITTED, decision.message)
            return False
        return True

    async def _withdraw(self, b: Binding, reason: Reason, message: str) -> None:
        b.state.withdrawn()
        for name in {b.spec.secret_name, self._previous_secret_name(b)} - {""}:
            if await self.secrets.delete(b.namespace, name, b.uid, b.state.secret_uid):
                logger.info("Deleted managed Secret %s/%s", b.namespace, name)
        self._forget_gauge(b.key)
        await self._set_status(b.key, b.body, b.state, status.not_ready(b.spec, reason, message, b.context()))

    def _previous_secret_name(self, b: Binding) -> str:
        shown = b.state.last_status or b.body.get("status") or {}
        return str(shown.get("secretName") or "")

    async def _drop_renamed_secret(self, b: Binding) -> None:
        """spec.secretName changed: the Secret under the old name goes (it holds live keys)."""
        old = self._previous_secret_name(b)
        if old and old != b.spec.secret_name:
            if await self.secrets.delete(b.namespace, old, b.uid, b.state.secret_uid):
                logger.info(
                    "Deleted Secret %s/%s: spec.secretName is now %r", b.namespace, old, b.spec.secret_name
                )
            b.state.secret_changed_elsewhere()

    async def _current_secret(self, b: Binding) -> dict[str, Any] | None:
        """The managed Secret (cached while nobody else changed it); SecretTaken if foreign."""
        secret = b.state.secret
        if secret is None or secret.get("metadata", {}).get("name") != b.spec.secret_name:
            secret = await self.secrets.read(b.namespace, b.spec.secret_name)
        if secret is not None and not owned_by(secret, b.uid, b.state.secret_uid):
            raise SecretTaken(b.spec.secret_name)
        return secret

    async def _secret_conflict(self, b: Binding) -> datetime.datetime:
        attempt = b.state.failed()
        message = status.conflict_message(b.spec.secret_name, b.namespace)
        await self._set_status(
            b.key, b.body, b.state, status.not_ready(b.spec, Reason.SECRET_CONFLICT, message, b.context())
        )
        return b.now + datetime.timedelta(
            seconds=min(CONFLICT_RECHECK_SECONDS, schedule.backoff_seconds(attempt, self.rng()))
        )

    def _held(self, b: Binding, secret: dict[str, Any] | None) -> tuple[Issued | None, str]:
        """What the Secret holds — or, if this process wrote it, what it wrote (hand edits and
        failed writes are restored from that) — and the sidecar token to keep."""
        stored, creds, token = render.read_stored(secret)
        if b.state.issued is not None:
            stored, creds, token = b.state.issued.stored, b.state.issued.credentials, b.state.issued.token
        if len(token) < 32:  # new, or lost with its Secret: the same token again if we can
            token = tokens.derive(self.token_key, b.uid) if self.token_key else pysecrets.token_urlsafe(32)
        if stored is None or creds is None:
            return None, token
        return Issued(clamp(stored, b.spec.duration_seconds, b.now), creds, token), token

    async def _serve_held(
        self,
        b: Binding,
        request: AssumeRequest,
        digest: str,
        secret: dict[str, Any] | None,
        held: Issued,
        token: str,
        jitter_key: str,
    ) -> datetime.datetime:
        """The held credentials serve: restore a hand-edited Secret, keep the schedule."""
        desired = self._render(b, held, digest, request.region, token)
        if secret is None or differs(secret, desired):
            logger.info(
                "Restoring managed Secret %s/%s (deleted or changed outside rolecall)",
                b.namespace,
                b.spec.secret_name,
            )
            try:
                await self._write(b, desired, secret)
            except SecretTaken:
                return await self._secret_conflict(b)
        b.state.succeeded()
        nxt = schedule.refresh_at(held.stored, jitter_key)
        self._observe(b.key, held.stored.expiration)
        if b.state.uninjected is None:
            await self.pods.check(b.key, b.body, b.spec, b.state)
        shown = status.Held(request.session_name, held.stored.issued_at, held.stored.expiration, nxt)
        await self._set_status(b.key, b.body, b.state, status.ready(b.spec, shown, b.context()))
        return nxt

    async def _plan(
        self,
        b: Binding,
        request: AssumeRequest,
        digest: str,
        secret: dict[str, Any] | None,
        held: Issued | None,
        token: str,
        verdict: tuple[str, str] | None,
    ) -> datetime.datetime | Assume | None:
        """New credentials are needed: resolve the source now (no STS token spent on a missing
        one), then wait for the namespace's STS turn."""
        why = verdict[1] if verdict else "the stored credentials are unreadable"
        try:
            source, label = await sources.resolve(
                kube=self.kube,
                io=self._io,
                namespace=b.namespace,
                spec=b.spec,
                assumed_roles=self.cache.assumed_roles,
                now=b.now,
            )
        except STSError as exc:
            self.metrics.refresh_failures.labels(exc.reason.value).inc()
            return await self._failed(b, request.session_name, held, exc)
        return Assume(self, Plan(b, request, digest, secret, held, token, source, label, why))

    # --- the STS turn ------------------------------------------------------------------

    async def _assume(self, plan: Plan) -> datetime.datetime | None:
        b = plan.binding
        b.now = self.clock.now()
        logger.info("Assuming %s for %s/%s: %s", b.spec.role_arn, b.namespace, b.key[1], plan.why)
        started = self.clock.now()
        loop_started = asyncio.get_running_loop().time()
        try:
            creds = await self._io(self.sts.assume_role, plan.request, plan.source, plan.source_label)
        except STSError as exc:
            self.metrics.assume_requests.labels("error", exc.code).inc()
            self.metrics.refresh_failures.labels(exc.reason.value).inc()
            return await self._failed(b, plan.request.session_name, plan.held, exc)
        finally:
            self.metrics.assume_duration.observe(asyncio.get_running_loop().time() - loop_started)
        self.metrics.assume_requests.labels("success", "").inc()
        issued_at = min(started.replace(microsecond=0), creds.expiration)
        issued = Issued(schedule.Stored(plan.digest, issued_at, creds.expiration), creds, plan.token)
        return await self._publish(plan, issued)

    async def _publish(self, plan: Plan, issued: Issued) -> datetime.datetime | None:
        """Write the new credentials, then status; pods are checked off the critical path."""
        b = plan.binding
        # kept in memory first: if the write fails, the retry writes these, without STS
        b.state.issued = issued
        desired = self._render(b, issued, plan.digest, plan.request.region, plan.token)
        try:
            await self._write(b, desired, plan.secret)
        except SecretTaken:
            b.state.issued = None  # someone else's Secret: these credentials go nowhere
            return await self._secret_conflict(b)
        except KubeError as exc:
            # the old credentials stay in the Secret; retry the write soon, with backoff
            attempt = b.state.failed()
            b.state.secret_changed_elsewhere()
            logger.warning("Writing Secret %s/%s failed: %s", b.namespace, b.spec.secret_name, exc.reason)
            return self._later(schedule.backoff_seconds(attempt, self.rng()))
        b.state.succeeded()
        if self.on_issued is not None:
            self.on_issued(b.key)
        jitter_key = f"{b.namespace}/{b.key[1]}"
        nxt = schedule.refresh_at(issued.stored, jitter_key)
        logger.info(
            "Issued credentials for %s into Secret %s/%s: valid until %s, next refresh at %s",
            b.spec.role_arn,
            b.namespace,
            b.spec.secret_name,
            format_time(issued.stored.expiration),
            format_time(nxt),
        )
        self._observe(b.key, issued.stored.expiration)
        shown = status.Held(plan.request.session_name, issued.stored.issued_at, issued.stored.expiration, nxt)
        await self._set_status(
            b.key, b.body, b.state, status.ready(b.spec, shown, b.context(self.clock.now()))
        )
        before = b.state.uninjected
        await self.pods.check(b.key, b.body, b.spec, b.state)
        if b.state.uninjected != before:
            await self._set_status(
                b.key, b.body, b.state, status.ready(b.spec, shown, b.context(self.clock.now()))
            )
        return nxt

    async def _failed(
        self, b: Binding, session_name: str, held: Issued | None, exc: STSError
    ) -> datetime.datetime:
        """Keep what still holds, say what failed, retry with backoff (long when a retry
        cannot fix it), never later than the held credentials' expiry."""
        attempt = b.state.failed()
        delay = _backoff_for(exc.reason)(attempt, self.rng())
        retry_at = schedule.whole_second(b.now + datetime.timedelta(seconds=delay))  # as status shows it
        log = logger.info if exc.reason in schedule.PERMANENT_REASONS and attempt > 1 else logger.warning
        log(
            "Obtaining credentials failed for %s/%s (attempt %d, retry in %.0fs): %s",
            b.namespace,
            b.key[1],
            attempt,
            delay,
            exc.message,
        )
        stored = held.stored if held is not None else None
        if stored is not None and stored.expiration > b.now:
            shown = status.Held(session_name, stored.issued_at, stored.expiration, retry_at)
            await self._set_status(
                b.key, b.body, b.state, status.ready(b.spec, shown, b.context(), failing=exc)
            )
            return min(retry_at, stored.expiration)
        if stored is not None:
            reason = Reason.CREDENTIALS_EXPIRED
            message = status.expired_message(b.spec.secret_name, stored.expiration, exc)
        else:
            reason, message = exc.reason, exc.message
        shown_status = status.not_ready(b.spec, reason, message, b.context(), failing=exc, retry_at=retry_at)
        await self._set_status(b.key, b.body, b.state, shown_status)
        return retry_at

    # --- decisions and writes shared by the steps -----------------------------------------

    def decide_access(self, namespace: str, spec: AssumedRoleSpec) -> access.Decision:
        return access.evaluate(
            namespace=namespace,
            namespace_labels=self.cache.namespace_labels.get(namespace, {}),
            spec=spec,
            policies=self.cache.policies.values(),
            enforce=self.settings.enforce_access,
        )

    def _render(self, b: Binding, held: Issued, digest: str, region: str, token: str) -> dict[str, Any]:
        return render.build_secret(
            namespace=b.namespace,
            owner=b.body,
            spec=b.spec,
            creds=held.credentials,
            issued_at=held.stored.issued_at,
            spec_hash=digest,
            region=region,
            token=token,
        )

    async def _write(self, b: Binding, desired: dict[str, Any], current: dict[str, Any] | None) -> None:
        written = await self.secrets.write(desired, current, b.uid, b.state.secret_uid)
        b.state.wrote(written)

    async def _set_status(
        self, key: Key, body: dict[str, Any], state: BindingState, wanted: dict[str, Any]
    ) -> None:
        """Patch status when it differs from the last known; emit events on transitions."""
        state.ready = status.is_ready(wanted)
        current = state.last_status if state.last_status is not None else (body.get("status") or {})
        if status.clean(current) == status.clean(wanted):
            return
        namespace, name = key
        # remembered before the PATCH: its own watch event may arrive before the PATCH returns
        state.status_written(status.clean(wanted))
        try:
            await self._io(self.kube.patch_assumed_role_status, namespace, name, wanted)
        except NotFound:
            return
        except KubeError as exc:
            logger.warning("Status update for %s/%s failed: %s", namespace, name, exc.reason)
            state.status_written(None)
            raise
        for event in status.transition_events(current.get("conditions"), wanted["conditions"]):
            try:
                await self._io(
                    self.kube.create_event,
                    body,
                    reason=event.reason,
                    message=event.message,
                    type_=event.type,
                    now=self.clock.now(),
                )
            except KubeError as exc:
                logger.info("Could not post event %s: %s", event.reason, exc.reason)

    # --- metrics helpers ------------------------------------------------------------------

    def _observe(self, key: Key, expiration: datetime.datetime) -> None:
        self.metrics.expiration.labels(*key).set(expiration.timestamp())

    def _forget_gauge(self, key: Key) -> None:
        with contextlib.suppress(KeyError):
            self.metrics.expiration.remove(*key)
