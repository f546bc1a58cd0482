"""Wiring: one operator instance's objects, and what each watch event means for them.

kopf delivers watch events to :mod:`rolecall.handlers`, which hands them here. This module
keeps the cache, turns events into scheduler triggers, owns the health/metrics endpoint and
the lifecycle. Decisions stay in the pure modules; I/O stays in the adapters.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import kopf
from aiohttp import web

from rolecall import admission, render, tls, webhookcerts
from rolecall import constants as c
from rolecall.clock import Clock, SystemClock
from rolecall.config import Settings
from rolecall.index import BindingIndex
from rolecall.kube import KubeAdapter, KubeError, load_configuration
from rolecall.leader import LeaderElector
from rolecall.metrics import Metrics
from rolecall.model import SpecError, parse_assumed_role, parse_policy
from rolecall.ratelimit import TokenBucket
from rolecall.reconcile import Cache, Key, Reconciler, _clean
from rolecall.scheduler import Scheduler
from rolecall.sts import StaticKeys, STSAdapter

logger = logging.getLogger("rolecall")


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
        self._runner: web.AppRunner | None = None
        self.leader = settings.ha == "none"
        self._background: list[asyncio.Task[None]] = []
        self.elector: LeaderElector | None = None
        self.index = BindingIndex()
        self.dependents: dict[Key, set[Key]] = {}
        self.native_sidecars = True
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
        settings.admission.server = kopf.WebhookServer(
            addr=self.settings.webhook_host,
            port=self.settings.webhook_port,
            host=self.settings.webhook_url_host,
            certfile=certfile,
            pkeyfile=keyfile,
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

    async def _detect_native_sidecars(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            version = await loop.run_in_executor(self.executor, lambda: self.kube.request("GET", "/version"))
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
        limiter = TokenBucket(self.settings.sts_rate, self.settings.sts_burst)
        self.reconciler = Reconciler(
            settings=self.settings,
            kube=self.kube,
            sts=self.sts,
            clock=self.clock,
            cache=self.cache,
            metrics=self.metrics,
            limiter=limiter,
            executor=self.executor,
            on_issued=self._trigger_dependents,
        )
        self.scheduler = Scheduler(self.reconciler.reconcile, self.clock, workers=self.settings.workers)
        self.scheduler.paused = not self.leader
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
        if self.settings.health_port >= 0:
            await self._serve_health()

    async def cleanup(self) -> None:
        for task in list(self._background):
            task.cancel()
        if self.elector is not None:
            await asyncio.get_running_loop().run_in_executor(self.executor, self.elector.release)
        if self.scheduler is not None:
            await self.scheduler.stop()
        if self._runner is not None:
            await self._runner.cleanup()
        # let calls already on the wire finish (and be recorded) before the process goes
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: self.executor.shutdown(wait=True, cancel_futures=True)
        )

    async def _load_operator_keys(self) -> None:
        ns, _, name = (self.settings.operator_keys_secret or "").partition("/")
        loop = asyncio.get_running_loop()
        secret = await loop.run_in_executor(self.executor, self.kube.get_secret, ns, name)
        from rolecall.render import decode_data

        data = decode_data(secret.get("data") if secret else None)
        if not data.get(c.KEY_ACCESS_KEY_ID) or not data.get(c.KEY_SECRET_ACCESS_KEY):
            raise RuntimeError(
                f"--operator-keys-secret {ns}/{name}: the Secret must hold {c.KEY_ACCESS_KEY_ID} and {c.KEY_SECRET_ACCESS_KEY}"
            )
        self.sts = STSAdapter(
            default_region=self.settings.default_region,
            endpoint_url=self.settings.sts_endpoint_url,
            base_keys=StaticKeys(
                data[c.KEY_ACCESS_KEY_ID],
                data[c.KEY_SECRET_ACCESS_KEY],
                data.get(c.KEY_SESSION_TOKEN, ""),
            ),
        )

    async def _prime(self) -> None:
        loop = asyncio.get_running_loop()
        policies = await loop.run_in_executor(
            self.executor,
            lambda: self.kube.request("GET", f"/apis/{c.API_VERSION}/{c.PLURAL_POLICY}"),
        )
        for body in policies.get("items") or []:
            self._store_policy(body)
        namespaces = await loop.run_in_executor(
            self.executor, lambda: self.kube.request("GET", "/api/v1/namespaces")
        )
        for body in namespaces.get("items") or []:
            meta = body.get("metadata", {})
            self.cache.namespace_labels[meta.get("name", "")] = dict(meta.get("labels") or {})

    async def _serve_health(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.health_host, self.settings.health_port)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []
        if sockets:
            self.health_port = sockets[0].getsockname()[1]
        logger.info(
            "Serving /healthz and /metrics on %s:%s",
            self.settings.health_host,
            getattr(self, "health_port", self.settings.health_port),
        )

    async def _healthz(self, request: web.Request) -> web.Response:
        alive = self.scheduler is not None and all(not t.done() for t in self.scheduler._tasks)
        return web.json_response({"ok": alive, "leader": self.leader}, status=200 if alive else 503)

    async def _metrics(self, request: web.Request) -> web.Response:
        ready = sum(1 for st in self.cache.states.values() if st.ready)
        self.metrics.assumed_roles.labels("true").set(ready)
        self.metrics.assumed_roles.labels("false").set(len(self.cache.assumed_roles) - ready)
        return web.Response(
            body=self.metrics.render(),
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
        )

    # --- admission (served by every replica, from the in-memory index) --------------------

    def mutate_pod(self, body: Any, patch: kopf.Patch, warnings: list[str]) -> None:
        namespace = (body.get("metadata") or {}).get("namespace") or ""
        review = admission.review_pod(
            body,
            namespace,
            self.index,
            default_mode=self.settings.default_injection_mode,
            sidecar_image=self.settings.sidecar_image,
            sidecar_port=self.settings.sidecar_port,
            native_sidecars=self.native_sidecars,
            sidecar_resources=self.settings.sidecar_resources,
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

    def validate_assumed_role(self, body: Any, old: Any, operation: str, warnings: list[str]) -> None:
        namespace = (body.get("metadata") or {}).get("namespace") or ""
        review = admission.review_assumed_role(
            body,
            operation=operation,
            namespace=namespace,
            policies=list(self.cache.policies.values()),
            namespace_labels=self.cache.namespace_labels.get(namespace, {}),
            enforce=self.settings.enforce_access,
            old=old,
        )
        warnings.extend(review.warnings)
        if not review.allowed:
            raise kopf.AdmissionError(review.message, code=422)

    # --- leadership ---------------------------------------------------------------------

    def set_leader(self, leader: bool) -> None:
        self.leader = leader
        if self.scheduler is not None:
            self.scheduler.paused = not leader
            self.scheduler.wake()

    # --- watch events -------------------------------------------------------------------

    def _trigger(self, key: Key) -> None:
        if self.scheduler is not None:
            self.scheduler.trigger(key)

    def on_assumed_role(self, event: dict[str, Any]) -> None:
        body = event.get("object") or {}
        meta = body.get("metadata", {})
        key = (meta.get("namespace", ""), meta.get("name", ""))
        if event.get("type") == "DELETED":
            self.index.remove(*key)
            self._index_chain(key, None)
            self.cache.assumed_roles.pop(key, None)
            self.cache.states.pop(key, None)
            if self.scheduler is not None:
                self.scheduler.forget(key)
                self.scheduler.trigger(key)  # one last run cleans up metrics
            return
        old = self.cache.assumed_roles.get(key)
        self.cache.assumed_roles[key] = body
        self.index.put_body(key[0], key[1], body.get("spec"))
        if old is None or old.get("spec") != body.get("spec"):
            self._index_chain(key, body)
        state = self.cache.states.get(key)
        if old is None or state is None:
            self._trigger(key)
            return
        if old.get("metadata", {}).get("generation") != meta.get("generation") or meta.get(
            "deletionTimestamp"
        ):
            self._trigger(key)
            return
        if state.last_status is not None and _clean(body.get("status")) != state.last_status:
            # status changed by someone else (or our write raced): rewrite the truth
            state.last_status = None
            self._trigger(key)

    def _index_chain(self, key: Key, body: dict[str, Any] | None) -> None:
        """Keep (namespace, source name) → chained bindings, so issuing is O(dependents)."""
        for deps in self.dependents.values():
            deps.discard(key)
        source = (((body or {}).get("spec") or {}).get("source") or {}).get("assumedRoleRef") or {}
        if isinstance(source, dict) and isinstance(source.get("name"), str):
            self.dependents.setdefault((key[0], source["name"]), set()).add(key)

    def _trigger_dependents(self, key: Key) -> None:
        """New credentials for ``key``: bindings chained through it that wait for it go now."""
        for other in self.dependents.get(key, ()):
            state = self.cache.states.get(other)
            if state is None or state.attempt > 0 or not state.ready:
                self._trigger(other)

    def on_secret(self, event: dict[str, Any]) -> None:
        body = event.get("object") or {}
        meta = body.get("metadata", {})
        owner = (meta.get("labels") or {}).get(c.LABEL_ASSUMED_ROLE) or next(
            (
                ref.get("name")
                for ref in meta.get("ownerReferences") or []
                if ref.get("kind") == c.KIND_ASSUMED_ROLE
            ),
            None,
        )
        if not owner:
            return
        key = (meta.get("namespace", ""), owner)
        if key not in self.cache.assumed_roles:
            return
        state = self.cache.states.get(key)
        if event.get("type") == "DELETED" or state is None or state.written_rv != meta.get("resourceVersion"):
            if state is not None:
                state.secret = None  # changed by someone else: read it afresh
            self._trigger(key)

    def _store_policy(self, body: dict[str, Any]) -> tuple[bool, str]:
        name = body.get("metadata", {}).get("name", "")
        try:
            self.cache.policies[name] = parse_policy(name, body.get("spec"))
        except SpecError as exc:
            self.cache.policies.pop(name, None)
            logger.warning("AssumedRolePolicy %s is invalid and admits nothing: %s", name, exc)
            return False, f"invalid, admits nothing: {exc}"
        return True, "the policy is in force"

    async def _policy_status(self, body: dict[str, Any], valid: bool, message: str) -> None:
        """Show on the policy whether it is in force (only the acting replica writes)."""
        current = render.find_condition((body.get("status") or {}).get("conditions"), "Valid")
        wanted = "True" if valid else "False"
        if not self.leader or (
            current and current.get("status") == wanted and current.get("message") == message
        ):
            return
        cond = render.condition(
            "Valid", valid, "Valid" if valid else "InvalidSpec", message, self.clock.now(), None, None
        )
        name = body.get("metadata", {}).get("name", "")
        try:
            await asyncio.get_running_loop().run_in_executor(
                self.executor, self.kube.patch_policy_status, name, {"conditions": [cond]}
            )
        except KubeError as exc:
            logger.info("Could not update the status of AssumedRolePolicy %s: %s", name, exc.reason)

    def on_policy(self, event: dict[str, Any]) -> None:
        body = event.get("object") or {}
        if event.get("type") == "DELETED":
            self.cache.policies.pop(body.get("metadata", {}).get("name", ""), None)
        else:
            valid, message = self._store_policy(body)
            task = asyncio.get_running_loop().create_task(self._policy_status(body, valid, message))
            self._background.append(task)
            task.add_done_callback(self._background.remove)
        self._reevaluate_access(None)

    def on_namespace(self, event: dict[str, Any]) -> None:
        body = event.get("object") or {}
        meta = body.get("metadata", {})
        name = meta.get("name", "")
        labels = dict(meta.get("labels") or {})
        if event.get("type") == "DELETED":
            self.cache.namespace_labels.pop(name, None)
            return
        if self.cache.namespace_labels.get(name) != labels:
            self.cache.namespace_labels[name] = labels
            self._reevaluate_access(name)

    def _reevaluate_access(self, namespace: str | None) -> None:
        """Trigger exactly the bindings whose access decision changed."""
        if self.reconciler is None:
            return
        for key, body in list(self.cache.assumed_roles.items()):
            if namespace is not None and key[0] != namespace:
                continue
            try:
                spec = parse_assumed_role(key[0], key[1], body.get("spec"))
            except SpecError:
                continue
            allowed = self.reconciler.decide_access(key[0], spec).allowed
            state = self.cache.states.get(key)
            if state is None or state.allowed != allowed:
                self._trigger(key)
