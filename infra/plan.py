"""Offline plan: what `pulumi up` would create for a stack, without cloud credentials or the Pulumi CLI.

    python -m infra.plan eu-west          # resource tree with key properties
    python -m infra.plan global --json    # machine-readable, for diffing in review
    python -m infra.plan eu-west --policy # the policy pack's rules (policy/rules.py) over the plan; 1 on a violation

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
    "aws:autoscaling/schedule:Schedule": ("recurrence", "timeZone", "minSize"),
    "aws:autoscaling/tag:Tag": ("tag",),
    "aws:eks/podIdentityAssociation:PodIdentityAssociation": ("namespace", "serviceAccount"),
    "aws:eks/accessEntry:AccessEntry": ("principalArn",),
    "aws:lb/targetGroup:TargetGroup": ("targetType", "port"),
    "kubernetes:helm.sh/v3:Release": ("name", "chart", "version", "namespace"),
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


# Kubernetes objects: where they live, and the part of the spec a reviewer checks first.
KUBERNETES_SPEC_KEYS = (
    "serviceRef", "targetGroupARN", "selector", "servers", "gateways", "scaleTargetRef", "minReplicaCount",
    "maxReplicaCount", "endpoints", "policyTypes", "ports", "maxUnavailable",
)  # fmt: skip


def _kubernetes_summary(inputs: dict[str, Any]) -> dict[str, Any]:
    metadata, spec = inputs.get("metadata") or {}, inputs.get("spec") or {}
    shown = {"name": metadata.get("name"), "namespace": metadata.get("namespace")}
    shown.update({k: spec[k] for k in KUBERNETES_SPEC_KEYS if k in spec})
    pod = (spec.get("template") or {}).get("spec") or {}
    if pod:
        shown["image"] = [c.get("image") for c in pod.get("containers", [])]
        shown["resources"] = [c.get("resources") for c in pod.get("containers", [])]
        shown["terminationGracePeriodSeconds"] = pod.get("terminationGracePeriodSeconds")
    if "http" in spec:
        shown["routes"] = [(r.get("name"), r.get("match")) for r in spec["http"]]
    return {k: v for k, v in shown.items() if v is not None}


def _summary(resource: offline.Registration) -> str:
    keys = KEY_PROPERTIES.get(resource.type, ())
    shown = {k: resource.inputs[k] for k in keys if k in resource.inputs}
    if resource.type.startswith("kubernetes:") and "apiVersion" in resource.inputs:
        shown = _kubernetes_summary(resource.inputs)
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


def policy_verdicts(graph: offline.Graph) -> list[tuple[str, str, str]]:
    """(rule, resource name, violation) for every violation of the policy pack's rules in ``graph``."""
    from policy.rules import RULES  # the pack's rules; only this mode needs them

    return [
        (rule.name, resource.name, violation)
        for rule in RULES
        for resource in graph.resources
        for violation in rule.check(resource.type, resource.inputs, graph.stack)
    ]


def render_verdicts(graph: offline.Graph, violations: list[tuple[str, str, str]]) -> str:
    from policy.rules import RULES

    lines = [f"stack {graph.stack}: {len(graph.resources)} resources against {len(RULES)} policies"]
    for rule in RULES:
        found = [(name, why) for rule_name, name, why in violations if rule_name == rule.name]
        lines.append(f"{'FAIL' if found else 'pass'}  {rule.name}: {rule.description}")
        lines += [f"      {name}: {why}" for name, why in found]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.plan", description=__doc__.split("\n\n")[0])
    parser.add_argument("stack", help="stack name, e.g. eu-west (reads Pulumi.<stack>.yaml)")
    parser.add_argument("--json", action="store_true", help="print the full resource graph as JSON")
    parser.add_argument("--policy", action="store_true", help="check the policy pack's rules; exit 1 on a violation")
    args = parser.parse_args(argv)
    try:
        graph = offline.run_stack(args.stack, DEFAULT_TOPOLOGY)
    except (FileNotFoundError, pulumi.RunError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.policy:
        violations = policy_verdicts(graph)
        print(render_verdicts(graph, violations))
        return 1 if violations else 0
    print(json.dumps(as_json(graph), indent=2, default=str) if args.json else render_tree(graph))
    return 0


if __name__ == "__main__":
    sys.exit(main())
