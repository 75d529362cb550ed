"""Numerical check of exported Whisper graphs against the torch model they came from, on a real speech clip.

A broken export (a wrong dynamic axis, a mis-traced mask, a bad quantization) would otherwise only show up as
poor transcripts in production. Tolerances are set from measured headroom: fp32 graphs differ from torch by
float rounding only, while INT8 is allowed to move the encoder output and the logits but must keep the decoded
tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import soundfile as sf
import torch

from serving.build.whisper_torch import WhisperDecoderStep, WhisperEncoder
from serving.mel import CHUNK_SAMPLES, window_features
from serving.model_dir import DECODER_FILE, ENCODER_FILE, SPEECH_CLIP, ModelError, WhisperConfig, decoder_inputs

MAX_CHECK_TOKENS = 48
# fp32 graphs differ from torch by float rounding only (measured: 3e-4 on cross K/V, 1e-4 on logits).
FP32_ENCODER_TOLERANCE = 1e-3
FP32_LOGITS_TOLERANCE = 1e-2
# Dynamic INT8 moves the cross K/V by roughly 5-25% in norm (measured on base); a broken scale or a mis-wired
# graph moves them by ~100%. The decoded tokens are what users see: most greedy choices must survive.
INT8_RELATIVE_ERROR = 0.4
INT8_TOKEN_AGREEMENT = 0.8


class ExportCheckError(ModelError):
    """An exported graph diverges from the torch model beyond tolerance."""


@dataclass(frozen=True)
class ExportReport:
    encoder_int8_relative_error: float
    int8_token_agreement: float
    tokens_checked: int
    # Only while the fp32 graphs exist, i.e. during export.
    encoder_fp32_max_diff: float | None = None
    logits_fp32_max_diff: float | None = None

    def problems(self) -> list[str]:
        """Each figure outside its tolerance, with the limit; empty when the export is sound."""
        found = []
        if self.encoder_fp32_max_diff is not None and self.encoder_fp32_max_diff > FP32_ENCODER_TOLERANCE:
            found.append(f"fp32 encoder max diff {self.encoder_fp32_max_diff:.2e} > {FP32_ENCODER_TOLERANCE}")
        if self.logits_fp32_max_diff is not None and self.logits_fp32_max_diff > FP32_LOGITS_TOLERANCE:
            found.append(f"decoder logits max diff {self.logits_fp32_max_diff:.2e} > {FP32_LOGITS_TOLERANCE}")
        if self.encoder_int8_relative_error > INT8_RELATIVE_ERROR:
            found.append(
                f"INT8 cross K/V relative error {self.encoder_int8_relative_error:.3f} > {INT8_RELATIVE_ERROR}"
            )
        if self.int8_token_agreement < INT8_TOKEN_AGREEMENT:
            found.append(f"INT8 greedy token agreement {self.int8_token_agreement:.2f} < {INT8_TOKEN_AGREEMENT}")
        if self.tokens_checked < 4:
            found.append(f"torch decoded only {self.tokens_checked} tokens; the clip must yield at least 4")
        return found


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    # Idle intra-op threads sleep, as the engine's do: the check runs beside torch, whose threads need the cores too.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def prompt_tokens(config: WhisperConfig) -> list[int]:
    if config.is_multilingual:
        return [config.sot, config.languages["en"], config.transcribe, config.no_timestamps]
    return [config.sot, config.no_timestamps]


def _empty_cache(config: WhisperConfig) -> list[np.ndarray]:
    """Per layer: past_k [1, H, Dh, 0] and past_v [1, H, 0, Dh]."""
    k = np.zeros((1, config.n_heads, config.head_dim, 0), np.float32)
    v = np.zeros((1, config.n_heads, 0, config.head_dim), np.float32)
    return [k, v] * config.n_decoder_layers


def _interleave(past: list, cross: list) -> list:
    """Per layer past_k, past_v, cross_k, cross_v: the decoder step's cache argument order."""
    return [t for i in range(0, len(past), 2) for t in (*past[i : i + 2], *cross[i : i + 2])]


