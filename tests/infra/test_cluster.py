"""The regional EKS cluster and its node pools: encryption, access, IRSA, taints, sizes, night scale-down."""

from __future__ import annotations

import json

import pytest

from contract.topology import DEFAULT_TOPOLOGY
from infra import config, offline
from infra.cluster import CONTROL_PLANE_LOG_TYPES
from infra.node_pools import night_crons
from tests.conftest import REGIONAL_STACKS

NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
SCHEDULE = "aws:autoscaling/schedule:Schedule"


def _cfg(stack: str) -> config.RegionalConfig:
    cfg = config.load(stack, offline.stack_config(stack), DEFAULT_TOPOLOGY)
    assert isinstance(cfg, config.RegionalConfig)
    return cfg


def _eks(graph: offline.Graph) -> offline.Registration:
    (cluster,) = graph.of_type("aws:eks/cluster:Cluster")
    return cluster


def _pool(graph: offline.Graph, role: str) -> offline.Registration:
    return graph.named(f"speech-{graph.stack}-cluster-{role}-group")


def _taints(group: offline.Registration) -> set[str]:
    return {f"{t['key']}={t['value']}:{t['effect']}" for t in group.inputs.get("taints", [])}


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_cluster_runs_the_configured_kubernetes_version(program, stack):
    assert _eks(program(stack)).inputs["version"] == _cfg(stack).kubernetes_version


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_cluster_secrets_are_encrypted_with_the_regions_own_key(program, stack):
    graph = program(stack)
    encryption = _eks(graph).inputs["encryptionConfig"]
    assert encryption["resources"] == ["secrets"]
    assert encryption["provider"]["keyArn"] == graph.exports["kmsKeyArn"]
    (key,) = graph.of_type("aws:kms/key:Key")
    assert key.inputs["enableKeyRotation"] is True
    (alias,) = graph.of_type("aws:kms/alias:Alias")
    assert alias.inputs["name"] == f"alias/{offline.project_name()}-{stack}"


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_cluster_role_may_use_only_the_region_key_for_secrets(program, stack):
    graph = program(stack)
    policy = json.loads(graph.named(f"speech-{stack}-cluster-role-secrets-key").inputs["policy"])
    assert [s["Resource"] for s in policy["Statement"]] == [graph.exports["kmsKeyArn"]]


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_every_control_plane_log_goes_to_a_log_group_with_retention(program, stack):
    graph = program(stack)
    cluster = _eks(graph)
    assert sorted(cluster.inputs["enabledClusterLogTypes"]) == sorted(CONTROL_PLANE_LOG_TYPES)
    assert set(CONTROL_PLANE_LOG_TYPES) == {"api", "audit", "authenticator", "controllerManager", "scheduler"}
    (logs,) = graph.of_type("aws:cloudwatch/logGroup:LogGroup")
    assert logs.inputs["name"] == f"/aws/eks/{cluster.inputs['name']}/cluster"
    assert logs.inputs["retentionInDays"] > 0
    assert logs.urn in cluster.dependencies, "EKS would create a never-expiring log group first"


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_cluster_access_uses_access_entries_and_lives_in_private_subnets(program, stack):
    graph = program(stack)
    cluster = _eks(graph)
    assert cluster.inputs["accessConfig"] == {
        "authenticationMode": "API",
        "bootstrapClusterCreatorAdminPermissions": True,
    }
    vpc_config = cluster.inputs["vpcConfig"]
    assert sorted(vpc_config["subnetIds"]) == sorted(graph.exports["privateSubnetIds"])
    assert vpc_config["endpointPrivateAccess"] is True and vpc_config["endpointPublicAccess"] is True
    assert vpc_config["publicAccessCidrs"] == list(_cfg(stack).cluster_access.public_access_cidrs)


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_service_accounts_can_assume_iam_roles_through_the_cluster_oidc_issuer(program, stack):
    graph = program(stack)
    (oidc,) = graph.of_type("aws:iam/openIdConnectProvider:OpenIdConnectProvider")
    assert oidc.inputs["clientIdLists"] == ["sts.amazonaws.com"]
    assert oidc.inputs["url"].startswith(f"https://oidc.eks.{_cfg(stack).region.aws_region}.amazonaws.com/id/")


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_gpu_pool_runs_the_nvidia_ami_and_repels_pods_that_want_no_gpu(program, stack):
    graph, cfg = program(stack), _cfg(stack)
    gpu = _pool(graph, "gpu")
    assert gpu.inputs["amiType"] == "AL2023_x86_64_NVIDIA"
    assert gpu.inputs["capacityType"] == "ON_DEMAND"
    assert gpu.inputs["instanceTypes"] == list(cfg.gpu_pool.instance_types)
    assert _taints(gpu) == {"nvidia.com/gpu=true:NO_SCHEDULE"}
    assert gpu.inputs["labels"] == {"speech.io/pool": "gpu", "nvidia.com/gpu.present": "true"}


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_cpu_pool_runs_the_standard_ami_untainted_for_system_pods(program, stack):
    graph, cfg = program(stack), _cfg(stack)
    cpu = _pool(graph, "cpu")
    assert cpu.inputs["amiType"] == "AL2023_x86_64_STANDARD"
    assert cpu.inputs["instanceTypes"] == list(cfg.cpu_pool.instance_types)
    assert _taints(cpu) == set()
    assert cpu.inputs["labels"] == {"speech.io/pool": "cpu"}


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_spot_pool_uses_spot_gpus_that_only_batch_work_tolerates(program, stack):
    graph, cfg = program(stack), _cfg(stack)
    assert cfg.spot_pool.enabled, "every stack file enables the spot pool; test_disabled_spot_pool covers the rest"
    spot = _pool(graph, "spot")
    assert spot.inputs["capacityType"] == "SPOT"
    assert spot.inputs["amiType"] == "AL2023_x86_64_NVIDIA"
    assert spot.inputs["instanceTypes"] == list(cfg.spot_pool.instance_types)
    assert _taints(spot) == {"nvidia.com/gpu=true:NO_SCHEDULE", "speech.io/spot=true:NO_SCHEDULE"}
    assert spot.inputs["labels"]["speech.io/capacity"] == "spot"


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
@pytest.mark.parametrize("role", ["gpu", "cpu", "spot"])
def test_pool_scaling_bounds_equal_the_stack_config(program, stack, role):
    size = {"gpu": _cfg(stack).gpu_pool, "cpu": _cfg(stack).cpu_pool, "spot": _cfg(stack).spot_pool}[role].size
    scaling = _pool(program(stack), role).inputs["scalingConfig"]
    assert (scaling["minSize"], scaling["desiredSize"], scaling["maxSize"]) == (
        size.min_size,
        size.desired_size,
        size.max_size,
    )


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_node_pools_run_in_private_subnets_and_leave_desired_size_to_the_autoscaler(program, stack):
    graph = program(stack)
    groups = graph.of_type(NODE_GROUP)
    assert {g.name.rsplit("-", 2)[-2] for g in groups} == {"gpu", "cpu", "spot"}
    for group in groups:
        assert sorted(group.inputs["subnetIds"]) == sorted(graph.exports["privateSubnetIds"])
        assert group.inputs["version"] == _cfg(stack).kubernetes_version
        assert group.ignore_changes == ("scalingConfig.desiredSize",)


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_nodes_start_only_after_their_iam_policies_and_network_add_ons(program, stack):
    graph = program(stack)
    needed = {
        r.urn for r in graph.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment") if "-node-role-" in r.name
    }
    needed |= {
        graph.named(f"speech-{stack}-cluster-{a}").urn for a in ("vpc-cni", "kube-proxy", "eks-pod-identity-agent")
    }
    for group in graph.of_type(NODE_GROUP):
        assert needed <= set(group.dependencies), f"{group.name} may start before {needed - set(group.dependencies)}"
    coredns = graph.named(f"speech-{stack}-cluster-coredns")
    assert {g.urn for g in graph.of_type(NODE_GROUP)} <= set(coredns.dependencies)


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_gpu_pool_floor_drops_outside_peak_hours_in_the_regions_time_zone(program, stack):
    graph, cfg = program(stack), _cfg(stack)
    start, end = cfg.region.peak_hours
    schedules = {s.name.rsplit("-", 1)[-1]: s.inputs for s in graph.of_type(SCHEDULE)}
    assert set(schedules) == {"day", "night"}
    assert cfg.gpu_pool.night_size < cfg.gpu_pool.size.min_size, "the stack files lower the floor at night"
    for role, hour, floor in (("day", start, cfg.gpu_pool.size.min_size), ("night", end % 24, cfg.gpu_pool.night_size)):
        schedule = schedules[role]
        assert schedule["timeZone"] == DEFAULT_TOPOLOGY.region(stack).timezone
        minute, cron_hour, *rest = schedule["recurrence"].split()
        assert (minute, int(cron_hour), rest) == ("0", hour, ["*", "*", "*"])
        assert schedule["minSize"] == floor
        # Desired capacity is cluster-autoscaler's; a schedule that set it would undo the autoscaler twice a day.
        assert "desiredCapacity" not in schedule and "maxSize" not in schedule


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_schedules_act_on_the_auto_scaling_group_eks_made_for_the_gpu_pool(program, stack):
    graph = program(stack)
    gpu = _pool(graph, "gpu")
    for schedule in graph.of_type(SCHEDULE):
        assert schedule.inputs["autoscalingGroupName"] == f"eks-{gpu.name}-mock-asg"
        assert graph.by_urn(schedule.parent).name == f"speech-{stack}-cluster-gpu"


