"""CloudWatch metrics in the regional Prometheus, through YACE (yet-another-cloudwatch-exporter), for the alerts.

Two facts the cluster cannot see for itself live only in CloudWatch: whether the region's Route 53 health check
passes (`AWS/Route53 HealthCheckStatus`, which Route 53 publishes in us-east-1 only), and how late each replication
rule out of the region's store delivers (`AWS/S3 ReplicationLatency`, in the source bucket's region, published
because every rule enables replication metrics with Replication Time Control). YACE reads exactly those series as
static jobs, every dimension named, and Prometheus scrapes it through the chart's ServiceMonitor. Its role may only
read CloudWatch metrics, which AWS cannot scope to a resource.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from infra import iam
from infra.k8s.alerts import Replication

SERVICE_ACCOUNT = "cloudwatch-exporter"
# Route 53 publishes health-check metrics in this region only, whichever region the checked endpoint is in.
ROUTE53_METRICS_REGION = "us-east-1"
_READS = ("cloudwatch:GetMetricData", "cloudwatch:GetMetricStatistics", "cloudwatch:ListMetrics")
SCRAPE_INTERVAL = "60s"


def exporter_config(
    aws_region: str, health_check_id: str, source_bucket: str, replications: Sequence[Replication]
) -> dict[str, Any]:
    """YACE's configuration: the health check in us-east-1, each replication rule in the store's region."""
    health = {
        "name": "route53-health-check",
        "namespace": "AWS/Route53",
        "regions": [ROUTE53_METRICS_REGION],
        "dimensions": [{"name": "HealthCheckId", "value": health_check_id}],
        "metrics": [{"name": "HealthCheckStatus", "statistics": ["Minimum"], "period": 60, "length": 300}],
    }
    replication = [
        {
            "name": f"replication-{r.rule_id}",
            "namespace": "AWS/S3",
            "regions": [aws_region],
            "dimensions": [
                {"name": "SourceBucket", "value": source_bucket},
                {"name": "DestinationBucket", "value": r.destination_bucket},
                {"name": "RuleId", "value": r.rule_id},
            ],
            "metrics": [{"name": "ReplicationLatency", "statistics": ["Maximum"], "period": 60, "length": 600}],
        }
        for r in replications
    ]
    return {"apiVersion": "v1alpha1", "sts-region": aws_region, "static": [health, *replication]}


def exporter_values(config: Mapping[str, Any], node_selector: Mapping[str, str]) -> dict[str, Any]:
    """The chart's values: its service account (bound to the role by Pod Identity), config and ServiceMonitor."""
    return {
        "serviceAccount": {"create": True, "name": SERVICE_ACCOUNT},
        "config": yaml.safe_dump(dict(config), sort_keys=False),
        "serviceMonitor": {"enabled": True, "interval": SCRAPE_INTERVAL},
        "nodeSelector": dict(node_selector),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }


def exporter_policy() -> str:
    """Read CloudWatch metrics; nothing else. The reads accept no resource scoping, hence `*`."""
    return iam.policy_document([iam.statement("Allow", _READS, "*", sid="ReadCloudWatchMetrics")])