def _torch_greedy(
    decoder: WhisperDecoderStep, config: WhisperConfig, cross: list[np.ndarray]
) -> tuple[list[list[int]], list[np.ndarray]]:
    """Greedy decode with torch; returns the token chunk fed at each step and the logits it produced."""
    past = [torch.from_numpy(a) for a in _empty_cache(config)]
    cross_t = [torch.from_numpy(a) for a in cross]
    frames = torch.tensor([cross[0].shape[-1]])
    feed, offset = prompt_tokens(config), 0
    feeds: list[list[int]] = []
    logits_seen: list[np.ndarray] = []
    with torch.no_grad():
        for _ in range(MAX_CHECK_TOKENS):
            step = (torch.tensor([feed]), torch.tensor(offset), torch.zeros(1, dtype=torch.int64), frames)
            logits, *past = decoder(*step, *_interleave(past, cross_t))
            feeds.append(feed)
            logits_seen.append(logits.numpy())
            offset += len(feed)
            token = int(logits[0, : config.eot + 1].argmax())
            if token == config.eot:
                break
            feed = [token]
    return feeds, logits_seen


def _onnx_teacher_forced(
    session: ort.InferenceSession, config: WhisperConfig, feeds: list[list[int]], cross: list[np.ndarray]
) -> list[np.ndarray]:
    past = _empty_cache(config)
    names = decoder_inputs(config.n_decoder_layers)
    frames = np.array([cross[0].shape[-1]], np.int64)
    offset = 0
    outputs = []
    for feed in feeds:
        step = [np.array([feed], np.int64), np.array(offset, np.int64), np.zeros(1, np.int64), frames]
        values = [*step, *_interleave(past, cross)]
        logits, *past = session.run(None, dict(zip(names, values, strict=True)))
        outputs.append(logits)
        offset += len(feed)
    return outputs


def _relative_error(reference: np.ndarray, other: np.ndarray) -> float:
    return float(np.linalg.norm(reference - other) / np.linalg.norm(reference))


def compare_to_torch(
    encoder: WhisperEncoder,
    decoder: WhisperDecoderStep,
    config: WhisperConfig,
    model_dir: Path,
    audio: np.ndarray,
    encoder_fp32: Path | None = None,
    decoder_fp32: Path | None = None,
) -> ExportReport:
    """Run torch and the INT8 graphs in ``model_dir`` (and the fp32 graphs, when given) on ``audio`` and measure
    how far they drift apart.

    The decoder is teacher-forced with torch's greedy tokens, so one early flip cannot cascade into the figures.
    """
    mel = window_features(audio[:CHUNK_SAMPLES], config.n_mels)[None]
    with torch.no_grad():
        reference = [t.numpy() for t in encoder(torch.from_numpy(mel))]
    int8 = _session(model_dir / ENCODER_FILE).run(None, {"mel": mel})
    feeds, torch_logits = _torch_greedy(decoder, config, reference)
    int8_logits = _onnx_teacher_forced(_session(model_dir / DECODER_FILE), config, feeds, int8)
    logits_diff = None
    if decoder_fp32 is not None:
        onnx_logits = _onnx_teacher_forced(_session(decoder_fp32), config, feeds, reference)
        logits_diff = max(float(np.abs(a - b).max()) for a, b in zip(torch_logits, onnx_logits, strict=True))
    vocab = slice(0, config.eot + 1)
    agreement = np.mean(
        [a[0, vocab].argmax() == b[0, vocab].argmax() for a, b in zip(torch_logits, int8_logits, strict=True)]
    )
    fp32_diff = None
    if encoder_fp32 is not None:
        fp32 = _session(encoder_fp32).run(None, {"mel": mel})
        fp32_diff = max(float(np.abs(a - b).max()) for a, b in zip(reference, fp32, strict=True))
    return ExportReport(
        encoder_int8_relative_error=max(_relative_error(a, b) for a, b in zip(reference, int8, strict=True)),
        int8_token_agreement=float(agreement),
        tokens_checked=len(feeds),
        encoder_fp32_max_diff=fp32_diff,
        logits_fp32_max_diff=logits_diff,
    )


def check_export(
    encoder: WhisperEncoder,
    decoder: WhisperDecoderStep,
    config: WhisperConfig,
    model_dir: Path,
    encoder_fp32: Path,
    decoder_fp32: Path,
) -> ExportReport:
    """``compare_to_torch`` on ``SPEECH_CLIP``; raises ``ExportCheckError`` with every figure if any is off."""
    audio, _ = sf.read(SPEECH_CLIP, dtype="float32")
    report = compare_to_torch(encoder, decoder, config, model_dir, audio, encoder_fp32, decoder_fp32)
    if problems := report.problems():
        raise ExportCheckError(
            f"exported graphs diverge from torch on {SPEECH_CLIP.name}: {'; '.join(problems)} ({report})"
        )
    return report
