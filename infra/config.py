"""The one typed, validated view of a stack's configuration.

`load()` turns the raw `Pulumi.<stack>.yaml` values into a frozen object before any resource exists; every
component takes that object (or a part of it) and nobody else reads `pulumi.Config()`. Any problem stops the
program at start with a single `ConfigError` naming the key, the bad value, what is allowed and the file to edit,
instead of a provider stack trace halfway through a deployment.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from infra import topology
from infra.versions import SUPPORTED_KUBERNETES_VERSIONS

NAMESPACE = "speech"

# x86_64 NVIDIA instance families with the drivers of EKS's AL2023_x86_64_NVIDIA AMI. Graviton GPU (g5g) needs
# the ARM AMI and a different image, so it is refused rather than silently given the wrong AMI.
GPU_FAMILIES = ("g4dn", "g5", "g6", "g6e", "gr6", "p4d", "p4de", "p5", "p5e", "p5en")
_INSTANCE_TYPE = re.compile(r"^([a-z][a-z0-9-]*)\.([a-z0-9]+)$")
_DNS_NAME = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
_VERSION = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._+-]{0,63}$")
_MODEL_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_IMAGE = re.compile(r"^[a-z0-9.-]+(:[0-9]+)?(/[a-z0-9._-]+)+(:[A-Za-z0-9._-]{1,128}|@sha256:[0-9a-f]{64})$")
_ZONE_ID = re.compile(r"^Z[A-Z0-9]{1,31}$")
_CLOUDFLARE_ID = re.compile(r"^[0-9a-f]{32}$")


class ConfigError(ValueError):
    """A stack's configuration is missing a value or holds one that is not allowed."""


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
    night_size: int  # desired size outside the region's peak hours


@dataclass(frozen=True)
class SpotPoolConfig(NodePoolConfig):
    enabled: bool


@dataclass(frozen=True)
class ModelConfig:
    name: str
    version: str


@dataclass(frozen=True)
class CloudflareConfig:
    account_id: str
    zone_id: str
    # The load balancer's own name in the Cloudflare zone (global stack). It must differ from `speech:domain`:
    # Route 53 answers for that name, and only one of the two can be authoritative for it.
    hostname: str | None = None


@dataclass(frozen=True)
class RegionalConfig:
    """A regional stack: one cluster, one model store, one regional endpoint."""

    stack: str
    region: topology.Region
    domain: str
    hosted_zone_id: str
    kubernetes_version: str
    vpc_cidr: str
    availability_zones: int
    gpu_pool: GpuPoolConfig
    cpu_pool: NodePoolConfig
    spot_pool: SpotPoolConfig
    model: ModelConfig
    image: str
    cloudflare: CloudflareConfig | None

    @property
    def jurisdiction(self) -> topology.Jurisdiction:
        return topology.jurisdiction_of(self.region)


@dataclass(frozen=True)
class GlobalConfig:
    """The global stack: routing that spans regions, reading each regional stack's outputs."""

    stack: str
    domain: str
    hosted_zone_id: str
    stack_prefix: str  # "<org>/<project>": regional stacks are referenced as f"{stack_prefix}/{region.key}"
    cloudflare: CloudflareConfig | None

    def regional_stack_name(self, region: topology.Region) -> str:
        return f"{self.stack_prefix}/{region.key}"


StackConfig = RegionalConfig | GlobalConfig

_COMMON_KEYS = {"scope", "domain", "hostedZoneId", "cloudflare"}
_REGIONAL_KEYS = _COMMON_KEYS | {
    "region", "jurisdiction", "kubernetesVersion", "vpcCidr", "availabilityZones", "gpuInstanceTypes", "gpuPool",
    "cpuInstanceTypes", "cpuPool", "spotPool", "model", "image",
}  # fmt: skip
_GLOBAL_KEYS = _COMMON_KEYS | {"stackPrefix"}


