"""The Pulumi program of this repository, for any topology: load the stack's config, build, export.

`__main__.py` calls :func:`build` with `DEFAULT_TOPOLOGY`; the offline harness (`infra/offline.py`) calls it with
whichever topology a test constructs, so a region added in a test runs exactly the code `pulumi up` runs. A regional
stack (`us-west`, `eu-west`, `ap-northeast`, ...) owns its cluster, model store, serving role and regional endpoint;
the `global` stack owns what spans regions (routing, model replication, the publisher roles) and reads the regional
stacks' outputs, so one pass of regional stacks then `global` deploys everything.
"""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

from contract.topology import Topology
from infra import config
from infra.cloudflare import GeoLoadBalancer, GeoLoadBalancerArgs
from infra.cluster import Cluster, ClusterArgs, cluster_name
from infra.data_access import ServingAccess, ServingAccessArgs
from infra.dns import GeoDns, GeoDnsArgs
from infra.endpoints import RegionalEndpoint
from infra.ingress import RegionalIngress, RegionalIngressArgs
from infra.k8s.addons import MONITORING_NAMESPACE, PROMETHEUS_POD_LABELS, ClusterAddons, ClusterAddonsArgs
from infra.k8s.entry import PublicEntry, PublicEntryArgs
from infra.k8s.mesh import GATEWAY_TARGET_PORT, PUBLIC_GATEWAY, Mesh, MeshArgs
from infra.k8s.monitoring import ServingMonitoring, ServingMonitoringArgs
from infra.k8s.rollout import canary_minutes
from infra.k8s.workload import BATCH, REALTIME, ServingWorkload, ServingWorkloadArgs
from infra.kms import RegionKey, RegionKeyArgs
from infra.model_store import ModelStore, ModelStoreArgs
from infra.network import Network, NetworkArgs
from infra.node_pools import pool_specs
from infra.publishers import Publishers, PublishersArgs
from infra.replication import ModelReplication, ModelReplicationArgs, RegionalStore


def build(topology: Topology) -> None:
    """Build the running stack's resources for ``topology``; a bad config stops here with its one-line message."""
    try:
        stack_config = config.from_pulumi(topology)
    except config.ConfigError as exc:
        # One line naming the key and the fix, instead of a traceback from deep inside a provider.
        raise pulumi.RunError(str(exc)) from None
    if isinstance(stack_config, config.RegionalConfig):
        build_regional(topology, stack_config)
    else:
        build_global(topology, stack_config)


