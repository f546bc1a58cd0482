"""`kubectl get assumedroles` as a user reads it: the CRD's printer columns rendered the way the
API server renders them (its Table conversion), for a healthy binding and a denied one.

The API server prints a ``type: date`` column as the age of the time (``HumanDuration`` of
now minus it), and a time in the future as ``<invalid>``; other types print as they are.
"""

from __future__ import annotations

import datetime
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime.datetime(2031, 5, 1, 12, 0, 0, tzinfo=datetime.UTC)


def human_duration(seconds: float) -> str:
    """k8s.io/apimachinery/pkg/util/duration.HumanDuration, as the API server prints ages."""
    if seconds < -1:
        return "<invalid>"
    if seconds < 0:
        return "0s"
    s = int(seconds)
    if s < 60 * 2:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 60 * 3:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d{hours % 24}h" if hours % 24 else f"{hours // 24}d"
    return f"{hours // 24}d"


_STEP = re.compile(r'\.([A-Za-z0-9_]+)(?:\[\?\(@\.([A-Za-z]+)=="([^"]*)"\)\])?')


def jsonpath(obj: Any, path: str) -> Any:
    """The subset of JSONPath our columns use: .a.b and .list[?(@.key=="value")].field."""
    node = obj
    for name, key, value in _STEP.findall(path):
        node = (node or {}).get(name) if isinstance(node, dict) else None
        if key:
            node = next((item for item in node or [] if item.get(key) == value), None)
    return node


def cell(column: dict[str, Any], obj: dict[str, Any]) -> str:
    value = jsonpath(obj, column["jsonPath"])
    if value is None:
        return "<none>"
    if column["type"] == "date":
        moment = datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        return human_duration((NOW - moment).total_seconds())
    return str(value)


def table(obj: dict[str, Any], wide: bool = False) -> dict[str, str]:
    crd = yaml.safe_load((ROOT / "deploy" / "crds" / "assumedroles.rolecall.dev.yaml").read_text())
    [version] = crd["spec"]["versions"]
    columns = [c for c in version["additionalPrinterColumns"] if wide or not c.get("priority")]
    return {"NAME": obj["metadata"]["name"]} | {c["name"].upper(): cell(c, obj) for c in columns}


def binding(status: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {"name": "s3-reader", "creationTimestamp": "2031-05-01T10:00:00Z"},
        "spec": {"roleArn": "arn:aws:iam::123456789012:role/team-a-s3-reader"},
        "status": status,
    }


HEALTHY = binding(
    {
        "secretName": "s3-reader",
        "expiration": "2031-05-01T12:45:00Z",  # 45 min from now
        "conditions": [{"type": "Ready", "status": "True", "reason": "CredentialsIssued"}],
    }
)
DENIED = binding({"conditions": [{"type": "Ready", "status": "False", "reason": "NotPermitted"}]})


def test_a_healthy_binding_reads_right() -> None:
    assert table(HEALTHY) == {
        "NAME": "s3-reader",
        "ROLE": "arn:aws:iam::123456789012:role/team-a-s3-reader",
        "SECRET": "s3-reader",
        "READY": "True",
        "EXPIRES": "2031-05-01T12:45:00Z",
        "AGE": "120m",  # as the API server prints two hours
    }
    assert "<invalid>" not in table(HEALTHY, wide=True).values()


def test_a_denied_binding_shows_why_with_wide_output() -> None:
    assert table(DENIED)["READY"] == "False" and table(DENIED)["EXPIRES"] == "<none>"
    assert table(DENIED, wide=True)["REASON"] == "NotPermitted"


@pytest.mark.parametrize(
    ("seconds", "printed"),
    [(-3600, "<invalid>"), (5, "5s"), (14400, "4h"), (90000, "25h"), (3 * 86400, "3d")],
    ids=["a future time", "seconds", "hours", "a day and more", "days"],
)
def test_the_renderer_prints_dates_like_the_api_server(seconds: float, printed: str) -> None:
    assert human_duration(seconds) == printed


def test_the_renderer_would_catch_a_date_column_on_a_future_time() -> None:
    column = {"name": "Expires", "type": "date", "jsonPath": ".status.expiration"}
    assert cell(column, HEALTHY) == "<invalid>"