class _Reader:
    """Reads raw values for one stack and formats every error the same way."""

    def __init__(self, stack: str, raw: Mapping[str, Any]) -> None:
        self.stack = stack
        self.raw = raw

    def fail(self, key: str, value: Any, allowed: str) -> ConfigError:
        shown = "<missing>" if value is None else json.dumps(value)
        return ConfigError(f"{key} = {shown} {allowed} (Pulumi.{self.stack}.yaml)")

    def get(self, name: str, default: Any = None) -> Any:
        value = self.raw.get(f"{NAMESPACE}:{name}", default)
        if isinstance(value, str) and value[:1] in "[{":
            try:
                return json.loads(value)
            except json.JSONDecodeError as exc:
                raise self.fail(f"{NAMESPACE}:{name}", value, f"is not valid JSON/YAML ({exc.msg})") from exc
        return value

    def require(self, name: str, allowed: str) -> Any:
        value = self.get(name)
        if value is None or value == "":
            raise self.fail(f"{NAMESPACE}:{name}", None, f"is required: {allowed}")
        return value

    def string(self, name: str, pattern: re.Pattern[str], allowed: str) -> str:
        value = self.require(name, allowed)
        if not isinstance(value, str) or not pattern.match(value):
            raise self.fail(f"{NAMESPACE}:{name}", value, f"is not allowed: {allowed}")
        return value

    def integer(self, key: str, value: Any, minimum: int, maximum: int) -> int:
        # YAML gives ints; Pulumi's wire form gives strings. bool is an int subclass and never a size.
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
            raise self.fail(key, value, f"must be a whole number from {minimum} to {maximum}")
        return value

    def instance_types(self, name: str, gpu: bool) -> tuple[str, ...]:
        key = f"{NAMESPACE}:{name}"
        value = self.require(name, "a non-empty list of EC2 instance types")
        if not isinstance(value, list) or not value:
            raise self.fail(key, value, "must be a non-empty list of EC2 instance types")
        for i, item in enumerate(value):
            match = _INSTANCE_TYPE.match(item) if isinstance(item, str) else None
            if match is None:
                raise self.fail(f"{key}[{i}]", item, "is not an EC2 instance type like g6.xlarge")
            if gpu and match.group(1) not in GPU_FAMILIES:
                raise self.fail(
                    f"{key}[{i}]", item, f"is not an x86 NVIDIA GPU instance type; use a {', '.join(GPU_FAMILIES)} size"
                )
            if not gpu and match.group(1) in GPU_FAMILIES:
                raise self.fail(f"{key}[{i}]", item, "is a GPU instance type; the CPU pool takes CPU instance types")
        if len(set(value)) != len(value):
            raise self.fail(key, value, "lists an instance type twice")
        return tuple(value)

    def pool_size(self, name: str, value: Any, maximum: int, min_floor: int = 0) -> PoolSize:
        key = f"{NAMESPACE}:{name}"
        if not isinstance(value, dict):
            raise self.fail(key, value, "must be an object with minSize, desiredSize and maxSize")
        for field in ("minSize", "desiredSize", "maxSize"):
            if field not in value:
                raise self.fail(f"{key}.{field}", None, "is required: a whole number of nodes")
        size = PoolSize(
            min_size=self.integer(f"{key}.minSize", value["minSize"], min_floor, maximum),
            desired_size=self.integer(f"{key}.desiredSize", value["desiredSize"], 0, maximum),
            max_size=self.integer(f"{key}.maxSize", value["maxSize"], 1, maximum),
        )
        if size.min_size > size.max_size:
            raise self.fail(f"{key}.minSize", size.min_size, f"must not exceed maxSize ({size.max_size})")
        if not size.min_size <= size.desired_size <= size.max_size:
            raise self.fail(
                f"{key}.desiredSize",
                size.desired_size,
                f"must lie between minSize ({size.min_size}) and maxSize ({size.max_size})",
            )
        return size

    def cloudflare(self, domain: str, needs_hostname: bool) -> CloudflareConfig | None:
        value = self.get("cloudflare")
        if value is None:
            return None
        key = f"{NAMESPACE}:cloudflare"
        if not isinstance(value, dict):
            raise self.fail(key, value, "must be an object with accountId and zoneId, or be left out")
        for field in ("accountId", "zoneId"):
            if not isinstance(value.get(field), str) or not _CLOUDFLARE_ID.match(value[field]):
                raise self.fail(
                    f"{key}.{field}", value.get(field), "must be a 32-character lower-case hex Cloudflare id"
                )
        hostname = value.get("hostname")
        if needs_hostname:
            if not isinstance(hostname, str) or not _DNS_NAME.match(hostname):
                raise self.fail(
                    f"{key}.hostname",
                    hostname,
                    "must be the load balancer's DNS name in the Cloudflare zone, e.g. edge.example.com",
                )
            if hostname == domain:
                raise self.fail(
                    f"{key}.hostname",
                    hostname,
                    f"must differ from speech:domain: Route 53 already answers for {domain}",
                )
        elif hostname is not None:
            raise self.fail(f"{key}.hostname", hostname, "belongs in the global stack only; remove it here")
        return CloudflareConfig(account_id=value["accountId"], zone_id=value["zoneId"], hostname=hostname)

    def unknown_keys(self, allowed: set[str]) -> None:
        for full_key in sorted(self.raw):
            namespace, _, name = full_key.partition(":")
            if namespace == NAMESPACE and name not in allowed:
                raise self.fail(
                    full_key, self.raw[full_key], f"is not a known key; known keys: {', '.join(sorted(allowed))}"
                )


