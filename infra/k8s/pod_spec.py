"""The serving pod, as plain Kubernetes objects: where it runs, what it asks for, how it is probed and stopped.

Pure functions (no Pulumi resources), so tests read the pod exactly as the Deployment gets it. Every object these
build is checked against the Kubernetes schema of the cluster's version in the tests (strict: unknown keys fail).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from contract import service
from infra.config import ShadowConfig
from infra.k8s.grace import PRE_STOP_SLEEP_S, termination_grace_seconds
from infra.node_pools import GPU_RESOURCE, GPU_TAINT, POOL_LABEL, SPOT_TAINT, toleration

CONTAINER = "serving"
PORT_NAME = "http"
GRPC_PORT_NAME = service.GRPC_PORT_NAME
APP_LABEL = "app.kubernetes.io/name"
ROLE_LABEL = "speech.io/role"
# The image runs as this user (serving/Dockerfile); the pod insists on it.
RUN_AS = 10001
MODEL_CACHE_DIR = "/var/cache/speech/models"
TOPOLOGY_DIR = "/etc/speech"
TOPOLOGY_FILE = "topology.json"
# Startup: pulling the model from the store, loading and one warm-up decode. Ten minutes before the kubelet gives up.
STARTUP_PERIOD_S, STARTUP_FAILURES = 10, 60
ZONE_KEY = "topology.kubernetes.io/zone"


@dataclass(frozen=True)
class Placement:
    """Which nodes a Deployment's pods may use, and what each pod asks for there."""

    pools: tuple[str, ...]  # node pools (speech.io/pool values) the pod may run on, most preferred first
    tolerations: tuple[Mapping[str, str], ...]
    requests: Mapping[str, str]
    limits: Mapping[str, str]


def placement(profile: str, role: str) -> Placement:
    """Streams on the GPU pool (one GPU each) or, for a cpu profile, the CPU pool; batch on spot GPUs first.

    Batch replicas may fall back to the on-demand GPU pool when no spot capacity can be had, so batch requests
    keep being served; cluster-autoscaler's priority expander still tries spot first for them.
    """
    if profile == "cpu":
        return Placement(
            pools=("cpu",),
            tolerations=(),
            requests={"cpu": "3", "memory": "6Gi", "ephemeral-storage": "4Gi"},
            limits={"memory": "8Gi", "ephemeral-storage": "12Gi"},
        )
    gpu_requests = {"cpu": "3", "memory": "10Gi", "ephemeral-storage": "4Gi", GPU_RESOURCE: "1"}
    gpu_limits = {"memory": "12Gi", "ephemeral-storage": "12Gi", GPU_RESOURCE: "1"}
    if role == "batch":
        return Placement(("spot", "gpu"), (toleration(GPU_TAINT), toleration(SPOT_TAINT)), gpu_requests, gpu_limits)
    return Placement(("gpu",), (toleration(GPU_TAINT),), gpu_requests, gpu_limits)


def labels(role: str) -> dict[str, str]:
    """Every serving pod carries the app label (NetworkPolicy, ServiceMonitor); each Deployment its role."""
    return {APP_LABEL: service.SERVICE_ACCOUNT, ROLE_LABEL: role}


def _affinity(pools: tuple[str, ...]) -> dict[str, Any]:
    required = {"matchExpressions": [{"key": POOL_LABEL, "operator": "In", "values": list(pools)}]}
    affinity: dict[str, Any] = {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [required]}}
    if len(pools) > 1:
        preferred = {"matchExpressions": [{"key": POOL_LABEL, "operator": "In", "values": [pools[0]]}]}
        affinity["preferredDuringSchedulingIgnoredDuringExecution"] = [{"weight": 100, "preference": preferred}]
    return {"nodeAffinity": affinity}


def _probe(path: str, period_s: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": PORT_NAME},
        "periodSeconds": period_s,
        "failureThreshold": failures,
        "timeoutSeconds": 5,
    }


def grpc_probe(period_s: int, failures: int) -> dict[str, Any]:
    """Kubernetes' own gRPC probe (grpc.health.v1) of the speech service; it takes a port number, not a name."""
    return {
        "grpc": {"port": service.GRPC_PORT, "service": service.GRPC_SERVICE},
        "periodSeconds": period_s,
        "failureThreshold": failures,
        "timeoutSeconds": 5,
    }


