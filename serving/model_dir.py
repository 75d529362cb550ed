"""The on-disk model directory of every engine kind: its manifest, the files each kind needs, the Whisper config.

A model directory is ``manifest.json`` (name, version, kind, the profile that built it, and every file with its
sha256) beside the files of one engine: a Whisper model (``serving/engine.py``), a voice (``serving/tts.py``).
The build tools write it, the model-store client ships it, and an engine refuses to load it unless it is of the
engine's kind and every file's sha256 matches the manifest: a half-copied or tampered model must fail at load time
with a named file, not transcribe (or say) garbage later.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from contract.service import ENV_MODEL_CACHE, MANIFEST_FILE, MODEL_KINDS
from serving.names import checked_name

ENCODER_FILE = "encoder.int8.onnx"
DECODER_FILE = "decoder.onnx"
TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "config.json"
MODEL_FILES = (ENCODER_FILE, DECODER_FILE, TOKENIZER_FILE, CONFIG_FILE)
# A Piper voice: the VITS graph and Piper's config beside it (sample rate, phoneme ids, inference scales).
VOICE_MODEL_FILE = "voice.onnx"
VOICE_CONFIG_FILE = "voice.onnx.json"
VOICE_FILES = (VOICE_MODEL_FILE, VOICE_CONFIG_FILE)
# The files a manifest of each kind must list; a kind missing here needs no particular file.
REQUIRED_FILES: dict[str, tuple[str, ...]] = {"asr": MODEL_FILES, "tts": VOICE_FILES}

# A few seconds of English speech shipped with the package: the export checks its graphs on it and every loaded
# model decodes it before serving (silence would skip the decoder now that the engine runs a VAD first).
SPEECH_CLIP = Path(__file__).with_name("assets") / "export_check.flac"

# Digests of unchanged files (``sha256_of``), by file identity and times.
_DIGESTS: dict[tuple[int, ...], str] = {}
_DIGESTS_KEPT = 1024
# Linux stamps files from a clock that advances in ticks of up to 10 ms (one jiffy at HZ=100).
_TIMESTAMP_SLACK_NS = 20_000_000
CACHE_ENV = ENV_MODEL_CACHE
DEFAULT_CACHE = Path("~/.cache/speech-serving/models")


class ModelError(Exception):
    """A model directory is missing, incomplete, tampered with or not a model this code can run."""


@dataclass(frozen=True)
class Manifest:
    name: str
    version: str
    profile: str
    files: dict[str, str]
    kind: str = "asr"
    # The width of the model's INT8 weights as its exporter wrote them: 7 from model 1.5.0 on, exact on every x86 CPU
    # (``serving/build/row_int8.py``); None where the manifest does not say, as before 1.5.0, whose weights take 8.
    int8_weight_bits: int | None = None


@dataclass(frozen=True)
class WhisperDims:
    """The network's shape, as the weights imply it."""

    n_mels: int
    n_audio_ctx: int
    n_text_ctx: int
    d_model: int
    n_heads: int
    n_encoder_layers: int
    n_decoder_layers: int
    n_vocab: int

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads


@dataclass(frozen=True, kw_only=True)
class WhisperConfig(WhisperDims):
    """The shape plus the token ids the runtime needs; written to ``config.json`` by the exporter."""

    profile: str
    is_multilingual: bool
    eot: int
    sot: int
    transcribe: int
    translate: int
    no_timestamps: int
    no_speech: int
    languages: dict[str, int]
    suppress_ids: list[int]
    suppress_ids_begin: list[int]


def encoder_outputs(n_layers: int) -> list[str]:
    """The encoder's outputs, in order: each decoder layer's cross-attention K and V."""
    return [f"cross_{kv}_{i}" for i in range(n_layers) for kv in "kv"]


def decoder_inputs(n_layers: int) -> list[str]:
    """The decoder step's inputs, in order: tokens, offset, beam_source (the row whose past each row continues),
    cross_frames (how many audio frames of each window's cross K/V are its own), then per layer past_k, past_v,
    cross_k, cross_v."""
    per_layer = (f"{name}_{i}" for i in range(n_layers) for name in ("past_k", "past_v", "cross_k", "cross_v"))
    return ["tokens", "offset", "beam_source", "cross_frames", *per_layer]


def decoder_outputs(n_layers: int) -> list[str]:
    """The decoder step's outputs, in order: last-position logits, then per layer present_k, present_v."""
    return ["logits", *(f"present_{kv}_{i}" for i in range(n_layers) for kv in "kv")]


def cache_root(cache_dir: Path | None = None) -> Path:
    """Where model directories are kept: ``cache_dir``, else ``$SPEECH_MODEL_CACHE``, else
    ``~/.cache/speech-serving/models``. Bundled builds and store pulls share it."""
    if cache_dir is not None:
        return cache_dir
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser()