def test_a_peak_that_covers_the_whole_day_needs_no_schedule():
    assert night_crons((0, 24)) is None
    assert night_crons((6, 24)) == ("0 6 * * *", "0 0 * * *")


def test_disabled_spot_pool_creates_no_spot_node_group():
    raw = offline.stack_config("eu-west")
    raw["speech:spotPool"] = {"enabled": False}
    graph = offline.run("eu-west", DEFAULT_TOPOLOGY, config=raw)
    assert {g.inputs["capacityType"] for g in graph.of_type(NODE_GROUP)} == {"ON_DEMAND"}
    assert set(graph.exports["nodePools"]) == {"gpu", "cpu"}


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_kubeconfig_is_a_secret_that_mints_tokens_with_aws_eks_get_token(program, stack):
    graph = program(stack)
    assert "kubeconfig" in graph.secret_exports
    kubeconfig = json.loads(graph.exports["kubeconfig"])
    (cluster,) = kubeconfig["clusters"]
    assert cluster["cluster"]["server"] == graph.exports["clusterEndpoint"]
    assert cluster["cluster"]["certificate-authority-data"]
    (user,) = kubeconfig["users"]
    exec_ = user["user"]["exec"]
    assert exec_["command"] == "aws"
    assert exec_["args"][:2] == ["eks", "get-token"]
    assert exec_["args"][exec_["args"].index("--cluster-name") + 1] == graph.exports["clusterName"]
    assert exec_["args"][exec_["args"].index("--region") + 1] == _cfg(stack).region.aws_region


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_stack_exports_each_node_pools_name(program, stack):
    graph = program(stack)
    # The mock names a node group f"{logical name}-mock", as EKS would give it its generated name.
    assert graph.exports["nodePools"] == {role: f"{_pool(graph, role).name}-mock" for role in ("gpu", "cpu", "spot")}
    assert graph.exports["clusterName"] == f"{offline.project_name()}-{stack}"
