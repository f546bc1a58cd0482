"""JSON merge patch (RFC 7386), JSON patch (RFC 6902) and Kubernetes strategic merge patch."""

from __future__ import annotations

from typing import Any

from .errors import bad_request, unprocessable


def clone(value: Any) -> Any:
    """A fast deep copy of JSON-like data."""
    if isinstance(value, dict):
        return {k: clone(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clone(v) for v in value]
    return value


def json_equal(a: Any, b: Any) -> bool:
    """JSON equality: unlike Python's ``==``, ``true`` is not ``1``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


# --------------------------------------------------------------------------- merge patch


def merge_patch(target: Any, patch: Any) -> Any:
    """Apply an RFC 7386 JSON merge patch; returns a new value (``target`` is not changed)."""
    if not isinstance(patch, dict):
        return clone(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# --------------------------------------------------------------------------- JSON patch


def _parse_pointer(pointer: Any) -> list[str]:
    if not isinstance(pointer, str):
        raise bad_request(f"json patch: path must be a string, got {pointer!r}")
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise bad_request(f'json patch: path must start with "/": {pointer!r}')
    return [p.replace("~1", "/").replace("~0", "~") for p in pointer[1:].split("/")]


def _index(container: list[Any], token: str, pointer: str, *, allow_end: bool) -> int:
    if token == "-" and allow_end:
        return len(container)
    if not token.isdigit() or (token != "0" and token.startswith("0")):
        raise unprocessable(f"invalid array index {token!r} in {pointer}")
    idx = int(token)
    if idx > len(container) or (idx == len(container) and not allow_end):
        raise unprocessable(f"array index {idx} out of bounds in {pointer}")
    return idx


def _walk(doc: Any, tokens: list[str], pointer: str, op: str) -> Any:
    current = doc
    for token in tokens:
        if isinstance(current, dict):
            if token not in current:
                raise unprocessable(
                    f'{op} operation does not apply: doc is missing path: "{pointer}": missing value'
                )
            current = current[token]
        elif isinstance(current, list):
            current = current[_index(current, token, pointer, allow_end=False)]
        else:
            raise unprocessable(
                f'{op} operation does not apply: doc is missing path: "{pointer}": missing value'
            )
    return current


def _get(doc: Any, pointer: str, op: str) -> Any:
    return _walk(doc, _parse_pointer(pointer), pointer, op)


def _remove(doc: Any, pointer: str, op: str) -> Any:
    tokens = _parse_pointer(pointer)
    if not tokens:
        raise unprocessable(f"{op} operation does not apply: cannot remove the root")
    parent = _walk(doc, tokens[:-1], pointer, op)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise unprocessable(
                f'{op} operation does not apply: doc is missing path: "{pointer}": missing value'
            )
        return parent.pop(last)
    if isinstance(parent, list):
        return parent.pop(_index(parent, last, pointer, allow_end=False))
    raise unprocessable(f'{op} operation does not apply: doc is missing path: "{pointer}"')


def _add(doc: Any, pointer: str, value: Any, op: str) -> Any:
    tokens = _parse_pointer(pointer)
    if not tokens:
        return value
    parent = _walk(doc, tokens[:-1], pointer, op)
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, pointer, allow_end=True), value)
    else:
        raise unprocessable(f'{op} operation does not apply: doc is missing path: "{pointer}": missing value')
    return doc


def json_patch(target: Any, operations: Any) -> Any:
    """Apply an RFC 6902 JSON patch; returns a new document."""
    if not isinstance(operations, list):
        raise bad_request("json patch: the body must be a list of operations")
    doc = clone(target)
    for operation in operations:
        if not isinstance(operation, dict) or "op" not in operation:
            raise bad_request(f"json patch: invalid operation {operation!r}")
        op = operation["op"]
        path = operation.get("path")
        if op == "test":
            actual = _get(doc, path, op)
            if not json_equal(actual, operation.get("value")):
                raise unprocessable(f"testing value {path} failed: test failed")
        elif op == "add":
            if "value" not in operation:
                raise bad_request("json patch: add operation requires a value")
            doc = _add(doc, path, clone(operation["value"]), op)
        elif op == "remove":
            _remove(doc, path, op)
        elif op == "replace":
            if "value" not in operation:
                raise bad_request("json patch: replace operation requires a value")
            tokens = _parse_pointer(path)
            if not tokens:
                doc = clone(operation["value"])
                continue
            _remove(doc, path, op)
            doc = _add(doc, path, clone(operation["value"]), op)
        elif op in ("move", "copy"):
            source = operation.get("from")
            value = _get(doc, source, op)
            if op == "move":
                if isinstance(path, str) and path.startswith(str(source) + "/"):
                    raise unprocessable(f"move operation: cannot move {source} into its child")
                _remove(doc, source, op)
            doc = _add(doc, path, clone(value), op)
        else:
            raise bad_request(f"json patch: unknown operation {op!r}")
    return doc


# --------------------------------------------------------------------------- strategic merge

PRIMITIVE_MERGE = "<primitive>"

_MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "volumes": "name",
    "env": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
    "conditions": "type",
    "ownerReferences": "uid",
    "webhooks": "name",
    "topologySpreadConstraints": "topologyKey",
    "resourceClaims": "name",
    "schedulingGates": "name",
}


def list_merge_key(path: tuple[str, ...]) -> str | None:
    """The patchMergeKey of the list at ``path`` (list items are marked ``[]``), if any."""
    last = path[-1]
    if last == "finalizers" and len(path) >= 2 and path[-2] == "metadata":
        return PRIMITIVE_MERGE
    if last == "ports":
        if (
            len(path) >= 3
            and path[-2] == "[]"
            and path[-3]
            in (
                "containers",
                "initContainers",
                "ephemeralContainers",
            )
        ):
            return "containerPort"
        if path == ("spec", "ports"):
            return "port"
        return None
    if last == "secrets" and path == ("secrets",):
        return "name"
    return _MERGE_KEYS.get(last)


def _strip_directives(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: _strip_directives(v)
            for k, v in value.items()
            if not (k.startswith("$") or k.startswith("$setElementOrder/"))
        }
    if isinstance(value, list):
        return [
            _strip_directives(v) for v in value if not (isinstance(v, dict) and v.get("$patch") == "delete")
        ]
    return value


def _merge_list(original: list[Any], patch: list[Any], path: tuple[str, ...]) -> list[Any]:
    key = list_merge_key(path)
    if key is None:
        return _strip_directives(patch)
    if key == PRIMITIVE_MERGE:
        result = list(original)
        for item in patch:
            if not any(json_equal(item, existing) for existing in result):
                result.append(item)
        return result
    if any(isinstance(i, dict) and i.get("$patch") == "replace" for i in patch):
        return _strip_directives(
            [i for i in patch if not (isinstance(i, dict) and i.get("$patch") == "replace")]
        )
    result = [clone(i) for i in original]
    for item in patch:
        if not isinstance(item, dict) or key not in item:
            result.append(_strip_directives(item))
            continue
        positions = [
            n
            for n, existing in enumerate(result)
            if isinstance(existing, dict) and json_equal(existing.get(key), item[key])
        ]
        if item.get("$patch") == "delete":
            result = [r for n, r in enumerate(result) if n not in positions]
        elif positions:
            merged = strategic_merge(result[positions[0]], item, (*path, "[]"))
            result[positions[0]] = merged
        else:
            result.append(_strip_directives(item))
    return result


def strategic_merge(original: Any, patch: Any, path: tuple[str, ...] = ()) -> Any:
    """Apply a strategic merge patch (the subset Kubernetes' built-in kinds need)."""
    if not isinstance(patch, dict):
        return _strip_directives(patch)
    if not isinstance(original, dict):
        original = {}
    directive = patch.get("$patch")
    if directive == "replace":
        return _strip_directives(patch)
    if directive == "delete":
        return None
    result = dict(original)
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys") or key.startswith("$setElementOrder/"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            if isinstance(result.get(field), list) and isinstance(value, list):
                result[field] = [x for x in result[field] if not any(json_equal(x, v) for v in value)]
            continue
        if value is None:
            result.pop(key, None)
            continue
        current = result.get(key)
        if isinstance(value, dict):
            merged = strategic_merge(current, value, (*path, key))
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, list):
            if isinstance(current, list):
                result[key] = _merge_list(current, value, (*path, key))
            else:
                result[key] = _strip_directives(value)
        else:
            result[key] = value
    retain = patch.get("$retainKeys")
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    return result
