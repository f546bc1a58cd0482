"""The pod patch for each injection mode (docs/sdks.md), as RFC 6902 JSON-patch ops (pure).

Which AssumedRole a pod gets
    The pod annotation ``rolecall.dev/assumed-role: <name>`` names an AssumedRole of the pod's
    own namespace (a plain name, never ``ns/name``); otherwise the pod's ServiceAccount must be
    a subject of exactly one AssumedRole of the namespace. The annotation only *chooses among*
    the bindings of the pod's ServiceAccount: an AssumedRole whose ``subjects`` do not include
    it is refused. ``subjects`` is the binding, like a RoleBinding's; an annotation must not
    widen it, or every pod of the namespace could pick any role, CloudTrail's session name
    would no longer say which workload acted, and the operator's "pods of bound
    ServiceAccounts that were not injected" report would miss them. (It is not a wall
    against someone who can create pods: they could mount the Secret directly or run as the
    bound ServiceAccount. It keeps the binding the single statement of who gets a role.)

Containers
    Every container not named in ``rolecall.dev/skip-containers`` is wired. Init containers
    too, except in ``sidecar`` mode without native sidecars: a plain sidecar container starts
    only after every init container has finished, so an init container could never reach it
    (they are left alone, with a warning). With native sidecars the rolecall sidecar is put
    *first* in ``initContainers`` with a startup probe; the kubelet starts the next init
    container only once that probe passes, so every later init container and every app
    container starts with credentials being served.

Variables for every SDK in the field
    In sidecar mode the token goes in twice: ``AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`` (SDKs
    since late 2023) and ``AWS_CONTAINER_AUTHORIZATION_TOKEN`` from the Secret's ``token`` key
    (older SDKs read only the variable, and newer JavaScript SDKs prefer it). The operator keeps
    the token for the AssumedRole's life and the sidecar accepts every token it has served
    with, so the variable stays valid as long as the pod runs. In file mode
    ``AWS_SDK_LOAD_CONFIG=1`` makes the Go SDK v1 and the JavaScript SDK v2 read
    ``AWS_CONFIG_FILE`` at all.

Instance metadata
    Every wired container gets ``AWS_EC2_METADATA_DISABLED=true`` (every mode): an SDK that
    cannot use what rolecall gives it then fails loudly instead of falling back to instance
    metadata and acting as the node's role. ``rolecall.dev/ec2-metadata: allow`` on the pod
    leaves it out, for workloads that read instance metadata for something else.

Never overwritten
    An env var the container already sets in ``env`` is kept (a warning names it when it
    decides where credentials come from). ``envFrom`` cannot be checked per key: its keys are
    only known at runtime, and Kubernetes lets ``env`` win over ``envFrom``, so a key that a
    container takes from a ConfigMap/Secret through ``envFrom`` *is* overridden by ours.

Probe
    The sidecar listens on 127.0.0.1 only; kubelet ``httpGet``/``tcpSocket`` probes connect
    to the pod IP and would always fail. The startup probe is an ``exec`` of
    ``rolecall sidecar --once-check``, which runs inside the container's network namespace.

File permissions
    The Secret volume's files belong to root (group: the pod's ``fsGroup``, if any). The
    sidecar and the app run as non-root users we do not choose, so ``0440`` would lock both
    out unless we added an ``fsGroup`` to someone else's pod (which re-owns all its volumes).
    ``defaultMode: 0444`` is the kubelet's default minus the write bit; only containers that
    mount the volume see the files.

Idempotent
    A pod that already has the rolecall volume, the sidecar or the ``rolecall.dev/injected``
    annotation is left alone; an injected pod gets ``rolecall.dev/injected: <mode>``.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from rolecall import constants as c
from rolecall.index import BindingIndex
from rolecall.model import INJECTION_MODES, AssumedRoleSpec

MODE_SIDECAR = "sidecar"
MODE_FILE = "file"
MODE_ENV = "env"

VOLUME_NAME = "rolecall-credentials"
SIDECAR_NAME = "rolecall-sidecar"
VOLUME_DEFAULT_MODE = 0o444
CREDENTIALS_PATH = "/v1/credentials"

ENV_FULL_URI = "AWS_CONTAINER_CREDENTIALS_FULL_URI"
ENV_TOKEN_FILE = "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"
ENV_TOKEN = "AWS_CONTAINER_AUTHORIZATION_TOKEN"
ENV_EC2_METADATA_DISABLED = "AWS_EC2_METADATA_DISABLED"
METADATA_ALLOW = "allow"
METADATA_DENY = "deny"
ENV_CONFIG_FILE = "AWS_CONFIG_FILE"
ENV_SDK_LOAD_CONFIG = "AWS_SDK_LOAD_CONFIG"
ENV_PROFILE = "AWS_PROFILE"

# Set by a container, these decide where an SDK takes credentials from before (or instead
# of) what rolecall injects; keeping one deserves a warning.
CREDENTIAL_VARS = frozenset(
    {
        c.KEY_ACCESS_KEY_ID,
        c.KEY_SECRET_ACCESS_KEY,
        c.KEY_SESSION_TOKEN,
        ENV_FULL_URI,
        ENV_TOKEN_FILE,
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        ENV_TOKEN,
        ENV_CONFIG_FILE,
        "AWS_SHARED_CREDENTIALS_FILE",
        ENV_PROFILE,
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_ARN",
    }
)

SIDECAR_RESOURCES: dict[str, Any] = {
    "requests": {"cpu": "10m", "memory": "32Mi"},
    "limits": {"cpu": "250m", "memory": "64Mi"},
}
SIDECAR_SECURITY_CONTEXT: dict[str, Any] = {
    "runAsNonRoot": True,
    "readOnlyRootFilesystem": True,
    "allowPrivilegeEscalation": False,
    "privileged": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
STARTUP_PROBE_PERIOD_SECONDS = 1
STARTUP_PROBE_FAILURES = 120  # two minutes, then the kubelet restarts the sidecar


class Result(StrEnum):
    """The ``result`` label of ``rolecall_pod_injections_total``."""

    INJECTED = "injected"
    SKIPPED = "skipped"  # no binding for this pod, nothing to wire, or already injected
    AMBIGUOUS = "ambiguous"  # several AssumedRoles bind the ServiceAccount
    OPTED_OUT = "opted_out"  # rolecall.dev/inject: "false"
    INVALID = "invalid"  # the annotation names an unknown or unbound AssumedRole, or a conflict


@dataclass(frozen=True)
class InjectionPlan:
    """What the webhook does to one pod: JSON-patch ops against the pod as it was given."""

    inject: bool
    result: Result
    reason: str
    assumed_role: str | None = None
    mode: str = ""
    patch: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


class OperatorSettings(Protocol):
    """The operator settings injection reads (``config.Settings`` has them)."""

    @property
    def default_injection_mode(self) -> str: ...

    @property
    def sidecar_image(self) -> str: ...

    @property
    def sidecar_port(self) -> int: ...

    @property
    def sidecar_resources(self) -> Mapping[str, Any] | None: ...


@dataclass(frozen=True)
class InjectionRequest:
    """One pod at admission, with everything the decision depends on."""

    pod: Mapping[str, Any]
    namespace: str
    index: BindingIndex
    sidecar_image: str
    default_mode: str = MODE_SIDECAR
    sidecar_port: int = c.SIDECAR_PORT
    native_sidecars: bool = True  # the API server is 1.29 or newer
    sidecar_resources: Mapping[str, Any] | None = None

    @classmethod
    def of(
        cls,
        pod: Mapping[str, Any],
        namespace: str,
        index: BindingIndex,
        settings: OperatorSettings,
        native_sidecars: bool,
    ) -> InjectionRequest:
        return cls(
            pod,
            namespace,
            index,
            sidecar_image=settings.sidecar_image,
            default_mode=settings.default_injection_mode,
            sidecar_port=settings.sidecar_port,
            native_sidecars=native_sidecars,
            sidecar_resources=settings.sidecar_resources,
        )


# --- reading the pod -------------------------------------------------------------------------


def _annotations(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = pod.get("metadata") or {}
    return meta.get("annotations") or {}


def _pod_spec(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    spec = pod.get("spec")
    return spec if isinstance(spec, Mapping) else {}


def _containers(pod: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    items = _pod_spec(pod).get(key) or []
    return [item for item in items if isinstance(item, Mapping)]


def service_account_of(pod: Mapping[str, Any]) -> str:
    spec = _pod_spec(pod)
    return str(spec.get("serviceAccountName") or spec.get("serviceAccount") or "default")


def pod_is_injected(pod: Mapping[str, Any]) -> bool:
    """Does the pod already carry rolecall's annotation, volume or sidecar?"""
    if c.ANN_POD_INJECTED in _annotations(pod):
        return True
    if any(
        v.get("name") == VOLUME_NAME for v in _pod_spec(pod).get("volumes") or [] if isinstance(v, Mapping)
    ):
        return True
    return any(
        ctr.get("name") == SIDECAR_NAME
        for key in ("containers", "initContainers")
        for ctr in _containers(pod, key)
    )


