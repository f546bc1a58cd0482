"""Pytest fixtures for the Kubernetes API emulator (a plugin: ``pytest_plugins``).

Emulator fixtures (what the operator's integration tests use):

- ``kube_emulator`` (session): a started :class:`KubeAPIEmulator`, stopped at the end.
- ``kubeconfig_path`` (session): a kubeconfig file for it (http server, token user).
- ``kube_api`` (session): a ``kubernetes.client.ApiClient`` built from that kubeconfig
  with an explicit ``Configuration`` (``$KUBECONFIG`` is never consulted).
- ``namespace`` (function): a fresh namespace ``t-<test-name>-<random>``, deleted after.
- ``kopf_login`` (session): a ``@kopf.on.login`` handler returning the emulator's
  ``kopf.ConnectionInfo``; register it with ``kopf.on.login(registry=...)(kopf_login)``.

Contract fixtures (the same tests against the emulator or, when
``ROLECALL_CONTRACT_KUBECONFIG`` names a kubeconfig, against that real cluster):

- ``kube_target`` (session): a :class:`KubeTarget` (kubeconfig, emulator or None).
- ``target_api`` (session), ``target_namespace`` (function), ``target_kopf_login`` (session).
- ``kube_as`` (function): ``kube_as("ns/name")`` is an :class:`Identity` (kubeconfig and API
  client) of that ServiceAccount (created when missing) with a token from the TokenRequest API;
  ``kube_as(user="alice", group="devs")`` impersonates a user through the admin login. Both work
  against the emulator and a real cluster; RBAC judges what they do.

Helpers: :func:`api_client_from_kubeconfig`, :func:`connection_info_from_kubeconfig`,
:func:`apply_crds`, :func:`apply_objects`, :func:`create_test_namespace`, :func:`raw_request`,
:func:`request_token`, :func:`kubeconfig_with_credentials`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import random
import re
import string
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest
import yaml

from tests.harness.kubeapi import KubeAPIEmulator, read_crd_manifests
from tests.harness.wait import wait_for

CONTRACT_ENV = "ROLECALL_CONTRACT_KUBECONFIG"


# --------------------------------------------------------------------------- helpers


def api_client_from_kubeconfig(path: str | os.PathLike[str]) -> Any:
    """A ``kubernetes.client.ApiClient`` for a kubeconfig file (not ``$KUBECONFIG``)."""
    import kubernetes

    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(
        config_file=str(path), client_configuration=configuration, persist_config=False
    )
    return kubernetes.client.ApiClient(configuration)


def connection_info_from_kubeconfig(path: str | os.PathLike[str]) -> Any:
    """A ``kopf.ConnectionInfo`` for a kubeconfig file (token, client certs or CA as given)."""
    import kopf
    import kubernetes

    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(
        config_file=str(path), client_configuration=configuration, persist_config=False
    )
    token = configuration.api_key.get("BearerToken") or configuration.api_key.get("authorization")
    scheme: str | None = None
    if token:
        scheme, _, token = token.partition(" ") if " " in token else ("Bearer", "", token)
    return kopf.ConnectionInfo(
        server=configuration.host,
        ca_path=configuration.ssl_ca_cert or None,
        insecure=not configuration.verify_ssl,
        scheme=scheme,
        token=token or None,
        certificate_path=configuration.cert_file or None,
        private_key_path=configuration.key_file or None,
        default_namespace="default",
    )


def login_handler(path: str | os.PathLike[str]) -> Callable[..., Any]:
    """A ``@kopf.on.login`` handler that logs in with the given kubeconfig file."""
    info = connection_info_from_kubeconfig(path)

    def login(**_: Any) -> Any:
        return info

    return login


def unique_namespace_name(test_name: str) -> str:
    base = re.sub(r"[^a-z0-9-]+", "-", test_name.lower()).strip("-")
    base = re.sub(r"-+", "-", base.removeprefix("test-").removeprefix("test"))[:40].strip("-")
    suffix = "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
    return f"t-{base}-{suffix}" if base else f"t-{suffix}"


def create_test_namespace(api: Any, test_name: str, labels: dict[str, str] | None = None) -> str:
    import kubernetes

    name = unique_namespace_name(test_name)
    core = kubernetes.client.CoreV1Api(api)
    core.create_namespace(
        {"metadata": {"name": name, "labels": {"rolecall.dev/test": "true", **(labels or {})}}}
    )
    return name


def delete_test_namespace(api: Any, name: str) -> None:
    import kubernetes

    try:
        kubernetes.client.CoreV1Api(api).delete_namespace(name)
    except kubernetes.client.ApiException as e:
        if e.status != 404:
            raise


@dataclasses.dataclass
class RawResponse:
    status: int
    headers: Any
    data: bytes

    def json(self) -> Any:
        return json.loads(self.data) if self.data else None

    def lines(self) -> list[Any]:
        return [json.loads(line) for line in self.data.splitlines() if line.strip()]


def raw_request(
    api: Any,
    method: str,
    path: str,
    *,
    query: dict[str, Any] | None = None,
    body: Any = None,
    content_type: str | None = None,
    accept: str = "application/json",
    timeout: float = 30,
) -> RawResponse:
    """Send any request through the client's connection and credentials; never raises on
    HTTP errors (the status is in the result)."""
    headers = {"Accept": accept}
    if content_type:
        headers["Content-Type"] = content_type
    elif body is not None:
        headers["Content-Type"] = "application/json"
    method, url, headers, serialized, _ = api.param_serialize(
        method,
        path,
        query_params=list((query or {}).items()),
        header_params=headers,
        body=body,
        auth_settings=["BearerToken"],
    )
    response = api.call_api(method, url, headers, serialized, _request_timeout=timeout)
    data = response.read()
    return RawResponse(response.status, response.headers, data or b"")


def _established(api: Any, crd: dict[str, Any]) -> bool:
    import kubernetes

    ext = kubernetes.client.ApiextensionsV1Api(api)
    current = ext.read_custom_resource_definition(crd["metadata"]["name"])
    conditions = (current.status.conditions if current.status else None) or []
    if not any(c.type == "Established" and c.status == "True" for c in conditions):
        return False
    spec = crd["spec"]
    for version in spec.get("versions") or []:
        if not version.get("served", True):
            continue
        found = raw_request(api, "GET", f"/apis/{spec['group']}/{version['name']}")
        if found.status != 200:
            return False
        names = {r["name"] for r in found.json().get("resources", [])}
        if spec["names"]["plural"] not in names:
            return False
    return True


def apply_crds(api: Any, directory: str | os.PathLike[str], timeout: float = 30) -> list[str]:
    """Create (or replace) every CRD in the YAML files of ``directory``; wait until each is
    Established and its resource is discoverable. Returns the CRD names."""
    import kubernetes

    ext = kubernetes.client.ApiextensionsV1Api(api)
    docs = read_crd_manifests(directory)
    for doc in docs:
        try:
            ext.create_custom_resource_definition(doc)
        except kubernetes.client.ApiException as e:
            if e.status != 409:
                raise
            existing = ext.read_custom_resource_definition(doc["metadata"]["name"])
            replacement = json.loads(json.dumps(doc))
            replacement["metadata"]["resourceVersion"] = existing.metadata.resource_version
            ext.replace_custom_resource_definition(doc["metadata"]["name"], replacement)
    for doc in docs:
        wait_for(
            lambda doc=doc: _established(api, doc),
            timeout=timeout,
            message=f"CRD {doc['metadata']['name']} never became established and discoverable",
        )
    return [doc["metadata"]["name"] for doc in docs]


def _resource_for(api: Any, api_version: str, kind: str) -> tuple[str, bool]:
    """(plural, namespaced) of a kind, from discovery."""
    path = f"/apis/{api_version}" if "/" in api_version else f"/api/{api_version}"
    found = raw_request(api, "GET", path)
    if found.status != 200:
        raise AssertionError(f"discovery of {api_version} answered {found.status}: {found.data[:300]!r}")
    for resource in found.json().get("resources") or []:
        if resource.get("kind") == kind and "/" not in resource["name"]:
            return resource["name"], bool(resource.get("namespaced"))
    raise AssertionError(f"{api_version} serves no {kind}")


def apply_objects(api: Any, docs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Create each object through the API, or replace it when it exists (``kubectl apply``'s
    effect for whole objects). Raises on any other error. Returns the stored objects."""
    stored: list[dict[str, Any]] = []
    for doc in docs:
        plural, namespaced = _resource_for(api, doc["apiVersion"], doc["kind"])
        prefix = f"/apis/{doc['apiVersion']}" if "/" in doc["apiVersion"] else f"/api/{doc['apiVersion']}"
        namespace = doc["metadata"].get("namespace") or "default"
        collection = f"{prefix}/namespaces/{namespace}/{plural}" if namespaced else f"{prefix}/{plural}"
        created = raw_request(api, "POST", collection, body=doc)
        if created.status == 409:
            path = f"{collection}/{doc['metadata']['name']}"
            current = raw_request(api, "GET", path).json()
            body = json.loads(json.dumps(doc))
            body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            created = raw_request(api, "PUT", path, body=body)
        if created.status not in (200, 201):
            raise AssertionError(
                f"applying {doc['kind']} {doc['metadata']['name']}: {created.status} {created.data[:500]!r}"
            )
        stored.append(created.json())
    return stored


