"""Every Prometheus metric the container exports, and the small functions handlers call to record them.

Metric names come from :mod:`contract.service`, where the autoscaling and alerting side reads them too.
Each app owns its own ``CollectorRegistry`` (no process-global default registry), so tests and several apps in
one process never collide. Every series carries ``region`` (fixed when the app is built) and ``model_version``
(the version that served the work: after a hot swap, draining streams still report their old version).

Every label takes values from a small fixed set, so no client can grow the number of series: ``model`` is a
configured model's name (the engine-time metrics carry it, as a region may serve several models at once: one per
language it specialises in, the multilingual one, the speaker embedder), ``model_version`` is only ever a version
that was loaded (or ``none``; a version that failed to load never becomes a label), ``route`` a route template (or
a gRPC method path) or ``unmatched``, ``status`` an HTTP status, a WebSocket close code, a gRPC status code name or
``client_abort``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from contract import service

LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
# The shadow candidate's WER against the served transcript, and its engine seconds minus the served model's.
SHADOW_WER_BUCKETS = (0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0)
SHADOW_LATENCY_BUCKETS = (-2.0, -1.0, -0.5, -0.2, -0.1, -0.05, 0.0, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)
RTF_BUCKETS = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 4.0)
CONTENT_TYPE = CONTENT_TYPE_LATEST
_LABELS = service.METRIC_LABELS


class ServingMetrics:
    """The container's metrics for one region; ``model_version`` is given per observation."""

    def __init__(self, region: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._region = region
        r = self.registry
        self._requests = Counter(
            service.METRIC_REQUESTS, "HTTP requests and WebSocket streams by route and status code",
            (*_LABELS, "route", "status"), registry=r,
        )  # fmt: skip
        self._latency = Histogram(
            service.METRIC_REQUEST_DURATION, "Wall-clock time from request to response (whole stream for WS)",
            (*_LABELS, "route"), buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self._inference = Histogram(
            service.METRIC_INFERENCE_DURATION,
            "Engine time per decode: batch clip, stream partial or final, speaker embedding; by model",
            (*_LABELS, "model", "kind"), buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self._rtf = Histogram(
            service.METRIC_REAL_TIME_FACTOR, "Engine seconds per second of audio decoded (below 1 keeps up)",
            (*_LABELS, "model", "kind"), buckets=RTF_BUCKETS, registry=r,
        )  # fmt: skip
        self._audio = Counter(
            service.METRIC_AUDIO_PROCESSED, "Seconds of audio decoded", (*_LABELS, "model", "kind"), registry=r
        )
        self._streams = Gauge(service.METRIC_ACTIVE_STREAMS, "Open WebSocket streams", _LABELS, registry=r)
        self._batch = Gauge(
            service.METRIC_BATCH_IN_FLIGHT, "Batch requests admitted: uploading, decoding, queued or transcribing",
            ("region",), registry=r,
        )  # fmt: skip
        self._batch.labels(region).set(0)
        self._errors = Counter(
            service.METRIC_ERRORS, "Failed requests and streams, by cause", (*_LABELS, "kind"), registry=r
        )
        self._dropped = Counter(
            service.METRIC_PARTIALS_DROPPED,
            "Stream partials skipped: superseded (a newer one replaced it before decoding) or overload (every "
            "inference thread was busy, so finals and other streams went first)",
            (*_LABELS, "reason"), registry=r,
        )  # fmt: skip
        self._speculative = Counter(
            service.METRIC_SPECULATIVE_FINALS,
            "Finals decoded when the speaker paused, before the utterance was known to have ended: used (sent "
            "as the final, no more speech came) or wasted (speech went on, the final was decoded again)",
            (*_LABELS, "outcome"), registry=r,
        )  # fmt: skip
        self._held_back = Counter(
            service.METRIC_STREAM_HELD_BACK,
            "Seconds streams were not read because their clients sent audio faster than "
            "SPEECH_STREAM__MAX_REALTIME_FACTOR times real time",
            _LABELS, registry=r,
        )  # fmt: skip
        self._model = Gauge(
            service.METRIC_MODEL_INFO, "1 for each loaded model version, by kind (asr, tts, speaker) and name",
            (*_LABELS, "kind", "name"), registry=r,
        )  # fmt: skip
        self._misdirected = Counter(
            service.METRIC_RESIDENCY_REFUSALS, "Requests refused because the tenant's data may not be processed here",
            (*_LABELS, "jurisdiction", "route"), registry=r,
        )  # fmt: skip
        self._cache_served = Counter(
            service.METRIC_TTS_CACHE_SERVED, "Bytes of audio answered from the synthesis cache", _LABELS, registry=r
        )
        self._cache_written = Counter(
            service.METRIC_TTS_CACHE_WRITTEN, "Bytes of synthesized audio stored in the cache", _LABELS, registry=r
        )
        self._cache_errors = Counter(
            service.METRIC_TTS_CACHE_ERRORS,
            "Synthesis cache calls that failed (timeout, error) or were skipped while the backend recovers "
            "(unavailable); the request was synthesized anyway",
            ("region", "backend", "operation", "reason"), registry=r,
        )  # fmt: skip
        self._cache_held = Gauge(
            service.METRIC_TTS_CACHE_HELD, "Bytes of audio the in-process synthesis cache holds", ("region",),
            registry=r,
        )  # fmt: skip
        self._swaps = Counter(
            service.METRIC_MODEL_SWAPS, "Model reloads of each served model by outcome (swapped, unchanged, failed)",
            (*_LABELS, "kind", "name", "outcome"), registry=r,
        )  # fmt: skip
        self._shadow_wer = Histogram(
            service.METRIC_SHADOW_WER, "WER of the shadow candidate's transcript against the served one",
            (*_LABELS, "candidate_version"), buckets=SHADOW_WER_BUCKETS, registry=r,
        )  # fmt: skip
        self._shadow_latency = Histogram(
            service.METRIC_SHADOW_LATENCY_DIFFERENCE, "Shadow candidate's engine seconds minus the served model's",
            (*_LABELS, "candidate_version"), buckets=SHADOW_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self._cache_lookups = Counter(
            service.METRIC_CACHE_LOOKUPS, "Lookups in the container's caches by cache and result (hit, miss, error)",
            (*_LABELS, "cache", "result"), registry=r,
        )  # fmt: skip
        self._shadow_skipped = Counter(
            service.METRIC_SHADOW_SKIPPED, "Sampled requests not run on the shadow candidate, by reason",
            (*_LABELS, "reason"), registry=r,
        )  # fmt: skip

    def request(self, model_version: str, route: str, status: int | str, seconds: float) -> None:
        self._requests.labels(self._region, model_version, route, str(status)).inc()
        self._latency.labels(self._region, model_version, route).observe(seconds)

    def inference(self, model: str, model_version: str, kind: str, audio_seconds: float, seconds: float) -> None:
        """``model`` is the name of a loaded model (configured, never a client's): a bounded set."""
        self._inference.labels(self._region, model_version, model, kind).observe(seconds)
        self._audio.labels(self._region, model_version, model, kind).inc(audio_seconds)
        if audio_seconds > 0:
            self._rtf.labels(self._region, model_version, model, kind).observe(seconds / audio_seconds)

    def stream_opened(self, model_version: str) -> None:
        self._streams.labels(self._region, model_version).inc()

    def stream_closed(self, model_version: str) -> None:
        self._streams.labels(self._region, model_version).dec()

    def batch_in_flight(self, count: int) -> None:
        self._batch.labels(self._region).set(count)

    def error(self, model_version: str, kind: str) -> None:
        self._errors.labels(self._region, model_version, kind).inc()

    def partial_dropped(self, model_version: str, reason: str) -> None:
        self._dropped.labels(self._region, model_version, reason).inc()

    def speculative_final(self, model_version: str, outcome: str) -> None:
        self._speculative.labels(self._region, model_version, outcome).inc()

    def stream_held_back(self, model_version: str, seconds: float) -> None:
        self._held_back.labels(self._region, model_version).inc(seconds)

    def model_loaded(self, kind: str, name: str, model_version: str) -> None:
        self._model.labels(self._region, model_version, kind, name).set(1)

    def model_unloaded(self, kind: str, name: str, model_version: str) -> None:
        self._model.remove(self._region, model_version, kind, name)

    def model_reload(self, kind: str, name: str, model_version: str, outcome: str) -> None:
        """``name`` is a configured model's name: a bounded set, like the versions that loaded."""
        self._swaps.labels(self._region, model_version, kind, name, outcome).inc()

    def residency_refused(self, model_version: str, jurisdiction: str, route: str) -> None:
        """``jurisdiction`` is a topology code and ``route`` a route template: both bounded sets."""
        self._misdirected.labels(self._region, model_version, jurisdiction, route).inc()

    def shadow_compared(self, model_version: str, candidate: str, wer: float, seconds_slower: float) -> None:
        """``candidate`` is the one configured shadow version: a bounded label."""
        self._shadow_wer.labels(self._region, model_version, candidate).observe(wer)
        self._shadow_latency.labels(self._region, model_version, candidate).observe(seconds_slower)

    def shadow_skipped(self, model_version: str, reason: str) -> None:
        self._shadow_skipped.labels(self._region, model_version, reason).inc()

    def tts_cache_lookup(self, model_version: str, result: str, served_bytes: int) -> None:
        """A lookup in the synthesis cache, counted in the lookups of every cache as ``cache="tts"``."""
        self._cache_lookups.labels(self._region, model_version, "tts", result).inc()
        if served_bytes:
            self._cache_served.labels(self._region, model_version).inc(served_bytes)

    def tts_cache_written(self, model_version: str, written_bytes: int) -> None:
        self._cache_written.labels(self._region, model_version).inc(written_bytes)

    def tts_cache_error(self, backend: str, operation: str, reason: str) -> None:
        self._cache_errors.labels(self._region, backend, operation, reason).inc()

    def tts_cache_held(self, held_bytes: int) -> None:
        self._cache_held.labels(self._region).set(held_bytes)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
