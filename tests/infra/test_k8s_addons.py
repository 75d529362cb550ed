"""Add-ons on every regional cluster: pinned charts, the cluster's own provider, explicit order, scoped roles."""

from __future__ import annotations

import json

import pytest

from contract.topology import DEFAULT_TOPOLOGY
from infra import config, offline, versions
from infra.k8s.aws_controllers import SPOT_PRIORITY
from tests.conftest import REGIONAL_STACKS
from tests.infra import kube

CHARTS = {
    "nvidia-device-plugin": versions.NVIDIA_DEVICE_PLUGIN,
    "aws-load-balancer-controller": versions.AWS_LOAD_BALANCER_CONTROLLER,
    "cluster-autoscaler": versions.CLUSTER_AUTOSCALER,
    "metrics-server": versions.METRICS_SERVER,
    "keda": versions.KEDA,
    "kube-prometheus-stack": versions.KUBE_PROMETHEUS_STACK,
    "istio-base": versions.ISTIO_BASE,
    "istiod": versions.ISTIOD,
    "istio-ingress": versions.ISTIO_GATEWAY,
    "argo-rollouts": versions.ARGO_ROLLOUTS,
    "cloudwatch-exporter": versions.CLOUDWATCH_EXPORTER,
}
ASSOCIATION = "aws:eks/podIdentityAssociation:PodIdentityAssociation"


def _cfg(stack: str) -> config.RegionalConfig:
    cfg = config.load(stack, offline.stack_config(stack), DEFAULT_TOPOLOGY)
    assert isinstance(cfg, config.RegionalConfig)
    return cfg


def _provider(graph: offline.Graph) -> offline.Registration:
    (provider,) = graph.of_type("pulumi:providers:kubernetes")
    return provider