def should_have_been_injected(pod: Mapping[str, Any]) -> bool:
    """A running pod of a bound ServiceAccount that lacks rolecall (webhook down or bypassed)."""
    phase = (pod.get("status") or {}).get("phase")
    if phase in ("Succeeded", "Failed") or (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    return not _opted_out(_annotations(pod)) and not pod_is_injected(pod)


def _opted_out(annotations: Mapping[str, Any]) -> bool:
    value = annotations.get(c.ANN_POD_INJECT)
    return isinstance(value, str) and value.strip().lower() == "false"


def _skip_list(annotations: Mapping[str, Any]) -> set[str]:
    raw = annotations.get(c.ANN_POD_SKIP_CONTAINERS)
    if not isinstance(raw, str):
        return set()
    return {name.strip() for name in raw.split(",") if name.strip()}


def escape_pointer(token: str) -> str:
    """One RFC 6901 reference token: ``~`` → ``~0``, ``/`` → ``~1``."""
    return token.replace("~", "~0").replace("/", "~1")


# --- choosing the AssumedRole and the mode ------------------------------------------------------


@dataclass(frozen=True)
class _Choice:
    name: str | None
    spec: AssumedRoleSpec | None
    result: Result
    reason: str
    warnings: tuple[str, ...] = ()


def _choose(pod: Mapping[str, Any], namespace: str, index: BindingIndex) -> _Choice:
    annotations = _annotations(pod)
    sa = service_account_of(pod)
    requested = annotations.get(c.ANN_POD_ASSUMED_ROLE)
    if requested is not None:
        name = str(requested).strip()
        spec = index.get(namespace, name) if name else None
        if spec is None:
            why = (
                f"pod annotation {c.ANN_POD_ASSUMED_ROLE}: {name!r} names no valid AssumedRole in "
                f"namespace {namespace!r} (the annotation takes the name of an AssumedRole of the "
                f"pod's own namespace); the pod was not given AWS credentials"
            )
            return _Choice(None, None, Result.INVALID, "annotated AssumedRole not found", (why,))
        if not any(s.kind == "ServiceAccount" and s.name == sa for s in spec.subjects):
            why = (
                f"pod annotation {c.ANN_POD_ASSUMED_ROLE}: {name!r}: the pod runs as ServiceAccount "
                f"{sa!r}, which is not among that AssumedRole's spec.subjects; add it there (or run "
                f"the pod as one of its subjects); the pod was not given AWS credentials"
            )
            return _Choice(None, None, Result.INVALID, "ServiceAccount is not a subject", (why,))
        return _Choice(name, spec, Result.INJECTED, "selected by annotation")
    names = index.for_service_account(namespace, sa)
    if not names:
        return _Choice(None, None, Result.SKIPPED, f"no AssumedRole binds ServiceAccount {sa!r}")
    if len(names) > 1:
        listed = ", ".join(repr(n) for n in names)
        why = (
            f"ServiceAccount {sa!r} is a subject of several AssumedRoles in namespace "
            f"{namespace!r} ({listed}); the pod was not given AWS credentials. Choose one with "
            f"the pod annotation {c.ANN_POD_ASSUMED_ROLE}: <name>"
        )
        return _Choice(None, None, Result.AMBIGUOUS, "several AssumedRoles bind the ServiceAccount", (why,))
    spec = index.get(namespace, names[0])
    return _Choice(names[0], spec, Result.INJECTED, "selected by ServiceAccount")


def _choose_mode(
    annotations: Mapping[str, Any], spec: AssumedRoleSpec, default_mode: str
) -> tuple[str, list[str]]:
    fallback = spec.injection_mode or (default_mode if default_mode in INJECTION_MODES else MODE_SIDECAR)
    raw = annotations.get(c.ANN_POD_MODE)
    if raw is None:
        return fallback, []
    mode = str(raw).strip().lower()
    if mode in INJECTION_MODES:
        return mode, []
    source = "the AssumedRole's spec.injection.mode" if spec.injection_mode else "the operator default"
    return fallback, [
        f"pod annotation {c.ANN_POD_MODE}: {raw!r} is not one of {', '.join(INJECTION_MODES)}; "
        f"using {fallback!r} ({source})"
    ]


@dataclass(frozen=True)
class _Binding:
    """The chosen AssumedRole and how this pod gets it."""

    name: str
    spec: AssumedRoleSpec
    mode: str
    reason: str  # how the AssumedRole was selected
    block_metadata: bool

    @property
    def secret(self) -> str:
        return self.spec.secret_name or self.name

    @property
    def mount_path(self) -> str:
        return self.spec.mount_path.rstrip("/") or "/"

    @property
    def sidecar(self) -> bool:
        return self.mode == MODE_SIDECAR


def _metadata_choice(annotations: Mapping[str, Any]) -> tuple[bool, list[str]]:
    """(block instance metadata?, warnings) from ``rolecall.dev/ec2-metadata``."""
    raw = annotations.get(c.ANN_POD_EC2_METADATA)
    if raw is None:
        return True, []
    value = str(raw).strip().lower()
    if value in (METADATA_ALLOW, METADATA_DENY):
        return value == METADATA_DENY, []
    return True, [
        f"pod annotation {c.ANN_POD_EC2_METADATA}: {raw!r} is not {METADATA_ALLOW!r} or "
        f"{METADATA_DENY!r}; using {METADATA_DENY!r} ({ENV_EC2_METADATA_DISABLED}=true)"
    ]


def _bind(choice: _Choice, request: InjectionRequest, warnings: list[str]) -> _Binding:
    """Mode and metadata setting for the chosen AssumedRole; appends what deserves a warning."""
    assert choice.spec is not None and choice.name is not None
    spec, name = choice.spec, choice.name
    annotations = _annotations(request.pod)
    mode, mode_warnings = _choose_mode(annotations, spec, request.default_mode)
    block_metadata, metadata_warnings = _metadata_choice(annotations)
    warnings += mode_warnings + metadata_warnings
    if spec.suspend:
        # still injected: a pod that waits for its Secret is better than one that silently
        # runs with another identity (the node's role)
        warnings.append(
            f"AssumedRole {name!r} is suspended, so its Secret {spec.secret_name or name!r} does not "
            "exist: the pod will not start until the AssumedRole is resumed"
        )
    return _Binding(name, spec, mode, choice.reason, block_metadata)


# --- which containers ------------------------------------------------------------------------------

_Indexed = list[tuple[int, Mapping[str, Any]]]


@dataclass(frozen=True)
class _Targets:
    """The containers to wire, with their index in ``containers`` / ``initContainers``."""

    app: _Indexed
    init: _Indexed

    def labelled(self) -> list[tuple[str, str, int, Mapping[str, Any]]]:
        """(list key, kind for messages, index, container) for every target."""
        return [("containers", "container", i, ctr) for i, ctr in self.app] + [
            ("initContainers", "init container", i, ctr) for i, ctr in self.init
        ]


def _targets(pod: Mapping[str, Any], binding: _Binding, native: bool, warnings: list[str]) -> _Targets:
    annotations = _annotations(pod)
    skip = _skip_list(annotations)
    containers = _containers(pod, "containers")
    inits = _containers(pod, "initContainers")
    known = {str(ctr.get("name")) for ctr in (*containers, *inits)}
    if unknown := sorted(skip - known):
        warnings.append(
            f"pod annotation {c.ANN_POD_SKIP_CONTAINERS} names no container called "
            f"{', '.join(repr(n) for n in unknown)}"
        )
    app = [(i, ctr) for i, ctr in enumerate(containers) if ctr.get("name") not in skip]
    init = [(i, ctr) for i, ctr in enumerate(inits) if ctr.get("name") not in skip]
    if binding.sidecar and not native and init:
        warnings.append(
            "init containers "
            + ", ".join(repr(ctr.get("name")) for _, ctr in init)
            + " get no AWS credentials: without native sidecars (Kubernetes < 1.29) the "
            "credentials sidecar starts only after all init containers have finished"
        )
        init = []
    return _Targets(app, init)


def _mount_conflicts(containers: Iterable[tuple[str, Mapping[str, Any]]], mount_path: str) -> list[str]:
    clashes = []
    for kind, ctr in containers:
        for mount in ctr.get("volumeMounts") or []:
            if isinstance(mount, Mapping) and str(mount.get("mountPath", "")).rstrip("/") == mount_path:
                clashes.append(f"{kind} {ctr.get('name')!r}")
    return clashes


def _refusal(binding: _Binding, targets: _Targets) -> tuple[Result, str, str] | None:
    """(result, reason, warning) when the pod cannot be wired after all."""
    if not targets.app and not targets.init:
        return Result.SKIPPED, "every container is skipped", ""
    if binding.mode == MODE_ENV:
        return None
    labelled = [(kind, ctr) for _, kind, _, ctr in targets.labelled()]
    if clashes := _mount_conflicts(labelled, binding.mount_path):
        return (
            Result.INVALID,
            "mountPath is taken",
            f"{', '.join(clashes)} already mount(s) a volume at {binding.mount_path!r}, the mountPath "
            f"of AssumedRole {binding.name!r}; change its spec.mountPath; the pod was not given AWS "
            "credentials",
        )
    return None


def _sidecar_warnings(pod: Mapping[str, Any], port: int) -> list[str]:
    warnings = []
    if _pod_spec(pod).get("hostNetwork"):
        warnings.append(
            f"the pod uses hostNetwork: the credentials sidecar's port {port} is shared "
            f"with the node, so two such pods on one node collide; consider {c.ANN_POD_MODE}: file"
        )
    taken = [
        str(ctr.get("name"))
        for key in ("containers", "initContainers")
        for ctr in _containers(pod, key)
        for p in ctr.get("ports") or []
        if isinstance(p, Mapping) and p.get("containerPort") == port
    ]
    if taken:
        warnings.append(
            f"container(s) {', '.join(repr(n) for n in taken)} declare port {port}, "
            "which the credentials sidecar listens on (127.0.0.1)"
        )
    return warnings


# --- the env each wired container gets -------------------------------------------------------------


def _env_value(name: str, value: str) -> dict[str, Any]:
    return {"name": name, "value": value}


def _env_secret(name: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key, "optional": False}}}


