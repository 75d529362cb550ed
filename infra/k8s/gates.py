"""The gates a canary must pass, as Argo Rollouts AnalysisTemplates over the serving container's own metrics.

Each gate is one PromQL query over the canary's pods only (the ServiceMonitor copies the pods' rollout hash onto
every series) and one threshold from `speech:delivery.gates`:

* error rate: the share of requests and streams the server failed (HTTP 5xx, WebSocket 1011 and 1013);
* p99 latency of stream decodes (partials and finals): what a speaker waits for;
* real-time factor: engine seconds per second of audio, over every decode;
* shadow WER: the mean WER between the served transcripts and the shadow candidate's (`speech:model.shadow`).

Every query answers exactly one number, NaN while the canary has no such traffic yet (or runs no shadow), and a
NaN passes: a 1% canary of a quiet region may see no stream for minutes, and the pre-rollout smoke check (a known
clip transcribed through the canary, `serving.smoke`) is what every canary must pass whatever its traffic. Without
the NaN, Argo's `result[0]` would fail on an empty answer and count a measurement error.

Pure functions and data, no Pulumi: tests run these exact queries on a real Prometheus scraping a real server.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from contract import service
from infra.config import GateThresholds

ANALYSIS_API = "argoproj.io/v1alpha1"
GATES_TEMPLATE = "speech-gates"
HASH_ARG = "canary-hash"
# The pod label Argo Rollouts puts on every pod of a ReplicaSet, and the label Prometheus gives it on each series.
ROLLOUT_HASH_LABEL = "rollouts-pod-template-hash"
HASH_SERIES_LABEL = "rollouts_pod_template_hash"
# How the server says it failed: HTTP 5xx, and WebSocket close codes 1011 (internal error) and 1013 (try again
# later: overloaded or still loading). Client mistakes (4xx, 1003, 1008, 1009) are not the canary's failures.
FAILED_STATUS = "5..|1011|1013"
STREAM_DECODES = "partial|final"
MEASUREMENT_INTERVAL = "1m"
NO_DATA = "or on() vector(NaN)"


@dataclass(frozen=True)
class Gate:
    """One metric of the gates template: passes while its query answers NaN or at most ``threshold``."""

    name: str
    query: str  # PromQL with Argo's `{{args.canary-hash}}` placeholder
    threshold: float

    @property
    def success_condition(self) -> str:
        """The same rule as :meth:`passes`, in Argo's expression language (`result` is the query's vector)."""
        return f"isNaN(result[0]) || result[0] <= {self.threshold!r}"

    def passes(self, value: float) -> bool:
        return math.isnan(value) or value <= self.threshold


def _series(metric: str, namespace: str, *matchers: str) -> str:
    labels = ", ".join((f'namespace="{namespace}"', f'{HASH_SERIES_LABEL}="{{{{args.{HASH_ARG}}}}}"', *matchers))
    return f"{metric}{{{labels}}}"


def gates(thresholds: GateThresholds, namespace: str = service.KUBERNETES_NAMESPACE) -> tuple[Gate, ...]:
    """The four gates over the canary pods of ``namespace``, each over the last ``window_minutes``."""
    window = f"[{thresholds.window_minutes}m]"

    def rate(metric: str, *matchers: str) -> str:
        return f"sum(rate({_series(metric, namespace, *matchers)}{window}))"

    # Every request is in the latency histogram's count from its first one on, while a pod's series for a failed
    # status is born with its first failure, whose jump from nothing rate() cannot see: so failures are counted as
    # the requests that did not succeed.
    answered = rate(f"{service.METRIC_REQUEST_DURATION}_count")
    succeeded = rate(service.METRIC_REQUESTS, f'status!~"{FAILED_STATUS}"')
    error_rate = f"(({answered} - ({succeeded} or on() vector(0))) / {answered}) {NO_DATA}"
    buckets = _series(f"{service.METRIC_INFERENCE_DURATION}_bucket", namespace, f'kind=~"{STREAM_DECODES}"')
    latency = f"histogram_quantile(0.99, sum by (le) (rate({buckets}{window}))) {NO_DATA}"
    engine_seconds = rate(f"{service.METRIC_INFERENCE_DURATION}_sum")
    rtf = f"({engine_seconds} / {rate(service.METRIC_AUDIO_PROCESSED)}) {NO_DATA}"
    wer = f"({rate(f'{service.METRIC_SHADOW_WER}_sum')} / {rate(f'{service.METRIC_SHADOW_WER}_count')}) {NO_DATA}"
    return (
        Gate("error-rate", error_rate, thresholds.max_error_rate),
        Gate("stream-latency-p99", latency, thresholds.max_p99_latency_s),
        Gate("real-time-factor", rtf, thresholds.max_real_time_factor),
        Gate("shadow-wer", wer, thresholds.max_shadow_wer),
    )


def gates_template_spec(gate_list: Sequence[Gate], prometheus_url: str) -> dict[str, Any]:
    """The AnalysisTemplate every Rollout runs in the background: any failed measurement aborts the canary."""
    return {
        "args": [{"name": HASH_ARG}],
        "metrics": [
            {
                "name": gate.name,
                "interval": MEASUREMENT_INTERVAL,
                "successCondition": gate.success_condition,
                # One breach aborts; Prometheus being unreachable for a few minutes does not (measurement errors).
                "failureLimit": 0,
                "consecutiveErrorLimit": 5,
                "provider": {"prometheus": {"address": prometheus_url, "query": gate.query}},
            }
            for gate in gate_list
        ],
    }


def smoke_template_spec(
    image: str, *, url: str, headers: Mapping[str, str], max_wer: float, pod_labels: Mapping[str, str]
) -> dict[str, Any]:
    """An AnalysisTemplate whose one measurement is a Job: `python -m serving.smoke` against the canary.

    The Job transcribes the clip bundled with the serving package through ``url`` (with ``headers``) and exits
    non-zero when the transcript's WER against its known text exceeds ``max_wer``, or when no transcript comes.
    """
    command = ["python", "-m", "serving.smoke", "--url", url, "--max-wer", repr(max_wer)]
    for name, value in headers.items():
        command += ["--header", f"{name}={value}"]
    return {
        "metrics": [
            {
                "name": "smoke",
                "count": 1,
                "failureLimit": 0,
                "provider": {"job": {"spec": smoke_job_spec(image, command, pod_labels)}},
            }
        ]
    }


def smoke_job_spec(image: str, command: list[str], pod_labels: Mapping[str, str]) -> dict[str, Any]:
    """One try, two minutes at most, as the namespace's restricted Pod Security demands."""
    return {
        "backoffLimit": 0,
        "activeDeadlineSeconds": 120,
        "template": {
            "metadata": {"labels": dict(pod_labels)},
            "spec": {
                "restartPolicy": "Never",
                "automountServiceAccountToken": False,
                "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [
                    {
                        "name": "smoke",
                        "image": image,
                        "command": command,
                        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}},
                        "securityContext": {
                            "allowPrivilegeEscalation": False,
                            "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]},
                        },
                    }
                ],
            },
        },
    }
