"""Attack: exhaust the operator's memory with the largest AssumedRoles the API server accepts.

Found in review: 300 schema-valid AssumedRoles of ~1.35 MB each (big annotations, 110 kB
``policyArns`` items the CRD did not bound) pushed the operator to 535 MiB, past the chart's
memory limit: every tenant who may create AssumedRoles could get it OOM-killed.

Defence: the operator's cache keeps slim copies (identity, spec, status — never annotations
or managedFields), and every string and array in the CRD has a ``maxLength``/``maxItems``.

Here the real operator (``rolecall run``, a subprocess, with the chart's default STS settings)
serves 300 AssumedRoles built from the CRD's own schema: every string at its ``maxLength``
(as far as its ``pattern`` allows), every array at ``maxItems``, every map at
``maxProperties``, annotations up to the API server's 256 KiB total. A string the CRD leaves
unbounded is as long as the API server lets it be: together they fill the object up to
etcd's 1.5 MiB request limit. The builder reads the CRD in deploy/crds, so it follows the
limits there. The operator's peak RSS must stay below the chart's
``resources.limits.memory`` with a margin.
"""

from __future__ import annotations

import concurrent.futures
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness.k8s import GROUP, VERSION, K8s
from tests.harness.kube_fixtures import api_client_from_kubeconfig, apply_crds
from tests.harness.kubeapi import KubeAPIEmulator
from tests.harness.kubeapi.schema import go_pattern
from tests.harness.kubeproxy import write_figures
from tests.harness.operator import OperatorProcess
from tests.harness.operator_fixtures import ACCOUNT, ROOT
from tests.harness.sts import STSFaultProxy
from tests.harness.wait import wait_for

pytestmark = pytest.mark.slow

COUNT = 300
NAMESPACE = "memory"
ROLE_NAME = "rolecall-memory-".ljust(64, "n")  # IAM's longest role name; the path takes the rest
ANNOTATIONS_LIMIT = 256 * 1024  # the API server's TotalAnnotationSizeLimitB (keys + values)
OBJECT_LIMIT = 1536 * 1024  # etcd's default --max-request-bytes: no larger object is stored
SERVER_FIELDS_SLACK = 4 * 1024  # uid, resourceVersion, timestamps, generation the server adds
TAG_KEY_LENGTH = 128  # STS's limit for a session tag key (the CRD's map keys have no maxLength)
MARGIN = 0.8  # the peak must stay below 80 % of the chart's limit

# Fields whose values have a meaning beyond the schema get a template: "{pad}" is filled to the
# longest length the schema allows, "{i}" is the item's index, "{name}" the object's name and
# "{namespace}" its namespace. A string without a template is "{pad}" alone.
TEMPLATES = {
    "spec.roleArn": f"arn:aws:iam::{ACCOUNT}:role/{{pad}}/{ROLE_NAME}",
    "spec.policyArns[]": f"arn:aws:iam::{ACCOUNT}:policy/p{{i}}-{{pad}}",
    "spec.sessionPolicy": (
        '{"Version":"2012-10-17","Statement":[{"Sid":"S{pad}","Effect":"Allow",'
        '"Action":"s3:GetObject","Resource":"*"}]}'
    ),
    "spec.subjects[].name": "s{i}-{pad}",
    "spec.secretName": "{name}-{pad}",  # one Secret per binding (two owners would conflict)
    "spec.sourceIdentity": "{namespace}.{pad}",
    "spec.region": "us-{pad}-1",
    "spec.mountPath": "/{pad}",
    "spec.sessionTags{}": "k{i}-{pad}",  # the keys
}
# `source` selects other base keys (a Secret or another binding): the bindings would stop
# before STS (source missing) and hold less. Without it they hold credentials and a Secret.
SKIP = {"spec.source"}
# Values that must name other generated values (a CEL rule and the operator require it).
REFERENCES = {"spec.transitiveTagKeys[]": "spec.sessionTags{}"}
PAD_CHARACTERS = "a0"


