"""Request bodies in the Kubernetes protobuf encoding, decoded to the JSON form of the object.

client-go's typed clients (``kubectl create namespace|secret|serviceaccount|deployment|role``,
``kubectl run``, helm's release Secrets and their DeleteOptions) send built-in kinds as
``application/vnd.kubernetes.protobuf``: the magic ``k8s\\x00`` then a ``runtime.Unknown``
message (1: TypeMeta {1: apiVersion, 2: kind}, 2: raw, 3: contentEncoding, 4: contentType)
whose ``raw`` is the object's own message. The field tables are in ``protobuf_fields``.

The JSON produced is what the API server's Go types would marshal: zero values of non-pointer
``omitempty`` fields are left out, pointer fields are kept even when zero, a zero
``metav1.Time`` is left out. Unknown field numbers are skipped (a newer client may send
fields this table does not know). A kind with no table is refused with 415 naming it, so a
test fails loudly instead of storing half an object.
"""

from __future__ import annotations

import base64
import datetime
import functools
import json
import struct
from collections.abc import Iterator
from typing import Any, NamedTuple

from .errors import ApiError, bad_request
from .protobuf_fields import ANY_VERSION, MESSAGES, ROOTS

MAGIC = b"k8s\x00"
CONTENT_TYPE = "application/vnd.kubernetes.protobuf"

VARINT, FIXED64, LENGTH, FIXED32 = 0, 1, 2, 5


class Field(NamedTuple):
    name: str
    kind: str
    repeated: bool
    pointer: bool
    omitempty: bool
    inline: bool


@functools.cache
def _table(message: str) -> dict[int, Field]:
    fields: dict[int, Field] = {}
    for entry in MESSAGES[message].split("; "):
        parts = entry.split(" ")
        flags = parts[3] if len(parts) > 3 else ""
        fields[int(parts[0])] = Field(
            parts[1], parts[2], "r" in flags, "p" in flags, "o" in flags, "i" in flags
        )
    return fields


class ProtobufError(ValueError):
    pass


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ProtobufError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ProtobufError("varint too long")


