"""Offline plan: what `pulumi up` would create for a stack, without cloud credentials or the Pulumi CLI.

    python -m infra.plan eu-west                       # resource tree with key properties
    python -m infra.plan global --json                 # the whole graph, machine-readable
    python -m infra.plan eu-west --policy              # the policy pack's verdict on every resource; 1 on a violation
    python -m infra.plan --diff us-west eu-west        # what differs between two stacks, region names aside
    python -m infra.plan eu-west --diff-ref origin/main   # what this change does to the stack: added, removed, changed
    python -m infra.plan --all --policy --diff-ref origin/main --format markdown   # a pull request's review comment

It runs the real program under mocks (infra/offline.py), so config errors and topology rules fail exactly as they
would in a real deployment. `--project DIR` plans another Pulumi project (a platform team's program, `examples/`).
Exit status: 0, 1 when a resource violates a policy (with `--policy`), 2 when the program or a ref cannot be planned.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import pulumi

from infra import offline, plan_diff, plan_ref, plan_report
from infra.project import REPOSITORY, Project

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
    return [
        (rule, verdict.name, violation)
        for verdict in plan_report.resource_verdicts(graph)
        for rule, violations in verdict.violations.items()
        for violation in violations
    ]


def _stacks(args: argparse.Namespace, project: Project) -> list[str]:
    if args.all:
        return sorted(project.stacks(), key=project.is_global)  # regional stacks first, as they deploy
    return list(args.stacks)


def _reports(args: argparse.Namespace, project: Project) -> list[plan_report.StackReport]:
    if args.diff:
        base_stack, head_stack = args.diff
        base, head = offline.run_project(project, base_stack), offline.run_project(project, head_stack)
        renames = plan_diff.stack_renames(
            base_stack,
            str(project.stack_config(base_stack).get("aws:region", "")),
            head_stack,
            str(project.stack_config(head_stack).get("aws:region", "")),
        )
        diff = plan_diff.diff_plans(
            as_json(base), as_json(head), base_label=base_stack, head_label=head_stack, renames=renames
        )
        verdicts = plan_report.resource_verdicts(head) if args.policy else None
        return [plan_report.StackReport(head_stack, len(head.resources), verdicts, diff)]
    stacks = _stacks(args, project)
    bases = plan_ref.plans_at_ref(args.diff_ref, stacks, project.root) if args.diff_ref else {}
    reports = []
    for stack in stacks:
        graph = offline.run_project(project, stack)
        ref_diff: plan_diff.PlanDiff | None = None
        if args.diff_ref:
            base_plan = bases[stack] or {"stack": stack, "resources": [], "outputs": {}}
            ref_diff = plan_diff.diff_plans(
                base_plan, as_json(graph), base_label=args.diff_ref, head_label="the working tree"
            )
        verdicts = plan_report.resource_verdicts(graph) if args.policy else None
        reports.append(plan_report.StackReport(stack, len(graph.resources), verdicts, ref_diff))
    return reports


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m infra.plan",
        description=__doc__.split("\n\n")[0],
        epilog="Exit status: 0, 1 on a policy violation (--policy), 2 when a stack or ref cannot be planned.",
    )
    parser.add_argument("stacks", nargs="*", help="stack names, e.g. eu-west (reads Pulumi.<stack>.yaml)")
    parser.add_argument("--all", action="store_true", help="every stack of the project, regional stacks first")
    parser.add_argument("--json", action="store_true", help="print one stack's whole resource graph as JSON")
    parser.add_argument("--policy", action="store_true", help="the policy pack's verdict on every resource")
    parser.add_argument("--diff", nargs=2, metavar=("BASE", "HEAD"), help="what differs from stack BASE to HEAD")
    parser.add_argument("--diff-ref", metavar="REF", help="what the working tree changes against git ref REF")
    parser.add_argument("--format", choices=("text", "markdown", "json"), default="text", help="report format")
    parser.add_argument("--json-report", type=Path, metavar="FILE", help="also write the report as JSON to FILE")
    parser.add_argument("--project", type=Path, default=REPOSITORY.root, help="Pulumi project directory")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.diff and (args.stacks or args.all or args.diff_ref):
        parser.error("--diff compares two stacks; name no other stack, --all or --diff-ref with it")
    if not args.diff and bool(args.stacks) == args.all:
        parser.error("name the stacks to plan, or --all")
    if args.json and (len(args.stacks) != 1 or args.policy or args.diff_ref):
        parser.error("--json prints the graph of one stack; use --format json for --policy and diff reports")
    project = Project(args.project.resolve())
    try:
        if not (args.policy or args.diff or args.diff_ref):
            graphs = [offline.run_project(project, stack) for stack in _stacks(args, project)]
            if args.json:
                print(json.dumps(as_json(graphs[0]), indent=2, default=str))
            else:
                print("\n".join(render_tree(g) for g in graphs))
            return 0
        reports = _reports(args, project)
    except (FileNotFoundError, KeyError, pulumi.RunError, plan_ref.RefError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json_report:
        args.json_report.write_text(json.dumps(plan_report.as_json(reports), indent=2, default=str))
    if args.format == "json":
        print(json.dumps(plan_report.as_json(reports), indent=2, default=str))
    elif args.format == "markdown":
        print(plan_report.render_markdown(reports), end="")
    else:
        print(plan_report.render_text(reports))
    return 0 if all(r.passed for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
