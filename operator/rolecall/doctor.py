"""``rolecall doctor``: check a cluster the way a user debugs one, and say what to do.

In order, each check a line ``ok`` / ``warn`` / ``FAIL`` with the fix:

1. the API server answers (your kubeconfig);
2. the CRDs are served;
3. the webhook configurations exist, their ``caBundle`` verifies the serving certificate
   (read from the operator's Secret, or from the server itself for a URL webhook), and the
   webhook answers an AdmissionReview (through the API server's service proxy, the way the
   API server reaches it, or at its URL);
4. the operator's AWS identity works, judged by the bindings: any with credentials proves
   it; ``SourceUnavailable`` everywhere says it does not;
5. every AssumedRolePolicy is valid;
6. every AssumedRole that is not Ready, with its reason and the fix for that reason.

The exit code is 1 when any check failed. Read-only: it only GETs (and POSTs one dry-run
review to the webhook).
"""

from __future__ import annotations

import argparse
import base64
import json
import socket
import ssl
import sys
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from rolecall import constants as c
from rolecall import tls
from rolecall.constants import Reason
from rolecall.model import SpecError, parse_policy

if TYPE_CHECKING:
    from rolecall.kube import KubeAdapter

# webhook names start with the operator's handler ids (the chart adds ".rolecall.dev", kopf's
# self-registration the configuration's name)
WEBHOOKS = {"mutating": "mutate-pods.", "validating": "validate-assumedroles."}
CRD_FIX = "kubectl apply -f deploy/manifests/crds/ (or the chart's crds/); see docs/install.md"

# What to do about each reason of a Ready=False condition (docs/troubleshooting.md says more).
FIXES: dict[str, str] = {
    Reason.NOT_PERMITTED: "no AssumedRolePolicy admits this namespace and role: a cluster admin adds one "
    "(kubectl get assumedrolepolicies; docs/troubleshooting.md#notpermitted)",
    Reason.ACCESS_DENIED: "STS refused: the role's trust policy must trust the operator's identity "
    "(rolecall trust-policy -f <file> --operator-role ARN prints it), and the operator's own policy must "
    "allow sts:AssumeRole and sts:TagSession on the role",
    Reason.INVALID_SPEC: "fix the field the message names (kubectl explain assumedrole.spec)",
    Reason.MALFORMED_POLICY: "spec.sessionPolicy or spec.policyArns is not a valid IAM policy: fix it",
    Reason.PACKED_POLICY_TOO_LARGE: "session policy and tags are too large once packed: shorten the "
    "session policy, use fewer spec.policyArns or session tags",
    Reason.REGION_DISABLED: "activate STS in that region (IAM → Account settings) or set spec.region",
    Reason.THROTTLED: "STS throttles the account: lower the operator's stsRateLimit or spread the "
    "bindings' durations; it retries by itself",
    Reason.SOURCE_UNAVAILABLE: "the base credentials are missing or rejected: the operator's AWS identity "
    "(IRSA, Pod Identity, static keys; docs/aws-identity.md), the Secret of spec.source.secretRef, or "
    "the source AssumedRole of spec.source.assumedRoleRef",
    Reason.TRANSIENT: "a network or STS error; the operator retries with backoff: check its logs and "
    "that STS is reachable (VPC endpoint, proxy, aws.stsEndpointUrl)",
    Reason.SECRET_CONFLICT: "a Secret of that name exists and is not rolecall's: rename spec.secretName "
    "or delete that Secret",
    Reason.CREDENTIALS_EXPIRED: "refreshing kept failing until the credentials expired: fix the "
    "RefreshFailing condition's reason",
    Reason.SUSPENDED: "spec.suspend is true: set it to false to issue credentials again",
    Reason.REFRESHING: "credentials are being issued: wait a few seconds",
}


@dataclass(frozen=True)
class Finding:
    level: str  # ok | warn | fail
    check: str
    detail: str
    fix: str = ""

    def line(self) -> str:
        mark = {"ok": "ok  ", "warn": "warn", "fail": "FAIL"}[self.level]
        text = f"[{mark}] {self.check}: {self.detail}"
        return text + (f"\n       fix: {self.fix}" if self.fix else "")


def check_crds(kube: KubeAdapter) -> list[Finding]:
    served = kube.served_resources(c.API_VERSION) or set()
    out = []
    for plural in (c.PLURAL_ASSUMED_ROLE, c.PLURAL_POLICY):
        name = f"{plural}.{c.GROUP}"
        if plural in served:
            out.append(Finding("ok", "CRD", f"{name} is served"))
        else:
            out.append(Finding("fail", "CRD", f"{name} is not installed", CRD_FIX))
    return out


def _served_certificate(url: str) -> bytes | None:
    parts = urlsplit(url)
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection((parts.hostname or "", parts.port or 443), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname=parts.hostname) as conn,
        ):
            der = conn.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError):
        return None
    return ssl.DER_cert_to_PEM_cert(der).encode() if der else None


