"""The Istio mesh the canary issue steers: CRDs (base), the control plane (istiod) and one ingress gateway.

The gateway's pods are what the regional NLB targets (through a TargetGroupBinding, `infra.k8s.entry`): its
Service is a ClusterIP (no second load balancer is created), and the load balancer controller registers the pod IPs
on the gateway's HTTP target port. The gateway namespace carries the controller's readiness-gate label, so a
gateway pod counts as ready only once the NLB reports it healthy: a gateway rollout never leaves the NLB without
healthy targets. Serving pods run without sidecars; the gateway routes to them directly by their endpoints.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_kubernetes as kubernetes

from infra.k8s.helm import release
from infra.node_pools import POOL_LABEL
from infra.versions import ISTIO_BASE, ISTIO_GATEWAY, ISTIOD

ISTIO_NAMESPACE = "istio-system"
GATEWAY_NAMESPACE = "istio-ingress"
# The gateway chart names its Deployment and Service after the release.
GATEWAY_RELEASE = "istio-ingress"
GATEWAY_LABELS = {"istio": "ingress", "speech.io/gateway": "public"}
# HTTP only: TLS ends at the NLB. The Service port is what Istio Gateways and the TargetGroupBinding name; the
# target port is where Envoy listens, and what the NLB's target group reaches.
GATEWAY_SERVICE_PORT = 80
GATEWAY_TARGET_PORT = 8080
GATEWAY_STATUS_PORT = 15021
READINESS_GATE_LABEL = "elbv2.k8s.aws/pod-readiness-gate-inject"


@dataclass(frozen=True)
class GatewayAddress:
    """The ingress gateway as the serving namespace sees it: its pods and port (NetworkPolicy) and its URL."""

    namespace: str
    pod_labels: Mapping[str, str]
    pod_port: int
    url: str


PUBLIC_GATEWAY = GatewayAddress(
    GATEWAY_NAMESPACE,
    GATEWAY_LABELS,
    GATEWAY_TARGET_PORT,
    f"http://{GATEWAY_RELEASE}.{GATEWAY_NAMESPACE}.svc.cluster.local:{GATEWAY_SERVICE_PORT}",
)


@dataclass(frozen=True)
class MeshArgs:
    provider: kubernetes.Provider
    depends_on: Sequence[pulumi.Resource] = field(default_factory=tuple)  # the load balancer controller first


class Mesh(pulumi.ComponentResource):
    """Istio at one pinned version, and the public ingress gateway on the CPU pool.

    Installed in order: CRDs, then istiod (which injects the gateway's proxy), then the gateway; two gateway
    replicas at least, kept by a disruption budget, so a node drain never empties the NLB's target group.
    """

    gateway: kubernetes.helm.v3.Release
    control_plane: list[pulumi.Resource]  # what Istio resources (Gateway, VirtualService) must wait for
    gateway_namespace: pulumi.Output[str]

    def __init__(self, name: str, args: MeshArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("speech:infra:Mesh", name, None, opts)

        def after(*resources: pulumi.Resource) -> pulumi.ResourceOptions:
            return pulumi.ResourceOptions(parent=self, provider=args.provider, depends_on=list(resources))

        system = kubernetes.core.v1.Namespace(
            f"{name}-system-namespace",
            metadata=kubernetes.meta.v1.ObjectMetaArgs(name=ISTIO_NAMESPACE),
            opts=after(*args.depends_on),
        )
        base = release(
            f"{name}-base",
            ISTIO_BASE,
            release_name="istio-base",
            namespace=system.metadata.name,
            values={"defaultRevision": "default"},
            opts=after(system),
        )
        istiod = release(
            f"{name}-istiod",
            ISTIOD,
            release_name="istiod",
            namespace=system.metadata.name,
            values={"pilot": {"autoscaleMin": 2, "nodeSelector": {POOL_LABEL: "cpu"}}},
            opts=after(base),
        )
        gateway_namespace = kubernetes.core.v1.Namespace(
            f"{name}-gateway-namespace",
            metadata=kubernetes.meta.v1.ObjectMetaArgs(
                name=GATEWAY_NAMESPACE, labels={READINESS_GATE_LABEL: "enabled"}
            ),
            opts=after(*args.depends_on),
        )
        self.gateway = release(
            f"{name}-gateway",
            ISTIO_GATEWAY,
            release_name=GATEWAY_RELEASE,
            namespace=gateway_namespace.metadata.name,
            values=gateway_values(),
            opts=after(istiod),
        )
        self.control_plane = [base, istiod]
        self.gateway_namespace = gateway_namespace.metadata.name
        self.register_outputs({"gateway_namespace": self.gateway_namespace})


def gateway_values() -> dict:
    return {
        "labels": GATEWAY_LABELS,
        "service": {
            "type": "ClusterIP",
            "ports": [
                {
                    "name": "status-port",
                    "port": GATEWAY_STATUS_PORT,
                    "protocol": "TCP",
                    "targetPort": GATEWAY_STATUS_PORT,
                },
                {"name": "http2", "port": GATEWAY_SERVICE_PORT, "protocol": "TCP", "targetPort": GATEWAY_TARGET_PORT},
            ],
        },
        "autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 6},
        "podDisruptionBudget": {"minAvailable": 1},
        "nodeSelector": {POOL_LABEL: "cpu"},
    }