def _credential_env(binding: _Binding, port: int) -> list[dict[str, Any]]:
    mount_path = binding.mount_path
    if binding.mode == MODE_SIDECAR:
        return [
            _env_value(ENV_FULL_URI, f"http://127.0.0.1:{port}{CREDENTIALS_PATH}"),
            _env_value(ENV_TOKEN_FILE, posixpath.join(mount_path, c.KEY_TOKEN)),
            # SDKs released before late 2023 read only the variable
            _env_secret(ENV_TOKEN, binding.secret, c.KEY_TOKEN),
        ]
    if binding.mode == MODE_FILE:
        env = [
            _env_value(ENV_CONFIG_FILE, posixpath.join(mount_path, c.KEY_CONFIG)),
            # the Go SDK v1 and the JavaScript SDK v2 read the config file only then
            _env_value(ENV_SDK_LOAD_CONFIG, "1"),
        ]
        if binding.spec.profile != c.DEFAULT_PROFILE:  # the file has [profile <p>], not [default]
            env.append(_env_value(ENV_PROFILE, binding.spec.profile))
        return env
    return [
        _env_secret(key, binding.secret, key)
        for key in (c.KEY_ACCESS_KEY_ID, c.KEY_SECRET_ACCESS_KEY, c.KEY_SESSION_TOKEN)
    ]


