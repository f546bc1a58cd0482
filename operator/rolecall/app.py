"""One operator instance: builds the parts, starts and stops them, serves admission.

kopf calls :mod:`rolecall.handlers`, which call the typed methods here. Watch events go to
:mod:`rolecall.events` (cache and triggers), reconciling to :mod:`rolecall.reconcile` under
:mod:`rolecall.scheduler`, endpoints to :mod:`rolecall.health`. This module only wires them
and owns their lifecycle; decisions stay in the pure modules, I/O in the adapters.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import ssl
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import kopf
from aiohttp import web

from rolecall import access, admission, render, tls, tokenkey, webhookcerts
from rolecall import constants as c
from rolecall.clock import Clock, SystemClock
from rolecall.config import Settings
from rolecall.events import WatchEvents
from rolecall.health import METRICS_CONTENT_TYPE, Endpoint, bearer_token
from rolecall.index import BindingIndex
from rolecall.kube import KubeAdapter, KubeError, load_configuration
from rolecall.leader import LeaderElector
from rolecall.metrics import Metrics
from rolecall.model import AssumedRoleSpec
from rolecall.ratelimit import TokenBucket
from rolecall.reconcile import Reconciler
from rolecall.scheduler import Scheduler
from rolecall.sources import keys_from_secret_data
from rolecall.state import Cache, Key
from rolecall.status import Context, condition, find_condition
from rolecall.sts import STSAdapter
from rolecall.webhookserver import CheckedWebhookServer

logger = logging.getLogger("rolecall")

METRICS_AUTH_CACHE_SECONDS = 60.0


class App:
    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock | None = None,
        kube: KubeAdapter | None = None,
        sts: STSAdapter | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self.kube = kube or KubeAdapter(
            load_configuration(settings.kubeconfig, settings.context),
            pool_size=settings.workers + 4,
        )
        self.sts = sts or STSAdapter(
            default_region=settings.default_region, endpoint_url=settings.sts_endpoint_url
        )
        self.metrics = Metrics()
        self.cache = Cache()
        self.executor = ThreadPoolExecutor(max_workers=settings.workers + 2, thread_name_prefix="rolecall-io")
        self.reconciler: Reconciler | None = None
        self.scheduler: Scheduler | None = None
        self.leader = settings.ha == "none"
        self._background: list[asyncio.Task[None]] = []
        self.elector: LeaderElector | None = None
        self.index = BindingIndex()
        self.native_sidecars = True
        self.events = WatchEvents(
            cache=self.cache,
            index=self.index,
            trigger=self._trigger,
            forget=self._forget,
            decide_access=self._decide_access,
            write_policy_status=self._policy_status,
        )
        self._endpoints: list[Endpoint] = []
        self.health_port: int | None = None
        self.metrics_port: int | None = None
        self._metrics_grants: dict[str, float] = {}  # token digest → allowed until (monotonic)
        self.webhook_certs: webhookcerts.WebhookCerts | None = None

    # --- lifecycle ----------------------------------------------------------------------

    async def startup_kopf(self, settings: kopf.OperatorSettings) -> None:
        """kopf's settings for rolecall, then our own startup."""
        settings.posting.enabled = False  # we post our own events, on transitions only
        settings.watching.server_timeout = 600
        settings.watching.client_timeout = 660
        settings.networking.request_timeout = 30
        settings.scanning.disabled = True
        # server-side filtering: the operator never streams the cluster's other Secrets
        settings.watching.label_selectors["v1", "secrets"] = f"{c.LABEL_MANAGED_BY}={c.MANAGED_BY}"
        if self.settings.webhook_enabled:
            # hook (install): the operator's own CA and serving certificate, when no files are given
            self.webhook_certs, task = await webhookcerts.start(
                self.settings, self.kube, self.clock, self.executor
            )
            self._background += [task] if task else []
            self._configure_webhooks(settings)
        await self.startup()

    def _configure_webhooks(self, settings: kopf.OperatorSettings) -> None:
        """kopf's admission server: provided TLS files, or a self-signed pair for development.

        With ``--webhook-url-host`` (development) kopf registers the webhook configurations
        itself, pointing at https://HOST:PORT; in production the Helm chart owns them.
        """
        certfile, keyfile = self.settings.webhook_cert, self.settings.webhook_key
        if self.webhook_certs is not None and self.webhook_certs.files:  # hook (install)
            certfile, keyfile = self.webhook_certs.files
        elif not certfile or not keyfile:
            hosts = [h for h in (self.settings.webhook_url_host, "localhost", "127.0.0.1") if h]
            cert, key = tls.generate_self_signed(list(dict.fromkeys(hosts)))
            directory = Path(tempfile.mkdtemp(prefix="rolecall-tls-"))
            (directory / "tls.crt").write_bytes(cert)
            (directory / "tls.key").write_bytes(key)
            (directory / "tls.key").chmod(0o600)
            certfile, keyfile = str(directory / "tls.crt"), str(directory / "tls.key")
        client_ca = self.settings.webhook_client_ca
        settings.admission.server = CheckedWebhookServer(
            addr=self.settings.webhook_host,
            port=self.settings.webhook_port,
            host=self.settings.webhook_url_host,
            certfile=certfile,
            pkeyfile=keyfile,
            verify_cafile=client_ca or None,
            verify_mode=ssl.CERT_REQUIRED if client_ca else None,
            context=self.webhook_certs.context if self.webhook_certs else None,  # hook (install)
        )
        if self.settings.webhook_url_host:
            settings.admission.managed = self.settings.webhook_configuration_name

    def login(self, **kwargs: Any) -> kopf.ConnectionInfo | None:
        """kopf talks to the same API server, with the same credentials, as our adapter."""
        if self.settings.kubeconfig is None and self.kube.in_cluster:
            return kopf.login_via_client(**kwargs)
        conn = self.kube.connection()
        return kopf.ConnectionInfo(
            server=conn.server,
            token=conn.token,
            scheme="Bearer" if conn.token else None,
            ca_path=conn.ca_path,
            certificate_path=conn.cert_path,
            private_key_path=conn.key_path,
            insecure=conn.insecure,
        )

    async def _in_executor(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def _detect_native_sidecars(self) -> None:
        try:
            version = await self._in_executor(self.kube.server_version)
            self.native_sidecars = admission.native_sidecars_supported(
                version.get("major", "0"), version.get("minor", "0")
            )
        except KubeError as exc:
            logger.warning("Could not read the API server version (%s); assuming native sidecars", exc.reason)

    async def startup(self) -> None:
        """Prime the policy and namespace caches, then start the scheduler and endpoints.

        Priming before any AssumedRole is reconciled matters: an empty policy cache would
        deny every binding and delete its Secret.
        """
        if self.settings.operator_keys_secret:
            await self._load_operator_keys()
        await self._prime()
        await self._detect_native_sidecars()
        token_key = await self._token_key()
        limiter = TokenBucket(self.settings.sts_rate, self.settings.sts_burst)
        self.reconciler = Reconciler(
            settings=self.settings,
            kube=self.kube,
            sts=self.sts,
            clock=self.clock,
            cache=self.cache,
            metrics=self.metrics,
            executor=self.executor,
            on_issued=self.events.issued,
            token_key=token_key,
        )
        self.scheduler = Scheduler(
            self.reconciler.reconcile,
            self.clock,
            workers=self.settings.workers,
            sts_gate=limiter.acquire,
            sts_concurrency=self.settings.sts_concurrency,
        )
        self.scheduler.paused = not self.leader
        self.events.armed = True
        await self.scheduler.start()
        if self.settings.ha == "lease":
            self.elector = LeaderElector(
                self.kube,
                SystemClock(),
                namespace=self.settings.lease_namespace,
                name=self.settings.lease_name,
                identity=self.settings.identity,
                lease_seconds=self.settings.lease_seconds,
                on_change=self.set_leader,
            )
            self._background.append(
                asyncio.create_task(self.elector.run(self.executor), name="rolecall-lease")
            )
        await self._serve_endpoints()

    async def cleanup(self) -> None:
        for task in list(self._background):
            task.cancel()
        self.events.cancel_background()
        if self.elector is not None:
            await asyncio.get_running_loop().run_in_executor(self.executor, self.elector.release)
        if self.scheduler is not None:
            await self.scheduler.stop()
        for endpoint in self._endpoints:
            await endpoint.stop()
        # let calls already on the wire finish (and be recorded) before the process goes
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: self.executor.shutdown(wait=True, cancel_futures=True)
        )

    async def _load_operator_keys(self) -> None:
        ns, _, name = (self.settings.operator_keys_secret or "").partition("/")
        secret = await self._in_executor(self.kube.get_secret, ns, name)
        keys = keys_from_secret_data(render.decode_data(secret.get("data") if secret else None))
        if keys is None:
            raise RuntimeError(
                f"--operator-keys-secret {ns}/{name}: the Secret must hold {c.KEY_ACCESS_KEY_ID} and "
                f"{c.KEY_SECRET_ACCESS_KEY}; create it with: kubectl -n {ns} create secret generic {name} "
                f"--from-literal={c.KEY_ACCESS_KEY_ID}=... --from-literal={c.KEY_SECRET_ACCESS_KEY}=..."
            )
        self.sts = STSAdapter(
            default_region=self.settings.default_region,
            endpoint_url=self.settings.sts_endpoint_url,
            base_keys=keys,
        )

    async def _token_key(self) -> bytes | None:
        where = self.settings.token_key_secret or f"{self.settings.lease_namespace}/rolecall-token-key"
        if where == "-":
            return None
        namespace, _, name = where.partition("/")
        return await tokenkey.load_or_create(self.kube, self._in_executor, namespace, name)

    async def _prime(self) -> None:
        for body in await self._in_executor(self.kube.list_policies):
            self.events.store_policy(body)
        for body in await self._in_executor(self.kube.list_namespaces):
            self.events.store_namespace(body)

    # --- endpoints ----------------------------------------------------------------------

    async def _serve_endpoints(self) -> None:
        s = self.settings
        same_port = s.metrics_port == s.health_port > 0 and s.metrics_host == s.health_host
        if s.health_port >= 0:
            routes: dict[str, Any] = {"/healthz": self._healthz}
            if same_port:
                routes["/metrics"] = self._metrics
            endpoint = Endpoint(s.health_host, s.health_port, routes)
            self.health_port = await endpoint.start()
            self._endpoints.append(endpoint)
        if s.metrics_port >= 0 and not same_port:
            endpoint = Endpoint(s.metrics_host, s.metrics_port, {"/metrics": self._metrics})
            self.metrics_port = await endpoint.start()
            self._endpoints.append(endpoint)
        elif same_port:
            self.metrics_port = self.health_port

    async def _healthz(self, request: web.Request) -> web.Response:
        alive = self.scheduler is not None and self.scheduler.alive()
        return web.json_response({"ok": alive, "leader": self.leader}, status=200 if alive else 503)

    async def _metrics(self, request: web.Request) -> web.Response:
        if self.settings.metrics_auth and not await self._metrics_allowed(bearer_token(request)):
            return web.Response(status=401 if not bearer_token(request) else 403, text="Unauthorized\n")
        ready = self.cache.ready_count()
        self.metrics.assumed_roles.labels("true").set(ready)
        self.metrics.assumed_roles.labels("false").set(len(self.cache.assumed_roles) - ready)
        return web.Response(body=self.metrics.render(), headers={"Content-Type": METRICS_CONTENT_TYPE})

    async def _metrics_allowed(self, token: str) -> bool:
        """TokenReview + SubjectAccessReview (get /metrics), cached for a minute per token."""
        if not token:
            return False
        digest = hashlib.sha256(token.encode()).hexdigest()
        now = time.monotonic()
        if self._metrics_grants.get(digest, 0.0) > now:
            return True
        try:
            allowed = bool(await self._in_executor(self.kube.may_get_non_resource, token, "/metrics"))
        except KubeError as exc:
            logger.warning("Could not authorise a /metrics request: %s %s", exc.status, exc.reason)
            return False
        if allowed:
            if len(self._metrics_grants) > 1000:
                self._metrics_grants.clear()
            self._metrics_grants[digest] = now + METRICS_AUTH_CACHE_SECONDS
        return allowed

    # --- admission (served by every replica, from the in-memory index) --------------------

    def mutate_pod(self, body: Any, patch: kopf.Patch, warnings: list[str]) -> None:
        namespace = (body.get("metadata") or {}).get("namespace") or ""
        review = admission.review_pod(
            admission.InjectionRequest.of(body, namespace, self.index, self.settings, self.native_sidecars)
        )
        warnings.extend(review.warnings)
        if review.patch:
            patch.fns.append(admission.json_patch_fn(review.patch))
        self.metrics.pod_injections.labels(review.mode, review.result.value).inc()
        if review.reason:
            logger.info(
                "Pod %s/%s: %s",
                namespace,
                (body.get("metadata") or {}).get("name")
                or (body.get("metadata") or {}).get("generateName", ""),
                review.reason,
            )

    async def validate_assumed_role(self, body: Any, old: Any, operation: str, warnings: list[str]) -> None:
        namespace = (body.get("metadata") or {}).get("namespace") or ""
        review = self._review_assumed_role(body, old, operation, namespace)
        if not review.allowed and self.settings.enforce_access:
            # the cache is fed by watches: a policy applied a moment ago (kubectl apply -f of a
            # directory) may not have arrived yet. Refuse only what the API server's own copy
            # of the policies refuses too.
            await self._refresh_policies(namespace)
            review = self._review_assumed_role(body, old, operation, namespace)
        warnings.extend(review.warnings)
        if not review.allowed:
            raise kopf.AdmissionError(review.message, code=422)

    def _review_assumed_role(
        self, body: Any, old: Any, operation: str, namespace: str
    ) -> admission.AssumedRoleReview:
        return admission.review_assumed_role(
            body,
            operation=operation,
            namespace=namespace,
            policies=list(self.cache.policies.values()),
            namespace_labels=self.cache.namespace_labels.get(namespace, {}),
            enforce=self.settings.enforce_access,
            old=old,
        )

    async def _refresh_policies(self, namespace: str) -> None:
        try:
            policies = await self._in_executor(self.kube.list_policies)
            labels = await self._in_executor(self.kube.get_namespace_labels, namespace)
        except KubeError as exc:
            logger.info("Could not re-read AssumedRolePolicies for a denial: %s", exc.reason)
            return
        for policy in policies:
            self.events.store_policy(policy)
        if labels is not None:
            self.cache.namespace_labels[namespace] = labels

    # --- leadership and triggers --------------------------------------------------------

    def set_leader(self, leader: bool) -> None:
        self.leader = leader
        if self.scheduler is not None:
            self.scheduler.paused = not leader
            self.scheduler.wake()

    def _trigger(self, key: Key) -> None:
        if self.scheduler is not None:
            self.scheduler.trigger(key)

    def _forget(self, key: Key) -> None:
        if self.scheduler is not None:
            self.scheduler.forget(key)

    def _decide_access(self, namespace: str, spec: AssumedRoleSpec) -> access.Decision:
        assert self.reconciler is not None
        return self.reconciler.decide_access(namespace, spec)

    async def _policy_status(self, body: dict[str, Any], valid: bool, message: str) -> None:
        """Show on the policy whether it is in force (only the acting replica writes)."""
        current = find_condition((body.get("status") or {}).get("conditions"), "Valid")
        wanted = "True" if valid else "False"
        if not self.leader or (
            current and current.get("status") == wanted and current.get("message") == message
        ):
            return
        cond = condition(
            "Valid", valid, "Valid" if valid else "InvalidSpec", message, Context(None, self.clock.now())
        )
        name = body.get("metadata", {}).get("name", "")
        try:
            await self._in_executor(self.kube.patch_policy_status, name, {"conditions": [cond]})
        except KubeError as exc:
            logger.info("Could not update the status of AssumedRolePolicy %s: %s", name, exc.reason)

    # --- watch events (typed entry points for the handlers) ---------------------------------

    def on_assumed_role(self, event: dict[str, Any]) -> None:
        self.events.on_assumed_role(event)

    def on_secret(self, event: dict[str, Any]) -> None:
        self.events.on_secret(event)

    def on_policy(self, event: dict[str, Any]) -> None:
        self.events.on_policy(event)

    def on_namespace(self, event: dict[str, Any]) -> None:
        self.events.on_namespace(event)
