"""One AssumedRole at a time: read state → decide → assume → write Secret → status.

The reconciler is called by the scheduler with a binding's key and returns when it wants to
be called again. It owns the guarantees of DESIGN §6: credentials that still hold are never
deleted or blanked because of a failure, retries back off, status and events tell the truth,
and a restart with valid stored credentials costs no STS call and no write.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import random
import secrets as pysecrets
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from rolecall import access, render, schedule
from rolecall import constants as c
from rolecall.clock import Clock
from rolecall.config import Settings
from rolecall.constants import Reason
from rolecall.inject import should_have_been_injected
from rolecall.kube import AlreadyExists, Conflict, KubeAdapter, KubeError, NotFound
from rolecall.metrics import Metrics
from rolecall.model import (
    AssumedRoleSpec,
    Credentials,
    PolicySpec,
    SpecError,
    build_assume_request,
    parse_assumed_role,
    spec_hash,
)
from rolecall.ratelimit import TokenBucket
from rolecall.sts import StaticKeys, STSAdapter, STSError

logger = logging.getLogger("rolecall.reconcile")

Key = tuple[str, str]
T = TypeVar("T")

CONFLICT_RECHECK_SECONDS = 300.0


@dataclass
class BindingState:
    """What the operator remembers about one binding between reconciles (never persisted)."""

    attempt: int = 0  # consecutive failed attempts
    last_status: dict[str, Any] | None = None  # the status last written by us
    written_rv: str = ""  # resourceVersion of the Secret as we last wrote it
    secret: dict[str, Any] | None = None  # that Secret, while nobody else has changed it
    # what the Secret must hold (issued by this process): restores hand edits and failed writes
    written: tuple[schedule.Stored, Credentials, str] | None = None
    allowed: bool | None = None  # the last access decision
    ready: bool = False
    uninjected: int | None = None  # pods of bound ServiceAccounts without rolecall, last count


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


def assumed_role_arn(role_arn: str, session_name: str) -> str:
    """``arn:<p>:sts::<acct>:assumed-role/<role name>/<session>`` as CloudTrail shows it."""
    parts = role_arn.split(":", 5)
    role_name = parts[5].rsplit("/", 1)[-1]
    return f"arn:{parts[1]}:sts::{parts[4]}:assumed-role/{role_name}/{session_name}"


def _clean(status: Mapping[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (status or {}).items() if v is not None}


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
        limiter: TokenBucket,
        executor: ThreadPoolExecutor,
        rng: Callable[[], float] = random.random,
        on_issued: Callable[[Key], None] | None = None,
    ) -> None:
        self.settings = settings
        self.kube = kube
        self.sts = sts
        self.clock = clock
        self.cache = cache
        self.metrics = metrics
        self.limiter = limiter
        self.executor = executor
        self.rng = rng
        self.on_issued = on_issued
        self._sts_slots = asyncio.Semaphore(max(1, settings.sts_concurrency))

    async def _io(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, lambda: fn(*args, **kwargs))

    # --- the entry point ------------------------------------------------------------

    async def reconcile(self, key: Key) -> datetime.datetime | None:
        """Bring one binding to its desired state; return when to look at it again.

        A Kubernetes API failure anywhere (unreachable, 5xx, conflicts that outlived their
        retries) backs off like an STS failure: nothing written so far is undone.
        """
        try:
            return await self._reconcile(key)
        except KubeError as exc:
            state = self.cache.state(key)
            state.attempt += 1
            state.secret = None  # read it afresh next time
            delay = schedule.backoff_seconds(state.attempt, self.rng())
            logger.warning(
                "Kubernetes API failure for %s/%s (attempt %d, retry in %.0fs): %s %s",
                key[0],
                key[1],
                state.attempt,
                delay,
                exc.status,
                exc.reason,
            )
            return self.clock.now() + datetime.timedelta(seconds=delay)

    async def _reconcile(self, key: Key) -> datetime.datetime | None:
        body = self.cache.assumed_roles.get(key)
        if body is None or body.get("metadata", {}).get("deletionTimestamp"):
            self.cache.states.pop(key, None)
            self._forget_gauge(key)
            return None
        namespace, name = key
        state = self.cache.state(key)
        now = self.clock.now()
        generation = body.get("metadata", {}).get("generation")

        try:
            spec = parse_assumed_role(namespace, name, body.get("spec"))
        except SpecError as exc:
            await self._set_status(
                key,
                body,
                state,
                self._failed_status(
                    body, state, None, Reason.INVALID_SPEC, f"invalid spec: {exc}", now, generation
                ),
            )
            return None

        if spec.suspend:
            message = "spec.suspend is true: credentials are not refreshed and the Secret is removed"
            await self._withdraw(key, body, state, spec, Reason.SUSPENDED, message, now, generation)
            return None

        decision = self.decide_access(namespace, spec)
        state.allowed = decision.allowed
        if not decision.allowed:
            await self._withdraw(
                key, body, state, spec, Reason.NOT_PERMITTED, decision.message, now, generation
            )
            return None

        request = build_assume_request(
            namespace,
            name,
            spec,
            default_region=self.settings.default_region,
            cluster_name=self.settings.cluster_name,
            automatic_tags=self.settings.session_tags,
        )
        digest = spec_hash(request, spec.source)

        secret = state.secret
        if secret is None or secret.get("metadata", {}).get("name") != spec.secret_name:
            secret = await self._io(self.kube.get_secret, namespace, spec.secret_name)
        if secret is not None and not render.owned_by(secret, body):
            state.attempt += 1
            msg = (
                f"Secret {spec.secret_name!r} already exists in namespace {namespace!r} and is not "
                f"managed by this AssumedRole; rolecall never overwrites it. Delete or rename that "
                f"Secret, or set spec.secretName to another name"
            )
            await self._set_status(
                key,
                body,
                state,
                self._plain_status(body, state, spec, False, Reason.SECRET_CONFLICT, msg, now, generation),
            )
            return now + datetime.timedelta(
                seconds=min(CONFLICT_RECHECK_SECONDS, schedule.backoff_seconds(state.attempt, self.rng()))
            )

        stored, stored_creds, token = render.read_stored(secret)
        if state.written is not None:
            # this process wrote the Secret: trust what it wrote, not what the Secret now says
            stored, stored_creds, token = state.written
        token = token if len(token) >= 32 else pysecrets.token_urlsafe(32)
        jitter_key = f"{namespace}/{name}"
        region = request.region
        verdict = schedule.needs_assume(stored, digest, now, jitter_key)

        if verdict is None and stored is not None and stored_creds is not None:
            # the stored credentials serve: restore a hand-edited Secret, keep the schedule
            desired = render.build_secret(
                namespace=namespace,
                owner=body,
                spec=spec,
                creds=stored_creds,
                issued_at=stored.issued_at,
                spec_hash=digest,
                region=region,
                token=token,
            )
            if secret is None or self._secret_differs(secret, desired):
                logger.info(
                    "Restoring managed Secret %s/%s (deleted or changed outside rolecall)",
                    namespace,
                    spec.secret_name,
                )
                await self._write_secret(key, state, desired, secret)
            state.attempt = 0
            nxt = schedule.refresh_at(stored, jitter_key)
            self._observe(key, stored.expiration)
            if state.uninjected is None:
                await self._check_pods(key, body, spec, state)
            await self._set_status(
                key,
                body,
                state,
                self._ready_status(
                    body,
                    state,
                    spec,
                    request.session_name,
                    stored.issued_at,
                    stored.expiration,
                    nxt,
                    now,
                    generation,
                ),
            )
            return nxt

        # new credentials are needed
        why = verdict[1] if verdict else "the stored credentials are unreadable"
        logger.info("Assuming %s for %s/%s: %s", spec.role_arn, namespace, name, why)
        try:
            source, label = await self._source_keys(namespace, spec, now)
            async with self._sts_slots:
                await self.limiter.acquire()
                started = self.clock.now()
                loop_started = asyncio.get_running_loop().time()
                try:
                    creds = await self._io(self.sts.assume_role, request, source, label)
                finally:
                    self.metrics.assume_duration.observe(asyncio.get_running_loop().time() - loop_started)
            self.metrics.assume_requests.labels("success", "").inc()
        except STSError as exc:
            if exc.code not in ("SourceMissing",):
                self.metrics.assume_requests.labels("error", exc.code).inc()
            self.metrics.refresh_failures.labels(exc.reason.value).inc()
            return await self._on_failure(
                key,
                body,
                state,
                spec,
                request.session_name,
                stored if stored_creds else None,
                exc,
                now,
                generation,
            )

        issued = min(started.replace(microsecond=0), creds.expiration)
        desired = render.build_secret(
            namespace=namespace,
            owner=body,
            spec=spec,
            creds=creds,
            issued_at=issued,
            spec_hash=digest,
            region=region,
            token=token,
        )
        # kept in memory first: if the write fails, the retry writes these, without STS
        state.written = (schedule.Stored(digest, issued, creds.expiration), creds, token)
        try:
            await self._write_secret(key, state, desired, secret)
        except KubeError as exc:
            # the old credentials stay in the Secret; retry the write soon, with backoff
            state.attempt += 1
            state.secret = None
            logger.warning("Writing Secret %s/%s failed: %s", namespace, spec.secret_name, exc.reason)
            return self.clock.now() + datetime.timedelta(
                seconds=schedule.backoff_seconds(state.attempt, self.rng())
            )
        state.attempt = 0
        if self.on_issued is not None:
            self.on_issued(key)
        fresh = schedule.Stored(digest, issued, creds.expiration)
        nxt = schedule.refresh_at(fresh, jitter_key)
        logger.info(
            "Issued credentials for %s into Secret %s/%s: valid until %s, next refresh at %s",
            spec.role_arn,
            namespace,
            spec.secret_name,
            schedule.format_time(creds.expiration),
            schedule.format_time(nxt),
        )
        self._observe(key, creds.expiration)
        await self._set_status(
            key,
            body,
            state,
            self._ready_status(
                body,
                state,
                spec,
                request.session_name,
                issued,
                creds.expiration,
                nxt,
                self.clock.now(),
                generation,
            ),
        )
        # off the critical path: the Secret and the status are out, now look for missed pods
        before = state.uninjected
        await self._check_pods(key, body, spec, state)
        if state.uninjected != before:
            status = self._ready_status(
                body,
                state,
                spec,
                request.session_name,
                issued,
                creds.expiration,
                nxt,
                self.clock.now(),
                generation,
            )
            await self._set_status(key, body, state, status)
        return nxt

    async def _withdraw(
        self,
        key: Key,
        body: dict[str, Any],
        state: BindingState,
        spec: AssumedRoleSpec,
        reason: Reason,
        message: str,
        now: datetime.datetime,
        generation: int | None,
    ) -> None:
        """No credentials for this binding (suspended, not permitted): remove them, say why."""
        await self._delete_managed_secret(key[0], spec.secret_name, body)
        status = self._plain_status(body, state, spec, False, reason, message, now, generation)
        await self._set_status(key, body, state, status)

    # --- decisions --------------------------------------------------------------------

    def decide_access(self, namespace: str, spec: AssumedRoleSpec) -> access.Decision:
        return access.evaluate(
            namespace=namespace,
            namespace_labels=self.cache.namespace_labels.get(namespace, {}),
            spec=spec,
            policies=self.cache.policies.values(),
            enforce=self.settings.enforce_access,
        )

    async def _source_keys(
        self, namespace: str, spec: AssumedRoleSpec, now: datetime.datetime
    ) -> tuple[StaticKeys | None, str]:
        src = spec.source
        if src.secret_name:
            label = f"the keys in Secret {namespace}/{src.secret_name} (spec.source.secretRef)"
            secret = await self._io(self.kube.get_secret, namespace, src.secret_name)
            data = render.decode_data(secret.get("data") if secret else None)
            akid = data.get(c.KEY_ACCESS_KEY_ID) or data.get("aws_access_key_id")
            sak = data.get(c.KEY_SECRET_ACCESS_KEY) or data.get("aws_secret_access_key")
            if not secret or not akid or not sak:
                raise STSError(
                    Reason.SOURCE_UNAVAILABLE,
                    "SourceMissing",
                    f"spec.source.secretRef: Secret {src.secret_name!r} in namespace {namespace!r} "
                    + (
                        "does not exist"
                        if not secret
                        else f"lacks the keys {c.KEY_ACCESS_KEY_ID} and {c.KEY_SECRET_ACCESS_KEY}"
                    ),
                )
            token = data.get(c.KEY_SESSION_TOKEN) or data.get("aws_session_token") or ""
            return StaticKeys(akid.strip(), sak.strip(), token.strip()), label
        if src.assumed_role_name:
            label = (
                f"the session of AssumedRole {namespace}/{src.assumed_role_name} (spec.source.assumedRoleRef)"
            )
            other = self.cache.assumed_roles.get((namespace, src.assumed_role_name))
            problem = ""
            creds: Credentials | None = None
            if other is None:
                problem = "does not exist"
            else:
                try:
                    other_spec = parse_assumed_role(namespace, src.assumed_role_name, other.get("spec"))
                except SpecError:
                    problem = "has an invalid spec"
                else:
                    secret = await self._io(self.kube.get_secret, namespace, other_spec.secret_name)
                    if secret is None or not render.owned_by(secret, other):
                        problem = "has no credentials yet"
                    else:
                        _, creds, _ = render.read_stored(secret)
                        if creds is None:
                            problem = "has no readable credentials"
                        elif creds.expiration <= now:
                            problem = "has only expired credentials"
            if problem or creds is None:
                raise STSError(
                    Reason.SOURCE_UNAVAILABLE,
                    "SourceMissing",
                    f"spec.source.assumedRoleRef: AssumedRole {src.assumed_role_name!r} in namespace {namespace!r} {problem}",
                )
            return StaticKeys(creds.access_key_id, creds.secret_access_key, creds.session_token), label
        return None, "the operator's own AWS identity"

    # --- pods the webhook missed ---------------------------------------------------------

    async def _check_pods(
        self, key: Key, body: dict[str, Any], spec: AssumedRoleSpec, state: BindingState
    ) -> None:
        """Count running pods of the bound ServiceAccounts that were not injected.

        A webhook that is down (failurePolicy Ignore) lets pods start without credentials;
        they would fall back to the node's identity. Checked when credentials are issued and
        once per operator start, so it costs one LIST per subject per refresh, never a poll.
        """
        if not spec.subjects:
            state.uninjected = 0
            return
        namespace, name = key
        missed: list[str] = []
        try:
            for subject in spec.subjects:
                pods = await self._io(self.kube.list_pods, namespace, subject.name)
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
            shown = ", ".join(sorted(missed)[:5]) + (" ..." if len(missed) > 5 else "")
            message = (
                f"{len(missed)} running pod(s) of the bound ServiceAccounts were not injected with "
                f"credentials ({shown}); they may be using the node's AWS identity. Was the rolecall "
                f"webhook down when they started? Restart them to inject."
            )
            try:
                await self._io(
                    self.kube.create_event,
                    body,
                    reason="PodsNotInjected",
                    message=message,
                    type_="Warning",
                    now=self.clock.now(),
                )
            except KubeError as exc:
                logger.info("Could not post event PodsNotInjected: %s", exc.reason)

    # --- failure handling ---------------------------------------------------------------

    async def _on_failure(
        self,
        key: Key,
        body: dict[str, Any],
        state: BindingState,
        spec: AssumedRoleSpec,
        session_name: str,
        stored: schedule.Stored | None,
        exc: STSError,
        now: datetime.datetime,
        generation: int | None,
    ) -> datetime.datetime | None:
        namespace, name = key
        state.attempt += 1
        delay = schedule.backoff_seconds(state.attempt, self.rng())
        retry_at = now + datetime.timedelta(seconds=delay)
        logger.warning(
            "AssumeRole failed for %s/%s (attempt %d, retry in %.0fs): %s",
            namespace,
            name,
            state.attempt,
            delay,
            exc.message,
        )
        holds = stored is not None and stored.expiration > now
        if holds and stored is not None:
            # old credentials still valid (possibly for the previous spec): keep them
            status = self._ready_status(
                body,
                state,
                spec,
                session_name,
                stored.issued_at,
                stored.expiration,
                retry_at,
                now,
                generation,
                failing=exc,
            )
            await self._set_status(key, body, state, status)
            return min(retry_at, stored.expiration)
        if stored is not None:
            reason = Reason.CREDENTIALS_EXPIRED
            message = f"the credentials in Secret {spec.secret_name!r} expired at {schedule.format_time(stored.expiration)} and could not be replaced: {exc.message}"
        else:
            reason, message = exc.reason, exc.message
        await self._set_status(
            key,
            body,
            state,
            self._failed_status(
                body, state, spec, reason, message, now, generation, failing=exc, retry_at=retry_at
            ),
        )
        return retry_at

    # --- status --------------------------------------------------------------------------

    def _base_status(
        self, body: Mapping[str, Any], state: BindingState, generation: int | None
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        previous = (state.last_status or body.get("status") or {}).get("conditions") or []
        return {"observedGeneration": generation}, previous

    def _ready_status(
        self,
        body: Mapping[str, Any],
        state: BindingState,
        spec: AssumedRoleSpec,
        session_name: str,
        issued: datetime.datetime,
        expiration: datetime.datetime,
        next_refresh: datetime.datetime,
        now: datetime.datetime,
        generation: int | None,
        failing: STSError | None = None,
    ) -> dict[str, Any]:
        status, previous = self._base_status(body, state, generation)
        ready_msg = f"credentials for {spec.role_arn} are in Secret {spec.secret_name!r}, valid until {schedule.format_time(expiration)}"
        if failing is not None:
            ready_msg += "; replacing them is failing (see RefreshFailing), they are kept until they expire"
        status.update(
            assumedRoleArn=assumed_role_arn(spec.role_arn, session_name),
            secretName=spec.secret_name,
            expiration=schedule.format_time(expiration),
            lastRefresh=schedule.format_time(issued),
            nextRefresh=schedule.format_time(next_refresh),
            uninjectedPods=state.uninjected or None,
            conditions=[
                render.condition(
                    c.COND_READY,
                    True,
                    Reason.CREDENTIALS_ISSUED,
                    ready_msg,
                    now,
                    previous,
                    generation,
                ),
                self._refresh_condition(failing, now, previous, generation),
            ],
        )
        return status

    def _refresh_condition(
        self,
        failing: STSError | None,
        now: datetime.datetime,
        previous: list[dict[str, Any]],
        generation: int | None,
    ) -> dict[str, Any]:
        if failing is None:
            return render.condition(
                c.COND_REFRESH_FAILING,
                False,
                Reason.REFRESH_SUCCEEDED,
                "the last attempt to obtain credentials succeeded",
                now,
                previous,
                generation,
            )
        return render.condition(
            c.COND_REFRESH_FAILING, True, failing.reason, failing.message, now, previous, generation
        )

    def _plain_status(
        self,
        body: Mapping[str, Any],
        state: BindingState,
        spec: AssumedRoleSpec | None,
        ready: bool,
        reason: str,
        message: str,
        now: datetime.datetime,
        generation: int | None,
    ) -> dict[str, Any]:
        status, previous = self._base_status(body, state, generation)
        status.update(
            assumedRoleArn=None,
            secretName=spec.secret_name
            if spec and reason not in (Reason.SUSPENDED, Reason.NOT_PERMITTED, Reason.SECRET_CONFLICT)
            else None,
            expiration=None,
            lastRefresh=None,
            nextRefresh=None,
            conditions=[render.condition(c.COND_READY, ready, reason, message, now, previous, generation)],
        )
        return status

    def _failed_status(
        self,
        body: Mapping[str, Any],
        state: BindingState,
        spec: AssumedRoleSpec | None,
        reason: str,
        message: str,
        now: datetime.datetime,
        generation: int | None,
        failing: STSError | None = None,
        retry_at: datetime.datetime | None = None,
    ) -> dict[str, Any]:
        status = self._plain_status(body, state, spec, False, reason, message, now, generation)
        if reason == Reason.CREDENTIALS_EXPIRED:
            status["secretName"] = spec.secret_name if spec else None
        if failing is not None:
            _, previous = self._base_status(body, state, generation)
            status["conditions"].append(self._refresh_condition(failing, now, previous, generation))
            status["nextRefresh"] = schedule.format_time(retry_at) if retry_at else None
        return status

    async def _set_status(
        self, key: Key, body: dict[str, Any], state: BindingState, status: dict[str, Any]
    ) -> None:
        """Patch status when it differs from the last known; emit events on transitions."""
        ready = render.find_condition(status["conditions"], c.COND_READY)
        state.ready = bool(ready and ready["status"] == "True")
        current = state.last_status if state.last_status is not None else (body.get("status") or {})
        if _clean(current) == _clean(status):
            return
        namespace, name = key
        # remembered before the PATCH: its own watch event may arrive before the PATCH returns
        state.last_status = _clean(status)
        try:
            await self._io(self.kube.patch_assumed_role_status, namespace, name, status)
        except NotFound:
            return
        except KubeError as exc:
            logger.warning("Status update for %s/%s failed: %s", namespace, name, exc.reason)
            state.last_status = None
            raise
        await self._events_for_transition(body, current.get("conditions") or [], status["conditions"])

    async def _events_for_transition(
        self, body: dict[str, Any], before: list[dict[str, Any]], after: list[dict[str, Any]]
    ) -> None:
        for ctype in (c.COND_READY, c.COND_REFRESH_FAILING):
            old = render.find_condition(before, ctype)
            new = render.find_condition(after, ctype)
            if new is None:
                continue
            if old is not None and (old.get("status"), old.get("reason")) == (
                new.get("status"),
                new.get("reason"),
            ):
                continue
            if (
                ctype == c.COND_REFRESH_FAILING
                and new["status"] == "False"
                and (old is None or old.get("status") == "False")
            ):
                continue  # nothing was failing: not worth an event
            if ctype == c.COND_READY:
                kind = "Normal" if new["status"] == "True" else "Warning"
                reason = new["reason"]
            else:
                kind = "Warning" if new["status"] == "True" else "Normal"
                reason = "RefreshFailing" if new["status"] == "True" else "RefreshRecovered"
            try:
                await self._io(
                    self.kube.create_event,
                    body,
                    reason=reason,
                    message=new["message"],
                    type_=kind,
                    now=self.clock.now(),
                )
            except KubeError as exc:
                logger.info("Could not post event %s: %s", reason, exc.reason)

    # --- Secret writes -----------------------------------------------------------------

    @staticmethod
    def _secret_differs(current: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
        cm, dm = current.get("metadata", {}), desired["metadata"]
        if (current.get("data") or {}) != desired["data"]:
            return True
        if any((cm.get("labels") or {}).get(k) != v for k, v in dm["labels"].items()):
            return True
        if any((cm.get("annotations") or {}).get(k) != v for k, v in dm["annotations"].items()):
            return True
        refs = cm.get("ownerReferences") or []
        return not any(r.get("uid") == dm["ownerReferences"][0]["uid"] for r in refs)

    async def _write_secret(
        self, key: Key, state: BindingState, desired: dict[str, Any], current: dict[str, Any] | None
    ) -> None:
        """Create or replace the managed Secret, keeping foreign labels/annotations."""
        for attempt in range(3):
            if current is None:
                try:
                    written = await self._io(self.kube.create_secret, desired)
                    break
                except AlreadyExists:
                    current = await self._io(
                        self.kube.get_secret,
                        desired["metadata"]["namespace"],
                        desired["metadata"]["name"],
                    )
                    continue
            meta = dict(desired["metadata"])
            cm = current.get("metadata", {})
            meta["resourceVersion"] = cm.get("resourceVersion")
            meta["labels"] = {**(cm.get("labels") or {}), **desired["metadata"]["labels"]}
            meta["annotations"] = {
                **(cm.get("annotations") or {}),
                **desired["metadata"]["annotations"],
            }
            body = {**desired, "metadata": meta}
            try:
                written = await self._io(self.kube.replace_secret, body)
                break
            except Conflict:
                if attempt == 2:
                    raise
                current = await self._io(
                    self.kube.get_secret,
                    desired["metadata"]["namespace"],
                    desired["metadata"]["name"],
                )
            except NotFound:
                current = None
        else:  # pragma: no cover - the loop always breaks or raises
            raise KubeError(409, "Conflict", "could not write the Secret")
        state.written_rv = str(written.get("metadata", {}).get("resourceVersion", ""))
        state.secret = written

    async def _delete_managed_secret(self, namespace: str, secret_name: str, owner: dict[str, Any]) -> None:
        state = self.cache.states.get((namespace, owner["metadata"]["name"]))
        if state is not None:
            state.secret = None
            state.written = None  # withdrawn or suspended: never restore these credentials
        secret = await self._io(self.kube.get_secret, namespace, secret_name)
        if secret is not None and render.owned_by(secret, owner):
            await self._io(self.kube.delete_secret, namespace, secret_name, secret["metadata"].get("uid"))
            logger.info("Deleted managed Secret %s/%s", namespace, secret_name)
        self._forget_gauge((namespace, owner["metadata"]["name"]))

    # --- metrics helpers ------------------------------------------------------------------

    def _observe(self, key: Key, expiration: datetime.datetime) -> None:
        self.metrics.expiration.labels(*key).set(expiration.timestamp())

    def _forget_gauge(self, key: Key) -> None:
        with contextlib.suppress(KeyError):
            self.metrics.expiration.remove(*key)