def load(stack: str, raw: Mapping[str, Any]) -> StackConfig:
    """Validate one stack's raw config (fully qualified keys, YAML or wire values) into a typed object."""
    reader = _Reader(stack, raw)
    scope = reader.get("scope", "regional")
    if scope not in ("regional", "global"):
        raise reader.fail(f"{NAMESPACE}:scope", scope, 'must be "regional" or "global"')
    if scope == "global":
        return _load_global(reader)
    return _load_regional(reader)


def _common(reader: _Reader) -> tuple[str, str]:
    domain = reader.string("domain", _DNS_NAME, "a lower-case DNS name such as speech.example.com")
    zone = reader.string("hostedZoneId", _ZONE_ID, "a Route 53 hosted zone id such as Z0123456789ABCDEFGHIJ")
    return domain, zone


def _load_global(reader: _Reader) -> GlobalConfig:
    reader.unknown_keys(_GLOBAL_KEYS)
    domain, zone = _common(reader)
    prefix = reader.string(
        "stackPrefix",
        re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$"),
        "<organization>/<project>, e.g. acme/speech-platform",
    )
    return GlobalConfig(
        stack=reader.stack,
        domain=domain,
        hosted_zone_id=zone,
        stack_prefix=prefix,
        cloudflare=reader.cloudflare(domain, needs_hostname=True),
    )