def chart_memory_limit() -> int:
    values = yaml.safe_load((ROOT / "deploy" / "helm" / "rolecall" / "values.yaml").read_text())
    text = str(values["resources"]["limits"]["memory"])
    m = re.fullmatch(r"(\d+)(Ki|Mi|Gi)?", text)
    assert m, f"resources.limits.memory {text!r} is not a quantity this test reads"
    return int(m.group(1)) * {None: 1, "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3}[m.group(2)]


def crd_spec_schema() -> dict[str, Any]:
    crd = yaml.safe_load((ROOT / "deploy" / "crds" / "assumedroles.rolecall.dev.yaml").read_text())
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return dict(schema["properties"]["spec"])


@dataclass
class Builder:
    """The largest ``spec`` a CRD schema admits; strings without ``maxLength`` get ``share``."""

    name: str
    namespace: str
    share: int  # characters for each string the schema leaves unbounded
    unbounded: list[str] = field(default_factory=list)
    made: dict[str, list[str]] = field(default_factory=dict)

    def build(self, schema: dict[str, Any], path: str = "spec", i: int = 0) -> Any:
        if path in SKIP:
            return None
        kind = schema.get("type")
        if kind == "object" and "properties" in schema:
            out = {}
            for key, sub in schema["properties"].items():
                value = self.build(sub, f"{path}.{key}")
                if value is not None:
                    out[key] = value
            return out
        if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
            count = self.count(schema, "maxProperties", path)
            keys = [self.string({"maxLength": TAG_KEY_LENGTH}, f"{path}{{}}", k) for k in range(count)]
            return {
                key: self.build(schema["additionalProperties"], f"{path}[]", k) for k, key in enumerate(keys)
            }
        if kind == "array":
            count = self.count(schema, "maxItems", path)
            return [self.build(schema["items"], f"{path}[]", k) for k in range(count)]
        if kind == "string":
            return self.string(schema, path, i)
        if kind == "integer":
            return schema.get("maximum", schema.get("default", 0))
        if kind == "boolean":
            return schema.get("default", True)  # suspend: false; automaticSessionTags: true
        raise AssertionError(f"{path}: no value for schema type {kind!r}")

    def count(self, schema: dict[str, Any], limit: str, path: str) -> int:
        if limit not in schema:
            self.unbounded.append(f"{path} (no {limit}: 1 entry)")
            return 1
        return int(schema[limit])

    def string(self, schema: dict[str, Any], path: str, i: int) -> str:
        value = self._string(schema, path, i)
        self.made.setdefault(path, []).append(value)
        return value

    def _string(self, schema: dict[str, Any], path: str, i: int) -> str:
        if path in REFERENCES:
            choices = self.made.get(REFERENCES[path])
            assert choices, f"{path} names {REFERENCES[path]}, which the schema builds later or not at all"
            return choices[i % len(choices)]
        if "enum" in schema:
            return str(max(schema["enum"], key=len))
        template = (
            TEMPLATES.get(path, "{pad}")
            .replace("{i}", str(i))
            .replace("{name}", self.name)
            .replace("{namespace}", self.namespace)
        )
        fixed = len(template) - len("{pad}")
        if "maxLength" in schema:
            room = int(schema["maxLength"]) - fixed
        else:
            self.unbounded.append(path)
            room = self.share
        pattern = go_pattern(schema["pattern"]) if "pattern" in schema else None
        return longest(template, pattern, room, path)


def longest(template: str, pattern: re.Pattern[str] | None, room: int, path: str) -> str:
    """``template`` with its pad as long as possible (at most ``room``) that ``pattern`` accepts."""
    for ch in PAD_CHARACTERS:

        def valid(k: int, ch: str = ch) -> bool:
            return pattern is None or pattern.search(template.replace("{pad}", ch * k)) is not None

        low = next((k for k in range(9) if valid(k)), None)  # the shortest pad it accepts
        if low is None:
            continue
        if room <= low or valid(room):
            return template.replace("{pad}", ch * max(low, room))
        high = room  # valid(low), not valid(high): the accepted lengths are one interval
        while high - low > 1:
            mid = (low + high) // 2
            if valid(mid):
                low = mid
            else:
                high = mid
        return template.replace("{pad}", ch * low)
    raise AssertionError(f"{path}: no value of the form {template!r} matches {pattern}")


def big_annotations(budget: int = ANNOTATIONS_LIMIT, parts: int = 4) -> dict[str, str]:
    """Annotations whose keys and values add up to exactly ``budget`` bytes."""
    keys = [f"memory.rolecall.dev/a{j}" for j in range(parts)]
    room = budget - sum(len(k) for k in keys)
    return {k: "x" * (room // parts + (1 if j < room % parts else 0)) for j, k in enumerate(keys)}


def maximal_assumed_role(
    schema: dict[str, Any], namespace: str, name: str, share: int = 0
) -> tuple[dict[str, Any], list[str]]:
    """The largest AssumedRole the CRD admits with ``share`` characters for each unbounded
    string, and the CRD's unbounded fields."""
    builder = Builder(name, namespace, share)
    spec = builder.build(schema)
    obj = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AssumedRole",
        "metadata": {"name": name, "namespace": namespace, "annotations": big_annotations()},
        "spec": spec,
    }
    return obj, list(dict.fromkeys(builder.unbounded))


def fill_share(schema: dict[str, Any], namespace: str, name: str) -> int:
    """The largest share for unbounded strings that keeps the object within etcd's limit."""

    def size(share: int) -> int:
        return len(json.dumps(maximal_assumed_role(schema, namespace, name, share)[0]))

    budget = OBJECT_LIMIT - SERVER_FIELDS_SLACK
    if not maximal_assumed_role(schema, namespace, name)[1] or size(0) > budget:
        return 0
    low, high = 0, budget  # size(low) fits, size(high) does not (or nothing is unbounded)
    if size(high) <= budget:
        return high
    while high - low > 1:
        mid = (low + high) // 2
        if size(mid) <= budget:
            low = mid
        else:
            high = mid
    return low


@dataclass
class RSS:
    """Samples /proc/<pid>/status while the operator works; VmHWM gives the peak between."""

    pid: int
    samples: list[int] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def read(self, key: str) -> int:
        text = Path(f"/proc/{self.pid}/status").read_text()
        m = re.search(rf"^{key}:\s+(\d+) kB", text, re.M)
        assert m, f"no {key} in /proc/{self.pid}/status"
        return int(m.group(1)) * 1024

    def run(self) -> None:
        while not self.stop.wait(0.2):
            try:
                self.samples.append(self.read("VmRSS"))
            except (OSError, AssertionError):
                return


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[tuple[KubeAPIEmulator, K8s, Path]]:
    """An emulator of its own: 300 objects of 1.5 MiB must not stay in the shared one."""
    emu = KubeAPIEmulator(history_size=100).start()
    try:
        kubeconfig = emu.write_kubeconfig(tmp_path / "kubeconfig")
        api = api_client_from_kubeconfig(kubeconfig)
        apply_crds(api, ROOT / "deploy" / "crds")
        yield emu, K8s(api), kubeconfig
        api.close()
    finally:
        emu.stop()


def decided(emu: KubeAPIEmulator) -> Callable[[], int]:
    """How many of the namespace's AssumedRoles carry a status for their generation."""

    def count(server: Any) -> int:
        return sum(
            1
            for obj in server.store.iter_objects((GROUP, "assumedroles"), NAMESPACE)
            if (obj.get("status") or {}).get("observedGeneration") == obj["metadata"].get("generation")
        )

    return lambda: emu.call(count)


def ready(emu: KubeAPIEmulator) -> int:
    def count(server: Any) -> int:
        return sum(
            1
            for obj in server.store.iter_objects((GROUP, "assumedroles"), NAMESPACE)
            for cond in (obj.get("status") or {}).get("conditions") or []
            if cond.get("type") == "Ready" and cond.get("status") == "True"
        )

    return emu.call(count)


def test_maximal_assumed_roles_stay_under_the_chart_memory_limit(
    emulator: tuple[KubeAPIEmulator, K8s, Path], sts: STSFaultProxy, aws_env: dict[str, str], tmp_path: Path
) -> None:
    emu, k8s, kubeconfig = emulator
    limit = chart_memory_limit()
    schema = crd_spec_schema()
    share = fill_share(schema, NAMESPACE, "ar-000")
    sample, unbounded = maximal_assumed_role(schema, NAMESPACE, "ar-000", share)
    size = len(json.dumps(sample))

    k8s.core.create_namespace({"metadata": {"name": NAMESPACE}})
    k8s.create_policy(
        "memory",
        {"namespaces": [NAMESPACE], "roleArns": [sample["spec"]["roleArn"]], "maxDurationSeconds": 43200},
    )
    # the chart's defaults: STS 10/s, burst 20, 8 in flight, 16 workers
    op = OperatorProcess(kubeconfig, NAMESPACE, aws_env, tmp_path / "operator.log")
    rss = RSS(op.proc.pid)
    sampler = threading.Thread(target=rss.run, name="rss", daemon=True)
    try:
        sampler.start()
        started = time.monotonic()

        def create(n: int) -> None:
            body, _ = maximal_assumed_role(schema, NAMESPACE, f"ar-{n:03d}", share)
            k8s.custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "assumedroles", body)

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            list(pool.map(create, range(COUNT)))
        count = decided(emu)
        wait_for(
            lambda: count() >= COUNT or op.proc.poll() is not None,
            timeout=240,
            interval=0.5,
            message=f"the operator wrote a status for only {count()}/{COUNT} maximal AssumedRoles",
        )
        assert op.proc.poll() is None, f"the operator exited:\n{op.text()[-3000:]}"
        took = time.monotonic() - started
        now, peak = rss.read("VmRSS"), rss.read("VmHWM")
    finally:
        rss.stop.set()
        op.stop()
    mib = 1024 * 1024
    figures = {
        "assumed_roles": COUNT,
        "object_bytes": size,
        "unbounded_fields": unbounded,
        "ready": ready(emu),
        "seconds": round(took, 1),
        "rss_mib": round(now / mib, 1),
        "peak_rss_mib": round(peak / mib, 1),
        "sampled_max_rss_mib": round(max(rss.samples, default=0) / mib, 1),
        "chart_limit_mib": round(limit / mib, 1),
    }
    write_figures("memory_maximal_assumed_roles", figures)
    assert "Traceback" not in op.text(), op.text()[-3000:]
    assert peak < limit * MARGIN, (
        f"{COUNT} maximal AssumedRoles ({size / 1024:.0f} KiB each; unbounded in the CRD: "
        f"{unbounded or 'none'}) took the operator to {peak / mib:.0f} MiB peak RSS; the chart's "
        f"limit is {limit / mib:.0f} MiB and the test allows {MARGIN:.0%} of it"
    )
