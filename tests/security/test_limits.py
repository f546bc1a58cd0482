"""Bounded input (issue 11, item 3, the schema half).

300 schema-valid AssumedRoles with 110 kB ``policyArns`` items pushed the operator past the
chart's memory limit: nothing in the CRDs bounded them. Now every string and array of both
CRDs has a ``maxLength``/``maxItems`` (every map a ``maxProperties``), and the API server
refuses the oversized object before the operator ever sees it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from tests.harness.k8s import K8s
from tests.security.helpers import ar_spec

CRDS = sorted((Path(__file__).resolve().parents[2] / "deploy" / "crds").glob("*.yaml"))


def unbounded(schema: dict[str, Any], path: str = "") -> list[str]:
    """Paths of strings without maxLength/enum, arrays without maxItems, maps without
    maxProperties (apiVersion and kind are the API server's)."""
    found: list[str] = []
    kind = schema.get("type")
    if kind == "string" and "maxLength" not in schema and "enum" not in schema:
        if path not in (".apiVersion", ".kind"):
            found.append(path)
    elif kind == "array":
        if "maxItems" not in schema:
            found.append(path + "[]")
        found += unbounded(schema["items"], path + "[]")
    elif kind == "object":
        for key, sub in (schema.get("properties") or {}).items():
            found += unbounded(sub, f"{path}.{key}")
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            if "maxProperties" not in schema:
                found.append(path + "{}")
            found += unbounded(extra, path + "{}")
    return found


@pytest.mark.parametrize("crd", CRDS, ids=[p.name for p in CRDS])
def test_every_string_and_array_of_the_crds_is_bounded(crd: Path) -> None:
    doc = yaml.safe_load(crd.read_text())
    for version in doc["spec"]["versions"]:
        schema = version["schema"]["openAPIV3Schema"]
        assert unbounded(schema) == [], f"{crd.name} {version['name']}: unbounded fields"
        rules = [r for node in _nodes(schema) for r in node.get("x-kubernetes-validations") or []]
        assert rules and all(r.get("message") for r in rules), "every CEL rule has a message"


def _nodes(schema: dict[str, Any]) -> list[dict[str, Any]]:
    out = [schema]
    for sub in (schema.get("properties") or {}).values():
        out += _nodes(sub)
    if isinstance(schema.get("items"), dict):
        out += _nodes(schema["items"])
    if isinstance(schema.get("additionalProperties"), dict):
        out += _nodes(schema["additionalProperties"])
    return out


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("policyArns", ["arn:aws:iam::aws:policy/" + "x" * 110_000]),
        ("sessionPolicy", '{"Statement": [], "Pad": "' + "x" * 5000 + '"}'),
        ("subjects", [{"kind": "ServiceAccount", "name": f"sa-{i}"} for i in range(65)]),
        ("transitiveTagKeys", ["k"] * 51),
        ("sessionTags", {"k" * 129: "v"}),
    ],
    ids=[
        "110 kB policy ARN",
        "oversized session policy",
        "65 subjects",
        "51 transitive keys",
        "long tag key",
    ],
)
def test_the_api_server_refuses_oversized_specs(k8s: K8s, namespace: str, field: str, value: Any) -> None:
    with pytest.raises(ApiException) as exc:
        k8s.create_ar(namespace, "big", ar_spec(**{field: value}))
    assert exc.value.status == 422
    assert f"spec.{field}" in json.loads(exc.value.body)["message"]


def test_the_api_server_refuses_an_oversized_policy(k8s: K8s) -> None:
    with pytest.raises(ApiException) as exc:
        k8s.create_policy("big", {"namespaces": ["a"] * 257, "roleArns": ["arn:aws:iam::1:role/x"]})
    assert exc.value.status == 422 and "spec.namespaces" in json.loads(exc.value.body)["message"]
