"""A Kubernetes API server emulator for tests: see :class:`KubeAPIEmulator`.

    emulator = KubeAPIEmulator().start()          # aiohttp on 127.0.0.1, own thread and loop
    kubeconfig = emulator.write_kubeconfig(path)  # http server, token user
    ...
    emulator.stop()

or as a process: ``python -m tests.harness.kubeapi --port 0 --kubeconfig PATH [--crds DIR]``.

What it does, like a real API server (pinned by tests/integration/test_kubeapi_contract.py):
discovery; built-in v1 namespaces/secrets/configmaps/pods/serviceaccounts/services/events,
events.k8s.io events, leases, CRDs and webhook configurations; server-managed metadata
(uid, one global resourceVersion, generation, generateName, stringData); GET/LIST (limit and
continue)/WATCH (resume from a bounded history, 410 Gone, bookmarks, timeoutSeconds);
label and field selectors; POST/PUT/PATCH (merge, JSON with test ops, strategic merge for
built-ins, server-side apply as a plain merge)/DELETE; Status errors; status subresources;
finalizers; garbage collection by ownerReferences (Background/Foreground/Orphan); namespace
and CRD termination; CRD schemas (pruning, defaults, validation, CEL rules through
``cel-python`` when installed); mutating and validating admission webhooks over HTTPS.

Authentication and RBAC (rbac.py): bearer tokens name users and groups (the admin token is in
system:masters; ServiceAccount tokens come from the TokenRequest subresource), Roles,
ClusterRoles, bindings and aggregation are enforced with the API server's 403 Forbidden, and
the access reviews answer ``kubectl auth can-i``. No token over plain http is the old insecure
port's admin (kubectl sends no credentials over http); ``tls=True`` serves HTTPS.

Known differences from a real server: no escalation checks on writing RBAC objects; no protobuf (kubectl can read, apply CRDs and custom resources, and
create built-ins with ``apply --server-side``; it needs ``--validate=false``: no /openapi);
no conversion webhooks or scale subresource; pods are never scheduled; built-in kinds are
validated only where tests need it (names, labels, ownerReferences, pods, webhooks, CRDs).
"""

from .emulator import DEFAULT_TOKEN, DEFAULT_USER, KubeAPIEmulator, read_crd_manifests
from .errors import ApiError

__all__ = ["DEFAULT_TOKEN", "DEFAULT_USER", "ApiError", "KubeAPIEmulator", "read_crd_manifests"]
