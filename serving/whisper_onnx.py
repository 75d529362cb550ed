"""Whisper on onnxruntime: the ``AsrEngine`` the service runs.

Greedy decoding without timestamps, as ``whisper.transcribe(..., beam_size=1, without_timestamps=True)`` does:
one encoder run per 30 s window (which also yields every layer's cross-attention K/V, so a decoder step only
attends), then one decoder step per token with a growing self-attention cache. Longer clips are cut into
sequential 30 s windows and their text joined. The language is detected once, on the first window.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from serving.engine import SAMPLE_RATE, Transcription
from serving.mel import chunked_features, draft_features
from serving.model_dir import (
    DECODER_FILE,
    ENCODER_FILE,
    TOKENIZER_FILE,
    ModelError,
    WhisperConfig,
    decoder_outputs,
    encoder_outputs,
    read_config,
    verify_model_dir,
)

__all__ = ["ModelError", "WhisperOnnxEngine", "load_engine"]

# whisper.transcribe's defaults: a window whose first step is confident there is no speech and whose tokens
# are improbable is silence or noise, and its text would be a hallucination.
NO_SPEECH_THRESHOLD = 0.6
LOGPROB_THRESHOLD = -1.0
# A phrase of up to this many tokens repeated this many times in a row is a decoding loop, not speech.
MAX_LOOP_NGRAM = 16
LOOP_REPEATS = 4
# A draft encodes the audio plus this much silence, rounded up to whole seconds (measured on the test sentences:
# 0.5 s of padding cost drafts 4 WER points over full windows, 1 s cost 1.3, 2 s cost 2).
DRAFT_PAD_S = 1.0
DRAFT_QUANTUM_S = 1.0


@dataclass
class _WindowResult:
    tokens: list[int]
    language: str


def _cgroup_cpu_limit() -> int | None:
    """CPUs granted by a cgroup v2 quota (a Kubernetes CPU limit), which affinity alone does not show."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
    except (OSError, ValueError):
        return None
    return None if quota == "max" else max(1, math.ceil(int(quota) / int(period)))


def default_threads() -> int:
    """One intra-op thread per usable CPU; more only make threads contend on a throttled container."""
    usable = len(os.sched_getaffinity(0))
    limit = _cgroup_cpu_limit()
    return min(usable, limit) if limit else usable


def _providers() -> list[str]:
    available = ort.get_available_providers()
    return (["CUDAExecutionProvider"] if "CUDAExecutionProvider" in available else []) + ["CPUExecutionProvider"]


def _session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        return ort.InferenceSession(str(path), options, providers=_providers())
    except Exception as err:  # onnxruntime raises its own unexported exception types
        raise ModelError(f"{path} could not be loaded by onnxruntime {ort.__version__}: {err}") from err


def strip_loop(tokens: list[int]) -> tuple[list[int], bool]:
    """If the tail repeats one n-gram ``LOOP_REPEATS`` times, keep a single copy and report the loop."""
    for n in range(1, MAX_LOOP_NGRAM + 1):
        span = n * LOOP_REPEATS
        if len(tokens) < span:
            break
        gram = tokens[-n:]
        if all(tokens[-span + i * n : len(tokens) - span + (i + 1) * n] == gram for i in range(LOOP_REPEATS)):
            return tokens[: len(tokens) - span + n], True
    return tokens, False