def build_regional(topology: Topology, cfg: config.RegionalConfig) -> None:
    project, base = pulumi.get_project(), f"speech-{cfg.region.key}"
    # Other regions' buckets and key aliases are addressed by name, and those names include the account.
    account_id = aws.get_caller_identity().account_id
    name = cluster_name(project, cfg.region)

    key = RegionKey(
        f"{base}-key",
        RegionKeyArgs(topology=topology, region=cfg.region, project=project, account_id=account_id, cluster_name=name),
    )
    network = Network(
        f"{base}-network",
        NetworkArgs(
            region=cfg.region, vpc_cidr=cfg.vpc_cidr, availability_zones=cfg.availability_zones, cluster_name=name
        ),
    )
    cluster = Cluster(
        f"{base}-cluster",
        ClusterArgs(
            region=cfg.region,
            cluster_name=name,
            kubernetes_version=cfg.kubernetes_version,
            pools=pool_specs(cfg),
            subnet_ids=network.private_subnet_ids,
            kms_key_arn=key.key_arn,
            public_access_cidrs=cfg.cluster_access.public_access_cidrs,
            admin_arns=cfg.cluster_access.admin_arns,
            deletion_protection=cfg.cluster_access.deletion_protection,
        ),
    )
    store = ModelStore(
        f"{base}-store",
        ModelStoreArgs(
            topology=topology,
            region=cfg.region,
            project=project,
            account_id=account_id,
            kms_key_arn=key.key_arn,
            s3_vpc_endpoint_id=network.s3_endpoint_id,
        ),
    )
    serving = ServingAccess(
        f"{base}-serving",
        ServingAccessArgs(
            topology=topology,
            region=cfg.region,
            project=project,
            account_id=account_id,
            cluster_name=cluster.name,
            kms_key_arn=key.key_arn,
        ),
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
    pulumi.export("servingRoleArn", serving.role_arn)
    pulumi.export("vpcId", network.vpc_id)
    pulumi.export("publicSubnetIds", network.public_subnet_ids)
    pulumi.export("privateSubnetIds", network.private_subnet_ids)
    ingress = build_regional_traffic(cfg, network)
    build_regional_workload(topology, cfg, network, cluster, store, ingress, account_id)


def build_regional_traffic(cfg: config.RegionalConfig, network: Network) -> RegionalIngress:
    """The region's public endpoint, health check and Cloudflare pool; the global stack reads their ids."""
    ingress = RegionalIngress(
        f"speech-{cfg.region.key}-ingress",
        RegionalIngressArgs(
            region=cfg.region,
            domain=cfg.domain,
            hosted_zone_id=cfg.hosted_zone_id,
            vpc_id=network.vpc_id,
            vpc_cidr=cfg.vpc_cidr,
            public_subnet_ids=network.public_subnet_ids,
            cloudflare_account_id=cfg.cloudflare.account_id if cfg.cloudflare else None,
            target_port=GATEWAY_TARGET_PORT,
        ),
    )
    for output_name, value in ingress.stack_exports().items():
        pulumi.export(output_name, value)
    return ingress


def build_regional_workload(
    topology: Topology,
    cfg: config.RegionalConfig,
    network: Network,
    cluster: Cluster,
    store: ModelStore,
    ingress: RegionalIngress,
    account_id: str,
) -> None:
    """Add-ons, the mesh, the serving workload, the path from the load balancer to it and its monitoring."""
    base = f"speech-{cfg.region.key}"
    addons = ClusterAddons(
        f"{base}-addons",
        ClusterAddonsArgs(
            region=cfg.region,
            provider=cluster.provider,
            cluster_name=cluster.name,
            kubernetes_version=cfg.kubernetes_version,
            vpc_id=network.vpc_id,
            target_group_arn=ingress.target_group_arn,
            spot_autoscaling_group=cluster.autoscaling_groups.get("spot"),
            depends_on=cluster.ready,
        ),
    )
    mesh = Mesh(f"{base}-mesh", MeshArgs(provider=cluster.provider, depends_on=[addons.lb_controller]))
    workload = ServingWorkload(
        f"{base}-serving",
        ServingWorkloadArgs(
            region=cfg.region,
            topology=topology,
            provider=cluster.provider,
            image=cfg.image,
            model=cfg.model,
            bucket_name=store.bucket_name,
            serving=cfg.serving,
            with_batch=cfg.spot_pool.enabled,
            delivery=cfg.delivery,
            prometheus_url=addons.prometheus_url,
            prometheus=(MONITORING_NAMESPACE, PROMETHEUS_POD_LABELS),
            gateway=PUBLIC_GATEWAY,
            depends_on=[addons.device_plugin, addons.keda, addons.prometheus, addons.rollouts, *cluster.ready],
            public_domain=cfg.domain,
        ),
    )
    PublicEntry(
        f"{base}-entry",
        PublicEntryArgs(
            region=cfg.region,
            provider=cluster.provider,
            namespace=workload.namespace,
            realtime=workload.services[REALTIME],
            batch=workload.services.get(BATCH),
            target_group_arn=ingress.target_group_arn,
            load_balancer_security_group_id=ingress.security_group_id,
            node_security_group_id=cluster.cluster_security_group_id,
            depends_on=[addons.lb_controller, mesh.gateway, *mesh.control_plane],
        ),
    )
    ServingMonitoring(
        f"{base}-monitoring",
        ServingMonitoringArgs(
            region=cfg.region,
            topology=topology,
            provider=cluster.provider,
            cluster_name=cluster.name,
            project=pulumi.get_project(),
            account_id=account_id,
            bucket_name=store.bucket_name,
            health_check_id=ingress.health_check_id,
            declared_version=cfg.model.version,
            drift_after_minutes=canary_minutes(cfg.delivery) + 30,
            depends_on=[addons.prometheus, *cluster.ready],
        ),
    )
    pulumi.export("servingNamespace", workload.namespace)


def build_global(topology: Topology, cfg: config.GlobalConfig) -> None:
    """Routing, replication and publishers across regions, from every regional stack's outputs: deploy those first."""
    stacks = {r.key: pulumi.StackReference(cfg.regional_stack_name(r)) for r in topology.regions}
    endpoints = {
        r.key: RegionalEndpoint.from_stack(stacks[r.key], r, with_cloudflare=cfg.cloudflare is not None)
        for r in topology.regions
    }
    build_data_plane(topology, cfg, {r.key: RegionalStore.from_stack(stacks[r.key], r) for r in topology.regions})
    dns = GeoDns(
        "speech-dns",
        GeoDnsArgs(topology=topology, domain=cfg.domain, hosted_zone_id=cfg.hosted_zone_id, endpoints=endpoints),
    )
    pulumi.export("domain", dns.domain)
    pulumi.export("routing", dns.routing)
    if cfg.cloudflare is not None:
        pool_ids = {key: e.cloudflare_pool_id for key, e in endpoints.items() if e.cloudflare_pool_id is not None}
        balancer = GeoLoadBalancer(
            "speech-cloudflare",
            GeoLoadBalancerArgs(
                topology=topology, zone_id=cfg.cloudflare.zone_id, hostname=cfg.cloudflare.hostname, pool_ids=pool_ids
            ),
        )
        pulumi.export("cloudflareLoadBalancerId", balancer.load_balancer_id)
        pulumi.export("cloudflareHostname", balancer.hostname)
        pulumi.export("cloudflareRegionPools", balancer.region_pools)
        pulumi.export("cloudflareCountryPools", balancer.country_pools)


def build_data_plane(topology: Topology, cfg: config.GlobalConfig, stores: dict[str, RegionalStore]) -> None:
    """Replication between the regional stores, and each jurisdiction's publisher role."""
    project = pulumi.get_project()
    account_id = aws.get_caller_identity().account_id
    replication = ModelReplication(
        "speech-replication",
        ModelReplicationArgs(topology=topology, project=project, account_id=account_id, stores=stores),
    )
    publishers = Publishers(
        "speech-publishers",
        PublishersArgs(
            topology=topology, project=project, account_id=account_id, stores=stores, principals=cfg.publishers
        ),
    )
    pulumi.export("replication", replication.routes)
    pulumi.export("publisherRoleArns", publishers.role_arns)