def request_token(api: Any, namespace: str, name: str, seconds: int = 3600) -> str:
    """A ServiceAccount token from the TokenRequest API (what ``kubectl create token`` does)."""
    answer = raw_request(
        api,
        "POST",
        f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
        body={
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": seconds},
        },
    )
    if answer.status != 201:
        raise AssertionError(f"TokenRequest for {namespace}/{name}: {answer.status} {answer.data[:300]!r}")
    return str(answer.json()["status"]["token"])


def kubeconfig_with_credentials(
    source: str | os.PathLike[str],
    target: str | os.PathLike[str],
    user: str,
    credentials: dict[str, Any],
) -> pathlib.Path:
    """A copy of kubeconfig ``source`` (its current cluster only) whose user is ``credentials``
    (``{"token": ...}``, or the admin's credentials plus ``as``/``as-groups``)."""
    config = yaml.safe_load(pathlib.Path(source).read_text())
    context = next(c for c in config["contexts"] if c["name"] == config["current-context"])["context"]
    cluster = next(c for c in config["clusters"] if c["name"] == context["cluster"])
    out = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": user, "user": credentials}],
        "contexts": [{"name": user, "context": {"cluster": cluster["name"], "user": user}}],
        "current-context": user,
        "preferences": {},
    }
    path = pathlib.Path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(out, sort_keys=False))
    return path


