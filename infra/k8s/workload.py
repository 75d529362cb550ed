"""The serving workload of one region: namespace, identity, settings, Rollouts, Services, budgets, scaling, gates.

Two Argo Rollouts run the same container: the realtime one (streams and every other API call) on the GPU pool (or
the CPU pool for a cpu profile), and, where the region has a spot pool, a batch one on spot GPUs for whole-clip
requests. Each new pod template reaches users as a gated canary (`infra.k8s.rollout`, `infra.k8s.gates`).
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
from infra.config import DeliveryConfig, ModelConfig, ReplicaBounds, ServingConfig
from infra.k8s import autoscaling, gates, pod_spec, rollout
from infra.k8s.entry import API_ROUTE, BATCH_ROUTE, GRPC_ROUTE, PROBES_ROUTE, PUBLIC_GATEWAY, STREAM_ROUTE
from infra.k8s.mesh import GatewayAddress
from infra.k8s.network_policy import network_policies
from infra.k8s.services import RoleServices, role_services

REALTIME, BATCH = "realtime", "batch"
SETTINGS_CONFIG_MAP = "speech-serving-settings"
TOPOLOGY_CONFIG_MAP = "speech-topology"
INFERENCE_THREADS = 2
# Pod Security Admission: the serving pods meet the restricted profile, so the namespace enforces it.
POD_SECURITY = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}


# The pre-rollout check's pods: their own labels, so no serving selector (Service, budget, policy) matches them.
SMOKE_LABELS = {pod_spec.APP_LABEL: "speech-smoke"}


def rollout_name(role: str) -> str:
    """The Rollout (and its Services, budget, ScaledObject) name of a role."""
    return service.SERVICE_ACCOUNT if role == REALTIME else f"{service.SERVICE_ACCOUNT}-{role}"


def routes_of(role: str, with_batch: bool) -> list[str]:
    """The VirtualService routes a role's Rollout weighs: batch requests go to batch pods where there are any."""
    if role == BATCH:
        return [BATCH_ROUTE]
    return [GRPC_ROUTE, STREAM_ROUTE, *([] if with_batch else [BATCH_ROUTE]), API_ROUTE, PROBES_ROUTE]


@dataclass(frozen=True)
class ServingWorkloadArgs:
    region: Region
    topology: Topology  # handed to the container as JSON, so both sides answer residency questions alike
    provider: kubernetes.Provider
    image: str
    model: ModelConfig
    bucket_name: pulumi.Input[str]
    serving: ServingConfig
    with_batch: bool  # a batch Rollout on the spot pool
    delivery: DeliveryConfig
    prometheus_url: pulumi.Input[str]
    prometheus: tuple[str, Mapping[str, str]]  # (namespace, pod labels) of the Prometheus that scrapes
    gateway: GatewayAddress
    depends_on: Sequence[pulumi.Resource] = field(default_factory=tuple)  # add-ons whose CRDs and devices it uses
    public_domain: str | None = None  # speech:domain: where a refused tenant is sent (https://<region>.<domain>)