def _role_policy(graph: offline.Graph, service_account: str) -> dict:
    (association,) = [a for a in graph.of_type(ASSOCIATION) if a.inputs["serviceAccount"] == service_account]
    (role,) = [r for r in graph.of_type("aws:iam/role:Role") if r.outputs["arn"] == association.inputs["roleArn"]]
    (policy,) = [p for p in graph.of_type("aws:iam/rolePolicy:RolePolicy") if p.inputs["role"] == role.id]
    return json.loads(policy.inputs["policy"])


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_every_add_on_is_its_pinned_chart_from_its_repository(program, stack):
    releases = {r.inputs["name"]: r.inputs for r in program(stack).of_type(kube.HELM_RELEASE)}
    assert set(releases) == set(CHARTS)
    for name, chart in CHARTS.items():
        assert (releases[name]["chart"], releases[name]["version"]) == (chart.name, chart.version)
        assert releases[name]["repositoryOpts"]["repo"] == chart.repository
        assert releases[name]["atomic"] is True


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_one_kubernetes_provider_per_cluster_owned_by_the_cluster_and_used_by_every_object(program, stack):
    graph = program(stack)
    provider = _provider(graph)
    assert graph.by_urn(provider.parent).type == "speech:infra:Cluster"
    assert json.loads(provider.inputs["kubeconfig"]) == json.loads(graph.exports["kubeconfig"])
    reference = f"{provider.urn}::{provider.id}"
    kubernetes = [r for r in graph.resources if r.type.startswith("kubernetes:")]
    assert kubernetes
    for resource in kubernetes:
        assert resource.provider == reference, f"{resource.name} is not created with the cluster's provider"


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_add_ons_wait_for_nodes_and_install_in_dependency_order(program, stack):
    graph = program(stack)
    releases = {r.inputs["name"]: r for r in graph.of_type(kube.HELM_RELEASE)}
    nodes = {g.urn for g in graph.of_type("aws:eks/nodeGroup:NodeGroup")}
    coredns = graph.named(f"speech-{stack}-cluster-coredns").urn
    for name in ("nvidia-device-plugin", "aws-load-balancer-controller", "cluster-autoscaler", "keda"):
        assert {coredns} | nodes <= set(releases[name].dependencies), f"{name} may start before nodes and CoreDNS"

    def waits_for(later: str, earlier: str) -> bool:
        return releases[earlier].urn in releases[later].dependencies

    assert waits_for("keda", "metrics-server")
    assert waits_for("argo-rollouts", "kube-prometheus-stack"), "its ServiceMonitor needs the operator's CRDs"
    assert waits_for("istiod", "istio-base") and waits_for("istio-ingress", "istiod")
    associations = {a.urn for a in graph.of_type(ASSOCIATION)}
    for name in ("aws-load-balancer-controller", "cluster-autoscaler"):
        assert associations & set(releases[name].dependencies), f"{name} may start without its credentials"
    objects = {(r.inputs["kind"], r.inputs["metadata"]["name"]): r for r in kube.objects(graph)}
    for kind, name, needed in (
        ("Rollout", "speech-serving", "nvidia-device-plugin"),
        ("Rollout", "speech-serving", "argo-rollouts"),
        ("AnalysisTemplate", "speech-gates", "argo-rollouts"),
        ("ScaledObject", "speech-serving", "keda"),
        ("PrometheusRule", "speech-serving-alerts", "kube-prometheus-stack"),
        ("ServiceMonitor", "speech-serving", "kube-prometheus-stack"),
        ("TargetGroupBinding", "speech-public", "aws-load-balancer-controller"),
        ("TargetGroupBinding", "speech-public", "istio-ingress"),
        ("VirtualService", "speech-public", "istiod"),
    ):
        assert kube.waits_for(graph, objects[kind, name], releases[needed]), f"{kind} {name} before {needed}"
    assert kube.waits_for(graph, releases["istio-ingress"], releases["aws-load-balancer-controller"])
    assert associations & set(releases["cloudwatch-exporter"].dependencies), "YACE may start without credentials"


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_argo_rollouts_runs_two_controllers_on_the_cpu_pool_and_is_scraped(program, stack):
    values = kube.release(program(stack), "argo-rollouts").inputs["values"]
    controller = values["controller"]
    assert controller["replicas"] == 2 and controller["nodeSelector"] == {"speech.io/pool": "cpu"}
    assert controller["metrics"]["serviceMonitor"]["enabled"] is True


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_prometheus_loads_every_rule_and_grafana_every_labelled_dashboard(program, stack):
    graph = program(stack)
    values = kube.release(graph, "kube-prometheus-stack").inputs["values"]
    assert values["prometheus"]["prometheusSpec"]["ruleSelectorNilUsesHelmValues"] is False
    sidecar = values["grafana"]["sidecar"]["dashboards"]
    dashboard = kube.find(graph, "ConfigMap", "speech-serving-dashboard")
    assert sidecar["enabled"] is True
    assert dashboard["metadata"]["labels"] == {sidecar["label"]: sidecar["labelValue"]}
    assert dashboard["metadata"]["namespace"] == kube.release(graph, "kube-prometheus-stack").inputs["namespace"]


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_the_device_plugin_runs_on_gpu_and_spot_nodes(program, stack):
    values = kube.release(program(stack), "nvidia-device-plugin").inputs["values"]
    assert values["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {(t["key"], t["effect"]) for t in values["tolerations"]} == {
        ("nvidia.com/gpu", "NoSchedule"),
        ("speech.io/spot", "NoSchedule"),
    }


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_the_load_balancer_controller_knows_its_cluster_and_may_only_fill_the_regional_target_group(program, stack):
    graph, cfg = program(stack), _cfg(stack)
    values = kube.release(graph, "aws-load-balancer-controller").inputs["values"]
    assert (values["clusterName"], values["region"], values["vpcId"]) == (
        graph.exports["clusterName"],
        cfg.region.aws_region,
        graph.exports["vpcId"],
    )
    assert values["enableServiceMutatorWebhook"] is False
    statements = _role_policy(graph, values["serviceAccount"]["name"])["Statement"]
    writes = [s for s in statements if any(not a.split(":")[1].startswith("Describe") for a in s["Action"])]
    (write,) = writes
    assert sorted(write["Action"]) == ["elasticloadbalancing:DeregisterTargets", "elasticloadbalancing:RegisterTargets"]
    assert write["Resource"] == graph.exports["targetGroupArn"]


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_cluster_autoscaler_matches_the_cluster_version_prefers_spot_and_scales_only_its_groups(program, stack):
    graph, cfg = program(stack), _cfg(stack)
    values = kube.release(graph, "cluster-autoscaler").inputs["values"]
    assert values["autoDiscovery"]["clusterName"] == graph.exports["clusterName"]
    assert values["image"]["tag"] == versions.CLUSTER_AUTOSCALER_IMAGE_TAGS[cfg.kubernetes_version]
    assert values["image"]["tag"].startswith(f"v{cfg.kubernetes_version}.")
    assert values["extraArgs"]["expander"] == "priority"
    spot = graph.named(f"speech-{stack}-cluster-spot-group")
    (spot_pattern,) = values["expanderPriorities"][str(SPOT_PRIORITY)]
    assert spot_pattern == f"^{spot.outputs['resources'][0]['autoscalingGroups'][0]['name']}$".replace("-", "\\-")
    statements = _role_policy(graph, values["rbac"]["serviceAccount"]["name"])["Statement"]
    (scale,) = [s for s in statements if "autoscaling:SetDesiredCapacity" in s["Action"]]
    tag = f"aws:ResourceTag/k8s.io/cluster-autoscaler/{graph.exports['clusterName']}"
    assert scale["Condition"] == {"StringEquals": {tag: "owned"}}


def test_every_chart_version_and_autoscaler_image_is_pinned_for_every_supported_kubernetes_version():
    assert set(versions.CLUSTER_AUTOSCALER_IMAGE_TAGS) == set(versions.SUPPORTED_KUBERNETES_VERSIONS)
    charts = [v for v in vars(versions).values() if isinstance(v, versions.HelmChart)]
    assert len(charts) == len(CHARTS)
    for chart in charts:
        assert chart.version[0].isdigit() and chart.repository.startswith("https://")
