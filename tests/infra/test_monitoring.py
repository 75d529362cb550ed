"""What a region's Prometheus and Grafana load: the alert rules, the dashboard, CloudWatch through YACE."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import yaml

from contract import service
from contract.topology import DEFAULT_TOPOLOGY
from infra import config, offline
from infra.config import GateThresholds
from infra.k8s import cloudwatch, dashboard
from infra.k8s.gates import HASH_ARG, gates
from tests.conftest import REGIONAL_STACKS
from tests.infra import kube

PANELS = {
    "latency per region": "Stream decode latency p99 by region",
    "real-time factor": "Real-time factor by region",
    "active streams": "Active streams and batch requests by region",
    "cache hit rate": "Cache hit rate by region",
    "canary vs primary": "Canary vs stable: stream decode latency p99",
}


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_the_alert_rules_watch_this_regions_health_check_and_replication(program, stack):
    graph = program(stack)
    (rule,) = kube.of_kind(graph, "PrometheusRule")
    assert rule["metadata"]["namespace"] == kube.release(graph, "kube-prometheus-stack").inputs["namespace"]
    (group,) = rule["spec"]["groups"]
    exprs = {r["alert"]: r["expr"] for r in group["rules"]}
    (check,) = graph.of_type("aws:route53/healthCheck:HealthCheck")
    assert f'dimension_HealthCheckId="{check.id}"' in exprs["SpeechRegionHealthCheckFailing"]
    bucket = graph.exports["modelBucketName"]
    targets = DEFAULT_TOPOLOGY.replication_targets(DEFAULT_TOPOLOGY.region(stack))
    if targets:
        assert f'dimension_SourceBucket="{bucket}"' in exprs["SpeechModelReplicationLate"]
    else:
        assert "SpeechModelReplicationLate" not in exprs, "a store that replicates nowhere has no replication alert"
    cfg = config.load(stack, offline.stack_config(stack), DEFAULT_TOPOLOGY)
    assert isinstance(cfg, config.RegionalConfig)
    assert f'model_version!="{cfg.model.version}"' in exprs["SpeechModelVersionDrift"]


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_yace_reads_the_health_check_in_us_east_1_and_replication_in_the_stores_region(program, stack):
    graph = program(stack)
    values = kube.as_json(kube.release(graph, "cloudwatch-exporter").inputs["values"])
    jobs = {job["namespace"]: job for job in yaml.safe_load(values["config"])["static"]}
    assert jobs["AWS/Route53"]["regions"] == [cloudwatch.ROUTE53_METRICS_REGION]
    region = DEFAULT_TOPOLOGY.region(stack)
    if DEFAULT_TOPOLOGY.replication_targets(region):
        assert jobs["AWS/S3"]["regions"] == [region.aws_region]
    assert values["serviceMonitor"]["enabled"] is True
    assert values["serviceAccount"]["name"] == cloudwatch.SERVICE_ACCOUNT
    (association,) = [
        a
        for a in graph.of_type("aws:eks/podIdentityAssociation:PodIdentityAssociation")
        if a.inputs["serviceAccount"] == cloudwatch.SERVICE_ACCOUNT
    ]
    assert association.inputs["namespace"] == kube.release(graph, "cloudwatch-exporter").inputs["namespace"]


def test_the_exporter_may_only_read_cloudwatch_metrics():
    (statement,) = json.loads(cloudwatch.exporter_policy())["Statement"]
    assert statement["Effect"] == "Allow"
    assert sorted(statement["Action"]) == sorted(cloudwatch._READS)
    assert all(
        action.startswith("cloudwatch:Get") or action == "cloudwatch:ListMetrics" for action in statement["Action"]
    )


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_grafana_gets_the_dashboard_with_the_issues_panels(program, stack):
    config_map = kube.find(program(stack), "ConfigMap", "speech-serving-dashboard")
    model = json.loads(config_map["data"][dashboard.FILE_NAME])
    titles = {panel["title"] for panel in model["panels"]}
    for what, title in PANELS.items():
        assert title in titles, f"no panel for {what}"
    assert model["uid"] == dashboard.UID and all(panel["targets"] for panel in model["panels"])


def test_every_dashboard_and_gate_query_is_valid_promql(tmp_path):
    """`promtool check rules` parses each query as a recording rule's expression."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool comes with Debian's prometheus package (scripts/setup.sh installs it)"
    gate_queries = [g.query.replace(f"{{{{args.{HASH_ARG}}}}}", "abc123") for g in gates(GateThresholds())]
    queries = dashboard.queries() + gate_queries
    rules = [{"record": f"speech:check_{i}", "expr": expr} for i, expr in enumerate(queries)]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": [{"name": "queries", "rules": rules}]}))
    result = subprocess.run(
        [promtool, "check", "rules", "rules.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert service.METRIC_SHADOW_WER in " ".join(queries)