def _load_regional(reader: _Reader) -> RegionalConfig:
    reader.unknown_keys(_REGIONAL_KEYS)
    key = reader.require("region", f"one of {', '.join(r.key for r in topology.REGIONS)}")
    try:
        region = topology.region(key)
    except topology.TopologyError:
        raise reader.fail(
            f"{NAMESPACE}:region",
            key,
            f"is not a region of the topology; use one of {', '.join(r.key for r in topology.REGIONS)}",
        ) from None
    aws_region = reader.raw.get("aws:region")
    if aws_region != region.aws_region:
        raise reader.fail("aws:region", aws_region, f"must be {region.aws_region!r}, the AWS region of {region.key!r}")
    jurisdiction = reader.require("jurisdiction", f"{region.jurisdiction!r} for {region.key}")
    if jurisdiction != region.jurisdiction:
        raise reader.fail(
            f"{NAMESPACE}:jurisdiction",
            jurisdiction,
            f"must be {region.jurisdiction!r}: the topology puts {region.key} there",
        )
    domain, zone = _common(reader)

    version = str(reader.require("kubernetesVersion", f"one of {', '.join(SUPPORTED_KUBERNETES_VERSIONS)}"))
    if version not in SUPPORTED_KUBERNETES_VERSIONS:
        raise reader.fail(
            f"{NAMESPACE}:kubernetesVersion",
            version,
            f"is not supported; use one of {', '.join(SUPPORTED_KUBERNETES_VERSIONS)}",
        )

    cidr_value = reader.require("vpcCidr", "an IPv4 network from /16 to /20, e.g. 10.20.0.0/16")
    try:
        cidr = ipaddress.IPv4Network(cidr_value)
    except (ipaddress.AddressValueError, ipaddress.NetmaskValueError, ValueError) as exc:
        raise reader.fail(f"{NAMESPACE}:vpcCidr", cidr_value, f"is not an IPv4 network ({exc})") from exc
    if not 16 <= cidr.prefixlen <= 20 or not cidr.is_private:
        raise reader.fail(f"{NAMESPACE}:vpcCidr", cidr_value, "must be a private IPv4 network from /16 to /20")

    azs = reader.integer(f"{NAMESPACE}:availabilityZones", reader.get("availabilityZones", 3), 2, 3)

    gpu_raw = reader.require("gpuPool", "an object with minSize, desiredSize, maxSize and nightSize")
    gpu_size = reader.pool_size("gpuPool", gpu_raw, maximum=200)
    night = reader.integer(f"{NAMESPACE}:gpuPool.nightSize", gpu_raw.get("nightSize", gpu_size.min_size), 0, 200)
    if not gpu_size.min_size <= night <= gpu_size.max_size:
        raise reader.fail(
            f"{NAMESPACE}:gpuPool.nightSize",
            night,
            f"must lie between minSize ({gpu_size.min_size}) and maxSize ({gpu_size.max_size})",
        )
    gpu_pool = GpuPoolConfig(
        instance_types=reader.instance_types("gpuInstanceTypes", gpu=True), size=gpu_size, night_size=night
    )
    # System add-ons (CoreDNS, metrics, ingress controllers) live on the CPU pool, so it never scales to zero.
    cpu_pool = NodePoolConfig(
        instance_types=reader.instance_types("cpuInstanceTypes", gpu=False),
        size=reader.pool_size(
            "cpuPool", reader.require("cpuPool", "an object with minSize, desiredSize and maxSize"), 100, min_floor=1
        ),
    )
    spot_pool = _spot_pool(reader)

    model_raw = reader.require("model", "an object with name and version")
    if not isinstance(model_raw, dict):
        raise reader.fail(f"{NAMESPACE}:model", model_raw, "must be an object with name and version")
    name, model_version = model_raw.get("name"), model_raw.get("version")
    if not isinstance(name, str) or not _MODEL_NAME.match(name):
        raise reader.fail(f"{NAMESPACE}:model.name", name, "must be a lower-case model name such as whisper-base")
    if not isinstance(model_version, str) or not _VERSION.match(model_version):
        raise reader.fail(f"{NAMESPACE}:model.version", model_version, "must be a version string such as 1.0.0")

    image = reader.string(
        "image", _IMAGE, "a container image pinned by tag or digest, e.g. ghcr.io/acme/speech-serving:0.1.0"
    )
    if image.endswith(":latest"):
        raise reader.fail(f"{NAMESPACE}:image", image, "must be pinned: ':latest' makes deployments unrepeatable")

    return RegionalConfig(
        stack=reader.stack,
        region=region,
        domain=domain,
        hosted_zone_id=zone,
        kubernetes_version=version,
        vpc_cidr=str(cidr),
        availability_zones=azs,
        gpu_pool=gpu_pool,
        cpu_pool=cpu_pool,
        spot_pool=spot_pool,
        model=ModelConfig(name=name, version=model_version),
        image=image,
        cloudflare=reader.cloudflare(domain, needs_hostname=False),
    )


def _spot_pool(reader: _Reader) -> SpotPoolConfig:
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
    nested = _Reader(reader.stack, {f"{NAMESPACE}:spotPool.instanceTypes": raw.get("instanceTypes")})
    # Batch transcription wants GPUs; spot capacity is spread over several types to survive reclaims.
    instance_types = nested.instance_types("spotPool.instanceTypes", gpu=True)
    return SpotPoolConfig(
        instance_types=instance_types, size=reader.pool_size("spotPool", raw, maximum=200), enabled=True
    )


def from_pulumi() -> StackConfig:
    """Load and validate the running stack's config; raise ConfigError with one clear message."""
    import pulumi
    from pulumi.runtime import config as runtime_config

    raw: dict[str, Any] = dict(runtime_config.get_config_env())
    raw.update(runtime_config.CONFIG.get())
    return load(pulumi.get_stack(), raw)
