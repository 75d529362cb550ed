"""The Pulumi program: load the stack's config, build its components from the topology, export what users need.

A regional stack (`us-west`, `eu-west`, `ap-northeast`, ...) owns its cluster, model store and regional
endpoint; the `global` stack owns the routing that spans regions and reads the regional stacks' outputs.
"""

import pulumi

from infra import config


def build_regional(cfg: config.RegionalConfig) -> None:
    pulumi.export("region", cfg.region.aws_region)
    pulumi.export("jurisdiction", cfg.region.jurisdiction)


def build_global(cfg: config.GlobalConfig) -> None:
    pulumi.export("domain", cfg.domain)


try:
    stack_config = config.from_pulumi()
except config.ConfigError as exc:
    # One line naming the key and the fix, instead of a traceback from deep inside a provider.
    raise pulumi.RunError(str(exc)) from None

if isinstance(stack_config, config.RegionalConfig):
    build_regional(stack_config)
else:
    build_global(stack_config)
