"""What changes between two offline plans: resources added, removed and changed, down to each property.

A plan is the JSON form `python -m infra.plan <stack> --json` prints (`{"stack", "resources": [{"type", "name",
"parent", "inputs"}], "outputs"}`), so one side may come from another checkout of the repository (`infra.plan_ref`).
A resource is identified by its type and logical name, as Pulumi identifies it; a changed parent is reported as a
change of `(parent)`, because it replaces the resource unless an alias says otherwise.

Comparing two stacks (`--diff us-west eu-west`), every name and value of the first is read with its stack key and AWS
region renamed to the second's, so that `speech-us-west-key` and `speech-eu-west-key` are the same resource and
only what really differs between the regions is reported (a value equal before renaming is never a difference).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# Keys that identify an element of a list of objects better than its position (policy statements, rules, routes).
_ELEMENT_KEYS = ("Sid", "id", "name")
MISSING = "(absent)"


@dataclass(frozen=True)
class PropertyChange:
    path: str  # e.g. "scalingConfig.maxSize", "policy.Statement[Sid=DenyOutsideEu].Effect"
    before: Any
    after: Any


@dataclass(frozen=True)
class ResourceChange:
    type: str
    name: str  # the name on the head side
    changes: tuple[PropertyChange, ...]


@dataclass(frozen=True)
class Resource:
    type: str
    name: str
    inputs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PlanDiff:
    """``head`` against ``base``: what `pulumi up` of ``head`` would do to a stack deployed as ``base``."""

    base: str  # what the base is, e.g. "origin/main:eu-west" or "us-west"
    head: str
    added: tuple[Resource, ...]
    removed: tuple[Resource, ...]
    changed: tuple[ResourceChange, ...]
    unchanged: int
    outputs: tuple[PropertyChange, ...]  # stack outputs added, removed or changed

    @property
    def is_empty(self) -> bool:
        return not (self.added or self.removed or self.changed or self.outputs)

    def as_json(self) -> dict[str, Any]:
        def change(c: PropertyChange) -> dict[str, Any]:
            return {"path": c.path, "before": c.before, "after": c.after}

        return {
            "base": self.base,
            "head": self.head,
            "added": [{"type": r.type, "name": r.name, "inputs": r.inputs} for r in self.added],
            "removed": [{"type": r.type, "name": r.name} for r in self.removed],
            "changed": [
                {"type": r.type, "name": r.name, "properties": [change(c) for c in r.changes]} for r in self.changed
            ],
            "unchanged": self.unchanged,
            "outputs": [change(c) for c in self.outputs],
        }


def flatten(value: Any, path: str = "") -> dict[str, Any]:
    """Leaf values by path. JSON documents held in strings (IAM policies) are opened, so a reviewer sees which
    statement changed; list elements that carry a `Sid`, `id` or `name` are addressed by it, not by position."""
    if isinstance(value, str) and value[:1] in "[{":
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return {path: value}
    if isinstance(value, dict) and value:
        leaves: dict[str, Any] = {}
        for key, item in value.items():
            leaves.update(flatten(item, f"{path}.{key}" if path else str(key)))
        return leaves
    if isinstance(value, list) and value:
        leaves = {}
        for index, item in enumerate(value):
            leaves.update(flatten(item, f"{path}[{_element_label(value, index)}]"))
        return leaves
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # the engine's numbers are floats; a size of 8 reads better than 8.0
    return {path: value}


def _element_label(items: list[Any], index: int) -> str:
    for key in _ELEMENT_KEYS:
        labels = [item.get(key) if isinstance(item, dict) else None for item in items]
        if all(isinstance(label, str) for label in labels) and len(set(labels)) == len(labels):
            return f"{key}={labels[index]}"
    return str(index)


def renamer(renames: Mapping[str, str]):
    """A function that applies ``renames`` (old -> new) to every string in a value, longest names first."""
    ordered = sorted(renames.items(), key=lambda item: -len(item[0]))

    def rename(value: Any) -> Any:
        if isinstance(value, str):
            for old, new in ordered:
                value = value.replace(old, new)
            return value
        if isinstance(value, dict):
            return {rename(k): rename(v) for k, v in value.items()}
        if isinstance(value, list):
            return [rename(v) for v in value]
        return value

    return rename


def _changes(before: Mapping[str, Any], after: Mapping[str, Any], rename) -> tuple[PropertyChange, ...]:
    old, new = flatten(dict(before)), flatten(dict(after))
    renamed = {rename(path): path for path in old}
    old_values = {path: old[original] for path, original in renamed.items()}
    changes = []
    for path in sorted(set(renamed) & set(new)):
        value = old_values[path]
        if value != new[path] and rename(value) != new[path]:
            changes.append(PropertyChange(path, value, new[path]))
    for root, leaves in _subtrees(set(new) - set(renamed), set(renamed)).items():
        changes.append(PropertyChange(root, MISSING, _value(root, leaves, new)))
    for root, leaves in _subtrees(set(renamed) - set(new), set(new)).items():
        changes.append(PropertyChange(root, _value(root, leaves, old_values), MISSING))
    return tuple(sorted(changes, key=lambda c: c.path))


def _subtrees(only_here: set[str], there: set[str]) -> dict[str, list[str]]:
    """Leaf paths present on one side only, grouped under the shortest path the other side lacks entirely, so an
    added policy statement is one change, not one per field."""
    groups: dict[str, list[str]] = {}
    for path in sorted(only_here):
        root = next((p for p in _prefixes(path) if not any(_within(q, p) for q in there)), path)
        groups.setdefault(root, []).append(path)
    return groups


def _prefixes(path: str) -> list[str]:
    return [path[:i] for i, ch in enumerate(path) if ch in ".[" and i > 0] + [path]


def _within(path: str, prefix: str) -> bool:
    return path == prefix or (path.startswith(prefix) and path[len(prefix)] in ".[")


def _value(root: str, leaves: list[str], values: Mapping[str, Any]) -> Any:
    if leaves == [root]:
        return values[root]
    return {leaf[len(root) :].lstrip("."): values[leaf] for leaf in leaves}


def diff_plans(
    base: Mapping[str, Any],
    head: Mapping[str, Any],
    *,
    base_label: str,
    head_label: str,
    renames: Mapping[str, str] | None = None,
) -> PlanDiff:
    """What differs from plan ``base`` to plan ``head`` (both in `--json` form); ``renames`` apply to ``base``."""
    rename = renamer(renames or {})
    old = {(r["type"], rename(r["name"])): r for r in base.get("resources", [])}
    new = {(r["type"], r["name"]): r for r in head.get("resources", [])}
    added = tuple(Resource(t, n, new[t, n].get("inputs") or {}) for t, n in new if (t, n) not in old)
    removed = tuple(Resource(t, old[t, n]["name"]) for t, n in old if (t, n) not in new)
    changed, unchanged = [], 0
    for key in (k for k in new if k in old):
        before = {**(old[key].get("inputs") or {}), "(parent)": old[key].get("parent")}
        after = {**(new[key].get("inputs") or {}), "(parent)": new[key].get("parent")}
        changes = _changes(before, after, rename)
        if changes:
            changed.append(ResourceChange(key[0], key[1], changes))
        else:
            unchanged += 1
    outputs = _changes(base.get("outputs") or {}, head.get("outputs") or {}, rename)
    return PlanDiff(base_label, head_label, added, removed, tuple(changed), unchanged, outputs)


def stack_renames(base_stack: str, base_aws_region: str, head_stack: str, head_aws_region: str) -> dict[str, str]:
    """How a name in ``base_stack`` reads in ``head_stack``: its AWS region, then its stack key, renamed."""
    renames = {base_aws_region: head_aws_region} if base_aws_region and head_aws_region else {}
    renames[base_stack] = head_stack
    return renames
