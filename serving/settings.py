"""The serving container's settings: one validated object read from ``SPEECH_*`` environment variables.

Nested concerns use ``__`` as the separator (``SPEECH_STREAM__MAX_SESSIONS=8``). A bad value stops start-up with
one :class:`ConfigError` that names the variable, the value and what is allowed, instead of a stack trace from
whatever first touches the value.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from contract.service import ENV_NESTED_DELIMITER, ENV_PREFIX, GRPC_PORT
from contract.topology import DEFAULT_TOPOLOGY, Topology
from contract.topology import load as load_topology
from serving.bundled import profile_named
from serving.names import ModelName, ModelVersion

_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
_DNS_NAME = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
_JURISDICTION_FIELD = "jurisdiction="
_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
_LANGUAGE = re.compile(r"^[a-z]{2,3}$")


def _none_for_off(value: object) -> object:
    """An environment variable cannot be None: `off` stands for it."""
    return None if isinstance(value, str) and value.strip().lower() == "off" else value


class ConfigError(ValueError):
    """A setting is missing, malformed or inconsistent; the message names the environment variable."""


class ModelSettings(BaseModel):
    """Where the model comes from: the regional store when ``bucket`` is set, else the bundled model."""

    bucket: str | None = None
    name: ModelName = "whisper-base"
    # None: the newest version in the store at start-up (and when polling).
    version: ModelVersion | None = None
    profile: str = "base"  # the bundled model (serving/bundled.py) served when no bucket is set
    cache_dir: Path | None = None  # None: SPEECH_MODEL_CACHE, else ~/.cache/speech-serving/models
    # S3-compatible endpoint, for a local store or tests; None means AWS.
    endpoint_url: str | None = None
    # Seconds between checks for a newer version in the store; None turns polling off.
    poll_interval_s: float | None = Field(default=None, gt=0)
    # Models served beside `name` for requests in one language ({"en": "whisper-tiny.en"}), from the store under the
    # same version, or bundled when there is no store; `name` serves every other language and detects it.
    languages: dict[str, ModelName] = Field(default_factory=dict)
    # Hypotheses a batch request's windows are searched with: 5 as faster-whisper; 1 decodes greedily, 1.6x as fast
    # and 2.1 WER points worse on the long-form bench. Streams have their own (SPEECH_STREAM__FINAL_BEAM_SIZE).
    beam_size: int = Field(default=5, ge=1, le=10)
    # Seconds of silence a batch request's windows are fitted with (rounded up to whole seconds), as streams' finals
    # are, instead of Whisper's padding to 30 s. Measured on the base model at beam 5 with 3 s: the 102 short test
    # clips took 2.5x less CPU at 12.2% WER against 12.1% on 30 s windows (5 s: 12.4%), and the 10-minute long-form
    # recording, whose windows are mostly near 30 s, 9.4% against 9.6% in the same time. Off (None) by default: those
    # clips are English but two, and on one Spanish sentence a fitted window split a misheard word in two.
    window_pad_s: float | None = Field(default=None, ge=1, le=30)
    # Intra-op threads of each decode (onnxruntime); None: one per usable CPU. SPEECH_INFERENCE_THREADS decodes run
    # at once, so a many-core node with many inference threads may want fewer each. On 2 cores, 1 thread costs a
    # quarter less CPU per decode but every stream level of bench.streams got its finals later (4 streams: p95 4.1 s
    # against 1.8 s), so the default stays; the test suite, four workers on two cores, uses 1.
    threads: int | None = Field(default=None, gt=0, le=64)

    @field_validator("window_pad_s", mode="before")
    @classmethod
    def _off(cls, value: object) -> object:
        return _none_for_off(value)

    @field_validator("languages")
    @classmethod
    def _language_codes(cls, languages: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        for language, model in languages.items():
            if not _LANGUAGE.match(language):
                raise ValueError(f"{language!r} is not an ISO 639-1 language code such as en or es")
            if model == info.data.get("name"):
                raise ValueError(f"{language}: {model!r} is SPEECH_MODEL__NAME already, which serves every language")
        return languages


@dataclass(frozen=True)
class ModelSpec:
    """One model this server serves: its kind, its name in the store, a pinned version (None: the newest) and the
    bundled profile loaded from the local cache when no store is configured."""

    kind: str
    name: str
    version: str | None
    profile: str
    threads: int | None = None  # intra-op threads per call; None: the engine's default
    # Seconds of silence batch requests' windows are fitted with (ModelSettings.window_pad_s): the warm-up decodes so.
    window_pad_s: float | None = None


class ShadowSettings(BaseModel):
    """A candidate model version run off the response path on a sample of batch requests (``serving.shadow``).

    It comes from the same store as the served model, with the same checks and warm-up; without a store (a local
    run) the bundled build of ``profile`` stands in for it.
    """

    version: ModelVersion | None = None  # None: no shadow
    sample_rate: float = Field(default=0.05, gt=0, le=1)
    profile: str | None = None  # a local run's bundled candidate; None: the served model's profile


class TtsSettings(BaseModel):
    """The voice of /v1/tts and /v1/audio/speech: from the store like the ASR model, else the bundled voice."""

    enabled: bool = True
    # What requests name in `voice`; without a store, also the bundled voice loaded (serving/bundled.py).
    voice: str = Field(default="joe", pattern=r"^[a-z][a-z0-9_-]{0,31}$")
    name: ModelName = "piper-en-us-joe-medium"
    # None: the newest version in the store at start-up (and when polling).
    version: ModelVersion | None = None
    # Longer texts get 413; 4000 is about 4 minutes of speech, synthesized sentence by sentence. At most 10 000,
    # which fits the gate's 64 KiB bound on JSON bodies even at 4 bytes a character.
    max_chars: int = Field(default=4000, gt=0, le=10_000)


class CacheSettings(BaseModel):
    """The synthesized-audio cache (serving/tts_cache.py)."""

    # redis://host:6379/0; None: an in-process LRU of `max_bytes`, per replica.
    redis_url: str | None = Field(default=None, pattern=r"^(redis|rediss|unix)://")
    ttl_s: int = Field(default=7 * 24 * 3600, gt=0)
    # Each Redis call gives up after this long and the request is synthesized without the cache.
    timeout_s: float = Field(default=0.05, gt=0, le=5)
    # After a Redis failure, calls skip it for this long, so a dead Redis costs one timeout per interval.
    retry_after_s: float = Field(default=5.0, gt=0, le=3600)
    max_bytes: int = Field(default=256 * 1024 * 1024, gt=0)


class StreamSettings(BaseModel):
    """Limits and cadence of one WebSocket stream."""

    # From `python -m bench.streams` on 2 cores with 2 inference threads (README, "Stream capacity"): six real-time
    # streams kept their finals within 1.5 s at p95 and a partial a second (p95 1.16-1.42 s over three runs), four
    # within 1 s. Four leaves room for a slower hour on a shared machine. Set it from the bench on other hardware (a
    # deployment sets it from `streamsPerReplica`).
    max_sessions: int = Field(default=4, gt=0)
    # 640 bytes is one 20 ms frame; allow up to 1 s so bursty clients are not punished.
    max_frame_bytes: int = Field(default=32_000, gt=0)
    partial_interval_ms: int = Field(default=500, ge=100)
    # The most of its wall time a stream spends decoding partials: a draft that took long (other streams share the
    # inference threads) spaces the next partial out to draft time / duty, so cadence adapts to load.
    partial_duty: float = Field(default=0.5, gt=0, le=1)
    # Whisper decodes at most 30 s; cut a final before that even if the speaker never pauses.
    max_utterance_s: float = Field(default=20.0, gt=1, le=29)
    vad_threshold: float = Field(default=0.5, gt=0, lt=1)
    end_silence_ms: int = Field(default=600, ge=100)
    # After this much silence the final is decoded speculatively and, if no speech follows before end_silence_ms,
    # sent as it is: the final then arrives about end_silence_ms after the speech rather than that plus a decode.
    # Shorter costs more wasted decodes on pauses inside sentences; None (`off` in the environment) turns
    # speculation off.
    speculative_final_ms: int | None = Field(default=200, ge=32)
    # With no `language` from the client, the stream's language is detected once on this much of its first
    # utterance (all of it if shorter); no partial comes before then.
    language_detect_s: float = Field(default=2.0, gt=0, le=30)
    # Partials always report the words two drafts in a row agreed on as `committed` (serving/agreement.py). With
    # this on, drafts also take them as a forced prefix and decode only the rest: about a sixth less draft time, but
    # on the test sentences the last partial's WER rose from 17% to 28% (forced through a whole sentence, the
    # decoder runs on past its end and repeats it), so it is off; finals never use it.
    partial_prefix: bool = False
    # Finals are decoded greedily: a beam of 5 (what batch requests use) costs a one-window final about twice the
    # decode time, and finals are latency-bound. Raise it where accuracy matters more than the last few hundred ms.
    final_beam_size: int = Field(default=1, ge=1, le=10)
    # Finals are encoded on a window fitted to the utterance plus this much silence (rounded up to whole seconds)
    # rather than Whisper's padded 30 s one: a 4 s utterance costs under a third of the encoder work, at the same
    # WER on the test clips (serving/mel.py), which brings the final in sooner and leaves the CPU to more streams.
    # None (`off` in the environment) encodes finals on 30 s windows.
    final_window_pad_s: float | None = Field(default=5.0, ge=1, le=30)
    # Audio is taken at most this many times faster than real time (plus `burst_s` ahead), so one client sending a
    # file as fast as it can does not eat the CPU of everyone else: beyond it the server stops reading and TCP
    # pushes back. A few times real time lets clients catch up after a network stall.
    max_realtime_factor: float = Field(default=3.0, ge=1, le=1000)
    burst_s: float = Field(default=2.0, gt=0, le=60)
    # Frames waiting for the session; when full the reader stops reading and TCP pushes back on the client.
    inbound_queue_frames: int = Field(default=250, gt=0)
    # Finals waiting for the decoder; beyond this the session stops taking audio until one is done.
    max_pending_finals: int = Field(default=2, gt=0)
    # A client held back this long stops being read: its pending finals are still sent, then it is closed with 1013.
    backpressure_timeout_s: float = Field(default=10.0, gt=0)
    idle_timeout_s: float = Field(default=30.0, gt=0)

    @field_validator("speculative_final_ms", "final_window_pad_s", mode="before")
    @classmethod
    def _off(cls, value: object) -> object:
        return _none_for_off(value)


class LimitsSettings(BaseModel):
    """Bounds on batch requests."""

    max_upload_bytes: int = Field(default=10 * 1024 * 1024, gt=0)
    # Checked from the container's header before anything is decoded, and again while decoding block by block, so
    # memory grows only with the decoded audio (230 MB per hour of 16 kHz float32; features exist for one batch of
    # windows at a time); the upload limit binds first for lossless audio: 10 MiB holds about 5 min of 16 kHz PCM16
    # WAV, 10 of FLAC, an hour of Opus. The cap bounds one request's hold on an inference thread (minutes for an
    # hour on 2 cores).
    max_audio_s: float = Field(default=3600.0, gt=0, le=4 * 3600)
    # Batch requests allowed to wait for an inference thread before new ones get 503. A request holds its slot
    # from before its upload is read, so the slots also bound the memory uploads can take.
    max_queued_requests: int = Field(default=8, gt=0)
    # Uploads decoded (container to 16 kHz PCM) at once, off the event loop; more wait for a decoder thread.
    max_concurrent_decodes: int = Field(default=2, gt=0, le=64)
    # An upload that sends nothing for this long, or is not complete after `upload_timeout_s`, gets 408. The total
    # must allow MAX_UPLOAD_BYTES at the slowest link clients use: 10 MiB in 120 s needs 0.7 Mbit/s.
    upload_idle_timeout_s: float = Field(default=10.0, gt=0)
    upload_timeout_s: float = Field(default=120.0, gt=0)


class ShutdownSettings(BaseModel):
    """Draining on SIGTERM: readiness fails at once, then live work gets this long to finish."""

    grace_s: float = Field(default=20.0, gt=0, le=3600)


class GrpcSettings(BaseModel):
    """The gRPC API (``speech.v1.Speech`` and the gRPC health service), served by the same process on its own port."""

    enabled: bool = True
    host: str = "127.0.0.1"  # `python -m serving --host` sets it with the HTTP address
    port: int = Field(default=GRPC_PORT, ge=0, le=65535)  # 0: any free port, logged at start


class SpeakerSettings(BaseModel):
    """Speaker verification: where voiceprints are kept and when a clip matches one.

    Voiceprints are personal data. With ``redis_url`` unset they live in this process only (gone on restart, not
    shared between replicas: for a local run or one replica); a deployment points it at the region's own Redis,
    which is never replicated out of the region.
    """

    # Cosine similarity at or above which a clip matches the enrolled voice. `python -m bench.speakers` puts the
    # equal error rate of ten synthetic voices at 0.77 (README, "Speaker verification"); a little above it, because
    # a false accept costs more than a retry. Tune it on real enrolments: real voices are closer than synthetic ones.
    threshold: float = Field(default=0.78, gt=-1, lt=1)
    # Less speech than this (pauses removed by the VAD) gives an unstable voiceprint: enrol and verify refuse it.
    min_speech_s: float = Field(default=1.0, gt=0, le=60)
    # Clips kept per speaker: further enrolments replace the oldest, so a speaker's record stays bounded.
    max_clips: int = Field(default=10, gt=0, le=100)
    redis_url: str | None = None

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(_REDIS_SCHEMES):
            raise ValueError(f"must start with {', '.join(_REDIS_SCHEMES)} (e.g. redis://speakers-redis:6379/0)")
        return value


class AuthSettings(BaseModel):
    """API keys, given only as SHA-256 hex digests so the deployment never holds a usable key.

    An entry is ``<sha256 hex>``, or ``<sha256 hex> jurisdiction=<code>`` for a tenant whose data must stay in that
    jurisdiction: a replica elsewhere refuses it (``serving/residency.py``). Entries come comma-separated from
    ``SPEECH_AUTH__API_KEY_HASHES`` or one a line from the secret file (blank lines and ``#`` comments skip).

    Transcription keys (``api_key_hashes``) and administrative keys (``admin_key_hashes``, plain digests, the same
    two ways) are separate sets: a client that may transcribe may not swap the model. With no admin key configured
    the admin routes are off.
    """

    api_key_hashes: Annotated[list[str], NoDecode] = Field(default_factory=list)
    api_key_hashes_file: Path | None = None
    admin_key_hashes: Annotated[list[str], NoDecode] = Field(default_factory=list)
    admin_key_hashes_file: Path | None = None

    @field_validator("api_key_hashes", "admin_key_hashes", mode="before")
    @classmethod
    def _split_comma_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [h.strip() for h in value.split(",") if h.strip()]
        return value

    @field_validator("api_key_hashes")
    @classmethod
    def _sha256_hex(cls, entries: list[str]) -> list[str]:
        for entry in entries:
            parse_key_entry(entry, "entry")
        return entries

    @field_validator("admin_key_hashes")
    @classmethod
    def _admin_sha256_hex(cls, hashes: list[str]) -> list[str]:
        return [_checked_hash(h, "entry") for h in hashes]

    @field_validator("api_key_hashes_file", "admin_key_hashes_file")
    @classmethod
    def _readable_file(cls, path: Path | None) -> Path | None:
        if path is not None and not path.is_file():
            raise ValueError(f"{str(path)!r} is not a readable file of SHA-256 hex digests, one a line")
        return path

    def keys(self) -> dict[str, str | None]:
        """Every accepted key digest with its home jurisdiction (None: any replica may serve it)."""
        return _entries(self.api_key_hashes, self.api_key_hashes_file, "API_KEY_HASHES_FILE", parse_key_entry)

    def key_hashes(self) -> frozenset[str]:
        """Every accepted transcription key digest: the variable's and the secret file's."""
        return frozenset(self.keys())

    def admin_hashes(self) -> frozenset[str]:
        """Every accepted admin key digest: the variable's and the secret file's."""
        return frozenset(
            _entries(self.admin_key_hashes, self.admin_key_hashes_file, "ADMIN_KEY_HASHES_FILE", _plain_digest)
        )

    @property
    def is_enabled(self) -> bool:
        return bool(self.api_key_hashes) or self.api_key_hashes_file is not None


def parse_key_entry(entry: str, where: str) -> tuple[str, str | None]:
    """(digest, home jurisdiction or None) of ``<sha256 hex>[ jurisdiction=<code>]``."""
    if not entry.split():
        raise ValueError(f"{where} is empty; give a SHA-256 hex digest, optionally followed by jurisdiction=<code>")
    digest, *fields = entry.split()
    jurisdiction = None
    for field in fields:
        if not field.startswith(_JURISDICTION_FIELD) or jurisdiction is not None or field == _JURISDICTION_FIELD:
            raise ValueError(
                f"{where} has {field!r} after its digest; the only field allowed is one {_JURISDICTION_FIELD}<code>, "
                "e.g. `<sha256 hex> jurisdiction=eu`"
            )
        jurisdiction = field.removeprefix(_JURISDICTION_FIELD)
    return _checked_hash(digest, where), jurisdiction


def _plain_digest(entry: str, where: str) -> tuple[str, None]:
    return _checked_hash(entry, where), None


def _entries(
    listed: list[str], path: Path | None, variable: str, parse: Callable[[str, str], tuple[str, str | None]]
) -> dict[str, str | None]:
    """``listed`` and the lines of ``path`` (blank lines and ``#`` comments skip), parsed: digest -> jurisdiction."""
    entries = dict(parse(entry, "entry") for entry in listed)
    if path is not None:
        try:
            for number, line in enumerate(path.read_text().splitlines(), start=1):
                line = line.strip()
                if line and not line.startswith("#"):
                    digest, jurisdiction = parse(line, f"line {number}")
                    entries[digest] = jurisdiction
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{ENV_PREFIX}AUTH__{variable}={str(path)!r}: {exc}") from exc
    return entries


def _checked_hash(value: str, where: str) -> str:
    digest = value.strip().lower()
    if not _SHA256_HEX.match(digest):
        raise ValueError(
            f"{where} {value[:12]!r}... is not a SHA-256 hex digest (64 hex characters); "
            "give hashes of keys, e.g. `printf %s KEY | sha256sum`"
        )
    return digest


class Settings(BaseSettings):
    """Everything the container reads from its environment."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter=ENV_NESTED_DELIMITER, extra="ignore")

    # The topology the infrastructure was built from (JSON, `Topology.to_dict`); None: this repository's default.
    # Declared before `region`, which is checked against it.
    topology_file: Path | None = None
    # The AWS region this replica runs in (e.g. eu-west-1); None means a local run with no residency checks.
    region: str | None = None
    # The public domain (speech.example.com): a tenant refused here is sent to https://<region key>.<public domain>.
    public_domain: str | None = None
    inference_threads: int = Field(default=2, gt=0, le=64)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    model: ModelSettings = Field(default_factory=ModelSettings)
    tts: TtsSettings = Field(default_factory=TtsSettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    stream: StreamSettings = Field(default_factory=StreamSettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    shutdown: ShutdownSettings = Field(default_factory=ShutdownSettings)
    grpc: GrpcSettings = Field(default_factory=GrpcSettings)
    shadow: ShadowSettings = Field(default_factory=ShadowSettings)
    speakers: SpeakerSettings = Field(default_factory=SpeakerSettings)

    @field_validator("topology_file")
    @classmethod
    def _readable_topology(cls, path: Path | None) -> Path | None:
        _topology_at(path)
        return path

    @field_validator("region")
    @classmethod
    def _known_region(cls, value: str | None, info: ValidationInfo) -> str | None:
        # A topology file that failed its own check is reported once, under its own variable.
        if value is not None and "topology_file" in info.data:
            _topology_at(info.data["topology_file"]).region_for_aws(value)
        return value

    @field_validator("public_domain")
    @classmethod
    def _dns_name(cls, value: str | None) -> str | None:
        if value is not None and not _DNS_NAME.match(value):
            raise ValueError("is not a lower-case DNS name such as speech.example.com")
        return value

    @model_validator(mode="after")
    def _store_settings_agree(self) -> Settings:
        model = self.model
        if model.bucket is not None and self.region is None:
            raise ValueError(
                f"{ENV_PREFIX}MODEL__BUCKET={model.bucket!r} needs {ENV_PREFIX}REGION (the AWS region this "
                "replica runs in) so the bucket's jurisdiction can be checked"
            )
        if model.poll_interval_s is not None and (model.bucket is None or model.version is not None):
            why = "no model store is configured (SPEECH_MODEL__BUCKET)" if model.bucket is None else (
                f"SPEECH_MODEL__VERSION={model.version!r} pins the version"
            )  # fmt: skip
            raise ValueError(
                f"{ENV_PREFIX}MODEL__POLL_INTERVAL_S={model.poll_interval_s:g} polls the store for newer versions, "
                f"but {why}; set one or the other"
            )
        if self.shadow.version is not None and self.shadow.version == model.version:
            raise ValueError(
                f"{ENV_PREFIX}SHADOW__VERSION={self.shadow.version!r} is the served version "
                f"({ENV_PREFIX}MODEL__VERSION); shadow a different one"
            )
        return self

    @cached_property
    def topology(self) -> Topology:
        """The regions and residency rules this replica answers to."""
        return _topology_at(self.topology_file)

    def served_models(self) -> list[ModelSpec]:
        """Every model this server loads and warms before it is ready, each with its own registry."""
        model, tts = self.model, self.tts
        specialised = sorted(set(model.languages.values()))
        served = [
            ModelSpec("asr", model.name, model.version, model.profile, model.threads, model.window_pad_s),
            *(
                ModelSpec("asr", name, model.version, profile_named(name), model.threads, model.window_pad_s)
                for name in specialised
            ),
        ]
        if tts.enabled:
            served.append(ModelSpec("tts", tts.name, tts.version, tts.voice))
        return served

    @property
    def region_label(self) -> str:
        """The ``region`` metric label: the topology key (e.g. ``eu-west``), or ``local``."""
        return self.topology.region_for_aws(self.region).key if self.region else "local"


def _topology_at(path: Path | None) -> Topology:
    return DEFAULT_TOPOLOGY if path is None else load_topology(path)


def load_settings(**overrides: object) -> Settings:
    """Read the environment (``overrides`` win) into :class:`Settings`, or raise one readable ``ConfigError``."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigError("; ".join(_describe(error) for error in exc.errors())) from exc


def _describe(error: ErrorDetails) -> str:
    location = [str(part) for part in error["loc"] if not isinstance(part, int)]
    message = error["msg"].removeprefix("Value error, ")
    if not location:
        return message
    variable = ENV_PREFIX + "__".join(part.upper() for part in location)
    if "input" in error and not isinstance(error["input"], dict):
        return f"{variable}={error['input']!r}: {message}"
    return f"{variable}: {message}"
