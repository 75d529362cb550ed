"""The Pulumi program: load the stack's config, build its components from the topology, export what users need.

A regional stack (`us-west`, `eu-west`, `ap-northeast`, ...) owns its cluster, model store and regional
endpoint; the `global` stack owns the routing that spans regions and reads the regional stacks' outputs.
"""

import pulumi
import pulumi_aws as aws

from infra import config
from infra.cluster import Cluster, ClusterArgs, cluster_name
from infra.kms import RegionKey, RegionKeyArgs
from infra.model_store import ModelStore, ModelStoreArgs
from infra.network import Network, NetworkArgs


def build_regional(cfg: config.RegionalConfig) -> None:
    project, base = pulumi.get_project(), f"speech-{cfg.region.key}"
    # Other regions' buckets and key aliases are addressed by name, and those names include the account.
    account_id = aws.get_caller_identity().account_id
    name = cluster_name(project, cfg.region)

    key = RegionKey(f"{base}-key", RegionKeyArgs(region=cfg.region, project=project))
    network = Network(
        f"{base}-network",
        NetworkArgs(region=cfg.region, vpc_cidr=cfg.vpc_cidr, availability_zones=cfg.availability_zones, cluster_name=name),
    )
    cluster = Cluster(
        f"{base}-cluster",
        ClusterArgs(cfg=cfg, cluster_name=name, subnet_ids=network.private_subnet_ids, kms_key_arn=key.key_arn),
    )
    store = ModelStore(
        f"{base}-store", ModelStoreArgs(region=cfg.region, project=project, account_id=account_id, kms_key_arn=key.key_arn)
    )

    pulumi.export("region", cfg.region.aws_region)
    pulumi.export("jurisdiction", cfg.region.jurisdiction)
    pulumi.export("clusterName", cluster.name)
    pulumi.export("clusterEndpoint", cluster.endpoint)
    pulumi.export("kubeconfig", cluster.kubeconfig)
    pulumi.export("nodePools", cluster.node_pools)
    pulumi.export("modelBucketName", store.bucket_name)
    pulumi.export("modelBucketArn", store.bucket_arn)
    pulumi.export("kmsKeyArn", key.key_arn)
    pulumi.export("vpcId", network.vpc_id)
    pulumi.export("publicSubnetIds", network.public_subnet_ids)
    pulumi.export("privateSubnetIds", network.private_subnet_ids)


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
