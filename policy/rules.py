"""The policy pack's rules as plain functions: ``rule(resource type, properties, stack) -> violations``.

`policy/__main__.py` wraps each in a pulumi-policy `ResourceValidationPolicy` (`pulumi preview --policy-pack policy`)
and `python -m infra.plan <stack> --policy` runs the same functions over the offline graph, so a rule is written and
tested once. Properties are a resource's inputs as the provider sees them (camelCase). Residency questions go to the
topology (`SPEECH_TOPOLOGY_FILE`, else this repository's `DEFAULT_TOPOLOGY`), never to a list of regions here.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contract import topology as topology_module
from contract.topology import Region, Topology, TopologyError
from infra.config.cluster import GPU_FAMILIES

MAX_DNS_TTL_S = 60
GPU_TAINT_KEY = "nvidia.com/gpu"
_STORE_BUCKET = re.compile(r"^(?:arn:aws:s3:::)?(?P<project>.+)-models-(?P<key>[a-z0-9-]+)-(?P<account>\d{12})$")
# Services whose resources hold user data or keys to it: no identity policy may reach all of them at once.
DATA_SERVICES = ("s3", "kms", "secretsmanager", "ssm", "logs")
_METADATA_READS = ("Describe", "List", "Get")
_IDENTITY_POLICIES = ("aws:iam/rolePolicy:RolePolicy", "aws:iam/policy:Policy", "aws:iam/userPolicy:UserPolicy")

Props = Mapping[str, Any]
Rule = Callable[[str, Props, str], list[str]]


def topology() -> Topology:
    path = os.environ.get("SPEECH_TOPOLOGY_FILE")
    return topology_module.load(Path(path)) if path else topology_module.DEFAULT_TOPOLOGY


def _stack_region(stack: str, topo: Topology) -> Region | None:
    return topo.region(stack) if stack in topo.keys else None


def residency(resource_type: str, props: Props, stack: str) -> list[str]:
    """Every regional resource of a strict-residency stack lies in a region of that jurisdiction."""
    topo = topology()
    home = _stack_region(stack, topo)
    region = props.get("region")
    if home is None or not isinstance(region, str) or not topo.jurisdiction_of(home).is_strict_residency:
        return []
    allowed = [r.aws_region for r in topo.regions_in(home.jurisdiction)]
    if region in allowed:
        return []
    return [f"{resource_type} is in {region}, outside jurisdiction {home.jurisdiction} of stack {stack} ({allowed})"]


def _store_region(bucket: str, topo: Topology) -> Region | None:
    match = _STORE_BUCKET.match(bucket)
    try:
        return topo.region(match["key"]) if match else None
    except TopologyError:
        return None


def replication_within_jurisdiction(resource_type: str, props: Props, stack: str) -> list[str]:
    """Replication only between stores the topology pairs: never out of, nor into, a strict jurisdiction."""
    if resource_type != "aws:s3/bucketReplicationConfig:BucketReplicationConfig":
        return []
    topo = topology()
    source = _store_region(str(props.get("bucket", "")), topo)
    if source is None:
        return [f"replication from bucket {props.get('bucket')!r}, which is no model store of the topology"]
    violations = []
    for rule in props.get("rules") or []:
        destination = str((rule.get("destination") or {}).get("bucket", ""))
        target = _store_region(destination, topo)
        if target is None:
            violations.append(f"rule {rule.get('id')!r} replicates {source.key} to {destination!r}, no store we know")
        elif target not in topo.replication_targets(source):
            violations.append(
                f"rule {rule.get('id')!r} replicates {source.key} ({source.jurisdiction}) to {target.key} "
                f"({target.jurisdiction}): the topology allows {[t.key for t in topo.replication_targets(source)]}"
            )
    return violations


def _statements(document: Any) -> list[dict[str, Any]]:
    try:
        parsed = json.loads(document) if isinstance(document, str) else document
    except json.JSONDecodeError:
        return []
    statements = (parsed or {}).get("Statement", []) if isinstance(parsed, dict) else []
    return [statements] if isinstance(statements, dict) else list(statements)


def no_allow_on_every_resource(resource_type: str, props: Props, stack: str) -> list[str]:
    """No identity policy allows data access, a wildcard action or an unconditioned change on Resource '*'.

    The one exception is what AWS cannot scope to a resource: reading metadata (Describe, List, Get) of services
    that hold no user data, which controllers such as the load balancer controller need. S3, KMS, secrets,
    parameters and logs are never allowed on '*', conditioned or not.
    """
    if resource_type not in _IDENTITY_POLICIES:
        return []
    violations = []
    for statement in _statements(props.get("policy")):
        if statement.get("Effect") != "Allow":
            continue
        resources = statement.get("Resource", [])
        resources = [resources] if isinstance(resources, str) else resources
        if "NotResource" not in statement and "*" not in resources:
            continue
        actions = statement.get("Action", [])
        actions = [actions] if isinstance(actions, str) else actions
        refused = [a for a in actions if not _may_use_every_resource(a, conditioned="Condition" in statement)]
        if refused or "NotAction" in statement:
            violations.append(
                f"statement {statement.get('Sid', '')!r} allows {refused or 'NotAction'} on every resource"
            )
    return violations


def _may_use_every_resource(action: str, conditioned: bool) -> bool:
    service, _, name = action.partition(":")
    if service in DATA_SERVICES or "*" in service or not name or name == "*":
        return False
    return conditioned or name.startswith(_METADATA_READS)


def encryption(resource_type: str, props: Props, stack: str) -> list[str]:
    """Data at rest is encrypted with a customer-managed key: buckets, keys rotated, log groups, EKS Secrets."""
    if resource_type == "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration":
        defaults = [(r.get("applyServerSideEncryptionByDefault") or {}) for r in props.get("rules") or []]
        if not any(d.get("sseAlgorithm") == "aws:kms" and d.get("kmsMasterKeyId") for d in defaults):
            return ["bucket encryption must be SSE-KMS with the region's key"]
    if resource_type == "aws:kms/key:Key" and props.get("enableKeyRotation") is not True:
        return ["KMS key rotation must be enabled"]
    if resource_type == "aws:cloudwatch/logGroup:LogGroup":
        missing = [name for name in ("kmsKeyId", "retentionInDays") if not props.get(name)]
        if missing:
            return [f"log group {props.get('name')!r} lacks {', '.join(missing)}"]
    if resource_type == "aws:eks/cluster:Cluster":
        configs = props.get("encryptionConfig") or {}
        if "secrets" not in (configs.get("resources") or []):
            return ["EKS Secrets must be envelope-encrypted with the region's key"]
    return []


def versioning(resource_type: str, props: Props, stack: str) -> list[str]:
    """Bucket versioning is on (replication needs it; a model overwritten by mistake stays restorable)."""
    if resource_type != "aws:s3/bucketVersioning:BucketVersioning":
        return []
    status = (props.get("versioningConfiguration") or {}).get("status")
    return [] if status == "Enabled" else [f"bucket versioning is {status!r}; it must be 'Enabled'"]


_PUBLIC_ACCESS = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")


def public_access_blocked(resource_type: str, props: Props, stack: str) -> list[str]:
    """Every public-access block setting is on."""
    if resource_type != "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock":
        return []
    off = [name for name in _PUBLIC_ACCESS if props.get(name) is not True]
    return [f"public access block leaves {', '.join(off)} off"] if off else []


def tls_only_buckets(resource_type: str, props: Props, stack: str) -> list[str]:
    """A bucket policy denies every request that does not use TLS."""
    if resource_type != "aws:s3/bucketPolicy:BucketPolicy":
        return []
    for statement in _statements(props.get("policy")):
        condition = statement.get("Condition") or {}
        if (
            statement.get("Effect") == "Deny"
            and statement.get("Principal") == "*"
            and statement.get("Action") in ("s3:*", ["s3:*"])
            and (condition.get("Bool") or {}).get("aws:SecureTransport") == "false"
        ):
            return []
    return ["the bucket policy must deny s3:* to every principal when aws:SecureTransport is false"]


def dns_ttl(resource_type: str, props: Props, stack: str) -> list[str]:
    """DNS answers expire within a minute, so failover and a removed region take effect quickly."""
    if resource_type != "aws:route53/record:Record" or props.get("ttl") is None:
        return []
    ttl = int(props["ttl"])
    return [] if ttl <= MAX_DNS_TTL_S else [f"record {props.get('name')!r} has TTL {ttl} s; at most {MAX_DNS_TTL_S}"]


def tainted_gpu_node_groups(resource_type: str, props: Props, stack: str) -> list[str]:
    """A GPU node group carries the NoSchedule GPU taint, so only GPU workloads land on its costly nodes."""
    if resource_type != "aws:eks/nodeGroup:NodeGroup":
        return []
    families = {str(t).split(".")[0] for t in props.get("instanceTypes") or []}
    if not families & set(GPU_FAMILIES):
        return []
    taints = props.get("taints") or []
    if any(t.get("key") == GPU_TAINT_KEY and t.get("effect") == "NO_SCHEDULE" for t in taints):
        return []
    return [f"GPU node group ({sorted(families)}) lacks the {GPU_TAINT_KEY} NO_SCHEDULE taint"]


@dataclass(frozen=True)
class PolicyRule:
    name: str
    description: str
    check: Rule


RULES: tuple[PolicyRule, ...] = tuple(
    PolicyRule(check.__name__.replace("_", "-"), (check.__doc__ or "").strip().splitlines()[0], check)
    for check in (
        residency,
        replication_within_jurisdiction,
        no_allow_on_every_resource,
        encryption,
        versioning,
        public_access_blocked,
        tls_only_buckets,
        dns_ttl,
        tainted_gpu_node_groups,
    )
)
