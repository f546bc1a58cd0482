"""A Kubernetes API server emulator for tests: see :class:`KubeAPIEmulator`.

    emulator = KubeAPIEmulator().start()          # aiohttp on 127.0.0.1, own thread and loop
    kubeconfig = emulator.write_kubeconfig(path)  # http server, token user
    ...
    emulator.stop()

or as a process: ``python -m tests.harness.kubeapi --port 0 --kubeconfig PATH [--crds DIR]``.

What it does, like a real API server (pinned by tests/integration/test_kubeapi_contract.py):
discovery; built-in v1 namespaces/secrets/configmaps/pods/serviceaccounts/services/events,
events.k8s.io events, leases, apps/v1 deployments, policy/v1 poddisruptionbudgets,
networking.k8s.io/v1 networkpolicies, rbac.authorization.k8s.io/v1 roles/clusterroles/
rolebindings/clusterrolebindings (enforced, see below), CRDs and webhook configurations;
server-managed metadata (uid, one global resourceVersion, generation, generateName,
stringData); GET/LIST (limit and continue)/WATCH (resume from a bounded history, 410 Gone,
bookmarks, timeoutSeconds); label and field selectors; POST/PUT/PATCH (merge, JSON with test
ops, strategic merge for built-ins, server-side apply)/DELETE; managedFields and apply
conflicts (ssa.py); Status errors; status subresources; finalizers; garbage collection by
ownerReferences (Background/Foreground/Orphan); namespace termination (Terminating, then the
namespace controller empties and finalizes it) and CRD termination; CRD schemas (pruning, defaults, validation, CEL rules
through ``cel-python`` when installed); mutating and validating admission webhooks over HTTPS.

For real kubectl (1.33) and helm (4):
- ``/openapi/v3`` and its per-group-version documents, ``/openapi/v2`` as JSON (openapi.py):
  the official built-in schemas from the ``kubernetes-validate`` package, the CRDs' schemas,
  and PATCH operations with ``fieldValidation`` so clients leave validation to the server;
- protobuf request bodies of the built-in kinds client-go's typed clients send (protobuf.py,
  field tables in protobuf_fields.py), 415 naming any other kind, 406 when the client does
  not accept JSON;
- server-side printing, ``Accept: ...;as=Table;g=meta.k8s.io;v=v1`` (tables.py): built-in
  printers and CRD ``additionalPrinterColumns`` with the API server's cell rules (a future
  ``date`` is ``<invalid>``);
- webhook Services routed to local processes (``route_service``: endpoints used in turn, also
  by the ``services/.../proxy`` subresource), ``pods/<name>/log`` of pods run by the kubelet
  stand-in, which runs an installed Deployment's replicas as local processes, writes their
  Pods and the Deployment's status, and rolls or stops them as the Deployment changes
  (kubelet.py).

Authentication and RBAC (rbac.py): bearer tokens name users and groups (the admin token is in
system:masters; ServiceAccount tokens come from the TokenRequest subresource), Roles,
ClusterRoles, bindings and aggregation are enforced with the API server's 403 Forbidden, and
the access reviews answer ``kubectl auth can-i``. No token over plain http is the old insecure
port's admin (kubectl sends no credentials over http); ``tls=True`` serves HTTPS.

Known differences from a real server: no escalation checks on writing RBAC objects;
server-side apply follows the real algorithm only as far as ssa.py says; ``/openapi/v2`` is JSON only
(client-go asks for protobuf, gets 406 and uses v3); legacy discovery only (kubectl falls back
from the aggregated form); no watch in Table form; no conversion webhooks or scale
subresource; pods are never scheduled (kubelet.py runs a Deployment on request); built-in
kinds are validated only where tests need it (names, labels, ownerReferences, pods,
deployments, RBAC bindings, webhooks, CRDs).
"""

from .emulator import DEFAULT_TOKEN, DEFAULT_USER, KubeAPIEmulator, read_crd_manifests
from .errors import ApiError

__all__ = ["DEFAULT_TOKEN", "DEFAULT_USER", "ApiError", "KubeAPIEmulator", "read_crd_manifests"]
