"""A whole stack's config: which sections a regional or the global stack reads, assembled into one object."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from contract.topology import Jurisdiction, Region, Topology
from infra.config.cluster import (
    ClusterAccessConfig,
    GpuPoolConfig,
    NodePoolConfig,
    SpotPoolConfig,
    read_cluster_access,
    read_cpu_pool,
    read_gpu_pool,
    read_kubernetes_version,
    read_spot_pool,
)
from infra.config.delivery import DeliveryConfig, read_delivery
from infra.config.deploy import read_deploy_order
from infra.config.domain import (
    CloudflareBalancerConfig,
    CloudflareConfig,
    read_cloudflare,
    read_cloudflare_balancer,
    read_domain,
    read_stack_prefix,
)
from infra.config.network import read_availability_zones, read_vpc_cidr
from infra.config.reader import NAMESPACE, Reader
from infra.config.region import read_region
from infra.config.release import read_publishers
from infra.config.serving import ServingConfig, read_serving
from infra.config.workload import ModelConfig, read_image, read_model


@dataclass(frozen=True)
class RegionalConfig:
    """A regional stack: one cluster, one model store, one regional endpoint."""

    stack: str
    region: Region
    jurisdiction: Jurisdiction
    domain: str
    hosted_zone_id: str
    kubernetes_version: str
    cluster_access: ClusterAccessConfig
    vpc_cidr: str
    availability_zones: int
    gpu_pool: GpuPoolConfig
    cpu_pool: NodePoolConfig
    spot_pool: SpotPoolConfig
    model: ModelConfig
    image: str
    serving: ServingConfig
    delivery: DeliveryConfig
    cloudflare: CloudflareConfig | None


@dataclass(frozen=True)
class GlobalConfig:
    """The global stack: routing that spans regions, reading each regional stack's outputs."""

    stack: str
    domain: str
    hosted_zone_id: str
    stack_prefix: str  # "<org>/<project>": regional stacks are referenced as f"{stack_prefix}/{region.key}"
    cloudflare: CloudflareBalancerConfig | None
    publishers: dict[str, tuple[str, ...]]  # jurisdiction code -> principals that may assume its publisher role
    deploy_order: tuple[Region, ...]  # every region once, the canary first; `global` itself always comes last

    def regional_stack_name(self, region: Region) -> str:
        return f"{self.stack_prefix}/{region.key}"


StackConfig = RegionalConfig | GlobalConfig

_COMMON_KEYS = {"scope", "domain", "hostedZoneId", "cloudflare"}
_REGIONAL_KEYS = _COMMON_KEYS | {
    "region", "jurisdiction", "kubernetesVersion", "vpcCidr", "availabilityZones", "gpuInstanceTypes", "gpuPool",
    "cpuInstanceTypes", "cpuPool", "spotPool", "model", "image", "clusterAccess", "serving", "delivery",
}  # fmt: skip
_GLOBAL_KEYS = _COMMON_KEYS | {"stackPrefix", "publishers", "deployOrder"}


def load(stack: str, raw: Mapping[str, Any], topology: Topology) -> StackConfig:
    """Validate one stack's raw config (fully qualified keys, YAML or wire values) against ``topology``."""
    reader = Reader(stack, raw)
    scope = reader.get("scope", "regional")
    if scope not in ("regional", "global"):
        raise reader.fail(f"{NAMESPACE}:scope", scope, 'must be "regional" or "global"')
    if scope == "global":
        return _load_global(reader, topology)
    return _load_regional(reader, topology)


def _load_global(reader: Reader, topology: Topology) -> GlobalConfig:
    reader.unknown_keys(_GLOBAL_KEYS)
    domain, zone = read_domain(reader)
    return GlobalConfig(
        stack=reader.stack,
        domain=domain,
        hosted_zone_id=zone,
        stack_prefix=read_stack_prefix(reader),
        cloudflare=read_cloudflare_balancer(reader, domain),
        publishers=read_publishers(reader, topology),
        deploy_order=read_deploy_order(reader, topology),
    )


def _load_regional(reader: Reader, topology: Topology) -> RegionalConfig:
    reader.unknown_keys(_REGIONAL_KEYS)
    region = read_region(reader, topology)
    domain, zone = read_domain(reader)
    kubernetes_version = read_kubernetes_version(reader)
    cluster_access = read_cluster_access(reader)
    vpc_cidr, availability_zones = read_vpc_cidr(reader), read_availability_zones(reader)
    gpu_pool, cpu_pool, spot_pool = read_gpu_pool(reader), read_cpu_pool(reader), read_spot_pool(reader)
    # Keyword arguments are evaluated in order, so the first bad key in this order is the one reported.
    return RegionalConfig(
        stack=reader.stack,
        region=region,
        jurisdiction=topology.jurisdiction_of(region),
        domain=domain,
        hosted_zone_id=zone,
        kubernetes_version=kubernetes_version,
        cluster_access=cluster_access,
        vpc_cidr=vpc_cidr,
        availability_zones=availability_zones,
        gpu_pool=gpu_pool,
        cpu_pool=cpu_pool,
        spot_pool=spot_pool,
        model=read_model(reader),
        image=read_image(reader),
        serving=read_serving(reader, gpu_pool, spot_pool),
        delivery=read_delivery(reader),
        cloudflare=read_cloudflare(reader),
    )


def from_pulumi(topology: Topology) -> StackConfig:
    """Load and validate the running stack's config; raise ConfigError with one clear message."""
    import pulumi
    from pulumi.runtime import config as runtime_config

    raw: dict[str, Any] = dict(runtime_config.get_config_env())
    raw.update(runtime_config.CONFIG.get())
    return load(pulumi.get_stack(), raw, topology)
