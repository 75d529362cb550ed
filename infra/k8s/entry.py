"""The path from the regional load balancer to the serving pods, as the objects' own references link it.

NLB listener (infra.ingress) -> target group -> TargetGroupBinding -> the ingress gateway's Service (its pods'
IPs on the gateway's HTTP port) -> Istio Gateway (selects those pods) -> VirtualService -> the stable and canary
Services of each serving Rollout, by weight (`infra.k8s.rollout`) -> serving pods. The security-group rule lets
the load balancer reach the gateway pods' port on the nodes.

Routes: gRPC (HTTP/2, the `speech.v1.Speech` service's path prefix) to the realtime pods' gRPC port, the streaming
WebSocket, batch requests (to the batch replicas where there are any, retried once on
another replica when a draining or reclaimed one refuses or resets them: a transcription has no side effects),
the rest of the API, and the two probe paths. Nothing else is routed, so `/metrics` answers 404 at the gateway
and is only reachable inside the cluster (NetworkPolicy: Prometheus).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as kubernetes

from contract import service
from contract.topology import Region
from infra.k8s.mesh import GATEWAY_LABELS, GATEWAY_NAMESPACE, GATEWAY_RELEASE, GATEWAY_SERVICE_PORT, GATEWAY_TARGET_PORT
from infra.k8s.services import RoleServices

ISTIO_API = "networking.istio.io/v1"
TARGET_GROUP_BINDING_API = "elbv2.k8s.aws/v1beta1"
PUBLIC_GATEWAY = "speech-public"
# A batch request holds up to an hour of audio (SPEECH_LIMITS__MAX_AUDIO_S), decoded well under a quarter of real
# time on the smallest supported node.
BATCH_TIMEOUT = "900s"
# The VirtualService's route names: each Rollout moves the weights of the routes of the pods it owns.
GRPC_ROUTE, STREAM_ROUTE, BATCH_ROUTE, API_ROUTE, PROBES_ROUTE = "grpc", "stream", "batch", "api", "probes"


def _split(hosts: tuple[str, str], port: int = service.SERVING_PORT) -> list[dict[str, Any]]:
    """All to the stable Service, none to the canary: the weights Argo Rollouts moves during a canary."""
    return [
        {"destination": {"host": host, "port": {"number": port}}, "weight": weight}
        for host, weight in zip(hosts, (100, 0), strict=True)
    ]


def http_routes(realtime: tuple[str, str], batch: tuple[str, str]) -> list[dict[str, Any]]:
    """The VirtualService's HTTP routes, first match wins; each role's (stable, canary) cluster host names."""
    return [
        {
            "name": GRPC_ROUTE,
            # HTTP/2 calls to /speech.v1.Speech/<method>; no timeout: a streaming call lasts as long as speech. The
            # gateway's HTTP server takes h2 in clear text (TLS ended at the NLB, which negotiated h2 by ALPN).
            "match": [{"uri": {"prefix": f"/{service.GRPC_SERVICE}/"}}],
            "route": _split(realtime, service.GRPC_PORT),
        },
        {
            "name": STREAM_ROUTE,
            # WebSocket upgrades pass through Envoy's HTTP routes; no timeout, a stream lasts as long as speech.
            "match": [{"uri": {"prefix": service.STREAM_PATH}}],
            "route": _split(realtime),
        },
        {
            "name": BATCH_ROUTE,
            # Whole uploads, ours and OpenAI's shape alike: the batch replicas, with their timeout and retries.
            "match": [{"uri": {"exact": path}} for path in (service.BATCH_PATH, service.OPENAI_TRANSCRIPTIONS_PATH)],
            "route": _split(batch),
            "timeout": BATCH_TIMEOUT,
            "retries": {"attempts": 2, "retryOn": "connect-failure,refused-stream,reset,503"},
        },
        {"name": API_ROUTE, "match": [{"uri": {"prefix": service.API_PREFIX}}], "route": _split(realtime)},
        {
            "name": PROBES_ROUTE,
            "match": [{"uri": {"exact": service.HEALTH_PATH}}, {"uri": {"exact": service.READINESS_PATH}}],
            "route": _split(realtime),
        },
    ]


@dataclass(frozen=True)
class PublicEntryArgs:
    region: Region
    provider: kubernetes.Provider
    namespace: pulumi.Input[str]  # the serving namespace
    realtime: RoleServices
    batch: RoleServices | None  # None: the realtime pods take batch requests too
    target_group_arn: pulumi.Input[str]
    load_balancer_security_group_id: pulumi.Input[str]
    node_security_group_id: pulumi.Input[str]  # the EKS cluster security group every managed node carries
    depends_on: Sequence[pulumi.Resource] = field(default_factory=tuple)  # the gateway, the controller, istiod


class PublicEntry(pulumi.ComponentResource):
    """Binds the region's load balancer to the ingress gateway and routes the public paths to the serving pods.

    Every host name is accepted: TLS ends at the load balancer, whose certificate names the region's host and the
    global one, and the load balancer's own health checks carry no host at all.
    """

    def __init__(self, name: str, args: PublicEntryArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("speech:infra:PublicEntry", name, None, opts)
        on_cluster = pulumi.ResourceOptions(parent=self, provider=args.provider, depends_on=list(args.depends_on))

        aws.vpc.SecurityGroupIngressRule(
            f"{name}-from-load-balancer",
            region=args.region.aws_region,
            security_group_id=args.node_security_group_id,
            referenced_security_group_id=args.load_balancer_security_group_id,
            ip_protocol="tcp",
            from_port=GATEWAY_TARGET_PORT,
            to_port=GATEWAY_TARGET_PORT,
            description="the regional load balancer to the ingress gateway pods (traffic and health checks)",
            opts=pulumi.ResourceOptions(parent=self),
        )
        kubernetes.apiextensions.CustomResource(
            f"{name}-binding",
            api_version=TARGET_GROUP_BINDING_API,
            kind="TargetGroupBinding",
            metadata={"name": PUBLIC_GATEWAY, "namespace": GATEWAY_NAMESPACE},
            spec={
                "serviceRef": {"name": GATEWAY_RELEASE, "port": GATEWAY_SERVICE_PORT},
                "targetGroupARN": args.target_group_arn,
                "targetType": "ip",
            },
            opts=on_cluster,
        )
        gateway = kubernetes.apiextensions.CustomResource(
            f"{name}-gateway",
            api_version=ISTIO_API,
            kind="Gateway",
            metadata={"name": PUBLIC_GATEWAY, "namespace": args.namespace},
            spec={
                "selector": dict(GATEWAY_LABELS),
                "servers": [
                    {"port": {"number": GATEWAY_SERVICE_PORT, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}
                ],
            },
            opts=on_cluster,
        )
        realtime, batch = _hosts(args.realtime), _hosts(args.batch or args.realtime)
        kubernetes.apiextensions.CustomResource(
            f"{name}-routes",
            api_version=ISTIO_API,
            kind="VirtualService",
            metadata={"name": PUBLIC_GATEWAY, "namespace": args.namespace},
            spec={
                "hosts": ["*"],
                "gateways": [PUBLIC_GATEWAY],
                "http": pulumi.Output.all(*realtime, *batch).apply(
                    lambda hosts: http_routes((hosts[0], hosts[1]), (hosts[2], hosts[3]))
                ),
            },
            opts=on_cluster.merge(pulumi.ResourceOptions(depends_on=[gateway])),
        )
        self.register_outputs({})


def _hosts(services: RoleServices) -> tuple[pulumi.Output[str], pulumi.Output[str]]:
    return _cluster_host(services.stable), _cluster_host(services.canary)


def _cluster_host(svc: kubernetes.core.v1.Service) -> pulumi.Output[str]:
    """A Service's cluster-local DNS name, from the Service object itself."""
    return pulumi.Output.all(svc.metadata.name, svc.metadata.namespace).apply(
        lambda parts: f"{parts[0]}.{parts[1]}.svc.cluster.local"
    )
