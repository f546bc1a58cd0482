"""Structural OpenAPI v3 schemas of CRDs: pruning, defaulting, validation and CEL rules."""

from __future__ import annotations

import base64
import binascii
import datetime
import ipaddress
import logging
import re
import uuid
from collections.abc import Callable
from typing import Any

from .errors import FieldError
from .patches import clone, json_equal

logger = logging.getLogger(__name__)

ROOT_KEYS = ("apiVersion", "kind", "metadata")


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _type_matches(value: Any, expected: str) -> bool:
    if expected == "object":
        return isinstance(value, dict)
    if expected == "array":
        return isinstance(value, list)
    if expected == "string":
        return isinstance(value, str)
    if expected == "boolean":
        return isinstance(value, bool)
    if expected == "integer":
        if isinstance(value, bool):
            return False
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if expected == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return True


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _child(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _item(path: str, index: int) -> str:
    return f"{path}[{index}]"


def _key(path: str, key: str) -> str:
    return f"{path}[{key}]"


# --------------------------------------------------------------------------- pruning & defaults


def prune(value: Any, schema: dict[str, Any], path: str = "", *, root: bool = False) -> list[str]:
    """Drop unknown fields in place; returns the paths of dropped fields."""
    dropped: list[str] = []
    _prune(value, schema, path, dropped, root=root)
    return dropped


def _prune(value: Any, schema: dict[str, Any], path: str, dropped: list[str], *, root: bool) -> None:
    if not isinstance(schema, dict):
        return
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        additional = schema.get("additionalProperties")
        preserve = bool(schema.get("x-kubernetes-preserve-unknown-fields"))
        embedded = bool(schema.get("x-kubernetes-embedded-resource"))
        for key in list(value):
            if (root or embedded) and key in ROOT_KEYS and (key == "metadata" or key not in properties):
                continue  # the API server owns metadata: a CRD schema never prunes it
            child_value = value[key]
            if key in properties:
                sub = properties[key]
                if child_value is None and not sub.get("nullable"):
                    del value[key]  # non-nullable nulls are pruned, then maybe defaulted
                    continue
                _prune(child_value, sub, _child(path, key), dropped, root=False)
            elif isinstance(additional, dict):
                _prune(child_value, additional, _key(path, key), dropped, root=False)
            elif preserve or additional is True:
                continue
            else:
                del value[key]
                dropped.append(_child(path, key))
    elif isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, dict):
            for n, element in enumerate(value):
                _prune(element, items, _item(path, n), dropped, root=False)


def apply_defaults(value: Any, schema: dict[str, Any]) -> None:
    """Fill ``default`` values in place (recursively, also inside defaulted values)."""
    if not isinstance(schema, dict):
        return
    if isinstance(value, dict):
        for key, sub in (schema.get("properties") or {}).items():
            if not isinstance(sub, dict):
                continue
            if "default" in sub and (key not in value or (value[key] is None and not sub.get("nullable"))):
                value[key] = clone(sub["default"])
            if key in value:
                apply_defaults(value[key], sub)
        additional = schema.get("additionalProperties")
        if isinstance(additional, dict):
            for key, element in value.items():
                if key not in (schema.get("properties") or {}):
                    apply_defaults(element, additional)
    elif isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, dict):
            for element in value:
                apply_defaults(element, items)


# --------------------------------------------------------------------------- formats

_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


_PATTERNS: dict[str, re.Pattern[str] | None] = {}


def go_pattern(pattern: str) -> re.Pattern[str] | None:
    """Compile a schema ``pattern`` with Go RE2's meaning where Python's differs.

    ``\\w``, ``\\d``, ``\\s`` are ASCII-only and ``$`` matches only at the very end (Python's
    would also match before a trailing newline). ``None`` if Python cannot compile it.
    """
    if pattern in _PATTERNS:
        return _PATTERNS[pattern]
    out: list[str] = []
    escaped = in_class = False
    for ch in pattern:
        if escaped:
            out.append("Z" if ch == "z" else ch)
            escaped = False
        elif ch == "\\":
            out.append(ch)
            escaped = True
        elif ch == "[" and not in_class:
            in_class = True
            out.append(ch)
        elif ch == "]" and in_class:
            in_class = False
            out.append(ch)
        elif ch == "$" and not in_class:
            out.append("\\Z")
        else:
            out.append(ch)
    try:
        compiled: re.Pattern[str] | None = re.compile("".join(out), re.ASCII)
    except re.error:
        compiled = None
    _PATTERNS[pattern] = compiled
    return compiled


