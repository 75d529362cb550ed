"""Offline plan: what `pulumi up` would create for a stack, without cloud credentials or the Pulumi CLI.

    python -m infra.plan eu-west          # resource tree with key properties
    python -m infra.plan global --json    # machine-readable, for diffing in review

It runs the real program under mocks (infra/offline.py), so config errors and topology rules fail exactly as they
would in a real deployment.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import pulumi

from contract.topology import DEFAULT_TOPOLOGY
from infra import offline

# Properties worth a reviewer's eye, by resource type; everything else is in --json.
KEY_PROPERTIES: dict[str, tuple[str, ...]] = {
    "aws:ec2/vpc:Vpc": ("cidrBlock",),
    "aws:ec2/subnet:Subnet": ("cidrBlock", "availabilityZone"),
    "aws:eks/cluster:Cluster": ("version",),
    "aws:eks/nodeGroup:NodeGroup": ("amiType", "capacityType", "instanceTypes", "scalingConfig", "taints"),
    "aws:autoscaling/schedule:Schedule": ("recurrence", "timeZone", "desiredCapacity"),
    "aws:s3/bucket:Bucket": ("bucket",),
    "aws:s3/bucketReplicationConfig:BucketReplicationConfig": ("rules",),
    "aws:route53/record:Record": (
        "name",
        "type",
        "ttl",
        "setIdentifier",
        "geolocationRoutingPolicies",
        "failoverRoutingPolicies",
        "aliases",
        "healthCheckId",
    ),
    "aws:route53/healthCheck:HealthCheck": ("fqdn", "resourcePath", "failureThreshold"),
    "cloudflare:index/loadBalancer:LoadBalancer": (
        "name",
        "steeringPolicy",
        "regionPools",
        "countryPools",
        "defaultPools",
        "fallbackPool",
    ),
    "cloudflare:index/loadBalancerPool:LoadBalancerPool": ("name", "origins"),
}


def _summary(resource: offline.Registration) -> str:
    keys = KEY_PROPERTIES.get(resource.type, ())
    shown = {k: resource.inputs[k] for k in keys if k in resource.inputs}
    if "region" in resource.inputs:
        shown = {"region": resource.inputs["region"], **shown}
    return json.dumps(shown, sort_keys=False, default=str) if shown else ""


def render_tree(graph: offline.Graph) -> str:
    lines = [f"stack {graph.stack}: {len(graph.resources)} resources"]

    def walk(parent: str | None, depth: int) -> None:
        for r in graph.resources:
            if r.parent == parent:
                summary = _summary(r)
                lines.append(f"{'  ' * depth}- {r.type}  {r.name}" + (f"  {summary}" if summary else ""))
                walk(r.urn, depth + 1)

    walk(None, 1)
    if graph.exports:
        lines.append("outputs:")
        for name, value in graph.exports.items():
            lines.append(f"  {name}: {json.dumps(value, default=str)[:160]}")
    return "\n".join(lines)


def as_json(graph: offline.Graph) -> dict[str, Any]:
    return {
        "stack": graph.stack,
        "resources": [
            {"type": r.type, "name": r.name, "parent": r.parent, "inputs": r.inputs} for r in graph.resources
        ],
        "outputs": graph.exports,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.plan", description=__doc__.split("\n\n")[0])
    parser.add_argument("stack", help="stack name, e.g. eu-west (reads Pulumi.<stack>.yaml)")
    parser.add_argument("--json", action="store_true", help="print the full resource graph as JSON")
    args = parser.parse_args(argv)
    try:
        graph = offline.run_stack(args.stack, DEFAULT_TOPOLOGY)
    except (FileNotFoundError, pulumi.RunError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(as_json(graph), indent=2, default=str) if args.json else render_tree(graph))
    return 0


if __name__ == "__main__":
    sys.exit(main())