def _wanted_env(binding: _Binding, port: int) -> list[dict[str, Any]]:
    env = _credential_env(binding, port)
    if binding.spec.region:
        env += [
            _env_value(c.KEY_REGION, binding.spec.region),
            _env_value(c.KEY_DEFAULT_REGION, binding.spec.region),
        ]
    if binding.block_metadata:
        env.append(_env_value(ENV_EC2_METADATA_DISABLED, "true"))
    return env


def _env_names(container: Mapping[str, Any]) -> set[str]:
    return {str(e.get("name")) for e in container.get("env") or [] if isinstance(e, Mapping)}


def _mount(mount_path: str) -> dict[str, Any]:
    return {"name": VOLUME_NAME, "mountPath": mount_path, "readOnly": True}


# --- the patch -----------------------------------------------------------------------------------


class _Patch:
    def __init__(self) -> None:
        self.ops: list[dict[str, Any]] = []

    def add(self, path: str, value: Any) -> None:
        self.ops.append({"op": "add", "path": path, "value": value})

    def extend_list(self, path: str, current: Any, items: Sequence[Any]) -> None:
        """Append to the list at ``path``, creating it when it is absent (or null)."""
        if not items:
            return
        if not isinstance(current, list):
            self.add(path, list(items))
            return
        for item in items:
            self.add(f"{path}/-", item)


