"""Reading the Kubernetes objects of an offline run the way the API server would receive them."""

from __future__ import annotations

from typing import Any

from infra import offline

HELM_RELEASE = "kubernetes:helm.sh/v3:Release"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
SERVICE = "kubernetes:core/v1:Service"


def as_json(value: Any) -> Any:
    """The object as Kubernetes reads it: the mock's wire form turns every number into a float."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: as_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_json(v) for v in value]
    return value


def objects(graph: offline.Graph) -> list[offline.Registration]:
    """Every Kubernetes object (not Helm releases) the program applies."""
    return [r for r in graph.resources if r.type.startswith("kubernetes:") and r.type != HELM_RELEASE]


def manifest(resource: offline.Registration) -> dict[str, Any]:
    return as_json(resource.inputs)


def find(graph: offline.Graph, kind: str, name: str) -> dict[str, Any]:
    """The one object of ``kind`` whose metadata.name is ``name``."""
    found = [
        manifest(r) for r in objects(graph) if r.inputs.get("kind") == kind and r.inputs["metadata"].get("name") == name
    ]
    assert len(found) == 1, f"{len(found)} {kind} objects named {name!r}"
    return found[0]


def of_kind(graph: offline.Graph, kind: str) -> list[dict[str, Any]]:
    return [manifest(r) for r in objects(graph) if r.inputs.get("kind") == kind]


def release(graph: offline.Graph, release_name: str) -> offline.Registration:
    (found,) = [r for r in graph.of_type(HELM_RELEASE) if r.inputs.get("name") == release_name]
    return found


def waits_for(graph: offline.Graph, resource: offline.Registration, earlier: offline.Registration) -> bool:
    """Whether ``resource`` is created only after ``earlier``, directly or through what it waits for."""
    seen: set[str] = set()
    pending = list(resource.dependencies)
    while pending:
        urn = pending.pop()
        if urn == earlier.urn:
            return True
        if urn not in seen:
            seen.add(urn)
            pending.extend(graph.by_urn(urn).dependencies)
    return False
