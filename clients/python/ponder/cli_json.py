"""The one converter behind every `--json`: protobuf messages (and plain values) to JSON, by fixed rules.

docs/json.md documents the result; these rules make it the same for every command:

- numbers are JSON numbers: doubles (credits, probabilities, seconds) as numbers, every
  integer (64-bit ones too, which protobuf's own JSON mapping writes as strings) as an integer;
- enums are their short lowercase names (`SEVERITY_MEDIUM` -> `"medium"`), the unspecified
  value (0) is `null`;
- timestamps are ISO-8601 strings in UTC (`"2026-12-07T01:29:18Z"`), datetimes likewise;
- every field of a message is present (an unset message or optional field is `null`), except
  the members of a oneof, of which only the one that is set appears (a stream event has one of
  `plan`, `delta`, `result`);
- field names are the .proto's (`request_id`, `worst_case_cost`);
- NaN and infinities (never valid JSON) are `null`.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import json
import math
import sys
from typing import IO, Any

from google.protobuf.descriptor import EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

_INTS = {
    FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SINT64, FieldDescriptor.TYPE_FIXED32,
    FieldDescriptor.TYPE_FIXED64, FieldDescriptor.TYPE_SFIXED32, FieldDescriptor.TYPE_SFIXED64,
}


def _snake(name: str) -> str:
    out = "".join(f"_{c}" if c.isupper() and i else c for i, c in enumerate(name))
    return out.upper() + "_"


def enum_name(enum: EnumDescriptor, number: int) -> str | None:
    """`SEVERITY_MEDIUM` of enum Severity -> "medium"; 0 (unspecified) -> None; an unknown number -> its digits."""
    if number == 0:
        return None
    value = enum.values_by_number.get(number)
    if value is None:
        return str(number)
    prefix = _snake(enum.name)
    name = value.name[len(prefix):] if value.name.startswith(prefix) else value.name
    return name.lower()


def timestamp(ts: Timestamp) -> str:
    """A Timestamp as ISO-8601 in UTC, to the second unless it has a fraction."""
    return iso(ts.ToDatetime(tzinfo=datetime.timezone.utc))


def iso(when: datetime.datetime) -> str:
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    text = when.astimezone(datetime.timezone.utc).isoformat(timespec="microseconds" if when.microsecond else "seconds")
    return text.replace("+00:00", "Z")


def _scalar(field: FieldDescriptor, value: Any) -> Any:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return message(value)
    if field.type == FieldDescriptor.TYPE_ENUM:
        return enum_name(field.enum_type, value)
    if field.type in _INTS:
        return int(value)
    if field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return _number(float(value))
    if field.type == FieldDescriptor.TYPE_BYTES:
        return base64.b64encode(value).decode("ascii")
    return value


def _number(x: float) -> float | None:
    return x if math.isfinite(x) else None


def message(m: Message) -> Any:
    """One message as a JSON-ready value (a dict; a Timestamp is its ISO string)."""
    if isinstance(m, Timestamp):
        return timestamp(m)
    out: dict[str, Any] = {}
    for field in m.DESCRIPTOR.fields:
        value = getattr(m, field.name)
        in_oneof = field.containing_oneof is not None and not field.containing_oneof.name.startswith("_")
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            out[field.name] = {str(k): _scalar(value_field, v) for k, v in sorted(value.items())}
        elif field.is_repeated:
            out[field.name] = [_scalar(field, v) for v in value]
        elif field.has_presence and not m.HasField(field.name):
            if not in_oneof:
                out[field.name] = None
        else:
            out[field.name] = _scalar(field, value)
    return out


def to_json(value: Any) -> Any:
    """Any reply a command prints: messages, dicts, lists, dataclasses, datetimes and plain values."""
    if isinstance(value, Message):
        return message(value)
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_json(v) for v in value]
    if isinstance(value, datetime.datetime):
        return iso(value)
    if isinstance(value, datetime.date):
        return value.isoformat()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_json(dataclasses.asdict(value))
    if isinstance(value, float):
        return _number(value)
    if hasattr(value, "item") and callable(value.item):  # a numpy scalar, without importing numpy
        return to_json(value.item())
    if hasattr(value, "tolist") and callable(value.tolist):  # a numpy array
        return to_json(value.tolist())
    if isinstance(value, bool | int | str) or value is None:
        return value
    if hasattr(value, "__fspath__"):
        return str(value)
    raise TypeError(f"no JSON form for {type(value).__name__}")


def dumps(value: Any, indent: int | None = 2) -> str:
    return json.dumps(to_json(value), indent=indent, ensure_ascii=False, allow_nan=False)


def dump(value: Any, out: IO[str] | None = None, indent: int | None = 2) -> None:
    """Print one JSON document (indented; `indent=None`: one line, for a stream of events)."""
    stream = out if out is not None else sys.stdout
    stream.write(dumps(value, indent) + "\n")