def _wire_containers(
    patch: _Patch, binding: _Binding, targets: _Targets, port: int, warnings: list[str]
) -> None:
    """Env (never overwriting a container's own) and the volume mount, per target."""
    wanted = _wanted_env(binding, port)
    wanted_names = {e["name"] for e in wanted}
    for key, kind, i, ctr in targets.labelled():
        present = _env_names(ctr)
        kept = sorted(n for n in wanted_names & present if n in CREDENTIAL_VARS)
        # env credentials beat everything; in the other modes any of these come first
        shadowing = [] if binding.mode == MODE_ENV else sorted((present & CREDENTIAL_VARS) - wanted_names)
        if kept or shadowing:
            warnings.append(
                f"{kind} {ctr.get('name')!r} sets {', '.join(kept + shadowing)} itself; kept, "
                "so its AWS SDK may not use the rolecall credentials"
            )
        patch.extend_list(
            f"/spec/{key}/{i}/env", ctr.get("env"), [e for e in wanted if e["name"] not in present]
        )
        if binding.mode != MODE_ENV:
            patch.extend_list(
                f"/spec/{key}/{i}/volumeMounts", ctr.get("volumeMounts"), [_mount(binding.mount_path)]
            )


# Options as ``--name=value`` single tokens: they survive any re-ordering by an argument
# forwarder (the first cli.py's argparse REMAINDER split ``--dir`` from its value).
def _sidecar_container(
    *, image: str, mount_path: str, port: int, native: bool, resources: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": SIDECAR_NAME,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["rolecall", "sidecar", f"--dir={mount_path}", f"--port={port}"],
    }
    if native:
        container["restartPolicy"] = "Always"
    container.update(
        {
            "volumeMounts": [_mount(mount_path)],
            "startupProbe": {
                # exec, not httpGet: the endpoint is on 127.0.0.1, kubelet probes the pod IP
                "exec": {
                    "command": [
                        "rolecall",
                        "sidecar",
                        "--once-check",
                        f"--dir={mount_path}",
                        f"--port={port}",
                    ]
                },
                "periodSeconds": STARTUP_PROBE_PERIOD_SECONDS,
                "timeoutSeconds": 5,
                "failureThreshold": STARTUP_PROBE_FAILURES,
            },
            "resources": {k: dict(v) for k, v in (resources or SIDECAR_RESOURCES).items()},
            "securityContext": {
                k: (dict(v) if isinstance(v, dict) else v) for k, v in SIDECAR_SECURITY_CONTEXT.items()
            },
            "terminationMessagePolicy": "FallbackToLogsOnError",
        }
    )
    return container


