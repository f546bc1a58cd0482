"""The pod patch for each injection mode (DESIGN §4), as RFC 6902 JSON-patch ops (pure).

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
from typing import Any

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
        "AWS_CONTAINER_AUTHORIZATION_TOKEN",
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


# --- building the patch ------------------------------------------------------------------------


def _env_value(name: str, value: str) -> dict[str, Any]:
    return {"name": name, "value": value}


def _env_secret(name: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key, "optional": False}}}


def _wanted_env(
    mode: str, spec: AssumedRoleSpec, secret: str, mount_path: str, port: int
) -> list[dict[str, Any]]:
    env: list[dict[str, Any]]
    if mode == MODE_SIDECAR:
        env = [
            _env_value(ENV_FULL_URI, f"http://127.0.0.1:{port}{CREDENTIALS_PATH}"),
            _env_value(ENV_TOKEN_FILE, posixpath.join(mount_path, c.KEY_TOKEN)),
        ]
    elif mode == MODE_FILE:
        env = [
            _env_value(ENV_CONFIG_FILE, posixpath.join(mount_path, c.KEY_CONFIG)),
            _env_value(ENV_SDK_LOAD_CONFIG, "1"),  # the Go SDK v1 reads the config file only then
        ]
        if spec.profile != c.DEFAULT_PROFILE:  # the file has [profile <p>], not [default]
            env.append(_env_value(ENV_PROFILE, spec.profile))
    else:
        env = [
            _env_secret(key, secret, key)
            for key in (c.KEY_ACCESS_KEY_ID, c.KEY_SECRET_ACCESS_KEY, c.KEY_SESSION_TOKEN)
        ]
    if spec.region:
        env += [_env_value(c.KEY_REGION, spec.region), _env_value(c.KEY_DEFAULT_REGION, spec.region)]
    return env


def _env_names(container: Mapping[str, Any]) -> set[str]:
    return {str(e.get("name")) for e in container.get("env") or [] if isinstance(e, Mapping)}


def _mount(mount_path: str) -> dict[str, Any]:
    return {"name": VOLUME_NAME, "mountPath": mount_path, "readOnly": True}


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


def _mount_conflicts(containers: Iterable[tuple[str, Mapping[str, Any]]], mount_path: str) -> list[str]:
    clashes = []
    for kind, ctr in containers:
        for mount in ctr.get("volumeMounts") or []:
            if isinstance(mount, Mapping) and str(mount.get("mountPath", "")).rstrip("/") == mount_path:
                clashes.append(f"{kind} {ctr.get('name')!r}")
    return clashes


def plan_injection(
    pod: Mapping[str, Any],
    namespace: str,
    index: BindingIndex,
    *,
    default_mode: str = MODE_SIDECAR,
    sidecar_image: str,
    sidecar_port: int = c.SIDECAR_PORT,
    native_sidecars: bool = True,
    sidecar_resources: Mapping[str, Any] | None = None,
) -> InjectionPlan:
    """Decide whether and how to wire AWS credentials into a pod being created."""
    annotations = _annotations(pod)
    if _opted_out(annotations):
        return InjectionPlan(False, Result.OPTED_OUT, f'opted out ({c.ANN_POD_INJECT}: "false")')
    if pod_is_injected(pod):
        return InjectionPlan(False, Result.SKIPPED, "already injected")

    choice = _choose(pod, namespace, index)
    warnings = list(choice.warnings)
    if choice.spec is None or choice.name is None:
        return InjectionPlan(False, choice.result, choice.reason, warnings=warnings)
    spec, name = choice.spec, choice.name

    mode, mode_warnings = _choose_mode(annotations, spec, default_mode)
    warnings += mode_warnings
    if spec.suspend:
        # still injected: a pod that waits for its Secret is better than one that silently
        # runs with another identity (the node's role)
        warnings.append(
            f"AssumedRole {name!r} is suspended, so its Secret {spec.secret_name or name!r} does not "
            "exist: the pod will not start until the AssumedRole is resumed"
        )

    def refuse(result: Result, reason: str, *why: str) -> InjectionPlan:
        return InjectionPlan(False, result, reason, name, mode, warnings=[*warnings, *why])

    skip = _skip_list(annotations)
    containers = _containers(pod, "containers")
    inits = _containers(pod, "initContainers")
    known = {str(ctr.get("name")) for ctr in (*containers, *inits)}
    if unknown := sorted(skip - known):
        warnings.append(
            f"pod annotation {c.ANN_POD_SKIP_CONTAINERS} names no container called "
            f"{', '.join(repr(n) for n in unknown)}"
        )

    sidecar = mode == MODE_SIDECAR
    native = sidecar and native_sidecars
    app_targets = [(i, ctr) for i, ctr in enumerate(containers) if ctr.get("name") not in skip]
    init_targets = [(i, ctr) for i, ctr in enumerate(inits) if ctr.get("name") not in skip]
    if sidecar and not native and init_targets:
        warnings.append(
            "init containers "
            + ", ".join(repr(ctr.get("name")) for _, ctr in init_targets)
            + " get no AWS credentials: without native sidecars (Kubernetes < 1.29) the "
            "credentials sidecar starts only after all init containers have finished"
        )
        init_targets = []
    if not app_targets and not init_targets:
        return refuse(Result.SKIPPED, "every container is skipped")

    mount_path = spec.mount_path.rstrip("/") or "/"
    secret = spec.secret_name or name
    if mode != MODE_ENV:
        targets = [("container", ctr) for _, ctr in app_targets] + [
            ("init container", ctr) for _, ctr in init_targets
        ]
        if clashes := _mount_conflicts(targets, mount_path):
            return refuse(
                Result.INVALID,
                "mountPath is taken",
                f"{', '.join(clashes)} already mount(s) a volume at {mount_path!r}, the mountPath of "
                f"AssumedRole {name!r}; change its spec.mountPath; the pod was not given AWS credentials",
            )

    if sidecar:
        pod_spec = _pod_spec(pod)
        if pod_spec.get("hostNetwork"):
            warnings.append(
                f"the pod uses hostNetwork: the credentials sidecar's port {sidecar_port} is shared "
                "with the node, so two such pods on one node collide; consider "
                f"{c.ANN_POD_MODE}: file"
            )
        taken = [
            str(ctr.get("name"))
            for ctr in (*containers, *inits)
            for p in ctr.get("ports") or []
            if isinstance(p, Mapping) and p.get("containerPort") == sidecar_port
        ]
        if taken:
            warnings.append(
                f"container(s) {', '.join(repr(n) for n in taken)} declare port {sidecar_port}, "
                "which the credentials sidecar listens on (127.0.0.1)"
            )

    wanted = _wanted_env(mode, spec, secret, mount_path, sidecar_port)
    patch = _Patch()
    for key, kind, items in (
        ("containers", "container", app_targets),
        ("initContainers", "init container", init_targets),
    ):
        for i, ctr in items:
            present = _env_names(ctr)
            new_env = [e for e in wanted if e["name"] not in present]
            kept = sorted(e["name"] for e in wanted if e["name"] in present and e["name"] in CREDENTIAL_VARS)
            # env credentials beat everything; in the other modes any of these come first
            shadowing = (
                []
                if mode == MODE_ENV
                else sorted(n for n in present & CREDENTIAL_VARS if n not in {e["name"] for e in wanted})
            )
            if kept or shadowing:
                warnings.append(
                    f"{kind} {ctr.get('name')!r} sets {', '.join(kept + shadowing)} itself; kept, "
                    "so its AWS SDK may not use the rolecall credentials"
                )
            patch.extend_list(f"/spec/{key}/{i}/env", ctr.get("env"), new_env)
            if mode != MODE_ENV:
                patch.extend_list(
                    f"/spec/{key}/{i}/volumeMounts", ctr.get("volumeMounts"), [_mount(mount_path)]
                )

    if mode != MODE_ENV:
        volume = {
            "name": VOLUME_NAME,
            "secret": {"secretName": secret, "defaultMode": VOLUME_DEFAULT_MODE, "optional": False},
        }
        patch.extend_list("/spec/volumes", _pod_spec(pod).get("volumes"), [volume])

    if sidecar:
        container = _sidecar_container(
            image=sidecar_image,
            mount_path=mount_path,
            port=sidecar_port,
            native=native,
            resources=sidecar_resources,
        )
        # after the env/mount ops above, which address init containers by their old index
        if native:
            if isinstance(_pod_spec(pod).get("initContainers"), list):
                patch.add("/spec/initContainers/0", container)
            else:
                patch.add("/spec/initContainers", [container])
        else:
            patch.extend_list("/spec/containers", _pod_spec(pod).get("containers"), [container])

    meta = pod.get("metadata")
    if not isinstance(meta, Mapping):
        patch.add("/metadata", {"annotations": {c.ANN_POD_INJECTED: mode}})
    elif not isinstance(meta.get("annotations"), Mapping):
        patch.add("/metadata/annotations", {c.ANN_POD_INJECTED: mode})
    else:
        patch.add(f"/metadata/annotations/{escape_pointer(c.ANN_POD_INJECTED)}", mode)

    return InjectionPlan(
        True,
        Result.INJECTED,
        f"{choice.reason}: AssumedRole {name!r}, mode {mode}",
        name,
        mode,
        patch.ops,
        warnings,
    )
