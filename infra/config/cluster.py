"""`speech:kubernetesVersion`, `speech:clusterAccess` and the node pools: `gpuPool`, `cpuPool`, `spotPool`."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any

from infra.config.reader import NAMESPACE, Reader
from infra.versions import SUPPORTED_KUBERNETES_VERSIONS

# x86_64 NVIDIA instance families with the drivers of EKS's AL2023_x86_64_NVIDIA AMI. Graviton GPU (g5g) needs
# the ARM AMI and a different image, so it is refused rather than silently given the wrong AMI.
GPU_FAMILIES = ("g4dn", "g5", "g6", "g6e", "gr6", "p4d", "p4de", "p5", "p5e", "p5en")
_INSTANCE_TYPE = re.compile(r"^([a-z][a-z0-9-]*)\.([a-z0-9]+)$")
_PRINCIPAL_ARN = re.compile(r"^arn:aws[a-z-]*:iam::[0-9]{12}:(role|user)/[A-Za-z0-9+=,.@_/-]{1,512}$")
_ACCESS_FIELDS = {"publicAccessCidrs", "admins", "deletionProtection"}


@dataclass(frozen=True)
class PoolSize:
    min_size: int
    desired_size: int
    max_size: int


@dataclass(frozen=True)
class NodePoolConfig:
    instance_types: tuple[str, ...]
    size: PoolSize


@dataclass(frozen=True)
class GpuPoolConfig(NodePoolConfig):
    night_size: int  # the floor (min size) outside the region's peak hours; minSize is the floor at peak


@dataclass(frozen=True)
class ClusterAccessConfig:
    """Who may reach and administer the cluster's API, and whether it may be deleted."""

    public_access_cidrs: tuple[str, ...] = ("0.0.0.0/0",)
    admin_arns: tuple[str, ...] = ()  # IAM roles or users given cluster-admin through EKS access entries
    deletion_protection: bool = True


@dataclass(frozen=True)
class SpotPoolConfig(NodePoolConfig):
    enabled: bool


def read_kubernetes_version(reader: Reader) -> str:
    version = str(reader.require("kubernetesVersion", f"one of {', '.join(SUPPORTED_KUBERNETES_VERSIONS)}"))
    if version not in SUPPORTED_KUBERNETES_VERSIONS:
        raise reader.fail(
            f"{NAMESPACE}:kubernetesVersion",
            version,
            f"is not supported; use one of {', '.join(SUPPORTED_KUBERNETES_VERSIONS)}",
        )
    return version


def _instance_types(reader: Reader, name: str, gpu: bool) -> tuple[str, ...]:
    key = f"{NAMESPACE}:{name}"
    value = reader.require(name, "a non-empty list of EC2 instance types")
    if not isinstance(value, list) or not value:
        raise reader.fail(key, value, "must be a non-empty list of EC2 instance types")
    for i, item in enumerate(value):
        match = _INSTANCE_TYPE.match(item) if isinstance(item, str) else None
        if match is None:
            raise reader.fail(f"{key}[{i}]", item, "is not an EC2 instance type like g6.xlarge")
        if gpu and match.group(1) not in GPU_FAMILIES:
            raise reader.fail(
                f"{key}[{i}]", item, f"is not an x86 NVIDIA GPU instance type; use a {', '.join(GPU_FAMILIES)} size"
            )
        if not gpu and match.group(1) in GPU_FAMILIES:
            raise reader.fail(f"{key}[{i}]", item, "is a GPU instance type; the CPU pool takes CPU instance types")
    if len(set(value)) != len(value):
        raise reader.fail(key, value, "lists an instance type twice")
    return tuple(value)


def _pool_size(reader: Reader, name: str, value: Any, maximum: int, min_floor: int = 0) -> PoolSize:
    key = f"{NAMESPACE}:{name}"
    if not isinstance(value, dict):
        raise reader.fail(key, value, "must be an object with minSize, desiredSize and maxSize")
    for field in ("minSize", "desiredSize", "maxSize"):
        if field not in value:
            raise reader.fail(f"{key}.{field}", None, "is required: a whole number of nodes")
    size = PoolSize(
        min_size=reader.integer(f"{key}.minSize", value["minSize"], min_floor, maximum),
        desired_size=reader.integer(f"{key}.desiredSize", value["desiredSize"], 0, maximum),
        max_size=reader.integer(f"{key}.maxSize", value["maxSize"], 1, maximum),
    )
    if size.min_size > size.max_size:
        raise reader.fail(f"{key}.minSize", size.min_size, f"must not exceed maxSize ({size.max_size})")
    if not size.min_size <= size.desired_size <= size.max_size:
        raise reader.fail(
            f"{key}.desiredSize",
            size.desired_size,
            f"must lie between minSize ({size.min_size}) and maxSize ({size.max_size})",
        )
    return size