class ServingWorkload(pulumi.ComponentResource):
    """The serving pods of one region and everything that keeps them healthy.

    Guarantees: the ServiceAccount is exactly the contract's namespace and name (the GDPR issue binds the serving
    IAM role to it); pods run as the image's non-root user on a read-only root filesystem, ask for one GPU (gpu
    profile), start with a probe long enough to pull and warm the model, drain on termination within a grace
    period derived from the container's drain (`infra.k8s.grace`), spread over zones, and at most one per
    Rollout is taken down voluntarily at a time. A new pod template is a canary that must pass the pre-rollout check
    and the gates, or is rolled back. The namespace denies all traffic that is not listed.
    """

    namespace: pulumi.Output[str]
    services: dict[str, RoleServices]  # role -> its Services, for the gateway's weighted routes

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
                args.model.shadow,
                args.model.languages,
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
            self.services[role] = self._role(name, role, bounds, args, config_hash, in_namespace)
        gate_spec = pulumi.Output.from_input(args.prometheus_url).apply(
            lambda url: gates.gates_template_spec(gates.gates(args.delivery.gates, namespace_name), url)
        )
        kubernetes.apiextensions.CustomResource(
            f"{name}-gates",
            api_version=gates.ANALYSIS_API,
            kind="AnalysisTemplate",
            metadata={"name": gates.GATES_TEMPLATE, "namespace": namespace_name},
            spec=gate_spec,
            opts=in_namespace,
        )

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
                rollout=rollout_name(role),
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
            smoke_labels=SMOKE_LABELS,
            gateway=args.gateway,
            prometheus=args.prometheus,
            s3_cidrs=s3.cidr_blocks,
            opts=in_namespace,
        )

        self.namespace = namespace.metadata.name
        self.register_outputs({"namespace": self.namespace})

    def _role(
        self,
        name: str,
        role: str,
        bounds: ReplicaBounds,
        args: ServingWorkloadArgs,
        config_hash: pulumi.Output[str],
        opts: pulumi.ResourceOptions,
    ) -> RoleServices:
        """One Rollout, its Services, its disruption budget and its pre-rollout check."""
        object_name, namespace = rollout_name(role), service.KUBERNETES_NAMESPACE
        labels = pod_spec.labels(role)
        metadata = kubernetes.meta.v1.ObjectMetaArgs(name=object_name, namespace=namespace, labels=labels)
        where = pod_spec.placement(args.serving.profile, role)
        # Only the realtime pods answer the header route, which sends every path to them; the batch canary is
        # checked at its own canary Service, which only its pods back.
        with_header = role == REALTIME
        spec: pulumi.Output[Any] = config_hash.apply(
            lambda digest: rollout.rollout_spec(
                object_name,
                labels,
                pod_spec.pod_template(
                    role,
                    args.image,
                    where,
                    drain_seconds=args.serving.drain_seconds,
                    settings_config_map=SETTINGS_CONFIG_MAP,
                    topology_config_map=TOPOLOGY_CONFIG_MAP,
                    config_hash=digest,
                ),
                args.delivery,
                virtual_service=PUBLIC_GATEWAY,
                routes=routes_of(role, args.with_batch),
                with_header=with_header,
                with_mirror=args.delivery.is_mirroring and BATCH_ROUTE in routes_of(role, args.with_batch),
            )
        )
        if with_header:
            smoke_url, smoke_headers = args.gateway.url, dict([rollout.CANARY_HEADER])
        else:
            host = f"{rollout.canary_service(object_name)}.{namespace}.svc.cluster.local"
            smoke_url, smoke_headers = f"http://{host}:{service.SERVING_PORT}", {}
        kubernetes.apiextensions.CustomResource(
            f"{name}-{role}-smoke",
            api_version=gates.ANALYSIS_API,
            kind="AnalysisTemplate",
            metadata={"name": rollout.smoke_template(object_name), "namespace": namespace},
            spec=gates.smoke_template_spec(
                args.image,
                url=smoke_url,
                headers=smoke_headers,
                max_wer=args.delivery.gates.smoke_max_wer,
                pod_labels=SMOKE_LABELS,
            ),
            opts=opts,
        )
        kubernetes.apiextensions.CustomResource(
            f"{name}-{role}",
            api_version=rollout.ROLLOUT_API,
            kind="Rollout",
            metadata={"name": object_name, "namespace": namespace, "labels": labels},
            spec=spec,
            opts=opts,
        )
        kubernetes.policy.v1.PodDisruptionBudget(
            f"{name}-{role}-budget",
            metadata=metadata,
            spec=kubernetes.policy.v1.PodDisruptionBudgetSpecArgs(
                max_unavailable=1, selector=kubernetes.meta.v1.LabelSelectorArgs(match_labels=labels)
            ),
            opts=opts,
        )
        return role_services(f"{name}-{role}", object_name, namespace, labels, opts)
