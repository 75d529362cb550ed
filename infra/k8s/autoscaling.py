"""Scaling on what matters for speech: the container's own metrics, scraped by Prometheus, read by KEDA.

The realtime Rollout scales on open WebSocket streams per pod, the batch Rollout on admitted batch requests
per pod (both metric names from `contract.service`); CPU utilization is a second trigger on each, so whichever
asks for more replicas wins and CPU acts as a floor. Scale-down is slow and one pod at a time: a removed pod
drains its streams first, and flapping would cut conversations for nothing.
"""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_kubernetes as kubernetes

from contract import service
from infra.config import ReplicaBounds
from infra.k8s.gates import ROLLOUT_HASH_LABEL
from infra.k8s.pod_spec import APP_LABEL, PORT_NAME
from infra.k8s.rollout import ROLLOUT_API
from infra.k8s.services import SCRAPE_LABELS

SCALED_OBJECT_API = "keda.sh/v1alpha1"
SERVICE_MONITOR_API = "monitoring.coreos.com/v1"
SCRAPE_INTERVAL = "15s"
CPU_TARGET_PERCENT = 70


def service_monitor(
    name: str, *, namespace: pulumi.Input[str], opts: pulumi.ResourceOptions
) -> kubernetes.apiextensions.CustomResource:
    """Prometheus scrapes `/metrics` of every serving pod once, through its role's own Service.

    Each series also gets the pod's rollout hash, so the canary's gates and the dashboard tell versions apart.
    """
    return kubernetes.apiextensions.CustomResource(
        name,
        api_version=SERVICE_MONITOR_API,
        kind="ServiceMonitor",
        metadata={"name": service.SERVICE_ACCOUNT, "namespace": namespace},
        spec={
            "selector": {"matchLabels": {APP_LABEL: service.SERVICE_ACCOUNT, **SCRAPE_LABELS}},
            "namespaceSelector": {"matchNames": [namespace]},
            "podTargetLabels": [ROLLOUT_HASH_LABEL],
            "endpoints": [{"port": PORT_NAME, "path": service.METRICS_PATH, "interval": SCRAPE_INTERVAL}],
        },
        opts=opts,
    )


def per_pod_query(metric: str, namespace: str, service_name: str) -> str:
    """The sum of ``metric`` over a Service's pods; KEDA divides it by the target per pod (AverageValue)."""
    return f'sum({metric}{{namespace="{namespace}",service="{service_name}"}})'


def scaled_object_spec(
    rollout: str, bounds: ReplicaBounds, prometheus_url: str, query: str, per_pod_target: int
) -> dict[str, Any]:
    # A Rollout has the scale subresource, so KEDA's HPA sets its replica count as it would a Deployment's.
    return {
        "scaleTargetRef": {"apiVersion": ROLLOUT_API, "kind": "Rollout", "name": rollout},
        "minReplicaCount": bounds.min_replicas,
        "maxReplicaCount": bounds.max_replicas,
        "pollingInterval": 15,
        "cooldownPeriod": 300,
        "advanced": {
            "horizontalPodAutoscalerConfig": {
                "behavior": {
                    "scaleUp": {
                        "stabilizationWindowSeconds": 0,
                        "policies": [{"type": "Percent", "value": 100, "periodSeconds": 30}],
                    },
                    "scaleDown": {
                        "stabilizationWindowSeconds": 300,
                        "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}],
                    },
                }
            }
        },
        "triggers": [
            {
                "type": "prometheus",
                "metricType": "AverageValue",
                "metadata": {"serverAddress": prometheus_url, "query": query, "threshold": str(per_pod_target)},
            },
            {"type": "cpu", "metricType": "Utilization", "metadata": {"value": str(CPU_TARGET_PERCENT)}},
        ],
    }


def scaled_object(
    name: str,
    *,
    namespace: str,
    rollout: str,
    bounds: ReplicaBounds,
    prometheus_url: pulumi.Input[str],
    metric: str,
    per_pod_target: int,
    opts: pulumi.ResourceOptions,
) -> kubernetes.apiextensions.CustomResource:
    """A KEDA ScaledObject for ``rollout`` (its role's own Service has the same name) on ``metric`` per pod."""
    spec = pulumi.Output.from_input(prometheus_url).apply(
        lambda url: scaled_object_spec(rollout, bounds, url, per_pod_query(metric, namespace, rollout), per_pod_target)
    )
    return kubernetes.apiextensions.CustomResource(
        name,
        api_version=SCALED_OBJECT_API,
        kind="ScaledObject",
        metadata={"name": rollout, "namespace": namespace},
        spec=spec,
        opts=opts,
    )