def admin_credentials(kubeconfig: str | os.PathLike[str]) -> dict[str, Any]:
    config = yaml.safe_load(pathlib.Path(kubeconfig).read_text())
    context = next(c for c in config["contexts"] if c["name"] == config["current-context"])["context"]
    return dict(next(u for u in config["users"] if u["name"] == context["user"])["user"])


@dataclasses.dataclass
class Identity:
    """Someone RBAC judges: their user name, a kubeconfig and an API client for them."""

    username: str
    kubeconfig: pathlib.Path
    api: Any


def service_account_identity(
    api: Any, kubeconfig: str | os.PathLike[str], namespace: str, name: str, directory: pathlib.Path
) -> Identity:
    """Create the ServiceAccount when missing, get it a token, and log in as it."""
    import kubernetes

    try:
        kubernetes.client.CoreV1Api(api).create_namespaced_service_account(
            namespace, {"metadata": {"name": name}}
        )
    except kubernetes.client.ApiException as e:
        if e.status != 409:
            raise
    username = f"system:serviceaccount:{namespace}:{name}"
    path = kubeconfig_with_credentials(
        kubeconfig,
        directory / f"sa-{namespace}-{name}.kubeconfig",
        username,
        {"token": request_token(api, namespace, name)},
    )
    return Identity(username, path, api_client_from_kubeconfig(path))


