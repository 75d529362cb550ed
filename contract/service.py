"""The serving workload's interface as the infrastructure sees it: port, probes, store layout, variables, metrics.

The serving container implements these (``serving/``); the infrastructure points load balancers, health checks,
the Kubernetes workload, autoscaling and alerts at them (``infra/``). Each fact is written here once, so a renamed
path or metric fails a test instead of silently breaking a probe or an alert.
"""

from __future__ import annotations

# The HTTP (and WebSocket) port the container listens on; load balancers and the Kubernetes Service target it.
SERVING_PORT = 8000
# The gRPC port (HTTP/2, `speech.v1.Speech` and the standard `grpc.health.v1.Health`), served by the same process.
GRPC_PORT = 50051
GRPC_PORT_NAME = "grpc"
# The gRPC service's full name (package speech.v1 in serving/grpc_api/speech.proto): routes match its path prefix.
GRPC_SERVICE = "speech.v1.Speech"

# Liveness: the process serves HTTP. Answers 200 while the model is still loading.
HEALTH_PATH = "/healthz"
# Readiness: a model is loaded and has decoded its warm-up clip. What load balancers and DNS health checks probe.
READINESS_PATH = "/readyz"
# Prometheus exposition: scraped inside the cluster only, never routed from the internet.
METRICS_PATH = "/metrics"
# The public API: everything under API_PREFIX. Streaming is a WebSocket on STREAM_PATH; BATCH_PATH takes a whole
# clip per request, which the infrastructure routes to replicas that may run on spot capacity.
API_PREFIX = "/v1/"
STREAM_PATH = "/v1/asr/stream"
BATCH_PATH = "/v1/asr"
# Speech synthesis: JSON in, audio out (streamed sentence by sentence); the second is OpenAI's route for it.
TTS_PATH = "/v1/tts"
OPENAI_SPEECH_PATH = "/v1/audio/speech"
# Set on every synthesis answer: whether the audio came from the cache.
CACHE_HEADER = "X-Speech-Cache"
# Every HTTP response and every WebSocket handshake names the region that answered (its topology key, or `local`
# for a replica without SPEECH_REGION), so a client can prove where its audio was processed and alarm otherwise.
REGION_HEADER = "X-Speech-Region"
# OpenAI's audio API, so OpenAI's clients work unchanged: the same batch pipeline as BATCH_PATH, OpenAI's shapes.
OPENAI_PREFIX = "/v1/audio/"
OPENAI_TRANSCRIPTIONS_PATH = "/v1/audio/transcriptions"
# A browser cannot set headers on a WebSocket, so the stream also takes its API key as a subprotocol: the client
# offers STREAM_SUBPROTOCOL and STREAM_KEY_SUBPROTOCOL_PREFIX + base64url(key) (no padding), and the server selects
# STREAM_SUBPROTOCOL. A header is not logged the way a URL's query is, so the key stays out of access logs.
STREAM_SUBPROTOCOL = "speech.v1"
STREAM_KEY_SUBPROTOCOL_PREFIX = "speech.key."
# The web console: its page, and the static files it loads (CSS, JavaScript modules), served without a key so a
# visitor can type one in; the page itself holds nothing secret.
CONSOLE_PATH = "/"
CONSOLE_ASSETS_PREFIX = "/console/"

# Model store layout: s3://<bucket>/models/<name>/<version>/ holds the model files and MANIFEST_FILE, which lists
# every file with its SHA-256 and is written last, so its presence means the version is complete.
MODELS_PREFIX = "models/"
MANIFEST_FILE = "manifest.json"
# What a model directory serves, as its manifest's `kind` says (a manifest without one is an ASR model, as every
# manifest was before the field existed): speech recognition, speech synthesis (a voice), speaker verification.
MODEL_KINDS = ("asr", "tts", "speaker")


def model_prefix(name: str, version: str | None = None) -> str:
    """The key prefix of model ``name`` (all its versions), or of one ``version`` of it."""
    return f"{MODELS_PREFIX}{name}/" + (f"{version}/" if version else "")


def model_bucket_name(project: str, region_key: str, account_id: str) -> str:
    """A region's model store bucket: deterministic, so the release tooling and other stacks can name it unread.

    The account id keeps the globally unique S3 name from colliding with another account deploying the project.
    """
    return f"{project}-models-{region_key}-{account_id}"


def regional_hostname(region_key: str, domain: str) -> str:
    """The hostname that reaches exactly one region, whatever the user's location: ``<region key>.<domain>``."""
    return f"{region_key}.{domain}"