def _check_format(fmt: str, value: Any) -> bool:
    if not isinstance(value, str):
        if fmt == "int32" and isinstance(value, int):
            return -(2**31) <= value < 2**31
        return True
    try:
        if fmt == "date-time":
            return bool(_DATE_TIME.match(value))
        if fmt == "date":
            datetime.date.fromisoformat(value)
        elif fmt == "byte":
            base64.b64decode(value, validate=True)
        elif fmt == "uuid":
            uuid.UUID(value)
        elif fmt == "ipv4":
            ipaddress.IPv4Address(value)
        elif fmt == "ipv6":
            ipaddress.IPv6Address(value)
        elif fmt == "cidr":
            ipaddress.ip_network(value, strict=False)
    except (ValueError, binascii.Error):
        return False
    return True


# --------------------------------------------------------------------------- CEL


class CelRules:
    """Compiles and evaluates ``x-kubernetes-validations`` rules with ``cel-python``.

    Rules that ``celpy`` cannot compile, or that call functions it does not know (Kubernetes'
    own CEL library), are skipped and counted, never failing the request.
    """

    def __init__(self) -> None:
        self.programs: dict[str, Any] = {}
        self.skipped: dict[str, str] = {}  # rule -> why
        self.skip_count = 0
        self.evaluated = 0
        try:
            import celpy
            from celpy import celtypes
        except ImportError:  # pragma: no cover - optional dependency
            self.celpy = None
            self.celtypes = None
        else:
            # celpy logs every evaluation step at DEBUG: far too slow when tests log at DEBUG.
            logging.getLogger("celpy").setLevel(logging.WARNING)
            self.celpy = celpy
            self.celtypes = celtypes
            self.env = celpy.Environment()
            self.functions = self._extra_functions()

    @property
    def available(self) -> bool:
        return self.celpy is not None

    def _extra_functions(self) -> dict[str, Callable[..., Any]]:
        t = self.celtypes
        assert t is not None

        def _list(values: Any) -> Any:
            return t.ListType(list(values))

        return {
            "lowerAscii": lambda s: t.StringType(str(s).lower()),
            "upperAscii": lambda s: t.StringType(str(s).upper()),
            "trim": lambda s: t.StringType(str(s).strip()),
            "join": lambda lst, sep="": t.StringType(str(sep).join(map(str, lst))),
            "split": lambda s, sep: _list(t.StringType(x) for x in str(s).split(str(sep))),
            "replace": lambda s, old, new: t.StringType(str(s).replace(str(old), str(new))),
            "indexOf": lambda s, sub: t.IntType(str(s).find(str(sub))),
            "lastIndexOf": lambda s, sub: t.IntType(str(s).rfind(str(sub))),
            "isSorted": lambda lst: t.BoolType(list(lst) == sorted(lst)),
            "sum": lambda lst: sum(lst[1:], lst[0]) if len(lst) else t.IntType(0),
            "min": lambda lst: min(lst),
            "max": lambda lst: max(lst),
        }

    def program(self, rule: str) -> Any | None:
        if rule in self.programs:
            return self.programs[rule]
        if self.celpy is None:
            self.programs[rule] = None
            self.skipped[rule] = "cel-python is not installed"
            return None
        try:
            ast = self.env.compile(rule)
            prog = self.env.program(ast, functions=self.functions)
        except Exception as e:
            self.programs[rule] = None
            self.skipped[rule] = f"compile: {e}".splitlines()[0]
            logger.info("CEL rule skipped (cannot compile): %r", rule)
            return None
        self.programs[rule] = prog
        return prog

    def to_cel(self, value: Any) -> Any:
        assert self.celpy is not None
        return self.celpy.json_to_cel(value)

    def evaluate(
        self, rule: str, self_value: Any, old_value: Any = None, *, transition: bool = False
    ) -> tuple[str, str]:
        """Returns ``("ok"|"fail"|"error"|"skip", detail)``."""
        prog = self.program(rule)
        if prog is None:
            self.skip_count += 1
            return "skip", self.skipped.get(rule, "")
        activation = {"self": self.to_cel(self_value)}
        if transition:
            activation["oldSelf"] = self.to_cel(old_value)
        try:
            result = prog.evaluate(activation)
        except Exception as e:
            result = e
        self.evaluated += 1
        if isinstance(result, Exception):
            text = str(result.args[0] if result.args else result)
            if "undeclared reference" in text or "no such overload" in text or "not supported" in text:
                self.skip_count += 1
                self.skipped.setdefault(rule, f"evaluate: {text[:120]}")
                return "skip", text
            m = re.search(r"no such member in mapping: '([^']*)'", text)
            if m:
                return "error", f"no such key: {m.group(1)}"
            return "error", text.splitlines()[0][:200]
        if self.celtypes is not None and isinstance(result, self.celtypes.BoolType):
            return ("ok", "") if bool(result) else ("fail", "")
        if isinstance(result, bool):
            return ("ok", "") if result else ("fail", "")
        return "error", f"rule did not evaluate to a bool: {result!r}"

    def message(self, expression: str, self_value: Any) -> str | None:
        prog = self.program(expression)
        if prog is None:
            return None
        try:
            result = prog.evaluate({"self": self.to_cel(self_value)})
        except Exception:
            return None
        return str(result) if not isinstance(result, Exception) else None


