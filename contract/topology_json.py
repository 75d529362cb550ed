"""The JSON form of a topology: how the infrastructure hands the serving container the topology it was built from.

Parsing checks every field's type and names the bad one (``topology.regions[1].peak_hours must be ...``); the
topology's own consistency checks run when the :class:`~contract.topology.Topology` is constructed from the result.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import MISSING, fields
from typing import Any, TypeVar

from contract.regions import Jurisdiction, Region, TopologyError


def entries_as_dicts(entries: tuple[Region, ...] | tuple[Jurisdiction, ...]) -> list[dict[str, Any]]:
    """Regions or jurisdictions as JSON objects (tuples become lists)."""
    return [_as_dict(entry) for entry in entries]


def parse(data: object) -> tuple[tuple[Region, ...], tuple[Jurisdiction, ...], str]:
    """(regions, jurisdictions, default region) of a topology's JSON form, each field's type checked."""
    if not isinstance(data, Mapping):
        raise TopologyError(f"a topology must be an object with {', '.join(_TOPOLOGY_KEYS)}; got {_kind(data)}")
    _check_keys("topology", data, _TOPOLOGY_KEYS, _TOPOLOGY_KEYS)
    default_region = data["default_region"]
    if not isinstance(default_region, str):
        raise TopologyError(f"topology.default_region must be a region key (string); got {_kind(default_region)}")
    regions = tuple(_entry(Region, f"regions[{i}]", item) for i, item in enumerate(_list("regions", data)))
    jurisdictions = tuple(
        _entry(Jurisdiction, f"jurisdictions[{i}]", item) for i, item in enumerate(_list("jurisdictions", data))
    )
    return regions, jurisdictions, default_region


_TOPOLOGY_KEYS = ("regions", "jurisdictions", "default_region")


def _as_dict(entry: Region | Jurisdiction) -> dict[str, Any]:
    return {f.name: list(v) if isinstance(v := getattr(entry, f.name), tuple) else v for f in fields(entry)}


def _kind(value: object) -> str:
    return f"{type(value).__name__} {json.dumps(value, default=str)[:60]}"


def _check_keys(where: str, data: Mapping[str, Any], allowed: tuple[str, ...], required: tuple[str, ...]) -> None:
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise TopologyError(f"{where} has unknown keys {unknown}; known: {', '.join(allowed)}")
    missing = [k for k in required if k not in data]
    if missing:
        raise TopologyError(f"{where} is missing {', '.join(missing)}")


def _list(key: str, data: Mapping[str, Any]) -> list[Any]:
    value = data[key]
    if not isinstance(value, list):
        raise TopologyError(f"topology.{key} must be a list of objects; got {_kind(value)}")
    return value


_Entry = TypeVar("_Entry", Region, Jurisdiction)


def _entry(cls: type[_Entry], where: str, item: object) -> _Entry:
    """One region or jurisdiction from JSON: strings stay strings, lists become tuples, nothing else is accepted."""
    if not isinstance(item, Mapping):
        raise TopologyError(f"topology.{where} must be an object; got {_kind(item)}")
    specs = fields(cls)
    _check_keys(
        f"topology.{where}",
        item,
        tuple(f.name for f in specs),
        tuple(f.name for f in specs if f.default is MISSING and f.default_factory is MISSING),
    )
    values: dict[str, Any] = {}
    for name, value in item.items():
        expected = _FIELD_KINDS[name]
        if expected == "bool":
            ok = isinstance(value, bool)
        elif expected == "str":
            ok = isinstance(value, str)
        elif expected == "hours":
            ok = isinstance(value, list) and len(value) == 2 and all(type(v) is int for v in value)
        else:
            ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        if not ok:
            raise TopologyError(f"topology.{where}.{name} must be {_KIND_NAMES[expected]}; got {_kind(value)}")
        values[name] = tuple(value) if isinstance(value, list) else value
    return cls(**values)


_FIELD_KINDS = {
    "key": "str", "aws_region": "str", "jurisdiction": "str", "timezone": "str", "code": "str", "name": "str",
    "is_strict_residency": "bool", "peak_hours": "hours", "continents": "strs", "cloudflare_regions": "strs",
    "failover": "strs", "countries": "strs", "outlying_countries": "strs",
}  # fmt: skip
_KIND_NAMES = {
    "str": "a string",
    "bool": "true or false",
    "hours": "two whole hours [start, end]",
    "strs": "a list of strings",
}
