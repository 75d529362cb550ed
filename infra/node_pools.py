"""EKS managed node groups (GPU, CPU, spot), what cluster-autoscaler needs to scale them from zero, and the GPU
pool's night floor.

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


# What the NVIDIA device plugin's DaemonSet selects GPU nodes by.
GPU_NODE_LABELS = {"nvidia.com/gpu.present": "true"}
POOL_LABEL = "speech.io/pool"
# Only pods that ask for a GPU (and tolerate this) land on GPU nodes; system pods stay on the CPU pool.
GPU_TAINT = Taint("nvidia.com/gpu", "true", "NO_SCHEDULE")
# Spot nodes can be reclaimed with two minutes' notice: only batch transcription, which retries, tolerates that.
SPOT_TAINT = Taint("speech.io/spot", "true", "NO_SCHEDULE")


# cluster-autoscaler's Auto Scaling group tags that describe a node it has not started yet: with no node of a group
# running, these are all it knows of the labels, taints and GPUs a new node would bring.
AUTOSCALER_TEMPLATE_TAG = "k8s.io/cluster-autoscaler/node-template"
GPU_RESOURCE = "nvidia.com/gpu"
# EKS's taint effects as Kubernetes (and cluster-autoscaler's taint tags) spell them.
KUBERNETES_EFFECTS = {"NO_SCHEDULE": "NoSchedule", "NO_EXECUTE": "NoExecute", "PREFER_NO_SCHEDULE": "PreferNoSchedule"}
# NVIDIA GPUs per instance for the sizes of config.GPU_FAMILIES that carry more than one; every other size has one.
_MULTI_GPU_SIZES = {
    "g4dn.12xlarge": 4, "g4dn.metal": 8, "g5.12xlarge": 4, "g5.24xlarge": 4, "g5.48xlarge": 8,
    "g6.12xlarge": 4, "g6.24xlarge": 4, "g6.48xlarge": 8, "g6e.12xlarge": 4, "g6e.24xlarge": 4, "g6e.48xlarge": 8,
    "p4d.24xlarge": 8, "p4de.24xlarge": 8, "p5.48xlarge": 8, "p5e.48xlarge": 8, "p5en.48xlarge": 8,
}  # fmt: skip


@dataclass(frozen=True)
class NightScaleDown:
    """The GPU pool's floor (min size) outside ``peak_hours`` (local [start, end) hours in ``timezone``)."""

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
    gpu_labels = dict(GPU_NODE_LABELS)
    specs = [
        PoolSpec(
            role="gpu",
            ami_type=GPU_AMI_TYPE,
            capacity_type="ON_DEMAND",
            pool=cfg.gpu_pool,
            # CUDA serving images are several GiB; the default 20 GiB root volume fills after two image versions.
            disk_size_gib=100,
            labels={POOL_LABEL: "gpu", **gpu_labels},
            taints=(GPU_TAINT,),
            night=NightScaleDown(cfg.region.timezone, cfg.region.peak_hours, cfg.gpu_pool.night_size),
        ),
        PoolSpec(
            role="cpu",
            ami_type=CPU_AMI_TYPE,
            capacity_type="ON_DEMAND",
            pool=cfg.cpu_pool,
            disk_size_gib=50,
            labels={POOL_LABEL: "cpu"},
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
                labels={POOL_LABEL: "spot", "speech.io/capacity": "spot", **gpu_labels},
                taints=(GPU_TAINT, SPOT_TAINT),
            )
        )
    return tuple(specs)


def toleration(taint: Taint) -> dict[str, str]:
    """The toleration a pod needs to run on a node with ``taint``."""
    return {"key": taint.key, "operator": "Equal", "value": taint.value, "effect": KUBERNETES_EFFECTS[taint.effect]}


def gpus_per_node(instance_types: Sequence[str]) -> int:
    """GPUs the smallest instance type of a pool brings: a template must not promise more than any node has."""
    return min(_MULTI_GPU_SIZES.get(t, 1) for t in instance_types)


def autoscaler_template_tags(spec: PoolSpec) -> dict[str, str]:
    """The node-template tags that let cluster-autoscaler scale ``spec``'s pool up from zero nodes.

    Without them a pending pod that needs the spot taint's toleration or a GPU matches no group that has no node
    yet, and the pool never leaves zero.
    """
    tags = {f"{AUTOSCALER_TEMPLATE_TAG}/label/{key}": value for key, value in spec.labels.items()}
    for taint in spec.taints:
        tags[f"{AUTOSCALER_TEMPLATE_TAG}/taint/{taint.key}"] = f"{taint.value}:{KUBERNETES_EFFECTS[taint.effect]}"
    if spec.ami_type == GPU_AMI_TYPE:
        tags[f"{AUTOSCALER_TEMPLATE_TAG}/resources/{GPU_RESOURCE}"] = str(gpus_per_node(spec.pool.instance_types))
    return tags


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
    """One managed node group in the private subnets, tagged for cluster-autoscaler, and for the GPU pool its
    day/night floor.

    The desired size belongs to cluster-autoscaler once the group exists, so Pulumi ignores drift in it; min and
    max stay Pulumi's. The night schedule acts on the Auto Scaling group EKS created for the node group (its name is
    only known after creation) and moves only the floor (min size): desired capacity is the autoscaler's, and a
    schedule that set it would fight the autoscaler twice a day. EKS node auto-repair replaces nodes whose kubelet
    or GPU reports unhealthy.
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
            node_repair_config=aws.eks.NodeGroupNodeRepairConfigArgs(enabled=True),
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
        child = pulumi.ResourceOptions(parent=self)

        # Managed node groups do not copy their tags to the Auto Scaling group, where cluster-autoscaler reads them.
        for key, value in autoscaler_template_tags(spec).items():
            aws.autoscaling.Tag(
                f"{name}-template-{key.removeprefix(AUTOSCALER_TEMPLATE_TAG + '/').replace('/', '-')}",
                region=region,
                autoscaling_group_name=asg_name,
                tag=aws.autoscaling.TagTagArgs(key=key, value=value, propagate_at_launch=False),
                opts=child,
            )

        crons = night_crons(spec.night.peak_hours) if spec.night else None
        if spec.night and crons:
            day_cron, night_cron = crons
            for role, cron, floor in (("day", day_cron, size.min_size), ("night", night_cron, spec.night.night_size)):
                aws.autoscaling.Schedule(
                    f"{name}-{role}",
                    region=region,
                    autoscaling_group_name=asg_name,
                    scheduled_action_name=f"speech-{spec.role}-{role}",
                    recurrence=cron,
                    time_zone=spec.night.timezone,
                    min_size=floor,
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
