"""The webhook's TLS by default: the operator's own CA, shared by its replicas through a Secret.

No cert-manager and no hand-made certificate are needed. When the operator serves its
webhooks behind a Service (``--webhook-service NAMESPACE/NAME``) and is given no certificate
files, every replica, at start and then every few minutes:

1. reads the Secret ``NAMESPACE/NAME-webhook-tls``; when it is missing, or its CA or serving
   certificate is due for renewal (:mod:`rolecall.tls` decides, with the time passed in), it
   writes a new one: create-if-absent, or replace at the resourceVersion it read. A replica
   that loses the race (AlreadyExists / Conflict) reads the winner's instead, so replicas that
   start together agree on one CA;
2. keeps the ``caBundle`` of the webhook configurations named ``NAME`` (the mutating and the
   validating one, as the Helm chart names them) equal to the Secret's CA bundle, and sets
   their ``failurePolicy`` to the value of their ``rolecall.dev/failure-policy`` annotation:
   the chart creates them with ``failurePolicy: Ignore`` and no ``caBundle``, so a fresh
   install never blocks a write before a replica can answer;
3. serves with the Secret's certificate, reloaded in place (new TLS handshakes use it, open
   connections are not cut) when the Secret changes.

The CA bundle is published before a replica switches to a certificate of a new CA, and holds
the previous CA until it expires, so no replica is ever distrusted during a rotation.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import socket
import ssl
import tempfile
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from rolecall import tls
from rolecall.clock import Clock
from rolecall.config import Settings
from rolecall.kube import Conflict, KubeAdapter, KubeError

logger = logging.getLogger("rolecall.webhookcerts")

KEY_CERT = "tls.crt"
KEY_KEY = "tls.key"
KEY_CA = "ca.crt"  # every CA still trusted, the current one first
KEY_CA_KEY = "ca.key"
# On a webhook configuration: the failurePolicy its webhooks get once the operator serves.
ANN_FAILURE_POLICY = "rolecall.dev/failure-policy"
FAILURE_POLICIES = ("Ignore", "Fail")
KINDS = ("mutating", "validating")
SYNC_SECONDS = 300.0
RETRY_SECONDS = 20.0


@dataclass(frozen=True)
class Target:
    """Where the material lives and whom it serves."""

    namespace: str
    secret_name: str
    configuration_name: str
    service_name: str


def target_for(settings: Settings) -> Target | None:
    """The operator issues its own certificates when it serves webhooks behind a Service and
    was given no certificate files (cert-manager's or your own)."""
    if not settings.webhook_enabled or settings.webhook_cert or not settings.webhook_service:
        return None
    namespace, _, name = settings.webhook_service.partition("/")
    if not namespace or not name:
        raise ValueError(
            f"--webhook-service: invalid value {settings.webhook_service!r}: must be NAMESPACE/NAME"
        )
    return Target(namespace, f"{name}-webhook-tls", name, name)


def hosts_for(target: Target, configurations: list[dict[str, Any] | None]) -> list[str]:
    """The names the API server reaches the webhooks at: the Service's DNS names, and the host
    of every ``clientConfig.url`` of the configurations."""
    svc = f"{target.service_name}.{target.namespace}"
    hosts = [f"{svc}.svc", f"{svc}.svc.cluster.local", svc, target.service_name]
    for config in configurations:
        for hook in (config or {}).get("webhooks") or []:
            url = (hook.get("clientConfig") or {}).get("url")
            host = urlsplit(url).hostname if isinstance(url, str) else None
            if host and host not in hosts:
                hosts.append(host)
    return hosts


@dataclass(frozen=True)
class Material:
    ca: tls.KeyPair  # the current CA (first certificate of the bundle) and its key
    ca_bundle: bytes  # every CA still trusted, current first
    serving: tls.KeyPair


def material_from_secret(secret: dict[str, Any] | None) -> Material | None:
    data = (secret or {}).get("data") or {}

    def field(key: str) -> bytes:
        try:
            return base64.b64decode(data.get(key) or "")
        except ValueError:
            return b""

    bundle = field(KEY_CA)
    first = tls.first(bundle)
    if first is None:
        return None
    return Material(
        ca=tls.KeyPair(first, field(KEY_CA_KEY)),
        ca_bundle=bundle,
        serving=tls.KeyPair(field(KEY_CERT), field(KEY_KEY)),
    )


def plan(current: Material | None, hosts: list[str], now: Any) -> tuple[Material | None, str | None]:
    """What the Secret must hold instead of ``current``, and why; ``(None, None)`` when it is fine."""
    why = tls.ca_renewal_reason(current.ca if current else None, now)
    if why is not None:
        ca = tls.issue_ca(now)
        old = tls.still_valid(current.ca_bundle, now) if current else b""
        return Material(ca, tls.bundle(ca.cert_pem, old), tls.issue_serving(ca, hosts, now)), why
    assert current is not None
    serving, why = current.serving, tls.serving_renewal_reason(current.serving, current.ca, hosts, now)
    if why is not None:
        serving = tls.issue_serving(current.ca, hosts, now)
    wanted_bundle = tls.bundle(current.ca.cert_pem, tls.still_valid(current.ca_bundle, now))
    if why is None and wanted_bundle != current.ca_bundle:
        why = "the CA bundle holds an expired CA"
    if why is None:
        return None, None
    return Material(current.ca, wanted_bundle, serving), why


def secret_body(target: Target, material: Material, resource_version: str | None) -> dict[str, Any]:
    def b64(value: bytes) -> str:
        return base64.b64encode(value).decode("ascii")

    metadata: dict[str, Any] = {
        "name": target.secret_name,
        "namespace": target.namespace,
        "labels": {
            "app.kubernetes.io/part-of": "rolecall",
            "app.kubernetes.io/component": "webhook-tls",
        },
        "annotations": {
            "rolecall.dev/description": "the webhook's CA and serving certificate, issued and "
            "rotated by the rolecall operator; delete it to have a new CA issued",
        },
    }
    if resource_version:
        metadata["resourceVersion"] = resource_version
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": metadata,
        "data": {
            KEY_CERT: b64(material.serving.cert_pem),
            KEY_KEY: b64(material.serving.key_pem),
            KEY_CA: b64(material.ca_bundle),
            KEY_CA_KEY: b64(material.ca.key_pem),
        },
    }