# Environment variables the serving container reads. Nested settings use ENV_NESTED_DELIMITER
# (SPEECH_MODEL__BUCKET is Settings.model.bucket); the infrastructure sets these on the workload.
ENV_PREFIX = "SPEECH_"
ENV_NESTED_DELIMITER = "__"
ENV_REGION = "SPEECH_REGION"  # AWS region of the replica, e.g. eu-west-1
ENV_TOPOLOGY_FILE = "SPEECH_TOPOLOGY_FILE"  # JSON of the Topology the infrastructure was built from
ENV_MODEL_BUCKET = "SPEECH_MODEL__BUCKET"
ENV_MODEL_NAME = "SPEECH_MODEL__NAME"
ENV_MODEL_VERSION = "SPEECH_MODEL__VERSION"  # unset: the newest version in the store
ENV_MODEL_POLL_INTERVAL_S = "SPEECH_MODEL__POLL_INTERVAL_S"
ENV_MODEL_CACHE_DIR = "SPEECH_MODEL__CACHE_DIR"  # this server's model cache
# JSON {language code: model name}: models served beside SPEECH_MODEL__NAME for requests in that language.
ENV_MODEL_LANGUAGES = "SPEECH_MODEL__LANGUAGES"
ENV_MODEL_CACHE = "SPEECH_MODEL_CACHE"  # the cache root shared by the server and `python -m serving.build.export`
ENV_AUTH_API_KEY_HASHES = "SPEECH_AUTH__API_KEY_HASHES"
# A mounted secret, one SHA-256 hex a line, optionally followed by the key's home jurisdiction: `<hex> jurisdiction=eu`.
ENV_AUTH_API_KEY_HASHES_FILE = "SPEECH_AUTH__API_KEY_HASHES_FILE"
# The public domain (e.g. speech.example.com): a tenant refused here is sent to https://<region key>.<domain>.
ENV_PUBLIC_DOMAIN = "SPEECH_PUBLIC_DOMAIN"
ENV_INFERENCE_THREADS = "SPEECH_INFERENCE_THREADS"
# How long live streams and in-flight requests get to finish after SIGTERM; the pod's termination grace covers it.
ENV_SHUTDOWN_GRACE_S = "SPEECH_SHUTDOWN__GRACE_S"
# A candidate model version every replica also runs, off the response path, on a sample of batch requests
# (the fraction in ENV_SHADOW_SAMPLE_RATE); loaded from the same store as the served model, with the same checks.
ENV_SHADOW_VERSION = "SPEECH_SHADOW__VERSION"
ENV_SHADOW_SAMPLE_RATE = "SPEECH_SHADOW__SAMPLE_RATE"
ENV_LOG_LEVEL = "SPEECH_LOG_LEVEL"
ENV_GRPC_PORT = "SPEECH_GRPC__PORT"  # 0: any free port
# The synthesis cache: Redis at this URL (redis://host:port/db) when set, else an in-process LRU.
ENV_CACHE_REDIS_URL = "SPEECH_CACHE__REDIS_URL"
ENV_TTS_ENABLED = "SPEECH_TTS__ENABLED"
ENV_TTS_NAME = "SPEECH_TTS__NAME"  # the voice model's name in the store
ENV_TTS_VERSION = "SPEECH_TTS__VERSION"  # unset: the newest version in the store

# Prometheus metrics (exposed names: counters end in _total). Every series has these labels, fixed per replica.
METRIC_LABELS = ("region", "model_version")
METRIC_REQUESTS = "speech_requests_total"
METRIC_REQUEST_DURATION = "speech_request_duration_seconds"
METRIC_INFERENCE_DURATION = "speech_inference_duration_seconds"
METRIC_REAL_TIME_FACTOR = "speech_real_time_factor_ratio"
METRIC_AUDIO_PROCESSED = "speech_audio_processed_seconds_total"
METRIC_ACTIVE_STREAMS = "speech_active_streams"  # what stream autoscaling scales on
# Batch requests admitted and not finished (uploading, queued or transcribing): what batch autoscaling scales on.
# Labelled by region only: an admitted request has no model version until an engine is chosen for it.
METRIC_BATCH_IN_FLIGHT = "speech_batch_requests_in_flight"
METRIC_ERRORS = "speech_errors_total"
METRIC_PARTIALS_DROPPED = "speech_partials_dropped_total"  # reason: superseded or overload
# Finals decoded when the speaker paused: outcome used (sent as the final) or wasted (speech went on).
METRIC_SPECULATIVE_FINALS = "speech_speculative_finals_total"
# Seconds streams were held back (not read) for sending faster than the per-stream pace.
METRIC_STREAM_HELD_BACK = "speech_stream_held_back_seconds_total"
METRIC_MODEL_INFO = "speech_model_info"
METRIC_MODEL_SWAPS = "speech_model_swaps_total"
# The shadow comparison, labelled with the served model_version and the shadow's candidate_version: the WER of the
# candidate's transcript against the served one (a histogram of fractions), the candidate's engine seconds minus the
# served model's on the same audio, and the samples skipped (label reason) because the replica was busy.
METRIC_SHADOW_WER = "speech_shadow_word_error_ratio"
METRIC_SHADOW_LATENCY_DIFFERENCE = "speech_shadow_latency_difference_seconds"
METRIC_SHADOW_SKIPPED = "speech_shadow_skipped_total"
# Lookups in the container's caches (labels: cache, e.g. tts; result: hit, miss or error), for the hit-rate panel.
METRIC_CACHE_LOOKUPS = "speech_cache_lookups_total"
# Requests refused because the tenant's home jurisdiction may not be served here (labels: jurisdiction, route).
METRIC_RESIDENCY_REFUSALS = "speech_residency_refusals_total"
# The synthesis cache (its lookups are METRIC_CACHE_LOOKUPS with cache="tts"): bytes served from it and written to
# it, failures of its backend (by backend, operation and reason: timeout, error, unavailable), bytes the in-process
# LRU holds.
METRIC_TTS_CACHE_SERVED = "speech_tts_cache_served_bytes_total"
METRIC_TTS_CACHE_WRITTEN = "speech_tts_cache_written_bytes_total"
METRIC_TTS_CACHE_ERRORS = "speech_tts_cache_errors_total"
METRIC_TTS_CACHE_HELD = "speech_tts_cache_held_bytes"
# Labelled by region only: admitted batch requests have no model version until an engine is chosen, and the cache's
# backend and its size belong to no one version.
METRICS_WITHOUT_VERSION = (METRIC_BATCH_IN_FLIGHT, METRIC_TTS_CACHE_ERRORS, METRIC_TTS_CACHE_HELD)

# The serving workload's Kubernetes identity: its EKS Pod Identity association binds exactly this service account.
KUBERNETES_NAMESPACE = "speech"
SERVICE_ACCOUNT = "speech-serving"
