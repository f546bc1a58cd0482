"""The only boto3 user: AssumeRole requests and the classification of their failures.

Errors are classified once, here, into the condition reasons of docs/security.md. Retrying is the
reconciler's job (with backoff and a global rate limit), so botocore's own retries are off:
every attempt is one STS call that the metrics and the rate limiter see.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import boto3
import botocore.exceptions
from botocore.config import Config

from rolecall.constants import Reason
from rolecall.model import AssumeRequest, Credentials


@dataclass(frozen=True)
class StaticKeys:
    """Base credentials from a Secret (``source.secretRef``) or a chained AssumedRole."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str = field(default="", repr=False)


class STSError(Exception):
    """A failed AssumeRole, classified. The message is safe to show in status and logs."""

    def __init__(self, reason: Reason, code: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.code = code
        self.message = message


_REASONS: dict[str, Reason] = {
    "AccessDenied": Reason.ACCESS_DENIED,
    "AccessDeniedException": Reason.ACCESS_DENIED,
    "Throttling": Reason.THROTTLED,
    "ThrottlingException": Reason.THROTTLED,
    "RequestLimitExceeded": Reason.THROTTLED,
    "TooManyRequestsException": Reason.THROTTLED,
    "MalformedPolicyDocument": Reason.MALFORMED_POLICY,
    "MalformedPolicyDocumentException": Reason.MALFORMED_POLICY,
    "PackedPolicyTooLarge": Reason.PACKED_POLICY_TOO_LARGE,
    "PackedPolicyTooLargeException": Reason.PACKED_POLICY_TOO_LARGE,
    "RegionDisabledException": Reason.REGION_DISABLED,
    "ValidationError": Reason.INVALID_SPEC,
    "InvalidParameterValue": Reason.INVALID_SPEC,
    "ExpiredToken": Reason.SOURCE_UNAVAILABLE,
    "ExpiredTokenException": Reason.SOURCE_UNAVAILABLE,
    "InvalidClientTokenId": Reason.SOURCE_UNAVAILABLE,
    "SignatureDoesNotMatch": Reason.SOURCE_UNAVAILABLE,
    "UnrecognizedClientException": Reason.SOURCE_UNAVAILABLE,
    "IncompleteSignature": Reason.SOURCE_UNAVAILABLE,
}


def classify(exc: BaseException, request: AssumeRequest, source: str) -> STSError:
    """Turn a botocore failure into an :class:`STSError` with an actionable message."""
    if isinstance(exc, botocore.exceptions.ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", "Unknown"))
        text = str(err.get("Message", "")).strip()
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        reason = _REASONS.get(
            code,
            Reason.TRANSIENT
            if status >= 500 or status == 0
            else Reason.ACCESS_DENIED
            if status == 403
            else Reason.TRANSIENT,
        )
        message = f"STS AssumeRole for {request.role_arn} failed: {code}: {text}".rstrip(": ")
        if reason is Reason.ACCESS_DENIED:
            needs = ["sts:AssumeRole"]
            if request.tags:
                needs.append("sts:TagSession")
            if request.source_identity:
                needs.append("sts:SetSourceIdentity")
            message += (
                f". The role's trust policy must allow {', '.join(needs)} for {source}"
                + (
                    " (session tags are sent: without sts:TagSession AssumeRole is denied)"
                    if request.tags
                    else ""
                )
                + ("; check sts:ExternalId too" if request.external_id else "")
            )
        elif reason is Reason.SOURCE_UNAVAILABLE:
            message += f". The base credentials ({source}) were rejected: they are expired or invalid"
        elif reason is Reason.REGION_DISABLED:
            message += f". Activate STS in region {request.region or 'the default region'} or set spec.region"
        return STSError(reason, code, message)
    if isinstance(exc, botocore.exceptions.NoCredentialsError | botocore.exceptions.PartialCredentialsError):
        return STSError(
            Reason.SOURCE_UNAVAILABLE,
            "NoCredentials",
            f"no base AWS credentials for {source}: {exc}",
        )
    if isinstance(exc, botocore.exceptions.ParamValidationError):
        return STSError(
            Reason.INVALID_SPEC,
            "ParamValidation",
            f"STS rejected the request before sending: {exc}",
        )
    if isinstance(exc, botocore.exceptions.BotoCoreError | OSError):
        return STSError(
            Reason.TRANSIENT,
            type(exc).__name__,
            f"STS AssumeRole for {request.role_arn} failed: {type(exc).__name__}: {exc}",
        )
    return STSError(
        Reason.TRANSIENT,
        type(exc).__name__,
        f"STS AssumeRole for {request.role_arn} failed: {type(exc).__name__}",
    )


class _Pending:
    """A client being built: other threads asking for the same key wait for it."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.client: Any = None


@dataclass(frozen=True)
class CacheKey:
    """Which client may serve a call: the identity namespace, region, endpoint and, for
    base keys, a keyed digest of all of the key material (id, secret and token).

    ``operator`` entries are the operator's own identity (the SDK chain or ``base_keys``);
    ``tenant`` entries are keys a namespace supplied. They can never share an entry: a key id
    (which is no secret — CloudTrail shows it) with another secret is another entry.
    """

    kind: str  # "operator" | "tenant"
    region: str
    endpoint: str
    digest: str = ""


class ClientCache:
    """STS clients by :class:`CacheKey`, built once per key and inserted atomically.

    The operator's own clients (one per region) live apart from the tenants' clients, each
    in its own bounded LRU, so no number of tenant keys can evict the operator's client; the
    operator's client for the default region is never evicted (regions are tenants' choice). A client is built outside the lookup lock (builds are serialised on their own
    lock: botocore sessions are not thread-safe while they create clients); threads asking
    for a key whose client is being built wait for it instead of building another, and
    nothing half-built is ever handed out.
    """

    def __init__(
        self,
        build: Callable[[str, StaticKeys | None], Any],
        *,
        endpoint: str = "",
        max_tenant_clients: int = 256,
        max_operator_clients: int = 64,
        pinned_region: str = "",
    ) -> None:
        self._build = build
        self._pinned = pinned_region  # the operator's client for it is never evicted
        self._endpoint = endpoint
        self._salt = os.urandom(32)  # digests of key material are useless outside this process
        self._operator: OrderedDict[CacheKey, Any] = OrderedDict()
        self._tenants: OrderedDict[CacheKey, Any] = OrderedDict()
        self._pending: dict[CacheKey, _Pending] = {}
        self._max_tenants = max_tenant_clients
        self._max_operator = max_operator_clients
        self._lock = threading.Lock()
        self._build_lock = threading.Lock()
        self.builds = 0  # clients built so far (for tests and benchmarks)

    def key(self, region: str, keys: StaticKeys | None, *, operator: bool) -> CacheKey:
        if operator and keys is None:
            return CacheKey("operator", region, self._endpoint)
        assert keys is not None
        material = "\x00".join((keys.access_key_id, keys.secret_access_key, keys.session_token))
        digest = hashlib.blake2b(material.encode(), key=self._salt, digest_size=32).hexdigest()
        return CacheKey("operator" if operator else "tenant", region, self._endpoint, digest)

    def __len__(self) -> int:
        with self._lock:
            return len(self._operator) + len(self._tenants)

    def holds(self, key: CacheKey) -> bool:
        with self._lock:
            return key in self._operator or key in self._tenants

    def get(self, region: str, keys: StaticKeys | None, *, operator: bool) -> Any:
        key = self.key(region, keys, operator=operator)
        table = self._operator if key.kind == "operator" else self._tenants
        while True:
            with self._lock:
                client = table.get(key)
                if client is not None:
                    table.move_to_end(key)
                    return client
                pending = self._pending.get(key)
                mine = pending is None
                if pending is None:
                    pending = self._pending[key] = _Pending()
            if not mine:
                pending.done.wait()
                if pending.client is not None:
                    return pending.client
                continue  # its builder failed: try again
            try:
                with self._build_lock:
                    client = self._build(region, keys)
                    self.builds += 1
            except BaseException:
                with self._lock:
                    del self._pending[key]
                pending.done.set()
                raise
            with self._lock:
                table[key] = client
                limit = self._max_operator if table is self._operator else self._max_tenants
                while len(table) > limit:
                    oldest = next(k for k in table if k.kind == "tenant" or k.region != self._pinned)
                    del table[oldest]
                del self._pending[key]
            pending.client = client
            pending.done.set()
            return client


class STSAdapter:
    """Calls STS AssumeRole. Blocking: the reconciler runs it in a worker thread.

    The operator's own identity comes from the AWS SDK default chain (IRSA, Pod Identity,
    instance profile, env) or from ``base_keys`` (static keys from a Secret, for clusters
    outside AWS); tenants' base keys (``source``) are passed per call. Clients are cached in
    a :class:`ClientCache`. ``AWS_ENDPOINT_URL_STS`` is honoured by botocore itself.
    """

    def __init__(
        self,
        *,
        default_region: str = "us-east-1",
        endpoint_url: str | None = None,
        base_keys: StaticKeys | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 10.0,
        max_clients: int = 256,
    ) -> None:
        self.default_region = default_region
        self.endpoint_url = endpoint_url
        self._base_keys = base_keys
        self._config = Config(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"total_max_attempts": 1, "mode": "standard"},
            max_pool_connections=32,
        )
        self._session = boto3.session.Session()
        self.clients = ClientCache(
            self._new_client,
            endpoint=endpoint_url or os.environ.get("AWS_ENDPOINT_URL_STS", ""),
            max_tenant_clients=max_clients,
            pinned_region=default_region,
        )

    def _new_client(self, region: str, keys: StaticKeys | None) -> Any:
        kwargs: dict[str, Any] = {"region_name": region, "config": self._config}
        if self.endpoint_url:
            kwargs["endpoint_url"] = self.endpoint_url
        if keys:
            kwargs.update(
                aws_access_key_id=keys.access_key_id,
                aws_secret_access_key=keys.secret_access_key,
                aws_session_token=keys.session_token or None,
            )
        return self._session.client("sts", **kwargs)

    def holds_operator_client(self, region: str) -> bool:
        """Is the operator's own client for ``region`` cached (not evicted)?"""
        return self.clients.holds(self.clients.key(region, self._base_keys, operator=True))

    def _client(self, region: str, keys: StaticKeys | None) -> Any:
        if keys is None:
            return self.clients.get(region, self._base_keys, operator=True)
        return self.clients.get(region, keys, operator=False)

    def assume_role(
        self,
        request: AssumeRequest,
        source: StaticKeys | None = None,
        source_label: str = "the operator's own identity",
    ) -> Credentials:
        """One AssumeRole call; raises :class:`STSError` (never with secret material)."""
        params: dict[str, Any] = {
            "RoleArn": request.role_arn,
            "RoleSessionName": request.session_name,
            "DurationSeconds": request.duration_seconds,
        }
        if request.external_id:
            params["ExternalId"] = request.external_id
        if request.policy:
            params["Policy"] = request.policy
        if request.policy_arns:
            params["PolicyArns"] = [{"arn": arn} for arn in request.policy_arns]
        if request.tags:
            params["Tags"] = [{"Key": k, "Value": v} for k, v in request.tags]
        if request.transitive_tag_keys:
            params["TransitiveTagKeys"] = list(request.transitive_tag_keys)
        if request.source_identity:
            params["SourceIdentity"] = request.source_identity
        try:
            client = self._client(request.region or self.default_region, source)
            answer = client.assume_role(**params)
        except Exception as exc:  # classified: every failure becomes an STSError
            raise classify(exc, request, source_label) from None
        raw = answer["Credentials"]
        expiration = raw["Expiration"]
        if isinstance(expiration, str):
            expiration = datetime.datetime.fromisoformat(expiration.replace("Z", "+00:00"))
        if expiration.tzinfo is None:
            expiration = expiration.replace(tzinfo=datetime.UTC)
        return Credentials(
            access_key_id=raw["AccessKeyId"],
            secret_access_key=raw["SecretAccessKey"],
            session_token=raw["SessionToken"],
            expiration=expiration.astimezone(datetime.UTC).replace(microsecond=0),
            assumed_role_arn=answer.get("AssumedRoleUser", {}).get("Arn", ""),
        )