def configured(config: dict[str, Any], ca_bundle: bytes, *, serving: bool = True) -> dict[str, Any] | None:
    """The configuration with every webhook's ``caBundle`` set (and, once this replica is
    ``serving``, ``failurePolicy`` from its annotation); None when nothing changes."""
    wanted_policy = ((config.get("metadata") or {}).get("annotations") or {}).get(ANN_FAILURE_POLICY)
    if wanted_policy not in FAILURE_POLICIES or not serving:
        wanted_policy = None
    encoded = base64.b64encode(ca_bundle).decode("ascii")
    changed = False
    hooks = []
    for hook in config.get("webhooks") or []:
        hook = dict(hook)
        client = dict(hook.get("clientConfig") or {})
        if client.get("caBundle") != encoded:
            client["caBundle"] = encoded
            changed = True
        hook["clientConfig"] = client
        if wanted_policy and hook.get("failurePolicy") != wanted_policy:
            hook["failurePolicy"] = wanted_policy
            changed = True
        hooks.append(hook)
    return {**config, "webhooks": hooks} if changed else None


class WebhookCerts:
    """One replica's view of the shared material: the TLS context it serves with, kept current."""

    def __init__(self, kube: KubeAdapter, clock: Clock, target: Target, address: tuple[str, int]) -> None:
        self.kube = kube
        self.address = address  # where this replica's webhook server listens
        self.clock = clock
        self.target = target
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._dir = Path(tempfile.mkdtemp(prefix="rolecall-webhook-tls-"))
        self._loaded: bytes | None = None
        self._loads = 0
        self.files: tuple[str, str] | None = None  # the first pair: handed to kopf, never changed
        self._wake: asyncio.Event | None = None
        self.serving = False  # this replica's server has answered a TLS handshake

    # --- one pass (blocking: run it in an executor) ----------------------------------------

    def sync(self) -> Material:
        configs = {
            kind: self.kube.get_webhook_configuration(kind, self.target.configuration_name) for kind in KINDS
        }
        material = self._ensure_secret(hosts_for(self.target, list(configs.values())))
        self.serving = self.serving or self._listening()
        self._publish(configs, material.ca_bundle)  # before serving a certificate of a new CA
        self._load(material.serving)
        return material

    def _listening(self) -> bool:
        """Whether this replica's webhook server completes a TLS handshake: only then may the
        configurations' failurePolicy become Fail."""
        host, port = self.address
        host = "127.0.0.1" if host in ("", "0.0.0.0") else "::1" if host == "::" else host
        client = ssl.create_default_context()
        client.check_hostname = False
        client.verify_mode = ssl.CERT_NONE
        try:
            with socket.create_connection((host, port), timeout=2) as raw, client.wrap_socket(raw):
                return True
        except (OSError, ssl.SSLError):
            return False

    def _ensure_secret(self, hosts: list[str]) -> Material:
        ns, name = self.target.namespace, self.target.secret_name
        for _ in range(5):
            secret = self.kube.get_secret(ns, name)
            current = material_from_secret(secret)
            wanted, why = plan(current, hosts, self.clock.now())
            if wanted is None:
                assert current is not None
                return current
            rv = (secret or {}).get("metadata", {}).get("resourceVersion")
            body = secret_body(self.target, wanted, rv)
            try:
                if secret is None:
                    self.kube.create_secret(body)
                else:
                    self.kube.replace_secret(body)
            except Conflict:  # another replica wrote first (AlreadyExists is a Conflict): use theirs
                logger.debug("Secret %s/%s changed meanwhile; reading it again", ns, name)
                continue
            logger.info(
                "Issued the webhook certificate in Secret %s/%s (%s); valid until %s",
                ns,
                name,
                why,
                f"{tls.expiry(wanted.serving.cert_pem):%Y-%m-%d}",
            )
            return wanted
        raise KubeError(409, "Conflict", f"Secret {ns}/{name} kept changing while being renewed")

    def _publish(self, configs: dict[str, dict[str, Any] | None], ca_bundle: bytes) -> None:
        for kind, config in configs.items():
            if config is None:
                continue
            body = configured(config, ca_bundle, serving=self.serving)
            if body is None:
                continue
            try:
                self.kube.replace_webhook_configuration(kind, body)
            except Conflict:
                logger.debug("%s webhook configuration changed meanwhile; next pass", kind)
                continue
            logger.info(
                "Set the caBundle of %s webhook configuration %s%s",
                kind,
                self.target.configuration_name,
                "".join(
                    f"; {h.get('name')} failurePolicy={h.get('failurePolicy')}" for h in body["webhooks"]
                ),
            )

    def _load(self, serving: tls.KeyPair) -> None:
        if serving.cert_pem == self._loaded:
            return
        self._loads += 1
        cert = self._dir / f"tls-{self._loads}.crt"
        key = self._dir / f"tls-{self._loads}.key"
        key.touch(mode=0o600)
        key.write_bytes(serving.key_pem)
        cert.write_bytes(serving.cert_pem)
        self.context.load_cert_chain(str(cert), str(key))
        if self.files is None:
            self.files = (str(cert), str(key))
        else:  # the first pair stays for kopf (it watches those files); later ones are not needed
            cert.unlink()
            key.unlink()
        if self._loaded is not None:
            logger.info("Serving the webhooks with the renewed certificate")
        self._loaded = serving.cert_pem

    # --- the background loop -------------------------------------------------------------------

    async def run(self, executor: Executor, interval: float = SYNC_SECONDS) -> None:
        """Sync every ``interval`` seconds, and whenever the (test) clock moves."""
        loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        wake = self._wake

        def nudge() -> None:
            loop.call_soon_threadsafe(wake.set)

        self.clock.subscribe(nudge)
        delay = 0.5 if not self.serving else interval  # soon: the server starts after startup
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=delay)
            wake.clear()
            try:
                await loop.run_in_executor(executor, self.sync)
                delay = interval if self.serving else 1.0
            except (KubeError, ValueError, OSError, ssl.SSLError) as exc:
                logger.warning("Could not renew the webhook certificate (will retry): %s", exc)
                delay = RETRY_SECONDS


async def start(
    settings: Settings, kube: KubeAdapter, clock: Clock, executor: Executor
) -> tuple[WebhookCerts | None, asyncio.Task[None] | None]:
    """The first pass (the webhook server starts with a certificate) and the background loop;
    ``(None, None)`` when certificates come from files (cert-manager, provided, development)."""
    target = target_for(settings)
    if target is None:
        return None, None
    certs = WebhookCerts(kube, clock, target, (settings.webhook_host, settings.webhook_port))
    await asyncio.get_running_loop().run_in_executor(executor, certs.sync)
    return certs, asyncio.create_task(certs.run(executor), name="rolecall-webhook-certs")