def _fields(data: bytes) -> Iterator[tuple[int, int, Any]]:
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == VARINT:
            value, pos = _varint(data, pos)
        elif wire == LENGTH:
            size, pos = _varint(data, pos)
            if pos + size > len(data):
                raise ProtobufError(f"field {number}: length {size} past the end")
            value, pos = data[pos : pos + size], pos + size
        elif wire == FIXED64:
            value, pos = data[pos : pos + 8], pos + 8
        elif wire == FIXED32:
            value, pos = data[pos : pos + 4], pos + 4
        else:
            raise ProtobufError(f"field {number}: unsupported wire type {wire}")
        yield number, wire, value


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _time(data: bytes, *, micro: bool) -> str | None:
    seconds = nanos = 0
    for number, _wire, value in _fields(data):
        if number == 1:
            seconds = _signed(value)
        elif number == 2:
            nanos = _signed(value)
    if seconds == 0 and nanos == 0:
        return None
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    if micro:
        return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{nanos // 1000:06d}Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _duration(nanoseconds: int) -> str:
    if nanoseconds == 0:
        return "0s"
    sign = "-" if nanoseconds < 0 else ""
    rest = abs(nanoseconds)
    hours, rest = divmod(rest, 3600 * 10**9)
    minutes, rest = divmod(rest, 60 * 10**9)
    seconds = rest / 10**9
    text = (f"{hours}h" if hours else "") + (f"{minutes}m" if hours or minutes else "")
    return f"{sign}{text}{seconds:g}s"


def _one_field(data: bytes, number: int) -> Any:
    for n, _wire, value in _fields(data):
        if n == number:
            return value
    return None


def _scalar(kind: str, wire: int, value: Any) -> Any:
    if kind == "s":
        return bytes(value).decode("utf-8")
    if kind == "b":
        return base64.b64encode(bytes(value)).decode("ascii")
    if kind == "i":
        return _signed(value)
    if kind == "bool":
        return bool(value)
    if kind == "f64":
        return struct.unpack("<d", value)[0] if wire == FIXED64 else float(value)
    if kind in ("time", "microtime"):
        return _time(value, micro=kind == "microtime")
    if kind == "quantity":
        return (_one_field(value, 1) or b"").decode()
    if kind == "intstr":
        kind_flag, int_val, str_val = 0, 0, ""
        for n, _w, v in _fields(value):
            if n == 1:
                kind_flag = v
            elif n == 2:
                int_val = _signed(v)
            elif n == 3:
                str_val = bytes(v).decode()
        return str_val if kind_flag == 1 else int_val
    if kind in ("raw", "fieldsv1"):
        raw = _one_field(value, 1)
        return json.loads(raw) if raw else None
    if kind == "duration":
        return _duration(_signed(_one_field(value, 1) or 0))
    if kind.startswith("m:"):
        return decode_message(kind[2:], value)
    raise ProtobufError(f"unknown field kind {kind!r}")


def _zero(value: Any) -> bool:
    return value is None or (value in ("", 0, False) and not isinstance(value, dict))


def decode_message(message: str, data: bytes) -> dict[str, Any]:
    table = _table(message)
    out: dict[str, Any] = {}
    for number, wire, value in _fields(data):
        field = table.get(number)
        if field is None:
            continue
        kind = field.kind
        if kind.startswith("map:"):
            _, key_kind, value_kind = kind.split(":", 2)
            entry_key: Any = ""
            entry_value: Any = None
            for n, w, v in _fields(value):
                if n == 1:
                    entry_key = _scalar(key_kind, w, v)
                elif n == 2:
                    entry_value = _scalar(value_kind, w, v)
            if entry_value is None:
                entry_value = {} if value_kind.startswith("m:") else ""
            out.setdefault(field.name, {})[entry_key] = entry_value
            continue
        if field.repeated and wire == LENGTH and kind in ("i", "bool"):
            pos, packed = 0, []
            while pos < len(value):
                item, pos = _varint(value, pos)
                packed.append(_scalar(kind, VARINT, item))
            out.setdefault(field.name, []).extend(packed)
            continue
        decoded = _scalar(kind, wire, value)
        if field.inline:
            out.update(decoded)
        elif field.repeated:
            out.setdefault(field.name, []).append(decoded)
        elif decoded is None or (_zero(decoded) and field.omitempty and not field.pointer):
            out.pop(field.name, None)
        else:
            out[field.name] = decoded
    return out


def decode(raw: bytes) -> dict[str, Any]:
    """The object of a protobuf request body, as JSON would carry it (apiVersion and kind set)."""
    if not raw.startswith(MAGIC):
        raise bad_request("protobuf body without the k8s\\x00 prefix")
    try:
        envelope = dict((n, v) for n, _w, v in _fields(raw[len(MAGIC) :]))
        type_meta = envelope.get(1) or b""
        api_version = (_one_field(type_meta, 1) or b"").decode()
        kind = (_one_field(type_meta, 2) or b"").decode()
        encoding = (envelope.get(3) or b"").decode()
        if encoding:
            raise bad_request(f"protobuf body with contentEncoding {encoding!r} is not supported")
        message = ROOTS.get((api_version, kind)) or ANY_VERSION.get(kind)
        if message is None:
            raise unsupported_kind(api_version, kind)
        obj = decode_message(message, envelope.get(2) or b"")
    except ProtobufError as e:
        raise bad_request(f"protobuf body could not be decoded: {e}") from None
    obj["apiVersion"] = api_version
    obj["kind"] = kind
    return obj


def unsupported_kind(api_version: str, kind: str) -> ApiError:
    return ApiError(
        415,
        "UnsupportedMediaType",
        f"the emulator cannot decode {kind or '<no kind>'} ({api_version or '<no apiVersion>'}) from "
        f"{CONTENT_TYPE}; send it as application/json",
        {},
    )


def accepts_json(accept: str) -> bool:
    """Whether an Accept header allows a JSON answer (no header: yes)."""
    kinds = [part.split(";")[0].strip().lower() for part in accept.split(",") if part.strip()]
    return not kinds or any(
        k in ("application/json", "*/*", "application/*", "application/yaml", "application/json-seq")
        or k.endswith("+json")
        for k in kinds
    )