def impersonated_identity(
    kubeconfig: str | os.PathLike[str], user: str, group: str | None, directory: pathlib.Path
) -> Identity:
    """The admin login acting as ``user`` (and ``group``) through impersonation headers."""
    credentials = {**admin_credentials(kubeconfig), "as": user, **({"as-groups": [group]} if group else {})}
    path = kubeconfig_with_credentials(kubeconfig, directory / f"user-{user}.kubeconfig", user, credentials)
    api = api_client_from_kubeconfig(kubeconfig)  # the Python client ignores "as": set the headers
    api.set_default_header("Impersonate-User", user)
    if group:
        api.set_default_header("Impersonate-Group", group)
    return Identity(user, path, api)


@dataclasses.dataclass
class KubeTarget:
    """Where the contract tests run: the emulator, or a real cluster's kubeconfig."""

    kubeconfig: pathlib.Path
    emulator: KubeAPIEmulator | None

    @property
    def is_emulator(self) -> bool:
        return self.emulator is not None

    def require_emulator(self) -> KubeAPIEmulator:
        if self.emulator is None:
            pytest.skip("needs the emulator's introspection (running against a real cluster)")
        return self.emulator


# --------------------------------------------------------------------------- emulator fixtures


@pytest.fixture(scope="session")
def kube_emulator() -> Iterator[KubeAPIEmulator]:
    emulator = KubeAPIEmulator().start()
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture(scope="session")
def kubeconfig_path(kube_emulator: KubeAPIEmulator, tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return kube_emulator.write_kubeconfig(tmp_path_factory.mktemp("kube") / "config")


@pytest.fixture(scope="session")
def kube_api(kubeconfig_path: pathlib.Path) -> Iterator[Any]:
    api = api_client_from_kubeconfig(kubeconfig_path)
    try:
        yield api
    finally:
        api.close()


@pytest.fixture
def namespace(kube_api: Any, request: pytest.FixtureRequest) -> Iterator[str]:
    name = create_test_namespace(kube_api, request.node.name)
    try:
        yield name
    finally:
        delete_test_namespace(kube_api, name)


@pytest.fixture(scope="session")
def kopf_login(kubeconfig_path: pathlib.Path) -> Callable[..., Any]:
    return login_handler(kubeconfig_path)


# --------------------------------------------------------------------------- contract fixtures


@pytest.fixture(scope="session")
def kube_target(request: pytest.FixtureRequest) -> KubeTarget:
    real = os.environ.get(CONTRACT_ENV)
    if real:
        return KubeTarget(pathlib.Path(real).expanduser(), None)
    emulator = request.getfixturevalue("kube_emulator")
    return KubeTarget(request.getfixturevalue("kubeconfig_path"), emulator)


@pytest.fixture(scope="session")
def target_api(kube_target: KubeTarget) -> Iterator[Any]:
    api = api_client_from_kubeconfig(kube_target.kubeconfig)
    try:
        yield api
    finally:
        api.close()


@pytest.fixture
def target_namespace(target_api: Any, request: pytest.FixtureRequest) -> Iterator[str]:
    name = create_test_namespace(target_api, request.node.name)
    try:
        yield name
    finally:
        delete_test_namespace(target_api, name)


@pytest.fixture(scope="session")
def target_kopf_login(kube_target: KubeTarget) -> Callable[..., Any]:
    return login_handler(kube_target.kubeconfig)


@pytest.fixture
def kube_as(
    kube_target: KubeTarget, target_api: Any, tmp_path: pathlib.Path
) -> Iterator[Callable[..., Identity]]:
    made: list[Identity] = []

    def login(
        service_account: str | None = None, *, user: str | None = None, group: str | None = None
    ) -> Identity:
        if service_account is not None:
            namespace, _, name = service_account.partition("/")
            identity = service_account_identity(target_api, kube_target.kubeconfig, namespace, name, tmp_path)
        elif user is not None:
            identity = impersonated_identity(kube_target.kubeconfig, user, group, tmp_path)
        else:
            raise ValueError("kube_as: give a ServiceAccount as 'namespace/name', or user=")
        made.append(identity)
        return identity

    yield login
    for identity in made:
        identity.api.close()