def _review(path: str) -> dict[str, Any]:
    """A harmless dry-run review: the validating webhook checks a sample AssumedRole."""
    obj = {
        "apiVersion": c.API_VERSION,
        "kind": c.KIND_ASSUMED_ROLE,
        "metadata": {"name": "rolecall-doctor", "namespace": "default"},
        "spec": {"roleArn": "arn:aws:iam::123456789012:role/rolecall-doctor"},
    }
    if "pods" in path:
        obj = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "rolecall-doctor", "namespace": "default"},
        }
    group, version, plural = (
        ("", "v1", "pods") if "pods" in path else (c.GROUP, c.VERSION, c.PLURAL_ASSUMED_ROLE)
    )
    gvk = {"group": group, "version": version, "kind": obj["kind"]}
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": gvk,
            "resource": {"group": group, "version": version, "resource": plural},
            "namespace": "default",
            "name": "rolecall-doctor",
            "operation": "CREATE",
            "userInfo": {"username": "rolecall-doctor"},
            "object": obj,
            "dryRun": True,
        },
    }


def _post_url(url: str, ca_bundle: bytes, body: dict[str, Any]) -> dict[str, Any]:
    import urllib.request

    context = (
        ssl.create_default_context(cadata=ca_bundle.decode()) if ca_bundle else ssl.create_default_context()
    )
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10, context=context) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


def check_webhook(
    kube: KubeAdapter, kind: str, config: dict[str, Any], hook: dict[str, Any]
) -> list[Finding]:
    from rolecall.kube import KubeError

    name = f"{kind} webhook {hook.get('name')} ({config['metadata']['name']})"
    client = hook.get("clientConfig") or {}
    bundle = base64.b64decode(client.get("caBundle") or "")
    out = [Finding("ok", name, f"failurePolicy {hook.get('failurePolicy', 'Fail')}")]
    if not bundle:
        out.append(
            Finding(
                "fail" if hook.get("failurePolicy") == "Fail" else "warn",
                name,
                "no caBundle: the API server cannot trust the webhook yet",
                "the operator fills it in once a replica runs: kubectl -n <release namespace> logs "
                "deployment/rolecall; with cert-manager, check its Certificate",
            )
        )
    service = client.get("service") or {}
    url = client.get("url")
    cert: bytes | None = None
    if url:
        cert = _served_certificate(url)
        where = url
    else:
        ns, svc = service.get("namespace", ""), service.get("name", "")
        where = f"service {ns}/{svc}"
        secret = kube.get_secret(ns, f"{svc}-webhook-tls")
        if secret:
            cert = base64.b64decode((secret.get("data") or {}).get("tls.crt") or "")
    if bundle and cert:
        if tls.verifies(bundle, cert):
            expires = tls.expiry(cert)
            out.append(
                Finding("ok", name, f"caBundle verifies the serving certificate (expires {expires:%Y-%m-%d})")
            )
        else:
            out.append(
                Finding(
                    "fail",
                    name,
                    "caBundle does not verify the serving certificate",
                    "the operator rewrites caBundle every few minutes; if it stays wrong, delete the Secret "
                    "<service>-webhook-tls and restart the operator (a new CA is issued)",
                )
            )
    path = (url and urlsplit(url).path) or service.get("path", "")
    try:
        if url:
            answer = _post_url(url, bundle, _review(path))
        else:
            answer = kube.proxy_service(
                service["namespace"], service["name"], service.get("port", 443), path, _review(path)
            )
        if "response" in answer:
            out.append(Finding("ok", name, f"answers at {where}"))
        else:
            out.append(Finding("fail", name, f"{where} answered without an AdmissionReview response"))
    except (KubeError, OSError, ValueError, ssl.SSLError) as exc:
        out.append(
            Finding(
                "fail" if hook.get("failurePolicy") == "Fail" else "warn",
                name,
                f"does not answer at {where}: {exc}",
                "check the operator pods (kubectl -n <release namespace> get pods; logs) and the Service's endpoints",
            )
        )
    return out


def check_webhooks(kube: KubeAdapter) -> list[Finding]:
    out = []
    for kind, hook_name in WEBHOOKS.items():
        configs = kube.list_objects(f"/apis/admissionregistration.k8s.io/v1/{kind}webhookconfigurations")
        found = [
            (cfg, h)
            for cfg in configs
            for h in cfg.get("webhooks") or []
            if str(h.get("name")).startswith(hook_name)
        ]
        if not found:
            out.append(
                Finding(
                    "warn",
                    f"{kind} webhook",
                    f"no configuration has a {hook_name}… webhook",
                    "install the operator with the webhooks on (webhook.enabled=true, the default)",
                )
            )
        for cfg, hook in found:
            out.extend(check_webhook(kube, kind, cfg, hook))
    return out


