"""Label and field selectors: the query-string syntax and ``metav1.LabelSelector`` objects."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from .errors import bad_request

Requirement = tuple[str, str, tuple[str, ...]]  # key, operator, values

_KEY = r"[A-Za-z0-9][-A-Za-z0-9_./]*"


def _split_top_level(text: str) -> list[str]:
    parts, depth, current = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def parse_label_selector(text: str | None) -> list[Requirement]:
    """Parse ``a=b,c!=d,e in (f,g),h notin (i),j,!k`` into requirements."""
    if not text:
        return []
    requirements: list[Requirement] = []
    for part in _split_top_level(text):
        m = re.fullmatch(rf"(?P<key>{_KEY})\s+(?P<op>in|notin)\s*\((?P<values>[^)]*)\)", part)
        if m:
            values = tuple(v.strip() for v in m.group("values").split(",") if v.strip())
            requirements.append((m.group("key"), m.group("op"), values))
            continue
        m = re.fullmatch(rf"!\s*(?P<key>{_KEY})", part)
        if m:
            requirements.append((m.group("key"), "!", ()))
            continue
        m = re.fullmatch(rf"(?P<key>{_KEY})\s*(?P<op>==|!=|=|>|<)\s*(?P<value>[^=!<>]*)", part)
        if m:
            op = "=" if m.group("op") == "==" else m.group("op")
            value = m.group("value").strip()
            if op in (">", "<"):
                try:
                    int(value)
                except ValueError:
                    raise bad_request(
                        f"unable to parse requirement: for 'Gt', 'Lt' operators, the value "
                        f"must be an integer: {part}"
                    ) from None
            requirements.append((m.group("key"), op, (value,)))
            continue
        m = re.fullmatch(_KEY, part)
        if m:
            requirements.append((part, "exists", ()))
            continue
        raise bad_request(f"unable to parse requirement: found '{part}', expected: identifier")
    return requirements


def match_requirements(requirements: list[Requirement], labels: Mapping[str, str] | None) -> bool:
    labels = labels or {}
    for key, op, values in requirements:
        present = key in labels
        value = labels.get(key)
        if op == "=":
            ok = present and value == values[0]
        elif op == "!=":
            ok = not present or value != values[0]
        elif op == "in":
            ok = present and value in values
        elif op == "notin":
            ok = not present or value not in values
        elif op == "exists":
            ok = present
        elif op == "!":
            ok = not present
        elif op in (">", "<"):
            try:
                number = int(value or "")
            except ValueError:
                ok = False
            else:
                ok = number > int(values[0]) if op == ">" else number < int(values[0])
        else:  # pragma: no cover - the parser never yields anything else
            ok = False
        if not ok:
            return False
    return True


def label_selector_object_matcher(
    selector: Mapping[str, Any] | None,
) -> Callable[[Mapping[str, str] | None], bool]:
    """A matcher for a ``metav1.LabelSelector`` (matchLabels + matchExpressions).

    ``None`` or ``{}`` matches everything, as in webhook namespace/object selectors.
    """
    if not selector:
        return lambda _labels: True
    requirements: list[Requirement] = [
        (k, "=", (str(v),)) for k, v in (selector.get("matchLabels") or {}).items()
    ]
    operators = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}
    for expr in selector.get("matchExpressions") or []:
        op = operators.get(expr.get("operator", ""))
        if op is None:
            return lambda _labels: False
        requirements.append((expr["key"], op, tuple(expr.get("values") or ())))
    return lambda labels: match_requirements(requirements, labels)


FieldRequirement = tuple[str, str, str]  # field, "=" or "!=", value


def parse_field_selector(text: str | None, supported: frozenset[str]) -> list[FieldRequirement]:
    if not text:
        return []
    result: list[FieldRequirement] = []
    for part in _split_top_level(text):
        m = re.fullmatch(r"(?P<field>[A-Za-z0-9_.\-]+)\s*(?P<op>==|!=|=)\s*(?P<value>.*)", part)
        if not m:
            raise bad_request(f"invalid selector: '{text}'; can't understand '{part}'")
        field = m.group("field")
        if field not in supported:
            raise bad_request(f"field label not supported: {field}")
        op = "!=" if m.group("op") == "!=" else "="
        result.append((field, op, m.group("value").strip()))
    return result


def field_value(obj: Mapping[str, Any], path: str) -> str:
    current: Any = obj
    for part in path.split("."):
        if not isinstance(current, Mapping):
            return ""
        current = current.get(part)
    if current is None:
        return ""
    if isinstance(current, bool):
        return "true" if current else "false"
    return str(current)


def match_fields(requirements: list[FieldRequirement], obj: Mapping[str, Any]) -> bool:
    for field, op, value in requirements:
        actual = field_value(obj, field)
        if (actual == value) != (op == "="):
            return False
    return True
