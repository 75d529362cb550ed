"""EKS managed node groups (GPU, CPU, spot) and the GPU pool's night scale-down.

Which pools exist, their AMI, capacity type, labels and taints are decided here in one table (:func:`pool_specs`),
so a test can compare every stack's node groups against it and against the stack's config.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

from contract.topology import Region
from infra import config
from infra.tags import POOL_TAG

GPU_AMI_TYPE = (
    "AL2023_x86_64_NVIDIA"  # drivers and container toolkit; config.GPU_FAMILIES lists the x86 families it fits
)
CPU_AMI_TYPE = "AL2023_x86_64_STANDARD"


@dataclass(frozen=True)
class Taint:
    key: str
    value: str
    effect: str  # EKS API spelling: NO_SCHEDULE, NO_EXECUTE, PREFER_NO_SCHEDULE


# Only pods that ask for a GPU (and tolerate this) land on GPU nodes; system pods stay on the CPU pool.
GPU_TAINT = Taint("nvidia.com/gpu", "true", "NO_SCHEDULE")
# Spot nodes can be reclaimed with two minutes' notice: only batch transcription, which retries, tolerates that.
SPOT_TAINT = Taint("speech.io/spot", "true", "NO_SCHEDULE")


@dataclass(frozen=True)
class NightScaleDown:
    """Desired GPU nodes outside ``peak_hours`` (local [start, end) hours in ``timezone``)."""

    timezone: str
    peak_hours: tuple[int, int]
    night_size: int


@dataclass(frozen=True)
class PoolSpec:
    role: str  # "gpu", "cpu" or "spot": the pool's key in outputs and its speech.io/pool label
    ami_type: str
    capacity_type: str
    pool: config.NodePoolConfig
    disk_size_gib: int
    labels: Mapping[str, str]
    taints: tuple[Taint, ...] = ()
    night: NightScaleDown | None = None


def pool_specs(cfg: config.RegionalConfig) -> tuple[PoolSpec, ...]:
    """The node pools a regional cluster runs, from its config and its region's peak hours."""
    gpu_labels = {"nvidia.com/gpu.present": "true"}
    specs = [
        PoolSpec(
            role="gpu",
            ami_type=GPU_AMI_TYPE,
            capacity_type="ON_DEMAND",
            pool=cfg.gpu_pool,
            # CUDA serving images are several GiB; the default 20 GiB root volume fills after two image versions.
            disk_size_gib=100,
            labels={"speech.io/pool": "gpu", **gpu_labels},
            taints=(GPU_TAINT,),
            night=NightScaleDown(cfg.region.timezone, cfg.region.peak_hours, cfg.gpu_pool.night_size),
        ),
        PoolSpec(
            role="cpu",
            ami_type=CPU_AMI_TYPE,
            capacity_type="ON_DEMAND",
            pool=cfg.cpu_pool,
            disk_size_gib=50,
            labels={"speech.io/pool": "cpu"},
        ),
    ]
    if cfg.spot_pool.enabled:
        specs.append(
            PoolSpec(
                role="spot",
                ami_type=GPU_AMI_TYPE,
                capacity_type="SPOT",
                pool=cfg.spot_pool,
                disk_size_gib=100,
                labels={"speech.io/pool": "spot", "speech.io/capacity": "spot", **gpu_labels},
                taints=(GPU_TAINT, SPOT_TAINT),
            )
        )
    return tuple(specs)


def night_crons(peak_hours: tuple[int, int]) -> tuple[str, str] | None:
    """(scale-up cron at peak start, scale-down cron at peak end), or None when the peak covers the whole day."""
    start, end = peak_hours
    if (start, end) == (0, 24):
        return None
    return f"0 {start} * * *", f"0 {end % 24} * * *"


@dataclass(frozen=True)
class NodePoolArgs:
    region: Region
    spec: PoolSpec
    cluster_name: pulumi.Input[str]
    kubernetes_version: pulumi.Input[str]
    node_role_arn: pulumi.Input[str]
    subnet_ids: pulumi.Input[list[str]]
    tags: Mapping[str, str] = field(default_factory=dict)


class NodePool(pulumi.ComponentResource):
    """One managed node group in the private subnets, and for the GPU pool its day/night schedule.

    The desired size belongs to the autoscaler and the schedules once the group exists, so Pulumi ignores drift in
    it; min and max stay Pulumi's. The night schedule acts on the Auto Scaling group EKS created for the node
    group (its name is only known after creation) and keeps min and max, so the autoscaler can still add nodes
    when night traffic needs them.
    """

    node_group_name: pulumi.Output[str]
    autoscaling_group_name: pulumi.Output[str]

    def __init__(self, name: str, args: NodePoolArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("speech:infra:NodePool", name, None, opts)
        spec, size, region = args.spec, args.spec.pool.size, args.region.aws_region

        group = aws.eks.NodeGroup(
            f"{name}-group",
            region=region,
            cluster_name=args.cluster_name,
            version=args.kubernetes_version,
            node_role_arn=args.node_role_arn,
            subnet_ids=args.subnet_ids,
            ami_type=spec.ami_type,
            capacity_type=spec.capacity_type,
            instance_types=list(spec.pool.instance_types),
            disk_size=spec.disk_size_gib,
            scaling_config=aws.eks.NodeGroupScalingConfigArgs(
                min_size=size.min_size, desired_size=size.desired_size, max_size=size.max_size
            ),
            update_config=aws.eks.NodeGroupUpdateConfigArgs(max_unavailable_percentage=33),
            labels=dict(spec.labels),
            taints=[aws.eks.NodeGroupTaintArgs(key=t.key, value=t.value, effect=t.effect) for t in spec.taints],
            tags={**args.tags, POOL_TAG: spec.role},
            # A component's depends_on does not hold back its children, so the group takes it over: nodes must not
            # start before their IAM policies and the network add-ons exist, or they never turn Ready.
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=opts.depends_on if opts else None, ignore_changes=["scalingConfig.desiredSize"]
            ),
        )
        asg_name = group.resources.apply(_autoscaling_group_name)

        crons = night_crons(spec.night.peak_hours) if spec.night else None
        if spec.night and crons:
            day_cron, night_cron = crons
            child = pulumi.ResourceOptions(parent=self)
            for role, cron, desired in (
                ("day", day_cron, size.desired_size),
                ("night", night_cron, spec.night.night_size),
            ):
                aws.autoscaling.Schedule(
                    f"{name}-{role}",
                    region=region,
                    autoscaling_group_name=asg_name,
                    scheduled_action_name=f"speech-{spec.role}-{role}",
                    recurrence=cron,
                    time_zone=spec.night.timezone,
                    min_size=size.min_size,
                    max_size=size.max_size,
                    desired_capacity=desired,
                    opts=child,
                )

        self.node_group_name = group.node_group_name
        self.autoscaling_group_name = asg_name
        self.register_outputs(
            {"node_group_name": self.node_group_name, "autoscaling_group_name": self.autoscaling_group_name}
        )


def _autoscaling_group_name(resources: Sequence[aws.eks.outputs.NodeGroupResource]) -> str:
    """The Auto Scaling group EKS made for a node group; it exists as soon as the group does."""
    groups = resources[0].autoscaling_groups if resources else None
    name = groups[0].name if groups else None
    if not name:
        raise pulumi.RunError(f"EKS reported no Auto Scaling group for the node group: {resources}")
    return name