def _add_pod_parts(patch: _Patch, binding: _Binding, request: InjectionRequest) -> None:
    """The Secret volume, the sidecar and the ``injected`` annotation (after the container ops)."""
    pod_spec = _pod_spec(request.pod)
    if binding.mode != MODE_ENV:
        volume = {
            "name": VOLUME_NAME,
            "secret": {"secretName": binding.secret, "defaultMode": VOLUME_DEFAULT_MODE, "optional": False},
        }
        patch.extend_list("/spec/volumes", pod_spec.get("volumes"), [volume])

    if binding.sidecar:
        native = request.native_sidecars
        container = _sidecar_container(
            image=request.sidecar_image,
            mount_path=binding.mount_path,
            port=request.sidecar_port,
            native=native,
            resources=request.sidecar_resources,
        )
        # after the env/mount ops, which address init containers by their old index
        if not native:
            patch.extend_list("/spec/containers", pod_spec.get("containers"), [container])
        elif isinstance(pod_spec.get("initContainers"), list):
            patch.add("/spec/initContainers/0", container)
        else:
            patch.add("/spec/initContainers", [container])

    meta = request.pod.get("metadata")
    if not isinstance(meta, Mapping):
        patch.add("/metadata", {"annotations": {c.ANN_POD_INJECTED: binding.mode}})
    elif not isinstance(meta.get("annotations"), Mapping):
        patch.add("/metadata/annotations", {c.ANN_POD_INJECTED: binding.mode})
    else:
        patch.add(f"/metadata/annotations/{escape_pointer(c.ANN_POD_INJECTED)}", binding.mode)