class WhisperOnnxEngine:
    """A loaded Whisper model directory; ``transcribe`` may be called from many threads at once.

    Sessions are shared (onnxruntime's ``run`` is thread-safe); every buffer of a call is local to that call.
    """

    def __init__(self, model_dir: Path, *, threads: int | None = None) -> None:
        manifest = verify_model_dir(model_dir)
        self.name = manifest.name
        self.version = manifest.version
        self.profile = manifest.profile
        self.config: WhisperConfig = read_config(model_dir)
        threads = threads or default_threads()
        self._encoder: ort.InferenceSession | None = _session(model_dir / ENCODER_FILE, threads)
        self._decoder: ort.InferenceSession | None = _session(model_dir / DECODER_FILE, threads)
        self._tokenizer = Tokenizer.from_file(str(model_dir / TOKENIZER_FILE))
        cfg = self.config
        # Only text tokens may be sampled: everything after EOT is a special, language or timestamp token.
        self._suppress = np.zeros(cfg.eot + 1, dtype=bool)
        self._suppress[[i for i in cfg.suppress_ids if i <= cfg.eot]] = True
        self._suppress_begin = self._suppress.copy()
        self._suppress_begin[[i for i in cfg.suppress_ids_begin if i <= cfg.eot]] = True
        self._language_ids = np.array(list(cfg.languages.values()))
        layers = cfg.n_decoder_layers
        self._encoder_outputs = encoder_outputs(layers)
        self._decoder_outputs = decoder_outputs(layers)
        # Encoder outputs feed the decoder inputs of the same name; each step's presents become the next's pasts.
        self._past_names = [name.replace("present_", "past_") for name in self._decoder_outputs[1:]]
        # Caches stay where the decoder runs (GPU memory under CUDA): only tokens go in and logits come out. On the
        # CPU an OrtValue shares its array's memory, so the empty arrays live as long as the engine.
        self._device = "cuda" if "CUDAExecutionProvider" in self._decoder.get_providers() else "cpu"
        self._empty_k = np.zeros((1, cfg.n_heads, cfg.head_dim, 0), np.float32)
        self._empty_v = np.zeros((1, cfg.n_heads, 0, cfg.head_dim), np.float32)
        self._empty_cache = {
            name: ort.OrtValue.ortvalue_from_numpy(self._empty_k if "_k_" in name else self._empty_v, self._device)
            for name in self._past_names
        }
        self._language_codes = list(cfg.languages)
        # Encoders exported before the audio axis was dynamic take 3000 frames only; drafts fall back to full windows.
        self.supports_draft = not isinstance(self._encoder.get_inputs()[0].shape[2], int)

    @property
    def languages(self) -> list[str]:
        """Codes ``transcribe`` accepts as ``language``."""
        return self._language_codes if self.config.is_multilingual else ["en"]

    def _sessions(self) -> tuple[ort.InferenceSession, ort.InferenceSession]:
        encoder, decoder = self._encoder, self._decoder
        if encoder is None or decoder is None:
            raise ModelError(f"engine {self.name}/{self.version} is closed; load the model again")
        return encoder, decoder

    def _check_input(self, audio: np.ndarray, language: str | None) -> np.ndarray:
        if not isinstance(audio, np.ndarray) or audio.ndim != 1 or not np.issubdtype(audio.dtype, np.floating):
            shape = getattr(audio, "shape", None)
            dtype = getattr(audio, "dtype", type(audio).__name__)
            raise ValueError(f"audio must be a 1-D float32 array of 16 kHz mono PCM; got shape {shape} of {dtype}")
        if not np.isfinite(audio).all():
            raise ValueError("audio contains NaN or infinite samples; expected float32 PCM in [-1, 1]")
        if language is not None and language not in self.languages:
            allowed = ", ".join(self.languages)
            raise ValueError(
                f"language {language!r} is not supported by {self.name}; use None to detect, or one of {allowed}"
            )
        return audio.astype(np.float32, copy=False)

    def transcribe(self, audio: np.ndarray, language: str | None = None, *, draft: bool = False) -> Transcription:
        """Transcribe 16 kHz mono float32 audio of any length; ``language`` None detects it on the first window.

        ``draft`` trades some accuracy for latency, for streaming partials: the encoder sees the last 30 s of
        audio plus a little silence instead of whole padded 30 s windows (about 3x less encoder work on a few
        seconds of speech; measured 1.3 WER points worse than a full window on the test sentences).
        """
        audio = self._check_input(audio, language)
        encoder, decoder = self._sessions()
        timings = {"features": 0.0, "encode": 0.0, "decode": 0.0}
        started = time.perf_counter()
        if draft and self.supports_draft:
            windows = [draft_features(audio, self.config.n_mels, DRAFT_PAD_S, DRAFT_QUANTUM_S)]
        else:
            windows = chunked_features(audio, self.config.n_mels)
        timings["features"] = time.perf_counter() - started
        results: list[_WindowResult] = []
        for mel in windows:
            started = time.perf_counter()
            cross = self._encode(encoder, mel)
            timings["encode"] += time.perf_counter() - started
            started = time.perf_counter()
            results.append(self._decode_window(decoder, cross, language))
            timings["decode"] += time.perf_counter() - started
            language = results[0].language
        texts = (self._tokenizer.decode(r.tokens, skip_special_tokens=True).strip() for r in results)
        return Transcription(
            text=" ".join(t for t in texts if t),
            language=results[0].language,
            model_version=self.version,
            audio_seconds=len(audio) / SAMPLE_RATE,
            timings=timings,
        )

    def _encode(self, encoder: ort.InferenceSession, mel: np.ndarray) -> dict[str, ort.OrtValue]:
        binding = encoder.io_binding()
        batch = mel[None]
        binding.bind_cpu_input("mel", batch)
        for name in self._encoder_outputs:
            binding.bind_output(name, self._device)
        encoder.run_with_iobinding(binding)
        return dict(zip(self._encoder_outputs, binding.get_outputs()))

    def _decode_window(
        self, decoder: ort.InferenceSession, cross: dict[str, ort.OrtValue], language: str | None
    ) -> _WindowResult:
        cfg = self.config
        binding = decoder.io_binding()
        for name, value in {**cross, **self._empty_cache}.items():
            binding.bind_ortvalue_input(name, value)
        offset = 0

        def step(tokens: list[int]) -> np.ndarray:
            nonlocal offset
            # Locals keep the arrays alive until the run: a binding does not own CPU inputs.
            token_ids, position = np.array([tokens], np.int64), np.array(offset, np.int64)
            binding.bind_cpu_input("tokens", token_ids)
            binding.bind_cpu_input("offset", position)
            binding.bind_output("logits")
            for name in self._decoder_outputs[1:]:
                binding.bind_output(name, self._device)
            decoder.run_with_iobinding(binding)
            logits, *presents = binding.get_outputs()
            for name, value in zip(self._past_names, presents):
                binding.bind_ortvalue_input(name, value)
            offset += len(tokens)
            return logits.numpy()[0]

        logits = step([cfg.sot])
        no_speech_prob = float(_softmax(logits)[cfg.no_speech])
        if not cfg.is_multilingual:
            language, prompt = "en", [cfg.no_timestamps]
        else:
            if language is None:
                language = self._language_codes[int(np.argmax(logits[self._language_ids]))]
            prompt = [cfg.languages[language], cfg.transcribe, cfg.no_timestamps]
        logits = step(prompt)
        tokens: list[int] = []
        sum_logprob = 0.0
        max_tokens = cfg.n_text_ctx // 2
        while len(tokens) < max_tokens:
            text_logits = np.where(
                self._suppress_begin if not tokens else self._suppress, -np.inf, logits[: cfg.eot + 1]
            )
            token = int(np.argmax(text_logits))
            sum_logprob += float(text_logits[token] - _logsumexp(text_logits))
            if token == cfg.eot:
                break
            tokens.append(token)
            tokens, looped = strip_loop(tokens)
            if looped:
                break
            logits = step([token])
        avg_logprob = sum_logprob / (len(tokens) + 1)
        if no_speech_prob > NO_SPEECH_THRESHOLD and avg_logprob < LOGPROB_THRESHOLD:
            tokens = []
        return _WindowResult(tokens=tokens, language=language)

    def close(self) -> None:
        """Drop both sessions; later calls raise ``ModelError`` instead of touching freed memory."""
        self._encoder = None
        self._decoder = None


def _logsumexp(x: np.ndarray) -> float:
    top = float(np.max(x))
    return top + math.log(float(np.sum(np.exp(x - top))))


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - np.max(x))
    return e / e.sum()


def load_engine(model_dir: Path, *, threads: int | None = None) -> WhisperOnnxEngine:
    """Verify ``model_dir`` against its manifest, then load it; raises ``ModelError`` naming any bad file."""
    return WhisperOnnxEngine(Path(model_dir), threads=threads)
