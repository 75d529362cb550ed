"""The serving workload of one region: namespace, identity, settings, Deployments, Services, budgets, scaling.

Two Deployments run the same container: the realtime one (streams and every other API call) on the GPU pool (or
the CPU pool for a cpu profile), and, where the region has a spot pool, a batch one on spot GPUs for whole-clip
requests. Each is a plain Deployment with a same-named Service, so the canary issue can hand either to a rollout
controller without reshaping it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as kubernetes

from contract import service
from contract.topology import Region, Topology
from infra.config import ModelConfig, ReplicaBounds, ServingConfig
from infra.k8s import autoscaling, pod_spec
from infra.k8s.network_policy import network_policies

REALTIME, BATCH = "realtime", "batch"
SETTINGS_CONFIG_MAP = "speech-serving-settings"
TOPOLOGY_CONFIG_MAP = "speech-topology"
INFERENCE_THREADS = 2
# Pod Security Admission: the serving pods meet the restricted profile, so the namespace enforces it.
POD_SECURITY = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}


def deployment_name(role: str) -> str:
    """The Deployment (and Service, budget, ScaledObject) name of a role."""
    return service.SERVICE_ACCOUNT if role == REALTIME else f"{service.SERVICE_ACCOUNT}-{role}"


@dataclass(frozen=True)
class ServingWorkloadArgs:
    region: Region
    topology: Topology  # handed to the container as JSON, so both sides answer residency questions alike
    provider: kubernetes.Provider
    image: str
    model: ModelConfig
    bucket_name: pulumi.Input[str]
    serving: ServingConfig
    with_batch: bool  # a batch Deployment on the spot pool
    prometheus_url: pulumi.Input[str]
    prometheus: tuple[str, Mapping[str, str]]  # (namespace, pod labels) of the Prometheus that scrapes
    gateway: tuple[str, Mapping[str, str]]  # (namespace, pod labels) of the ingress gateway
    depends_on: Sequence[pulumi.Resource] = field(default_factory=tuple)  # add-ons whose CRDs and devices it uses
    public_domain: str | None = None  # speech:domain: where a refused tenant is sent (https://<region>.<domain>)


class ServingWorkload(pulumi.ComponentResource):
    """The serving pods of one region and everything that keeps them healthy.

    Guarantees: the ServiceAccount is exactly the contract's namespace and name (the GDPR issue binds the serving
    IAM role to it); pods run as the image's non-root user on a read-only root filesystem, ask for one GPU (gpu
    profile), start with a probe long enough to pull and warm the model, drain on termination within a grace
    period derived from the container's drain (`infra.k8s.grace`), spread over zones, and at most one per
    Deployment is taken down voluntarily at a time. The namespace denies all traffic that is not listed.
    """

    namespace: pulumi.Output[str]
    services: dict[str, kubernetes.core.v1.Service]  # role -> Service, for the gateway's routes

    def __init__(self, name: str, args: ServingWorkloadArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("speech:infra:ServingWorkload", name, None, opts)
        on_cluster = pulumi.ResourceOptions(parent=self, provider=args.provider, depends_on=list(args.depends_on))
        namespace_name = service.KUBERNETES_NAMESPACE

        namespace = kubernetes.core.v1.Namespace(
            f"{name}-namespace",
            metadata=kubernetes.meta.v1.ObjectMetaArgs(name=namespace_name, labels=POD_SECURITY),
            opts=on_cluster,
        )
        in_namespace = pulumi.ResourceOptions(parent=self, provider=args.provider, depends_on=[namespace])
        kubernetes.core.v1.ServiceAccount(
            f"{name}-service-account",
            metadata=kubernetes.meta.v1.ObjectMetaArgs(name=service.SERVICE_ACCOUNT, namespace=namespace_name),
            automount_service_account_token=False,
            opts=in_namespace,
        )
        topology_json = json.dumps(args.topology.to_dict(), indent=2, sort_keys=True)
        settings = pulumi.Output.from_input(args.bucket_name).apply(
            lambda bucket: pod_spec.settings(
                args.region.aws_region,
                bucket,
                args.model.name,
                args.model.version,
                INFERENCE_THREADS,
                args.serving.drain_seconds,
                args.public_domain,
            )
        )
        kubernetes.core.v1.ConfigMap(
            f"{name}-settings",
            metadata=kubernetes.meta.v1.ObjectMetaArgs(name=SETTINGS_CONFIG_MAP, namespace=namespace_name),
            data=settings,
            opts=in_namespace,
        )
        kubernetes.core.v1.ConfigMap(
            f"{name}-topology",
            metadata=kubernetes.meta.v1.ObjectMetaArgs(name=TOPOLOGY_CONFIG_MAP, namespace=namespace_name),
            data={pod_spec.TOPOLOGY_FILE: topology_json},
            opts=in_namespace,
        )
        config_hash = settings.apply(
            lambda values: hashlib.sha256(json.dumps([values, topology_json], sort_keys=True).encode()).hexdigest()
        )

        roles: dict[str, ReplicaBounds] = {REALTIME: args.serving.replicas}
        if args.with_batch:
            roles[BATCH] = args.serving.batch_replicas
        self.services = {}
        for role, bounds in roles.items():
            self.services[role] = self._deployment(name, role, bounds, args, config_hash, in_namespace)

        autoscaling.service_monitor(f"{name}-monitor", namespace=namespace_name, opts=in_namespace)
        targets = {
            REALTIME: (service.METRIC_ACTIVE_STREAMS, args.serving.streams_per_replica),
            BATCH: (service.METRIC_BATCH_IN_FLIGHT, args.serving.batch_requests_per_replica),
        }
        for role, bounds in roles.items():
            metric, target = targets[role]
            autoscaling.scaled_object(
                f"{name}-{role}-scaling",
                namespace=namespace_name,
                deployment=deployment_name(role),
                bounds=bounds,
                prometheus_url=args.prometheus_url,
                metric=metric,
                per_pod_target=target,
                opts=in_namespace,
            )

        s3 = aws.get_ip_ranges_output(
            regions=[args.region.aws_region], services=["s3"], opts=pulumi.InvokeOptions(parent=self)
        )
        network_policies(
            f"{name}-policy",
            namespace=namespace_name,
            serving_labels={pod_spec.APP_LABEL: service.SERVICE_ACCOUNT},
            gateway=args.gateway,
            prometheus=args.prometheus,
            s3_cidrs=s3.cidr_blocks,
            opts=in_namespace,
        )

        self.namespace = namespace.metadata.name
        self.register_outputs({"namespace": self.namespace})

    def _deployment(
        self,
        name: str,
        role: str,
        bounds: ReplicaBounds,
        args: ServingWorkloadArgs,
        config_hash: pulumi.Output[str],
        opts: pulumi.ResourceOptions,
    ) -> kubernetes.core.v1.Service:
        """One Deployment, its Service and its disruption budget."""
        object_name, namespace = deployment_name(role), service.KUBERNETES_NAMESPACE
        metadata = kubernetes.meta.v1.ObjectMetaArgs(
            name=object_name, namespace=namespace, labels=pod_spec.labels(role)
        )
        selector = kubernetes.meta.v1.LabelSelectorArgs(match_labels=pod_spec.labels(role))
        where = pod_spec.placement(args.serving.profile, role)
        template: pulumi.Output[Any] = config_hash.apply(
            lambda digest: pod_spec.pod_template(
                role,
                args.image,
                where,
                drain_seconds=args.serving.drain_seconds,
                settings_config_map=SETTINGS_CONFIG_MAP,
                topology_config_map=TOPOLOGY_CONFIG_MAP,
                config_hash=digest,
            )
        )
        kubernetes.apps.v1.Deployment(
            f"{name}-{role}",
            metadata=metadata,
            # No replicas: KEDA's HPA owns the count, and a count applied here would fight it on every update.
            spec=kubernetes.apps.v1.DeploymentSpecArgs(
                selector=selector,
                # Never below the current count during a rollout: a new pod must be ready (model warmed) first.
                strategy=kubernetes.apps.v1.DeploymentStrategyArgs(
                    type="RollingUpdate",
                    rolling_update=kubernetes.apps.v1.RollingUpdateDeploymentArgs(max_surge=1, max_unavailable=0),
                ),
                template=template,
            ),
            opts=opts,
        )
        kubernetes.policy.v1.PodDisruptionBudget(
            f"{name}-{role}-budget",
            metadata=metadata,
            spec=kubernetes.policy.v1.PodDisruptionBudgetSpecArgs(max_unavailable=1, selector=selector),
            opts=opts,
        )
        return kubernetes.core.v1.Service(
            f"{name}-{role}-service",
            metadata=metadata,
            spec=kubernetes.core.v1.ServiceSpecArgs(
                type="ClusterIP",
                selector=pod_spec.labels(role),
                ports=[
                    kubernetes.core.v1.ServicePortArgs(
                        name=pod_spec.PORT_NAME,
                        port=service.SERVING_PORT,
                        target_port=pod_spec.PORT_NAME,
                        protocol="TCP",
                        # Istio (and the gateway's Envoy) take the protocol from here: HTTP/1.1 with upgrades.
                        app_protocol="http",
                    ),
                    kubernetes.core.v1.ServicePortArgs(
                        name=pod_spec.GRPC_PORT_NAME,
                        port=service.GRPC_PORT,
                        target_port=pod_spec.GRPC_PORT_NAME,
                        protocol="TCP",
                        # HTTP/2 to the pods, whatever the client spoke to the gateway.
                        app_protocol="grpc",
                    ),
                ],
            ),
            opts=opts,
        )
