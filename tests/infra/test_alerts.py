"""Every alert rule, firing and not firing, evaluated by `promtool test rules` (Debian's prometheus package).

The rule file is generated from the same data the PrometheusRule gets (`infra.k8s.alerts`), so what is tested here
is what each region's Prometheus loads.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from contract import service
from infra.k8s import alerts

VERSION = "1.0.0"
HEALTH_CHECK = "hc-eu-west"
SOURCE, DESTINATION = "speech-models-eu-west", "speech-models-eu-central"
DRIFT_MINUTES = 60
REGION = 'region="eu-west-1"'
POD = f'namespace="{service.KUBERNETES_NAMESPACE}", {REGION}, model_version="{VERSION}"'


def _rules() -> tuple[alerts.Alert, ...]:
    return alerts.alerts(
        declared_version=VERSION,
        drift_after_minutes=DRIFT_MINUTES,
        health_check_id=HEALTH_CHECK,
        source_bucket=SOURCE,
        replications=[alerts.Replication(DESTINATION, "models-to-eu-central")],
    )


def _requests(per_minute_ok: int, per_minute_failed: int) -> list[dict[str, str]]:
    """Request counters over 20 minutes: the latency histogram's count sees all, the status counter each status."""
    route = f'{POD}, route="/v1/transcribe"'
    counts = [(f"{service.METRIC_REQUEST_DURATION}_count{{{route}}}", per_minute_ok + per_minute_failed)]
    counts += [(f'{service.METRIC_REQUESTS}{{{route}, status="200"}}', per_minute_ok)]
    if per_minute_failed:
        counts += [(f'{service.METRIC_REQUESTS}{{{route}, status="503"}}', per_minute_failed)]
    return [{"series": series, "values": f"0+{per_minute}x20"} for series, per_minute in counts]


def _decodes(slow_per_minute: int) -> list[dict[str, str]]:
    """Stream decodes per minute: 100 under 0.25 s, and ``slow_per_minute`` between 1 and 2.5 s."""
    metric = f"{service.METRIC_INFERENCE_DURATION}_bucket"
    return [
        {"series": f'{metric}{{{POD}, kind="final", le="{le}"}}', "values": f"0+{count}x20"}
        for le, count in (("0.25", 100), ("1.0", 100), ("2.5", 100 + slow_per_minute), ("+Inf", 100 + slow_per_minute))
    ]


def _versions(*versions: str) -> list[dict[str, str]]:
    return [
        {
            "series": f'{service.METRIC_MODEL_INFO}{{namespace="{service.KUBERNETES_NAMESPACE}", {REGION}, '
            f'model_version="{v}", pod="speech-serving-{i}"}}',
            "values": "1x90",
        }
        for i, v in enumerate(versions)
    ]


def _health(value: int) -> list[dict[str, str]]:
    return [
        {"series": f'{alerts.HEALTH_CHECK_STATUS}{{dimension_HealthCheckId="{HEALTH_CHECK}"}}', "values": f"{value}x20"}
    ]


def _replication(seconds: int) -> list[dict[str, str]]:
    labels = f'dimension_SourceBucket="{SOURCE}", dimension_DestinationBucket="{DESTINATION}", dimension_RuleId="r"'
    return [{"series": f"{alerts.REPLICATION_LATENCY}{{{labels}}}", "values": f"{seconds}x30"}]


# alert -> (series that fire it, series that do not, the minute to look at, the firing alert's labels, its value as
# the summary shows it): 2 of 102 decodes a minute take 1 to 2.5 s, so the p99 interpolates to 1.735 s.
CASES: dict[str, tuple[list, list, str, dict[str, str], str]] = {
    "SpeechStreamLatencyHigh": (_decodes(2), _decodes(0), "15m", {"region": "eu-west-1"}, "1.735s"),
    "SpeechErrorRateHigh": (_requests(98, 2), _requests(100, 0), "15m", {"region": "eu-west-1"}, "2%"),
    "SpeechModelVersionDrift": (
        _versions(VERSION, "0.9.0"),
        _versions(VERSION, VERSION),
        f"{DRIFT_MINUTES + 5}m",
        {"region": "eu-west-1", "model_version": "0.9.0"},
        "",
    ),
    "SpeechRegionHealthCheckFailing": (_health(0), _health(1), "10m", {"dimension_HealthCheckId": HEALTH_CHECK}, ""),
    "SpeechModelReplicationLate": (
        _replication(alerts.REPLICATION_TIME_MINUTES * 60 + 120),
        _replication(alerts.REPLICATION_TIME_MINUTES * 60 - 60),
        "20m",
        {"dimension_DestinationBucket": DESTINATION},
        "",
    ),
}


def _rendered(text: str, labels: dict[str, str], value: str) -> str:
    """An annotation as Prometheus renders it for an alert with ``labels`` and the (humanized) ``value``."""
    text = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], text)
    return re.sub(r"\{\{ \$value[^}]*\}\}", value, text)


def _case(rule: alerts.Alert, series: list, at: str, labels: dict[str, str] | None, value: str = "") -> dict[str, Any]:
    expected = []
    if labels is not None:
        annotations = {k: _rendered(v, labels, value) for k, v in rule.rule()["annotations"].items()}
        expected = [{"exp_labels": {"severity": rule.severity, **labels}, "exp_annotations": annotations}]
    return {
        "interval": "1m",
        "input_series": series,
        "alert_rule_test": [{"eval_time": at, "alertname": rule.name, "exp_alerts": expected}],
    }


def _promtool(tmp_path: Path, cases: list[dict[str, Any]]) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    assert promtool, "promtool comes with Debian's prometheus package (scripts/setup.sh installs it)"
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": alerts.rule_groups(_rules())}))
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump({"rule_files": ["rules.yaml"], "tests": cases}))
    return subprocess.run(
        [promtool, "test", "rules", "tests.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_every_alert_has_a_firing_and_a_quiet_case():
    assert {rule.name for rule in _rules()} == set(CASES)


def test_every_alert_fires_on_its_condition_and_stays_quiet_without_it(tmp_path):
    cases = []
    for rule in _rules():
        firing, quiet, at, labels, value = CASES[rule.name]
        cases += [_case(rule, firing, at, labels, value), _case(rule, quiet, at, None)]
    result = _promtool(tmp_path, cases)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_reports_an_alert_that_does_not_fire_as_expected(tmp_path):
    """The harness can fail: a quiet case expected to fire is reported."""
    (rule, *_) = _rules()
    _, quiet, at, labels, _ = CASES[rule.name]
    result = _promtool(tmp_path, [_case(rule, quiet, at, labels)])
    assert result.returncode != 0 and rule.name in result.stdout + result.stderr


def test_the_drift_alert_waits_longer_than_a_canary():
    (drift,) = [rule for rule in _rules() if rule.name == "SpeechModelVersionDrift"]
    assert drift.for_ == f"{DRIFT_MINUTES}m"


@pytest.mark.parametrize("rule", _rules(), ids=lambda r: r.name)
def test_every_alert_says_how_bad_what_happened_and_where_its_runbook_is(rule):
    annotations = rule.rule()["annotations"]
    assert rule.rule()["labels"]["severity"] in ("critical", "warning")
    assert annotations["summary"] and annotations["description"]
    assert annotations["runbook_url"] == f"docs/runbooks/{rule.name}.md"