_TRANSITION = re.compile(r"\boldSelf\b")

_REASONS = {
    "FieldValueForbidden": FieldError.forbidden,
    "FieldValueRequired": lambda path, msg: FieldError.required(path, msg),
}


# --------------------------------------------------------------------------- validation


class Validator:
    def __init__(self, cel: CelRules) -> None:
        self.cel = cel

    def validate(
        self, value: Any, schema: dict[str, Any], old: Any = None, *, has_old: bool = False
    ) -> list[FieldError]:
        errors: list[FieldError] = []
        self._validate(value, schema, "", errors, old, has_old, root=True)
        return errors

    def _validate(
        self,
        value: Any,
        schema: dict[str, Any],
        path: str,
        errors: list[FieldError],
        old: Any,
        has_old: bool,
        *,
        root: bool = False,
    ) -> None:
        if not isinstance(schema, dict):
            return
        where = path or "<root>"
        if value is None:
            if schema.get("nullable"):
                return
            expected = schema.get("type")
            if expected:
                errors.append(
                    FieldError.type_invalid(path, None, f'{where} in body must be of type {expected}: "null"')
                )
            return
        if schema.get("x-kubernetes-int-or-string"):
            if not (isinstance(value, (int, str)) and not isinstance(value, bool)):
                errors.append(
                    FieldError.type_invalid(
                        path,
                        value,
                        f'{where} in body must be of type integer or string: "{json_type(value)}"',
                    )
                )
                return
        else:
            expected = schema.get("type")
            if expected and not _type_matches(value, expected):
                errors.append(
                    FieldError.type_invalid(
                        path,
                        value,
                        f'{where} in body must be of type {expected}: "{json_type(value)}"',
                    )
                )
                return

        fmt = schema.get("format")
        if fmt and not _check_format(fmt, value):
            errors.append(
                FieldError.invalid(path, value, f'{where} in body must be of type {fmt}: "{value}"')
            )

        if "enum" in schema and not any(json_equal(value, e) for e in schema["enum"]):
            errors.append(FieldError.not_supported(path, value, list(schema["enum"])))

        if isinstance(value, str):
            self._validate_string(value, schema, path, where, errors)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            self._validate_number(value, schema, path, where, errors)
        elif isinstance(value, list):
            self._validate_array(value, schema, path, where, errors, old, has_old)
        elif isinstance(value, dict):
            self._validate_object(value, schema, path, where, errors, old, has_old, root=root)

        self._validate_combinators(value, schema, path, where, errors, old, has_old)
        self._validate_rules(value, schema, path, errors, old, has_old)

    def _validate_string(
        self, value: str, schema: dict[str, Any], path: str, where: str, errors: list[FieldError]
    ) -> None:
        if "minLength" in schema and len(value) < schema["minLength"]:
            errors.append(
                FieldError.invalid(
                    path, value, f"{where} in body should be at least {schema['minLength']} chars long"
                )
            )
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append(FieldError.too_long(path, schema["maxLength"]))
        if "pattern" in schema:
            compiled = go_pattern(schema["pattern"])
            matched = compiled is None or compiled.search(value) is not None
            if not matched:
                errors.append(
                    FieldError.invalid(path, value, f"{where} in body should match '{schema['pattern']}'")
                )

    def _validate_number(
        self, value: float, schema: dict[str, Any], path: str, where: str, errors: list[FieldError]
    ) -> None:
        if "minimum" in schema:
            minimum = schema["minimum"]
            if schema.get("exclusiveMinimum") is True:
                if not value > minimum:
                    errors.append(
                        FieldError.invalid(
                            path, value, f"{where} in body should be greater than {_number(minimum)}"
                        )
                    )
            elif value < minimum:
                errors.append(
                    FieldError.invalid(
                        path,
                        value,
                        f"{where} in body should be greater than or equal to {_number(minimum)}",
                    )
                )
        if "maximum" in schema:
            maximum = schema["maximum"]
            if schema.get("exclusiveMaximum") is True:
                if not value < maximum:
                    errors.append(
                        FieldError.invalid(
                            path, value, f"{where} in body should be less than {_number(maximum)}"
                        )
                    )
            elif value > maximum:
                errors.append(
                    FieldError.invalid(
                        path,
                        value,
                        f"{where} in body should be less than or equal to {_number(maximum)}",
                    )
                )
        multiple = schema.get("multipleOf")
        if multiple and (value / multiple) != int(value / multiple):
            errors.append(
                FieldError.invalid(
                    path, value, f"{where} in body should be a multiple of {_number(multiple)}"
                )
            )

    def _validate_array(
        self,
        value: list[Any],
        schema: dict[str, Any],
        path: str,
        where: str,
        errors: list[FieldError],
        old: Any,
        has_old: bool,
    ) -> None:
        if "minItems" in schema and len(value) < schema["minItems"]:
            errors.append(
                FieldError.invalid(
                    path, value, f"{where} in body should have at least {schema['minItems']} items"
                )
            )
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append(FieldError.too_many(path, len(value), schema["maxItems"]))
        list_type = schema.get("x-kubernetes-list-type")
        if schema.get("uniqueItems") or list_type == "set":
            for n, element in enumerate(value):
                if any(json_equal(element, earlier) for earlier in value[:n]):
                    if list_type == "set":
                        errors.append(FieldError.duplicate(_item(path, n), element))
                    else:
                        errors.append(
                            FieldError.invalid(path, value, f"{where} in body shouldn't contain duplicates")
                        )
                        break
        keys = schema.get("x-kubernetes-list-map-keys") or []
        old_by_key: dict[str, Any] = {}
        if list_type == "map" and keys:
            seen: set[str] = set()
            for n, element in enumerate(value):
                if isinstance(element, dict):
                    ident = repr([element.get(k) for k in keys])
                    if ident in seen:
                        errors.append(FieldError.duplicate(_item(path, n), {k: element.get(k) for k in keys}))
                    seen.add(ident)
            if has_old and isinstance(old, list):
                for element in old:
                    if isinstance(element, dict):
                        old_by_key[repr([element.get(k) for k in keys])] = element
        items = schema.get("items")
        if isinstance(items, dict):
            for n, element in enumerate(value):
                element_old, element_has_old = None, False
                if old_by_key and isinstance(element, dict):
                    ident = repr([element.get(k) for k in keys])
                    if ident in old_by_key:
                        element_old, element_has_old = old_by_key[ident], True
                self._validate(element, items, _item(path, n), errors, element_old, element_has_old)

    def _validate_object(
        self,
        value: dict[str, Any],
        schema: dict[str, Any],
        path: str,
        where: str,
        errors: list[FieldError],
        old: Any,
        has_old: bool,
        *,
        root: bool,
    ) -> None:
        for name in schema.get("required") or []:
            if name not in value:
                errors.append(FieldError.required(_child(path, name), ""))
        count = len([k for k in value if not (root and k in ROOT_KEYS)])
        if "minProperties" in schema and count < schema["minProperties"]:
            errors.append(
                FieldError.invalid(
                    path, value, f"{where} in body should have at least {schema['minProperties']} properties"
                )
            )
        if "maxProperties" in schema and count > schema["maxProperties"]:
            errors.append(FieldError.too_many(path, count, schema["maxProperties"]))
        properties = schema.get("properties") or {}
        additional = schema.get("additionalProperties")
        old_map = old if (has_old and isinstance(old, dict)) else None
        for key, element in value.items():
            if root and key in ROOT_KEYS and (key == "metadata" or key not in properties):
                continue
            sub = properties.get(key)
            child_path = _child(path, key)
            if sub is None and isinstance(additional, dict):
                sub = additional
                child_path = _key(path, key)
            if sub is None:
                continue
            element_has_old = old_map is not None and key in old_map
            self._validate(
                element,
                sub,
                child_path,
                errors,
                old_map.get(key) if old_map is not None else None,
                element_has_old,
            )

    def _validate_combinators(
        self,
        value: Any,
        schema: dict[str, Any],
        path: str,
        where: str,
        errors: list[FieldError],
        old: Any,
        has_old: bool,
    ) -> None:
        for sub in schema.get("allOf") or []:
            self._validate(value, sub, path, errors, old, has_old)
        any_of = schema.get("anyOf")
        if any_of and not any(not self._errors_for(value, sub, path) for sub in any_of):
            errors.append(
                FieldError.invalid(path, value, f"{where} in body must validate at least one schema (anyOf)")
            )
        one_of = schema.get("oneOf")
        if one_of:
            passing = sum(1 for sub in one_of if not self._errors_for(value, sub, path))
            if passing != 1:
                errors.append(
                    FieldError.invalid(
                        path, value, f"{where} in body must validate one and only one schema (oneOf)"
                    )
                )
        not_schema = schema.get("not")
        if isinstance(not_schema, dict) and not self._errors_for(value, not_schema, path):
            errors.append(
                FieldError.invalid(path, value, f"{where} in body must not validate the schema (not)")
            )

    def _errors_for(self, value: Any, schema: dict[str, Any], path: str) -> list[FieldError]:
        found: list[FieldError] = []
        self._validate(value, schema, path, found, None, False)
        return found

    def _validate_rules(
        self,
        value: Any,
        schema: dict[str, Any],
        path: str,
        errors: list[FieldError],
        old: Any,
        has_old: bool,
    ) -> None:
        for rule_spec in schema.get("x-kubernetes-validations") or []:
            rule = rule_spec.get("rule")
            if not rule:
                continue
            transition = bool(_TRANSITION.search(rule))
            if transition and not has_old:
                continue  # transition rules only run on updates with an old value
            outcome, detail = self.cel.evaluate(rule, value, old, transition=transition)
            if outcome in ("ok", "skip"):
                continue
            error_path = path
            field_path = rule_spec.get("fieldPath")
            if field_path:
                error_path = (
                    (path + field_path) if field_path.startswith((".", "[")) else _child(path, field_path)
                )
            if outcome == "error":
                errors.append(FieldError.invalid(error_path, json_type(value), detail))
                continue
            message = None
            if rule_spec.get("messageExpression"):
                message = self.cel.message(rule_spec["messageExpression"], value)
            if not message:
                message = rule_spec.get("message") or f"failed rule: {rule}"
            reason = rule_spec.get("reason")
            if reason in _REASONS:
                errors.append(_REASONS[reason](error_path, message))
            elif reason == "FieldValueDuplicate":
                err = FieldError.invalid(error_path, json_type(value), message)
                err.kind = "Duplicate value"
                errors.append(err)
            else:
                errors.append(FieldError.invalid(error_path, json_type(value), message))