def read_gpu_pool(reader: Reader) -> GpuPoolConfig:
    raw = reader.require("gpuPool", "an object with minSize, desiredSize, maxSize and nightSize")
    size = _pool_size(reader, "gpuPool", raw, maximum=200)
    night = reader.integer(f"{NAMESPACE}:gpuPool.nightSize", raw.get("nightSize", size.min_size), 0, 200)
    if night > size.min_size:
        # The night schedule lowers the floor the autoscaler keeps; a night floor above the day's would raise it.
        raise reader.fail(f"{NAMESPACE}:gpuPool.nightSize", night, f"must lie between 0 and minSize ({size.min_size})")
    return GpuPoolConfig(
        instance_types=_instance_types(reader, "gpuInstanceTypes", gpu=True), size=size, night_size=night
    )


def read_cpu_pool(reader: Reader) -> NodePoolConfig:
    # System add-ons (CoreDNS, metrics, ingress controllers) live on the CPU pool, so it never scales to zero.
    return NodePoolConfig(
        instance_types=_instance_types(reader, "cpuInstanceTypes", gpu=False),
        size=_pool_size(
            reader, "cpuPool", reader.require("cpuPool", "an object with minSize, desiredSize and maxSize"), 100, 1
        ),
    )


def read_spot_pool(reader: Reader) -> SpotPoolConfig:
    raw = reader.get("spotPool")
    key = f"{NAMESPACE}:spotPool"
    if raw is None:
        return SpotPoolConfig(instance_types=(), size=PoolSize(0, 0, 1), enabled=False)
    if not isinstance(raw, dict):
        raise reader.fail(key, raw, "must be an object with enabled, instanceTypes, minSize, desiredSize and maxSize")
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise reader.fail(f"{key}.enabled", enabled, "must be true or false")
    if not enabled:
        return SpotPoolConfig(instance_types=(), size=PoolSize(0, 0, 1), enabled=False)
    nested = Reader(reader.stack, {f"{NAMESPACE}:spotPool.instanceTypes": raw.get("instanceTypes")})
    # Batch transcription wants GPUs; spot capacity is spread over several types to survive reclaims.
    instance_types = _instance_types(nested, "spotPool.instanceTypes", gpu=True)
    return SpotPoolConfig(
        instance_types=instance_types, size=_pool_size(reader, "spotPool", raw, maximum=200), enabled=True
    )


def read_cluster_access(reader: Reader) -> ClusterAccessConfig:
    key = f"{NAMESPACE}:clusterAccess"
    raw = reader.get("clusterAccess")
    if raw is None:
        return ClusterAccessConfig()
    if not isinstance(raw, dict) or set(raw) - _ACCESS_FIELDS:
        raise reader.fail(key, raw, f"must be an object with any of {', '.join(sorted(_ACCESS_FIELDS))}")
    defaults = ClusterAccessConfig()
    cidrs = raw.get("publicAccessCidrs", list(defaults.public_access_cidrs))
    if not isinstance(cidrs, list) or not cidrs:
        raise reader.fail(f"{key}.publicAccessCidrs", cidrs, "must be a non-empty list of IPv4 networks")
    for i, cidr in enumerate(cidrs):
        try:
            ipaddress.IPv4Network(cidr)
        except (ipaddress.AddressValueError, ipaddress.NetmaskValueError, TypeError, ValueError):
            raise reader.fail(
                f"{key}.publicAccessCidrs[{i}]", cidr, "is not an IPv4 network such as 203.0.113.0/24"
            ) from None
    admins = raw.get("admins", [])
    if not isinstance(admins, list):
        raise reader.fail(f"{key}.admins", admins, "must be a list of IAM role or user ARNs")
    for i, arn in enumerate(admins):
        if not isinstance(arn, str) or not _PRINCIPAL_ARN.match(arn):
            raise reader.fail(
                f"{key}.admins[{i}]", arn, "is not an IAM role or user ARN like arn:aws:iam::123456789012:role/admins"
            )
    if len(set(admins)) != len(admins):
        raise reader.fail(f"{key}.admins", admins, "lists a principal twice")
    protection = raw.get("deletionProtection", defaults.deletion_protection)
    if not isinstance(protection, bool):
        raise reader.fail(f"{key}.deletionProtection", protection, "must be true or false")
    return ClusterAccessConfig(
        public_access_cidrs=tuple(cidrs), admin_arns=tuple(admins), deletion_protection=protection
    )