def sha256_of(path: Path) -> str:
    """The sha256 of ``path``'s bytes, remembered for this process while the file stays unchanged.

    An engine verifies every file each time it loads, and a bundled model is checked by its build cache first, so a
    process that loads the same model again (a rollback to a cached version, a restarted engine; the test suite,
    hundreds of times) hashed the same bytes again each time: 0.2 CPU-s for base, seconds for the large models.

    A digest is reused only for the same file (device and inode) with the same size, modification time and change
    time. Any write or ``utime`` sets the change time to now, which no program can set back short of resetting the
    system clock, so a file changed since it was hashed is hashed again, in this process and in every new one
    (nothing is kept on disk). A file is remembered only once its change time is ``_TIMESTAMP_SLACK_NS`` older than
    the start of the hashing: timestamps come from a coarse clock, and a write within the same tick as the last change
    would leave the times as they were. So a pull's files, hashed as each download lands, are hashed again by the
    load that follows.
    """
    with path.open("rb") as stream:
        before = os.fstat(stream.fileno())
        identity = _identity(before)
        if (known := _DIGESTS.get(identity)) is not None:
            return known
        started_ns = time.time_ns()
        digest = hashlib.file_digest(stream, "sha256").hexdigest()
        if _identity(os.fstat(stream.fileno())) == identity and before.st_ctime_ns < started_ns - _TIMESTAMP_SLACK_NS:
            if len(_DIGESTS) >= _DIGESTS_KEPT:
                _DIGESTS.clear()  # a server pulls a few files per version; this bounds a long-lived one
            _DIGESTS[identity] = digest
    return digest


def _identity(stat: os.stat_result) -> tuple[int, ...]:
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


def write_manifest(
    model_dir: Path, name: str, version: str, profile: str, kind: str = "asr", *, int8_weight_bits: int | None = None
) -> Manifest:
    """Hash the files ``kind`` needs and write ``manifest.json`` last, so its presence means complete."""
    files = {f: sha256_of(model_dir / f) for f in REQUIRED_FILES[kind]}
    manifest = Manifest(name, version, profile, files, kind, int8_weight_bits)
    written = {key: value for key, value in asdict(manifest).items() if value is not None}
    (model_dir / MANIFEST_FILE).write_text(json.dumps(written, indent=2, sort_keys=True) + "\n")
    return manifest


def read_manifest(model_dir: Path) -> Manifest:
    """The manifest as written, checked for shape but not against the files (see ``verify_model_dir``)."""
    path = model_dir / MANIFEST_FILE
    try:
        raw = json.loads(path.read_text())
        manifest = Manifest(
            name=str(raw["name"]),
            version=str(raw["version"]),
            profile=str(raw["profile"]),
            files=dict(raw["files"]),
            kind=str(raw.get("kind", "asr")),
            int8_weight_bits=None if raw.get("int8_weight_bits") is None else int(raw["int8_weight_bits"]),
        )
    except FileNotFoundError as err:
        raise ModelError(f"{path} does not exist; a model directory needs {MANIFEST_FILE} next to its files") from err
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise ModelError(
            f"{path} is not a valid manifest ({err!r}); expected JSON with name, version, profile and files"
        ) from err
    try:
        checked_name(manifest.name, "the manifest's model name")
        checked_name(manifest.version, "the manifest's version")
    except ValueError as err:
        raise ModelError(f"{path}: {err}") from err
    if manifest.kind not in MODEL_KINDS:
        raise ModelError(f"{path} has kind {manifest.kind!r}; a model's kind is one of {', '.join(MODEL_KINDS)}")
    required = REQUIRED_FILES.get(manifest.kind, ())
    missing = [f for f in required if f not in manifest.files]
    if missing:
        raise ModelError(
            f"{path} lists no hash for {', '.join(missing)}; a {manifest.kind} model needs {', '.join(required)}"
        )
    return manifest


def verify_model_dir(model_dir: Path, kind: str | None = None) -> Manifest:
    """Raise ``ModelError`` if the model is not of ``kind`` (None: any), or naming the first file that is missing
    or whose sha256 differs from the manifest."""
    manifest = read_manifest(model_dir)
    if kind is not None and manifest.kind != kind:
        raise ModelError(
            f"{model_dir} holds a {manifest.kind} model ({manifest.name} {manifest.version}), not the {kind} model "
            "this engine loads; check the model name in the settings"
        )
    for relative, expected in sorted(manifest.files.items()):
        path = model_dir / relative
        if not path.is_file():
            raise ModelError(f"{path} is listed in {MANIFEST_FILE} but missing")
        actual = sha256_of(path)
        if actual != expected:
            raise ModelError(f"{path} has sha256 {actual}, but {MANIFEST_FILE} says {expected}; re-fetch or rebuild it")
    return manifest


def write_config(model_dir: Path, config: WhisperConfig) -> None:
    (model_dir / CONFIG_FILE).write_text(json.dumps(asdict(config), indent=2, sort_keys=True) + "\n")


def read_config(model_dir: Path) -> WhisperConfig:
    path = model_dir / CONFIG_FILE
    try:
        return WhisperConfig(**json.loads(path.read_text()))
    except (OSError, json.JSONDecodeError, TypeError) as err:
        raise ModelError(f"{path} is not a Whisper config this engine understands ({err!r})") from err
