"""The three Services over one serving role's pods: all of them, the stable ones and the canary ones.

Argo Rollouts adds the ReplicaSet's hash to the stable and canary Services' selectors, so the gateway can weigh
traffic between two versions. The role's own Service keeps selecting every pod of the role: it is the one
Prometheus scrapes (each pod once, whichever version it runs) and the one whose name KEDA's queries filter on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as kubernetes

from contract import service
from infra.k8s.pod_spec import GRPC_PORT_NAME, PORT_NAME
from infra.k8s.rollout import canary_service, stable_service

# Only the role's own Service carries this label: the ServiceMonitor selects on it, so no pod is scraped twice.
SCRAPE_LABELS = {"speech.io/scrape": "true"}
TRAFFIC_LABEL = "speech.io/traffic"


@dataclass(frozen=True)
class RoleServices:
    """A role's Services: ``all`` its pods, and the ``stable`` and ``canary`` ones the gateway weighs."""

    all: kubernetes.core.v1.Service
    stable: kubernetes.core.v1.Service
    canary: kubernetes.core.v1.Service


def role_services(
    name: str, object_name: str, namespace: str, pod_labels: Mapping[str, str], opts: pulumi.ResourceOptions
) -> RoleServices:
    """The Services ``object_name``, ``<object_name>-stable`` and ``<object_name>-canary`` over ``pod_labels``."""

    def one(suffix: str, service_name: str, labels: Mapping[str, str]) -> kubernetes.core.v1.Service:
        return kubernetes.core.v1.Service(
            f"{name}{suffix}",
            metadata=kubernetes.meta.v1.ObjectMetaArgs(
                name=service_name, namespace=namespace, labels={**pod_labels, **labels}
            ),
            spec=kubernetes.core.v1.ServiceSpecArgs(
                type="ClusterIP",
                selector=dict(pod_labels),
                ports=[
                    kubernetes.core.v1.ServicePortArgs(
                        name=PORT_NAME,
                        port=service.SERVING_PORT,
                        target_port=PORT_NAME,
                        protocol="TCP",
                        # Istio (and the gateway's Envoy) take the protocol from here: HTTP/1.1 with upgrades.
                        app_protocol="http",
                    ),
                    kubernetes.core.v1.ServicePortArgs(
                        name=GRPC_PORT_NAME,
                        port=service.GRPC_PORT,
                        target_port=GRPC_PORT_NAME,
                        protocol="TCP",
                        # HTTP/2 to the pods, whatever the client spoke to the gateway.
                        app_protocol="grpc",
                    ),
                ],
            ),
            opts=opts,
        )

    return RoleServices(
        all=one("-service", object_name, SCRAPE_LABELS),
        stable=one("-stable-service", stable_service(object_name), {TRAFFIC_LABEL: "stable"}),
        canary=one("-canary-service", canary_service(object_name), {TRAFFIC_LABEL: "canary"}),
    )