def container(image: str, where: Placement, settings_config_map: str) -> dict[str, Any]:
    """The serving container: non-root, read-only root, probes from the contract, a drain-friendly preStop."""
    return {
        "name": CONTAINER,
        "image": image,
        "ports": [
            {"name": PORT_NAME, "containerPort": service.SERVING_PORT, "protocol": "TCP"},
            {"name": GRPC_PORT_NAME, "containerPort": service.GRPC_PORT, "protocol": "TCP"},
        ],
        "envFrom": [{"configMapRef": {"name": settings_config_map}}],
        "resources": {"requests": dict(where.requests), "limits": dict(where.limits)},
        # Readiness gates traffic; startup allows the first model pull and warm-up before liveness begins, so a
        # slow pull is never mistaken for a hung process; liveness then only asks whether HTTP answers. Readiness
        # asks the gRPC health service, which is SERVING exactly when /readyz is 200, so a pod whose gRPC server
        # does not answer takes no traffic on either port.
        "startupProbe": _probe(service.READINESS_PATH, STARTUP_PERIOD_S, STARTUP_FAILURES),
        "readinessProbe": grpc_probe(5, 2),
        "livenessProbe": _probe(service.HEALTH_PATH, 10, 3),
        # Kubernetes' own sleep action: the image needs no shell for it.
        "lifecycle": {"preStop": {"sleep": {"seconds": PRE_STOP_SLEEP_S}}},
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "runAsGroup": RUN_AS,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "model-cache", "mountPath": MODEL_CACHE_DIR},
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "topology", "mountPath": TOPOLOGY_DIR, "readOnly": True},
        ],
    }


def pod_template(
    role: str,
    image: str,
    where: Placement,
    *,
    drain_seconds: int,
    settings_config_map: str,
    topology_config_map: str,
    config_hash: str,
) -> dict[str, Any]:
    """The pod template of one serving Deployment.

    ``config_hash`` (of the settings and topology) is an annotation, so a change to either rolls the pods, which
    read both only at start.
    """
    pod_labels = labels(role)
    return {
        "metadata": {"labels": pod_labels, "annotations": {"speech.io/config-hash": config_hash}},
        "spec": {
            "serviceAccountName": service.SERVICE_ACCOUNT,
            # The container never calls the Kubernetes API; its AWS credentials come from Pod Identity.
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": termination_grace_seconds(drain_seconds),
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": RUN_AS,
                "runAsGroup": RUN_AS,
                "fsGroup": RUN_AS,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "affinity": _affinity(where.pools),
            "tolerations": [dict(t) for t in where.tolerations],
            # Spread over zones so that losing a zone loses a share of the replicas, never all of them;
            # ScheduleAnyway, because a zone without free GPUs must not stop a scale-up.
            "topologySpreadConstraints": [
                {
                    "maxSkew": 1,
                    "topologyKey": ZONE_KEY,
                    "whenUnsatisfiable": "ScheduleAnyway",
                    "labelSelector": {"matchLabels": pod_labels},
                }
            ],
            "containers": [container(image, where, settings_config_map)],
            "volumes": [
                # The model is pulled into an emptyDir: a fresh, verified copy per pod, bounded in size.
                {"name": "model-cache", "emptyDir": {"sizeLimit": "8Gi"}},
                {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
                {"name": "topology", "configMap": {"name": topology_config_map}},
            ],
        },
    }


def settings(
    aws_region: str,
    bucket: str,
    model_name: str,
    model_version: str,
    inference_threads: int,
    drain_seconds: int,
    public_domain: str | None = None,
    shadow: ShadowConfig | None = None,
    language_models: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The container's environment, by the contract's variable names (a ConfigMap takes strings only).

    ``drain_seconds`` is the container's drain grace, the number :func:`termination_grace_seconds` sizes the pod's
    termination grace from. ``public_domain`` lets the container send a tenant of another jurisdiction to its
    regional endpoint; ``shadow`` names a candidate version the container also runs on a sample of batch requests,
    off the response path. ``language_models`` ({language: model name}) are served beside ``model_name`` for
    requests in their language.
    """
    domain = {service.ENV_PUBLIC_DOMAIN: public_domain} if public_domain else {}
    candidate = (
        {service.ENV_SHADOW_VERSION: shadow.version, service.ENV_SHADOW_SAMPLE_RATE: repr(shadow.sample_rate)}
        if shadow
        else {}
    )
    languages = (
        {service.ENV_MODEL_LANGUAGES: json.dumps(dict(sorted(language_models.items())))} if language_models else {}
    )
    return {
        **domain,
        **candidate,
        **languages,
        service.ENV_REGION: aws_region,
        service.ENV_TOPOLOGY_FILE: f"{TOPOLOGY_DIR}/{TOPOLOGY_FILE}",
        service.ENV_MODEL_BUCKET: bucket,
        service.ENV_MODEL_NAME: model_name,
        service.ENV_MODEL_VERSION: model_version,
        service.ENV_MODEL_CACHE_DIR: MODEL_CACHE_DIR,
        service.ENV_MODEL_CACHE: MODEL_CACHE_DIR,
        service.ENV_INFERENCE_THREADS: str(inference_threads),
        service.ENV_SHUTDOWN_GRACE_S: str(drain_seconds),
        service.ENV_GRPC_PORT: str(service.GRPC_PORT),
        service.ENV_LOG_LEVEL: "info",
    }
