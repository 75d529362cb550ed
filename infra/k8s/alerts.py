"""The serving platform's alert rules, as data: one source for the PrometheusRule and for `promtool test rules`.

Each alert carries `severity`, `summary`, `description` and a `runbook_url` (`docs/runbooks/<alert>.md`). Every
regional Prometheus evaluates them over what it scrapes:

* the serving container's own metrics (`contract.service`): stream decode p99 latency and the failed share of
  requests, per region;
* `speech_model_info`: a region whose pods serve a model version other than the one its stack declares
  (`speech:model.version`), for longer than a canary takes. A release sets the same version in every region's
  stack, so this is how a region left behind (its canary aborted, a pod on another version) shows;
* CloudWatch, through YACE (`infra.k8s.cloudwatch`): the region's Route 53 health check (`HealthCheckStatus`,
  published in us-east-1 only) and the latency of each replication rule out of the region's store (S3 Replication
  Time Control promises 15 minutes).

Pure functions and data, no Pulumi.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from contract import service
from infra.k8s.gates import FAILED_STATUS, STREAM_DECODES
from infra.replication import REPLICATION_TIME_MINUTES

RULE_API = "monitoring.coreos.com/v1"
RUNBOOKS = "docs/runbooks"
GROUP = "speech-serving"
P99_LATENCY_S = 0.5
ERROR_RATE = 0.01
# What YACE names the CloudWatch series it exports: aws_<namespace>_<metric>_<statistic>, dimensions as labels.
HEALTH_CHECK_STATUS = "aws_route53_health_check_status_minimum"
REPLICATION_LATENCY = "aws_s3_replication_latency_maximum"


@dataclass(frozen=True)
class Alert:
    name: str
    expr: str
    for_: str
    severity: Literal["critical", "warning"]
    summary: str
    description: str

    @property
    def runbook_url(self) -> str:
        return f"{RUNBOOKS}/{self.name}.md"

    def rule(self) -> dict[str, Any]:
        """The rule as Prometheus (and the operator's PrometheusRule) reads it."""
        return {
            "alert": self.name,
            "expr": self.expr,
            "for": self.for_,
            "labels": {"severity": self.severity},
            "annotations": {
                "summary": self.summary,
                "description": self.description,
                "runbook_url": self.runbook_url,
            },
        }


@dataclass(frozen=True)
class Replication:
    """One replication rule out of the region's store, as S3's replication metrics name it."""

    destination_bucket: str
    rule_id: str


def alerts(
    *,
    declared_version: str,
    drift_after_minutes: int,
    health_check_id: str,
    source_bucket: str,
    replications: Sequence[Replication],
    namespace: str = service.KUBERNETES_NAMESPACE,
) -> tuple[Alert, ...]:
    """Every alert of one region; ``drift_after_minutes`` is longer than a whole canary."""
    pods = f'namespace="{namespace}"'

    def per_region_rate(metric: str, *matchers: str) -> str:
        return f"sum by (region) (rate({metric}{{{', '.join((pods, *matchers))}}}[5m]))"

    answered = per_region_rate(f"{service.METRIC_REQUEST_DURATION}_count")
    succeeded = per_region_rate(service.METRIC_REQUESTS, f'status!~"{FAILED_STATUS}"')
    buckets = f'{service.METRIC_INFERENCE_DURATION}_bucket{{{pods}, kind=~"{STREAM_DECODES}"}}'
    decodes = f"sum by (region, le) (rate({buckets}[5m]))"
    other_version = f'{service.METRIC_MODEL_INFO}{{{pods}, model_version!="{declared_version}"}}'
    found: list[Alert] = [
        Alert(
            "SpeechStreamLatencyHigh",
            f"histogram_quantile(0.99, {decodes}) > {P99_LATENCY_S!r}",
            "5m",
            "critical",
            "p99 stream decode latency in {{ $labels.region }} is {{ $value | humanizeDuration }}",
            f"Speakers in {{{{ $labels.region }}}} have waited more than {P99_LATENCY_S * 1000:.0f} ms for 1% of "
            "partials and finals for 5 minutes: GPUs saturated, a slow model or image, or too few replicas.",
        ),
        Alert(
            "SpeechErrorRateHigh",
            # A request that did not succeed is a failure; see infra.k8s.gates for why it is counted this way.
            f"({answered} - ({succeeded} or {answered} * 0)) / {answered} > {ERROR_RATE!r}",
            "5m",
            "critical",
            "{{ $labels.region }} fails {{ $value | humanizePercentage }} of requests and streams",
            f"More than {ERROR_RATE:.0%} of requests (HTTP 5xx) and streams (close 1011, 1013) in "
            "{{ $labels.region }} have failed for 5 minutes.",
        ),
        Alert(
            "SpeechModelVersionDrift",
            f"count by (region, model_version) ({other_version}) > 0",
            f"{drift_after_minutes}m",
            "warning",
            "{{ $labels.region }} serves model {{ $labels.model_version }}, not the declared " + declared_version,
            "Pods in {{ $labels.region }} have served a model version other than the one its stack declares "
            f"(speech:model.version = {declared_version}) for longer than a canary takes: the region's rollout "
            "was aborted or is stuck, so it has drifted from the regions the release reached.",
        ),
        Alert(
            "SpeechRegionHealthCheckFailing",
            f'{HEALTH_CHECK_STATUS}{{dimension_HealthCheckId="{health_check_id}"}} < 1',
            "3m",
            "critical",
            "Route 53 health check {{ $labels.dimension_HealthCheckId }} reports the region unhealthy",
            "The region's Route 53 health check (HTTPS /readyz through its load balancer) has failed for 3 "
            "minutes: DNS and Cloudflare now send its users to the next region of their failover chain.",
        ),
    ]
    if replications:
        destinations = "|".join(r.destination_bucket for r in replications)
        latency = (
            f'{REPLICATION_LATENCY}{{dimension_SourceBucket="{source_bucket}", '
            f'dimension_DestinationBucket=~"{destinations}"}}'
        )
        found.append(
            Alert(
                "SpeechModelReplicationLate",
                f"max by (dimension_DestinationBucket) ({latency}) > {REPLICATION_TIME_MINUTES * 60}",
                "10m",
                "warning",
                "Models reach {{ $labels.dimension_DestinationBucket }} more than "
                f"{REPLICATION_TIME_MINUTES} minutes late",
                f"Replication from {source_bucket} to {{{{ $labels.dimension_DestinationBucket }}}} is over S3 "
                f"Replication Time Control's {REPLICATION_TIME_MINUTES} minutes: a new model version may be "
                "missing there when its region's canary starts.",
            )
        )
    return tuple(found)


def rule_groups(found: Sequence[Alert]) -> list[dict[str, Any]]:
    """The `groups` of a PrometheusRule's spec, and of a rule file `promtool` reads."""
    return [{"name": GROUP, "rules": [alert.rule() for alert in found]}]
