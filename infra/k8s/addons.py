"""The cluster add-ons the serving workload needs, as pinned Helm releases on the cluster's own provider.

* NVIDIA device plugin: advertises `nvidia.com/gpu` on the GPU and spot nodes (the AL2023 NVIDIA AMI brings the
  driver, not the plugin), so a pod asking for a GPU can be scheduled at all.
* AWS Load Balancer Controller: keeps the regional NLB's target group bound to the ingress gateway's pods.
* cluster-autoscaler: grows and shrinks the managed node groups (scale-from-zero tags in `infra.node_pools`), spot
  first for the batch pods that tolerate it; EKS managed node groups drain spot nodes on interruption notices.
* metrics-server (CPU for the autoscalers), KEDA (scaling on the container's own metrics) and
  kube-prometheus-stack (the Prometheus KEDA and the canary gates ask, scraping every ServiceMonitor and loading every
  PrometheusRule; its Grafana loads every dashboard ConfigMap labelled for its sidecar).
* Argo Rollouts: runs the serving workload's canaries over the Istio gateway's routes (`infra.k8s.rollout`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_kubernetes as kubernetes

from contract.topology import Region
from infra.k8s import aws_controllers
from infra.k8s.helm import release
from infra.k8s.pod_identity import pod_identity_role
from infra.node_pools import GPU_NODE_LABELS, GPU_TAINT, POOL_LABEL, SPOT_TAINT, toleration
from infra.tags import region_tags
from infra.versions import (
    ARGO_ROLLOUTS,
    AWS_LOAD_BALANCER_CONTROLLER,
    CLUSTER_AUTOSCALER,
    KEDA,
    KUBE_PROMETHEUS_STACK,
    METRICS_SERVER,
    NVIDIA_DEVICE_PLUGIN,
)

MONITORING_NAMESPACE = "monitoring"
KEDA_NAMESPACE = "keda"
ROLLOUTS_NAMESPACE = "argo-rollouts"
# kube-prometheus-stack's Grafana sidecar loads every ConfigMap with this label as a dashboard.
DASHBOARD_LABEL = ("grafana_dashboard", "1")
# kube-prometheus-stack names its objects after this; the Prometheus Service is "<fullname>-prometheus".
PROMETHEUS_FULLNAME = "kps"
PROMETHEUS_PORT = 9090
PROMETHEUS_URL = f"http://{PROMETHEUS_FULLNAME}-prometheus.{MONITORING_NAMESPACE}.svc:{PROMETHEUS_PORT}"
# The Prometheus operator labels every Prometheus server pod with this.
PROMETHEUS_POD_LABELS = {"app.kubernetes.io/name": "prometheus"}


@dataclass(frozen=True)
class ClusterAddonsArgs:
    region: Region
    provider: kubernetes.Provider
    cluster_name: pulumi.Input[str]
    kubernetes_version: str
    vpc_id: pulumi.Input[str]
    target_group_arn: pulumi.Input[str]  # the one target group the load balancer controller may fill
    spot_autoscaling_group: pulumi.Input[str] | None = None  # tried first when it exists
    depends_on: Sequence[pulumi.Resource] = field(default_factory=tuple)  # nodes, CoreDNS, cluster access


class ClusterAddons(pulumi.ComponentResource):
    """Every add-on release of one cluster, each on the cluster's provider, after the nodes and CoreDNS exist.

    The AWS-facing controllers get their own Pod Identity roles (`infra.k8s.aws_controllers` says what each may
    do); nothing relies on the node role.
    """

    lb_controller: kubernetes.helm.v3.Release
    device_plugin: kubernetes.helm.v3.Release
    keda: kubernetes.helm.v3.Release
    prometheus: kubernetes.helm.v3.Release
    metrics_server: kubernetes.helm.v3.Release
    rollouts: kubernetes.helm.v3.Release
    prometheus_url: pulumi.Output[str]

    def __init__(self, name: str, args: ClusterAddonsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("speech:infra:ClusterAddons", name, None, opts)
        aws_region, tags = args.region.aws_region, region_tags(args.region)
        child = pulumi.ResourceOptions(parent=self)
        on_cluster = pulumi.ResourceOptions(parent=self, provider=args.provider, depends_on=list(args.depends_on))

        def role(role_name: str, service_account: str, policy: pulumi.Input[str]) -> pulumi.Resource:
            return pod_identity_role(
                f"{name}-{role_name}-role",
                aws_region=aws_region,
                cluster_name=args.cluster_name,
                namespace=aws_controllers.KUBE_SYSTEM,
                service_account=service_account,
                policy=policy,
                tags=tags,
                opts=child,
            ).association

        self.device_plugin = release(
            f"{name}-nvidia-device-plugin",
            NVIDIA_DEVICE_PLUGIN,
            release_name="nvidia-device-plugin",
            namespace=aws_controllers.KUBE_SYSTEM,
            values={
                "nodeSelector": GPU_NODE_LABELS,
                "tolerations": [toleration(GPU_TAINT), toleration(SPOT_TAINT)],
                "priorityClassName": "system-node-critical",
            },
            opts=on_cluster,
        )

        lb_association = role(
            "lb-controller",
            aws_controllers.LB_CONTROLLER_SERVICE_ACCOUNT,
            pulumi.Output.from_input(args.target_group_arn).apply(aws_controllers.lb_controller_policy),
        )
        self.lb_controller = release(
            f"{name}-lb-controller",
            AWS_LOAD_BALANCER_CONTROLLER,
            release_name="aws-load-balancer-controller",
            namespace=aws_controllers.KUBE_SYSTEM,
            values=aws_controllers.lb_controller_values(args.cluster_name, aws_region, args.vpc_id),
            # Credentials must be associated before the controller's first AWS call.
            opts=on_cluster.merge(pulumi.ResourceOptions(depends_on=[lb_association])),
        )

        autoscaler_association = role(
            "autoscaler",
            aws_controllers.AUTOSCALER_SERVICE_ACCOUNT,
            pulumi.Output.from_input(args.cluster_name).apply(aws_controllers.autoscaler_policy),
        )
        release(
            f"{name}-autoscaler",
            CLUSTER_AUTOSCALER,
            release_name="cluster-autoscaler",
            namespace=aws_controllers.KUBE_SYSTEM,
            values=aws_controllers.autoscaler_values(
                args.cluster_name, aws_region, args.kubernetes_version, args.spot_autoscaling_group
            ),
            opts=on_cluster.merge(pulumi.ResourceOptions(depends_on=[autoscaler_association])),
        )

        self.metrics_server = release(
            f"{name}-metrics-server",
            METRICS_SERVER,
            release_name="metrics-server",
            namespace=aws_controllers.KUBE_SYSTEM,
            values={"replicas": 2},
            opts=on_cluster,
        )
        self.keda = release(
            f"{name}-keda",
            KEDA,
            release_name="keda",
            namespace=KEDA_NAMESPACE,
            create_namespace=True,
            values={},
            # KEDA's CPU trigger reads the resource metrics API that metrics-server serves.
            opts=on_cluster.merge(pulumi.ResourceOptions(depends_on=[self.metrics_server])),
        )
        self.prometheus = release(
            f"{name}-prometheus",
            KUBE_PROMETHEUS_STACK,
            release_name="kube-prometheus-stack",
            namespace=MONITORING_NAMESPACE,
            create_namespace=True,
            values=prometheus_values(),
            opts=on_cluster,
        )
        self.rollouts = release(
            f"{name}-rollouts",
            ARGO_ROLLOUTS,
            release_name="argo-rollouts",
            namespace=ROLLOUTS_NAMESPACE,
            create_namespace=True,
            values=rollouts_values(),
            # Its ServiceMonitor needs the Prometheus operator's CRDs.
            opts=on_cluster.merge(pulumi.ResourceOptions(depends_on=[self.prometheus])),
        )

        self.prometheus_url = pulumi.Output.from_input(PROMETHEUS_URL)
        self.register_outputs({"prometheus_url": self.prometheus_url})


def prometheus_values() -> Mapping[str, object]:
    return {
        "fullnameOverride": PROMETHEUS_FULLNAME,
        "prometheus": {
            "prometheusSpec": {
                # By default the chart's Prometheus only scrapes ServiceMonitors labelled with its own release;
                # the serving workload's lives in its own namespace with its own labels.
                "serviceMonitorSelectorNilUsesHelmValues": False,
                "podMonitorSelectorNilUsesHelmValues": False,
                # Likewise for the serving workload's alert rules (a PrometheusRule of its own).
                "ruleSelectorNilUsesHelmValues": False,
                "retention": "15d",
            }
        },
        "grafana": {
            "sidecar": {"dashboards": {"enabled": True, "label": DASHBOARD_LABEL[0], "labelValue": DASHBOARD_LABEL[1]}}
        },
    }


def rollouts_values() -> Mapping[str, object]:
    """Two controllers (one leads) on the CPU pool, their metrics scraped; no dashboard: `kubectl argo rollouts`."""
    return {
        "controller": {
            "replicas": 2,
            "nodeSelector": {POOL_LABEL: "cpu"},
            "metrics": {"enabled": True, "serviceMonitor": {"enabled": True}},
        },
        "dashboard": {"enabled": False},
    }
