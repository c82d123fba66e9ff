"""Dataclasses that are JSON objects: `Schema.to_json()` writes one, `Schema.from_json()`
reads one back against the type hints, refusing a key the class lacks, a missing one and a
value of another type, naming where. manifest.py describes the built-model format with them;
manifest_ts.py turns the same classes into TypeScript.

Field conventions (set with `optional()`, `extra()`, `renamed()`), which the TypeScript
generator reads too:
  - `optional`: left out of the JSON when None (TypeScript `name?: T`);
  - `extra`: a dict of further keys written inline after the named ones (TypeScript
    `[key: string]: unknown`), e.g. a scheduler config's own fields;
  - `renamed`: written under another key (`class` is a Python keyword).
Dictionary keys keep their insertion order, so the JSON's key order is the fields' order.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import field
from typing import Any, Literal, TypeVar, Union

from ..errors import WebkilnError


class ManifestError(WebkilnError, ValueError):
    """A manifest or index file that does not have the schema's shape; names the key."""


def optional(**kwargs: Any) -> Any:
    """A field left out of the JSON when None."""
    return field(default=None, metadata={"optional": True}, **kwargs)


def extra() -> Any:
    """Further keys, written inline after the named fields."""
    return field(default_factory=dict, metadata={"extra": True})


def renamed(key: str) -> Any:
    return field(metadata={"json": key})


def json_key(f: dataclasses.Field) -> str:
    return f.metadata.get("json", f.name)


def field_types(cls: type) -> dict[str, Any]:
    """Resolved type hints of a dataclass (this module uses postponed annotations)."""
    return typing.get_type_hints(cls)


# --- reading and writing ---------------------------------------------------------------------

S = TypeVar("S", bound="Schema")


def _to_json(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(value):
            item = getattr(value, f.name)
            if f.metadata.get("extra"):
                out.update({k: _to_json(v) for k, v in item.items()})
            elif not (f.metadata.get("optional") and item is None):
                out[json_key(f)] = _to_json(item)
        return out
    if isinstance(value, (list, tuple)):
        return [_to_json(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_json(v) for k, v in value.items()}
    return value


def _from_json(tp: Any, value: Any, where: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _from_json(arg, value, where)
            except ManifestError:
                continue
        raise ManifestError(f"{where}: {value!r} is none of {tp}")
    if origin is Literal:
        if value not in args:
            raise ManifestError(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ManifestError(f"{where}: expected an object, got {value!r}")
        hints, fields = field_types(tp), dataclasses.fields(tp)
        by_key = {json_key(f): f for f in fields if not f.metadata.get("extra")}
        spill = next((f for f in fields if f.metadata.get("extra")), None)
        kwargs: dict[str, Any] = {}
        for key, f in by_key.items():
            if key in value:
                kwargs[f.name] = _from_json(hints[f.name], value[key], f"{where}.{key}")
            elif not f.metadata.get("optional"):
                raise ManifestError(f"{where}: missing key '{key}'")
        unknown = {k: v for k, v in value.items() if k not in by_key}
        if unknown and spill is None:
            raise ManifestError(f"{where}: key(s) {', '.join(map(repr, unknown))} are not in the schema")
        if spill is not None:
            kwargs[spill.name] = unknown
        return tp(**kwargs)
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise ManifestError(f"{where}: expected a list, got {value!r}")
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                raise ManifestError(f"{where}: expected {len(args)} items, got {len(value)}")
            return tuple(_from_json(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        items = [_from_json(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ManifestError(f"{where}: expected an object, got {value!r}")
        return {k: _from_json(args[1], v, f"{where}.{k}") for k, v in value.items()}
    # JSON has one number type: an int is a valid float, a bool is not a number.
    accepted = {float: (int, float), int: (int,), str: (str,), bool: (bool,), type(None): (type(None),)}[tp]
    if not isinstance(value, accepted) or (tp is not bool and isinstance(value, bool)):
        raise ManifestError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value


class Schema:
    """A part of the format: `to_json()` gives its JSON object, `from_json()` reads one."""

    def to_json(self) -> dict[str, Any]:
        return _to_json(self)

    @classmethod
    def from_json(cls: type[S], data: Any, where: str | None = None) -> S:
        return _from_json(cls, data, where or cls.__name__)