# --- the decision ----------------------------------------------------------------------------------


def plan_injection(request: InjectionRequest) -> InjectionPlan:
    """Decide whether and how to wire AWS credentials into a pod being created."""
    pod = request.pod
    if _opted_out(_annotations(pod)):
        return InjectionPlan(False, Result.OPTED_OUT, f'opted out ({c.ANN_POD_INJECT}: "false")')
    if pod_is_injected(pod):
        return InjectionPlan(False, Result.SKIPPED, "already injected")

    choice = _choose(pod, request.namespace, request.index)
    warnings = list(choice.warnings)
    if choice.spec is None or choice.name is None:
        return InjectionPlan(False, choice.result, choice.reason, warnings=warnings)

    binding = _bind(choice, request, warnings)
    targets = _targets(pod, binding, request.native_sidecars, warnings)
    if refused := _refusal(binding, targets):
        result, reason, why = refused
        return InjectionPlan(
            False, result, reason, binding.name, binding.mode, warnings=[*warnings, *([why] if why else [])]
        )
    if binding.sidecar:
        warnings += _sidecar_warnings(pod, request.sidecar_port)

    patch = _Patch()
    _wire_containers(patch, binding, targets, request.sidecar_port, warnings)
    _add_pod_parts(patch, binding, request)
    return InjectionPlan(
        True,
        Result.INJECTED,
        f"{binding.reason}: AssumedRole {binding.name!r}, mode {binding.mode}",
        binding.name,
        binding.mode,
        patch.ops,
        warnings,
    )
