"""The one typed, validated view of a stack's configuration, read section by section.

`load()` turns the raw `Pulumi.<stack>.yaml` values into a frozen object before any resource exists, checked
against the topology the program builds; every component takes that object (or a part of it) and nobody else reads
`pulumi.Config()`. Any problem stops the program at start with a single `ConfigError` naming the key, the bad
value, what is allowed and the file to edit, instead of a provider stack trace halfway through a deployment.

One module per section: `region` (which topology region), `domain` (DNS names, Cloudflare, stack prefix),
`network` (VPC), `cluster` (Kubernetes version, API access, node pools), `workload` (model, image),
`serving` (profile, replicas, autoscaling targets, drain), `delivery` (canary steps, mirroring, gate thresholds),
`release` (who may assume each jurisdiction's publisher role), `deploy` (the order CI deploys the regional stacks
in); `reader` formats every error alike and `stack` assembles a regional or global stack's sections.
"""

from infra.config.cluster import (
    GPU_FAMILIES,
    ClusterAccessConfig,
    GpuPoolConfig,
    NodePoolConfig,
    PoolSize,
    SpotPoolConfig,
)
from infra.config.delivery import DeliveryConfig, GateThresholds
from infra.config.domain import CloudflareBalancerConfig, CloudflareConfig
from infra.config.reader import ConfigError
from infra.config.serving import ReplicaBounds, ServingConfig
from infra.config.stack import GlobalConfig, RegionalConfig, StackConfig, from_pulumi, load
from infra.config.workload import ModelConfig, ShadowConfig

__all__ = [
    "GPU_FAMILIES",
    "CloudflareBalancerConfig",
    "CloudflareConfig",
    "ClusterAccessConfig",
    "ConfigError",
    "DeliveryConfig",
    "GateThresholds",
    "GlobalConfig",
    "GpuPoolConfig",
    "ModelConfig",
    "NodePoolConfig",
    "PoolSize",
    "RegionalConfig",
    "ReplicaBounds",
    "ServingConfig",
    "ShadowConfig",
    "SpotPoolConfig",
    "StackConfig",
    "from_pulumi",
    "load",
]
