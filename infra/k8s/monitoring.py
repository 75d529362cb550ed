"""What a region's operators watch: the serving alerts, the serving dashboard, and CloudWatch's view of the region."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_kubernetes as kubernetes

from contract import service
from contract.topology import Region, Topology
from infra.k8s import alerts, cloudwatch, dashboard
from infra.k8s.addons import DASHBOARD_LABEL, MONITORING_NAMESPACE
from infra.k8s.helm import release
from infra.k8s.pod_identity import pod_identity_role
from infra.node_pools import POOL_LABEL
from infra.replication import replication_rule_id
from infra.tags import region_tags
from infra.versions import CLOUDWATCH_EXPORTER

RULES_NAME = "speech-serving-alerts"
DASHBOARD_CONFIG_MAP = "speech-serving-dashboard"


@dataclass(frozen=True)
class ServingMonitoringArgs:
    region: Region
    topology: Topology  # which stores this region's store replicates to
    provider: kubernetes.Provider
    cluster_name: pulumi.Input[str]
    project: str
    account_id: str
    bucket_name: pulumi.Input[str]  # this region's model store
    health_check_id: pulumi.Input[str]  # this region's Route 53 health check
    declared_version: str  # speech:model.version
    drift_after_minutes: int  # longer than a whole canary: a region still on another version has drifted
    depends_on: Sequence[pulumi.Resource] = field(default_factory=tuple)  # kube-prometheus-stack (CRDs, Grafana)


class ServingMonitoring(pulumi.ComponentResource):
    """The serving alerts, the serving dashboard, and CloudWatch's view of the region, in its Prometheus.

    Every alert carries severity, summary, description and a runbook link (`infra.k8s.alerts`); the dashboard is
    loaded by Grafana's sidecar; YACE reads the region's health check and replication latency from CloudWatch on a
    role that may only read metrics.
    """

    def __init__(self, name: str, args: ServingMonitoringArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("speech:infra:ServingMonitoring", name, None, opts)
        on_cluster = pulumi.ResourceOptions(parent=self, provider=args.provider, depends_on=list(args.depends_on))
        replications = [
            alerts.Replication(
                service.model_bucket_name(args.project, target.key, args.account_id), replication_rule_id(target)
            )
            for target in args.topology.replication_targets(args.region)
        ]

        def region_alerts(bucket: str, health_check_id: str) -> tuple[alerts.Alert, ...]:
            return alerts.alerts(
                declared_version=args.declared_version,
                drift_after_minutes=args.drift_after_minutes,
                health_check_id=health_check_id,
                source_bucket=bucket,
                replications=replications,
            )

        found = pulumi.Output.all(args.bucket_name, args.health_check_id).apply(lambda ids: region_alerts(*ids))
        kubernetes.apiextensions.CustomResource(
            f"{name}-alerts",
            api_version=alerts.RULE_API,
            kind="PrometheusRule",
            metadata={"name": RULES_NAME, "namespace": MONITORING_NAMESPACE},
            spec={"groups": found.apply(alerts.rule_groups)},
            opts=on_cluster,
        )
        kubernetes.core.v1.ConfigMap(
            f"{name}-dashboard",
            metadata=kubernetes.meta.v1.ObjectMetaArgs(
                name=DASHBOARD_CONFIG_MAP, namespace=MONITORING_NAMESPACE, labels=dict([DASHBOARD_LABEL])
            ),
            data={dashboard.FILE_NAME: json.dumps(dashboard.dashboard(), indent=1, sort_keys=True)},
            opts=on_cluster,
        )

        role = pod_identity_role(
            f"{name}-cloudwatch-role",
            aws_region=args.region.aws_region,
            cluster_name=args.cluster_name,
            namespace=MONITORING_NAMESPACE,
            service_account=cloudwatch.SERVICE_ACCOUNT,
            policy=cloudwatch.exporter_policy(),
            tags=region_tags(args.region),
            opts=pulumi.ResourceOptions(parent=self),
        )
        values = pulumi.Output.all(args.bucket_name, args.health_check_id).apply(
            lambda ids: cloudwatch.exporter_values(
                cloudwatch.exporter_config(args.region.aws_region, ids[1], ids[0], replications),
                {POOL_LABEL: "cpu"},
            )
        )
        release(
            f"{name}-cloudwatch",
            CLOUDWATCH_EXPORTER,
            release_name="cloudwatch-exporter",
            namespace=MONITORING_NAMESPACE,
            values=values,
            # Credentials must be associated before the exporter's first CloudWatch call.
            opts=on_cluster.merge(pulumi.ResourceOptions(depends_on=[role.association])),
        )
        self.register_outputs({})