def _ready(body: dict[str, Any]) -> dict[str, Any]:
    for cond in (body.get("status") or {}).get("conditions") or []:
        if cond.get("type") == c.COND_READY:
            return dict(cond)
    return {}


def check_bindings(kube: KubeAdapter, namespace: str | None) -> list[Finding]:
    path = (
        f"/apis/{c.API_VERSION}/namespaces/{namespace}/{c.PLURAL_ASSUMED_ROLE}"
        if namespace
        else f"/apis/{c.API_VERSION}/{c.PLURAL_ASSUMED_ROLE}"
    )
    items = kube.list_objects(path)
    out = []
    ready = [b for b in items if _ready(b).get("status") == "True"]
    reasons = [_ready(b).get("reason") for b in items if b not in ready]
    if ready:
        out.append(
            Finding(
                "ok", "operator identity", f"works: {len(ready)} of {len(items)} bindings have credentials"
            )
        )
    elif reasons and all(r == Reason.SOURCE_UNAVAILABLE for r in reasons):
        out.append(
            Finding(
                "fail", "operator identity", "no binding has credentials", FIXES[Reason.SOURCE_UNAVAILABLE]
            )
        )
    else:
        out.append(Finding("ok", "operator identity", "no binding to judge it by yet"))
    for body in items:
        if body in ready:
            continue
        meta = body.get("metadata") or {}
        cond = _ready(body)
        reason = str(cond.get("reason") or "")
        detail = f"not Ready ({reason or 'no status yet'}): {cond.get('message') or 'the operator has not reconciled it'}"
        fix = FIXES.get(reason, "is the operator running and watching this namespace? (kubectl logs)")
        out.append(Finding("fail", f"AssumedRole {meta.get('namespace')}/{meta.get('name')}", detail, fix))
    return out


def check_policies(kube: KubeAdapter) -> list[Finding]:
    items = kube.list_objects(f"/apis/{c.API_VERSION}/{c.PLURAL_POLICY}")
    if not items:
        return [
            Finding(
                "warn",
                "AssumedRolePolicies",
                "none: every AssumedRole is denied (default deny)",
                "a cluster admin applies one (deploy/samples/team-a.yaml has an example)",
            )
        ]
    out = []
    for body in items:
        name = (body.get("metadata") or {}).get("name", "")
        try:
            parse_policy(name, body.get("spec"))
        except SpecError as exc:
            out.append(
                Finding(
                    "fail",
                    f"AssumedRolePolicy {name}",
                    f"invalid, admits nothing: {exc}",
                    "fix the field it names",
                )
            )
            continue
        out.append(Finding("ok", f"AssumedRolePolicy {name}", "valid"))
    return out


def diagnose(kube: KubeAdapter, namespace: str | None = None) -> list[Finding]:
    from rolecall.kube import KubeError

    try:
        version = kube.request("GET", "/version", timeout=10.0)
    except KubeError as exc:
        return [Finding("fail", "API server", f"unreachable: {exc}", "check your kubeconfig and context")]
    findings = [Finding("ok", "API server", f"Kubernetes {version.get('gitVersion', '?')}")]
    findings += check_crds(kube)
    if any(f.level == "fail" for f in findings):
        return findings
    for check in (check_webhooks, check_policies):
        try:
            findings += check(kube)
        except KubeError as exc:
            findings.append(Finding("warn", check.__name__.removeprefix("check_"), f"cannot read: {exc}"))
    try:
        findings += check_bindings(kube, namespace)
    except KubeError as exc:
        findings.append(Finding("warn", "bindings", f"cannot read: {exc}"))
    return findings


# --- the command line (registered by cli.py) --------------------------------------------------


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "doctor", help="check the cluster's rolecall install and bindings, and say what to fix"
    )
    p.add_argument(
        "--kubeconfig", default=None, help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)"
    )
    p.add_argument("--context", default=None, help="kubeconfig context")
    p.add_argument("--namespace", "-n", default=None, help="bindings of this namespace only (default: all)")
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from rolecall.kube import KubeAdapter, load_configuration

    try:
        kube = KubeAdapter(load_configuration(args.kubeconfig, args.context), pool_size=2)
    except Exception as exc:  # the kubernetes config loader raises several kinds
        print(
            f"rolecall doctor: cannot load the kubeconfig ({exc}); pass --kubeconfig or set KUBECONFIG",
            file=sys.stderr,
        )
        return 2
    try:
        findings = diagnose(kube, args.namespace)
    finally:
        kube.close()
    for finding in findings:
        print(finding.line())
    failed = sum(f.level == "fail" for f in findings)
    print(f"\n{failed} problem(s) found" if failed else "\nno problem found")
    return 1 if failed else 0
