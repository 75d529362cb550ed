"""Who may talk to the serving pods, and where they may connect: deny by default, then exactly what serving needs.

Ingress: the ingress gateway's pods on the serving and gRPC ports, and Prometheus and the canary's pre-rollout
check on the serving port only (kubelet probes, HTTP and gRPC, come from the node's own address, which the VPC CNI's
policy agent always admits). `/metrics` shares the serving port, so what keeps it off the internet is the gateway,
which has no route to it; the policy keeps everything else in the cluster away.

Egress: DNS (CoreDNS), the EKS Pod Identity agent on its link-local address (it hands out the pod's AWS
credentials, so the pod never calls STS), and S3 in the region over HTTPS, the only AWS API the container calls:
objects are encrypted with the region's KMS key, which S3 itself uses on the pod's behalf. NetworkPolicy speaks
addresses, not names, so S3 is its published address ranges for the region (AWS's ip-ranges, read at deploy
time; the S3 gateway endpoint keeps the traffic on the AWS network).

The pre-rollout check (a Job Argo Rollouts runs, `infra.k8s.gates`) may reach DNS, the ingress gateway's pods (it
asks for the canary by header, through the public routes) and the serving pods (the batch canary, directly).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pulumi
import pulumi_kubernetes as kubernetes

from contract import service
from infra.k8s.mesh import GatewayAddress

NETWORK_POLICY_API = "networking.k8s.io/v1"
# Where the EKS Pod Identity agent listens on every node (IPv4).
POD_IDENTITY_AGENT_CIDR = "169.254.170.23/32"
POD_IDENTITY_AGENT_PORT = 80
HTTPS_PORT = 443
DNS_PORT = 53
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
DNS_POD_LABELS = {"k8s-app": "kube-dns"}


def _from_pods(namespace: str, pod_labels: Mapping[str, str]) -> dict[str, Any]:
    return {
        "namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: namespace}},
        "podSelector": {"matchLabels": dict(pod_labels)},
    }


def policy_specs(
    serving_labels: Mapping[str, str],
    smoke_labels: Mapping[str, str],
    gateway: GatewayAddress,
    prometheus: tuple[str, Mapping[str, str]],
    s3_cidrs: Sequence[str],
) -> dict[str, dict[str, Any]]:
    """NetworkPolicy specs by object name. ``prometheus`` is (namespace, pod labels)."""
    serving_port = [{"protocol": "TCP", "port": service.SERVING_PORT}]
    dns = {
        "to": [_from_pods("kube-system", DNS_POD_LABELS)],
        "ports": [{"protocol": "UDP", "port": DNS_PORT}, {"protocol": "TCP", "port": DNS_PORT}],
    }
    smoke_pods = {"podSelector": {"matchLabels": dict(smoke_labels)}}
    public_ports = [*serving_port, {"protocol": "TCP", "port": service.GRPC_PORT}]
    return {
        "default-deny": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
        "serving-ingress": {
            "podSelector": {"matchLabels": dict(serving_labels)},
            "policyTypes": ["Ingress"],
            "ingress": [
                {"from": [_from_pods(gateway.namespace, gateway.pod_labels)], "ports": public_ports},
                {"from": [_from_pods(*prometheus)], "ports": serving_port},
                {"from": [smoke_pods], "ports": serving_port},
            ],
        },
        "serving-egress": {
            "podSelector": {"matchLabels": dict(serving_labels)},
            "policyTypes": ["Egress"],
            "egress": [
                dns,
                {
                    "to": [{"ipBlock": {"cidr": POD_IDENTITY_AGENT_CIDR}}],
                    "ports": [{"protocol": "TCP", "port": POD_IDENTITY_AGENT_PORT}],
                },
                {
                    "to": [{"ipBlock": {"cidr": cidr}} for cidr in sorted(s3_cidrs)],
                    "ports": [{"protocol": "TCP", "port": HTTPS_PORT}],
                },
            ],
        },
        "smoke-egress": {
            "podSelector": {"matchLabels": dict(smoke_labels)},
            "policyTypes": ["Egress"],
            "egress": [
                dns,
                {
                    "to": [_from_pods(gateway.namespace, gateway.pod_labels)],
                    "ports": [{"protocol": "TCP", "port": gateway.pod_port}],
                },
                {"to": [{"podSelector": {"matchLabels": dict(serving_labels)}}], "ports": serving_port},
            ],
        },
    }


def network_policies(
    name: str,
    *,
    namespace: str,
    serving_labels: Mapping[str, str],
    smoke_labels: Mapping[str, str],
    gateway: GatewayAddress,
    prometheus: tuple[str, Mapping[str, str]],
    s3_cidrs: pulumi.Input[Sequence[str]],
    opts: pulumi.ResourceOptions,
) -> list[kubernetes.networking.v1.NetworkPolicy]:
    specs = pulumi.Output.from_input(s3_cidrs).apply(
        lambda cidrs: policy_specs(serving_labels, smoke_labels, gateway, prometheus, cidrs)
    )

    def spec_of(policy: str) -> pulumi.Output[Any]:
        return specs.apply(lambda all_specs: all_specs[policy])

    return [
        kubernetes.networking.v1.NetworkPolicy(
            f"{name}-{policy}",
            metadata=kubernetes.meta.v1.ObjectMetaArgs(name=policy, namespace=namespace),
            spec=spec_of(policy),
            opts=opts,
        )
        for policy in ("default-deny", "serving-ingress", "serving-egress", "smoke-egress")
    ]
