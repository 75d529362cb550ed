"""Pinned versions of everything the infrastructure installs, in one place.

Update a version here, in its own commit, after reading its release notes.
"""

from __future__ import annotations

from dataclasses import dataclass

# EKS Kubernetes versions this package is tested against; a stack picks one with `speech:kubernetesVersion`.
SUPPORTED_KUBERNETES_VERSIONS: tuple[str, ...] = ("1.32", "1.33", "1.34", "1.35")


@dataclass(frozen=True)
class HelmChart:
    """A chart by name in a Helm repository, pinned to one version."""

    name: str
    repository: str
    version: str


NVIDIA_DEVICE_PLUGIN = HelmChart("nvidia-device-plugin", "https://nvidia.github.io/k8s-device-plugin", "0.18.2")
# Chart 1.17.0 ships controller v2.17.0 and the elbv2.k8s.aws/v1beta1 TargetGroupBinding CRD.
AWS_LOAD_BALANCER_CONTROLLER = HelmChart("aws-load-balancer-controller", "https://aws.github.io/eks-charts", "1.17.0")
CLUSTER_AUTOSCALER = HelmChart("cluster-autoscaler", "https://kubernetes.github.io/autoscaler", "9.52.1")
METRICS_SERVER = HelmChart("metrics-server", "https://kubernetes-sigs.github.io/metrics-server/", "3.13.0")
KEDA = HelmChart("keda", "https://kedacore.github.io/charts", "2.21.1")
KUBE_PROMETHEUS_STACK = HelmChart(
    "kube-prometheus-stack", "https://prometheus-community.github.io/helm-charts", "79.10.0"
)
# Chart 2.41.1 ships the Argo Rollouts controller v1.9.1 and its CRDs; `kubectl argo rollouts` should match it.
ARGO_ROLLOUTS = HelmChart("argo-rollouts", "https://argoproj.github.io/argo-helm", "2.41.1")
ARGO_ROLLOUTS_CLI_VERSION = "v1.9.1"
# YACE 0.62.1: reads the CloudWatch metrics the alerts need (Route 53 health checks, S3 replication latency).
CLOUDWATCH_EXPORTER = HelmChart(
    "prometheus-yet-another-cloudwatch-exporter", "https://prometheus-community.github.io/helm-charts", "0.50.0"
)
# Istio's base (CRDs), istiod and gateway charts are released together and must run the same version.
ISTIO_VERSION = "1.30.4"
ISTIO_REPOSITORY = "https://istio-release.storage.googleapis.com/charts"
ISTIO_BASE = HelmChart("base", ISTIO_REPOSITORY, ISTIO_VERSION)
ISTIOD = HelmChart("istiod", ISTIO_REPOSITORY, ISTIO_VERSION)
ISTIO_GATEWAY = HelmChart("gateway", ISTIO_REPOSITORY, ISTIO_VERSION)

# cluster-autoscaler is built against one Kubernetes minor version and only supported on that one, so its image
# follows the cluster's version rather than the chart's default.
CLUSTER_AUTOSCALER_IMAGE_TAGS: dict[str, str] = {
    "1.32": "v1.32.3",
    "1.33": "v1.33.1",
    "1.34": "v1.34.0",
    "1.35": "v1.35.0",
}
