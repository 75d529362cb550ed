"""The serving dashboard, as Grafana's JSON: latency per region, RTF, active streams, cache hit rate, canary vs stable.

kube-prometheus-stack's Grafana loads it from a ConfigMap labelled for its dashboard sidecar. Every query reads
the serving container's own metrics (`contract.service`); the canary panels split by the pods' rollout hash, which
the ServiceMonitor copies onto every series, so during a canary each version is one line. Pure data, no Pulumi.
"""

from __future__ import annotations

from typing import Any

from contract import service
from infra.k8s.gates import FAILED_STATUS, HASH_SERIES_LABEL, STREAM_DECODES

UID = "speech-serving"
TITLE = "Speech serving"
FILE_NAME = "speech-serving.json"
_DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
_NS = f'namespace="{service.KUBERNETES_NAMESPACE}"'
_BY_VERSION = f"{HASH_SERIES_LABEL}, model_version"


def _rate(metric: str, by: str, *matchers: str) -> str:
    return f"sum by ({by}) (rate({metric}{{{', '.join((_NS, *matchers))}}}[5m]))"


def _p99(by: str) -> str:
    buckets = f'{service.METRIC_INFERENCE_DURATION}_bucket{{{_NS}, kind=~"{STREAM_DECODES}"}}'
    return f"histogram_quantile(0.99, sum by ({by}, le) (rate({buckets}[5m])))"


def _failed_share(by: str) -> str:
    answered = _rate(f"{service.METRIC_REQUEST_DURATION}_count", by)
    failed = _rate(service.METRIC_REQUESTS, by, f'status=~"{FAILED_STATUS}"')
    return f"({failed} or {answered} * 0) / {answered}"


def _hit_rate(by: str) -> str:
    hits = _rate(service.METRIC_CACHE_LOOKUPS, by, 'result="hit"')
    return f"{hits} / {_rate(service.METRIC_CACHE_LOOKUPS, by)}"


def _mean_shadow_wer(by: str) -> str:
    return f"{_rate(f'{service.METRIC_SHADOW_WER}_sum', by)} / {_rate(f'{service.METRIC_SHADOW_WER}_count', by)}"


def _rtf(by: str) -> str:
    return f"{_rate(f'{service.METRIC_INFERENCE_DURATION}_sum', by)} / {_rate(service.METRIC_AUDIO_PROCESSED, by)}"


# (title, unit, [(query, legend)])
PANELS: tuple[tuple[str, str, list[tuple[str, str]]], ...] = (
    ("Stream decode latency p99 by region", "s", [(_p99("region"), "{{region}}")]),
    ("Real-time factor by region", "none", [(_rtf("region"), "{{region}}")]),
    (
        "Active streams and batch requests by region",
        "short",
        [
            (f"sum by (region) ({service.METRIC_ACTIVE_STREAMS}{{{_NS}}})", "{{region}} streams"),
            (f"sum by (region) ({service.METRIC_BATCH_IN_FLIGHT}{{{_NS}}})", "{{region}} batch"),
        ],
    ),
    (
        "Cache hit rate by region",
        "percentunit",
        [(_hit_rate("region, cache"), "{{region}} {{cache}}")],
    ),
    (
        "Canary vs stable: failed share of requests",
        "percentunit",
        [(_failed_share(_BY_VERSION), "{{model_version}} ({{" + HASH_SERIES_LABEL + "}})")],
    ),
    (
        "Canary vs stable: stream decode latency p99",
        "s",
        [(_p99(_BY_VERSION), "{{model_version}} ({{" + HASH_SERIES_LABEL + "}})")],
    ),
    (
        "Canary vs stable: real-time factor",
        "none",
        [(_rtf(_BY_VERSION), "{{model_version}} ({{" + HASH_SERIES_LABEL + "}})")],
    ),
    (
        "Shadow candidate: mean WER against the served transcript",
        "percentunit",
        [(_mean_shadow_wer("region, candidate_version"), "{{region}} {{candidate_version}}")],
    ),
)


def dashboard() -> dict[str, Any]:
    """The dashboard's JSON model, two panels a row."""
    panels = []
    for index, (title, unit, targets) in enumerate(PANELS):
        panels.append(
            {
                "id": index + 1,
                "type": "timeseries",
                "title": title,
                "datasource": _DATASOURCE,
                "gridPos": {"x": 12 * (index % 2), "y": 8 * (index // 2), "w": 12, "h": 8},
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "targets": [
                    {"refId": chr(ord("A") + i), "datasource": _DATASOURCE, "expr": expr, "legendFormat": legend}
                    for i, (expr, legend) in enumerate(targets)
                ],
            }
        )
    return {
        "uid": UID,
        "title": TITLE,
        "tags": ["speech"],
        "schemaVersion": 39,
        "editable": False,
        "time": {"from": "now-3h", "to": "now"},
        "refresh": "30s",
        "templating": {
            "list": [{"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus"}]
        },
        "panels": panels,
    }


def queries() -> list[str]:
    """Every PromQL expression the dashboard runs."""
    return [expr for _, _, targets in PANELS for expr, _ in targets]
