"""Whisper on onnxruntime: the ``AsrEngine`` the service runs.

A clip of up to 30 s is one window. A longer recording is cut where Silero VAD hears pauses, and its speech is
packed into windows of at most 30 s (``serving/chunking.py``), so no word straddles two windows and silences are
never decoded. Each window is encoded once (which also yields every decoder layer's cross-attention K/V); the
windows of a batch are then decoded together, by beam search (5 beams, ``serving/whisper_beam.py``) or greedily
(``DecodeOptions.beam_size`` 1, streaming finals and drafts), with Whisper's timestamp tokens (which time each
phrase; drafts go without), one step for all of them with a growing self-attention cache. Concurrent streams'
drafts and finals are batched the same way (``transcribe_batch``). Drafts encode only their own audio, so their
windows differ in length; the decoder attends to each window's own frames only (``cross_frames``). A window whose
text trips a guard (``serving/decoding.py``) is decoded again: a window fitted to its audio first at 30 s, then at
rising temperatures. The language is detected once, on the first window with speech, and used for every window.
Memory stays bounded for any length: features and K/V exist for one batch of windows at a time.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from serving.chunking import SPEECH_THRESHOLD, Span, Window, plan_windows, speech_end_in
from serving.cpu import default_threads, this_cpu_saturates_int8
from serving.decoding import Decoded
from serving.engine import SAMPLE_RATE, DecodeOptions, Segment, Transcription
from serving.mel import CHUNK_FRAMES, CHUNK_SAMPLES, draft_features, window_features
from serving.model_dir import (
    DECODER_FILE,
    ENCODER_FILE,
    TOKENIZER_FILE,
    ModelError,
    WhisperConfig,
    decoder_inputs,
    encoder_outputs,
    read_config,
    verify_model_dir,
)
from serving.vad import SileroSequence
from serving.whisper_beam import beam_decode
from serving.whisper_decoder import CrossKV, WhisperDecoder, on_host

__all__ = ["ModelError", "WhisperOnnxEngine", "load_engine"]

log = logging.getLogger(__name__)

# A draft encodes the audio plus this much silence, rounded up to whole seconds (measured on the test sentences:
# 0.5 s of padding cost drafts 4 WER points over full windows, 1 s cost 1.3, 2 s cost 2).
DRAFT_PAD_S = 1.0
DRAFT_QUANTUM_S = 1.0
# Windows decoded together. A decoder step on the CPU is bound by memory traffic (190 MB of fp32 weights, the
# vocabulary projection above all, read once a step however many rows share it): measured in CPU time per window
# and step, 18.7 ms alone, 8.3 ms in fours, 6.8 ms in eights. Each row holds 37 MB of cross K/V (base), so eight
# hold 300 MB. The CPU encoder gains nothing from a batch (0.64-0.83 s CPU per window at 1, 2 and 4 alike), so
# there windows are encoded one by one into the batch's K/V; on the GPU a batch of windows is one encoder run.
CPU_BATCH = 8
GPU_BATCH = 16
# Temperature sampling is seeded per call, so the same audio always gives the same transcript.
_SEED = 15


def _providers() -> list[str]:
    available = ort.get_available_providers()
    return (["CUDAExecutionProvider"] if "CUDAExecutionProvider" in available else []) + ["CPUExecutionProvider"]


def _session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle intra-op threads sleep instead of spinning: the inference pool runs several calls at once, each with its
    # own intra-op threads, and spinning ones take the cores the others need. Measured on 2 cores, 8 transcriptions:
    # alone 7.4-7.7 CPU-s instead of 8.5-8.8 and no slower; two threads at once 14.2-14.9 instead of 14.3-17.8.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(path), options, providers=_providers())
    except Exception as err:  # onnxruntime raises its own unexported exception types
        raise ModelError(f"{path} could not be loaded by onnxruntime {ort.__version__}: {err}") from err


class WhisperOnnxEngine:
    """A loaded Whisper model directory; ``transcribe`` may be called from many threads at once.

    Sessions are shared (onnxruntime's ``run`` is thread-safe); every buffer of a call is local to that call.
    """

    def __init__(self, model_dir: Path, *, threads: int | None = None, batch: int | None = None) -> None:
        manifest = verify_model_dir(model_dir, "asr")
        self.name = manifest.name
        self.version = manifest.version
        self.profile = manifest.profile
        self.config: WhisperConfig = read_config(model_dir)
        self.threads = threads or default_threads()  # intra-op threads of each session
        self._encoder: ort.InferenceSession | None = _session(model_dir / ENCODER_FILE, self.threads)
        self._decoder: ort.InferenceSession | None = _session(model_dir / DECODER_FILE, self.threads)
        self._tokenizer = Tokenizer.from_file(str(model_dir / TOKENIZER_FILE))
        self._vad = SileroSequence()
        self._encoder_outputs = encoder_outputs(self.config.n_decoder_layers)
        # Caches stay where the decoder runs (GPU memory under CUDA): only tokens go in and logits come out.
        self._device = "cuda" if "CUDAExecutionProvider" in self._decoder.get_providers() else "cpu"
        if manifest.int8_weight_bits is None and self._device == "cpu" and this_cpu_saturates_int8():
            log.warning(
                "model %s %s has 8-bit INT8 weights (exported before model 1.5.0), and this CPU has no VNNI: "
                "onnxruntime's INT8 kernel saturates on them and transcripts lose accuracy. Publish the model again "
                "from python -m serving.build.export (7-bit weights, exact on every CPU)",
                self.name,
                self.version,
            )
        self._whisper = WhisperDecoder(self.config, self._tokenizer, self._device)
        self.batch = batch or (GPU_BATCH if self._device == "cuda" else CPU_BATCH)
        expected = decoder_inputs(self.config.n_decoder_layers)
        missing = [name for name in expected if name not in {i.name for i in self._decoder.get_inputs()}]
        if missing:
            raise ModelError(
                f"{model_dir / DECODER_FILE} has no input {', '.join(missing)}: model {self.name} {self.version} was "
                "exported by an older recipe; build it again (python -m serving.build.export) or publish a newer one"
            )
        # Encoders exported before the audio axis was dynamic take 3000 frames only: drafts fall back to full windows
        # and fitted windows (DecodeOptions.window_pad_s) to 30 s ones.
        self.has_dynamic_frames = not isinstance(self._encoder.get_inputs()[0].shape[2], int)

    @property
    def languages(self) -> list[str]:
        """Codes ``transcribe`` accepts as ``language``."""
        return list(self.config.languages) if self.config.is_multilingual else ["en"]

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

    def transcribe(
        self,
        audio: np.ndarray,
        language: str | None = None,
        *,
        draft: bool = False,
        prefix: str = "",
        options: DecodeOptions | None = None,
    ) -> Transcription:
        """Transcribe 16 kHz mono float32 audio of any length; ``language`` None detects it on the first window
        with speech. Segments are the phrases Whisper's timestamp tokens mark, timed in the recording (a window's
        audio skips the pauses between its spans, so times are mapped back through them). ``options`` set a
        prompt and the first sampling temperature (``serving/engine.py``).

        ``draft`` trades some accuracy for latency, for streaming partials: the encoder sees the last 30 s of
        audio plus a little silence instead of a padded 30 s window, and nothing is decoded twice (about 3x less
        encoder work on a few seconds of speech; 1.3 WER points worse on the test sentences). A draft's text
        starts with ``prefix`` (words a stream has already settled), which costs one decoder run however long it is.
        """
        return self.transcribe_batch([audio], language, draft=draft, prefix=prefix, options=options)[0]

    def transcribe_batch(
        self,
        audios: Sequence[np.ndarray],
        language: str | None = None,
        *,
        draft: bool = False,
        prefix: str = "",
        options: DecodeOptions | None = None,
    ) -> list[Transcription]:
        """Transcribe several recordings at once, as :meth:`transcribe` each (concurrent streams' drafts or finals):
        their windows share decoder steps, whose cost is mostly reading the weights, so a batch of four costs
        about as much as two alone. Each result is the one :meth:`transcribe` gives for its audio alone
        (``tests/serving/test_stream_batching.py``). With ``language`` None the recordings are decoded one after
        another, each detecting its own. Every result carries the batch's timings."""
        checked = [self._check_input(audio, language) for audio in audios]
        if language is None and len(checked) > 1:
            return [
                self.transcribe_batch([audio], None, draft=draft, prefix=prefix, options=options)[0]
                for audio in checked
            ]
        encoder, decoder = self._sessions()
        timings: dict[str, float] = {}
        if draft and self.has_dynamic_frames:
            return self._drafts(encoder, decoder, checked, language, timings, prefix)
        started = time.perf_counter()
        plans = [self._plan(audio) for audio in checked]
        timings["vad"] = time.perf_counter() - started
        # Every recording's windows, in order; a recording's windows stay together and in order across batches.
        jobs = [
            (index, window, probabilities) for index, (windows, probabilities) in enumerate(plans) for window in windows
        ]
        options = options or DecodeOptions()
        prompt = self._whisper.prompt_tokens(options.prompt)
        rng = np.random.default_rng(_SEED)
        n_mels, pad = self.config.n_mels, options.window_pad_s if self.has_dynamic_frames else None
        segments: list[list[Segment]] = [[] for _ in checked]
        for first in range(0, len(jobs), self.batch):
            batch = jobs[first : first + self.batch]
            started = time.perf_counter()
            mels = [window_features(window.audio(checked[index]), n_mels, pad) for index, window, _ in batch]
            speech_ends = [speech_end_in(window, probabilities) for _, window, probabilities in batch]
            _add(timings, "features", started)
            started = time.perf_counter()
            cross = self._encode(encoder, mels)
            _add(timings, "encode", started)
            started = time.perf_counter()
            decoded, language = self._decode(decoder, cross, len(batch), language, options, rng, prompt, speech_ends)
            for row, result in enumerate(decoded):
                if result.needs_fallback:
                    index, window, _ = batch[row]
                    decoded[row] = self._decode_again(
                        encoder,
                        decoder,
                        (window.audio(checked[index]), mels[row], None if _searches(options) else _row(cross, row)),
                        result,
                        language,
                        options,
                        rng,
                        prompt,
                        speech_ends[row],
                    )
            for (index, window, _), result in zip(batch, decoded, strict=True):
                if result.text and not result.is_silence:
                    before = segments[index][-1].end if segments[index] else 0.0
                    segments[index].extend(self._timed_segments(window, result, before))
            _add(timings, "decode", started)
        if language is None:
            # No window had speech, so none was decoded: Whisper hallucinates over silence ("you", "Thank you").
            language = self._detect_language(encoder, decoder, checked[0], timings)
        return [
            Transcription(
                text=" ".join(s.text for s in timed),
                language=language,
                model_version=self.version,
                audio_seconds=len(audio) / SAMPLE_RATE,
                timings=dict(timings),
                segments=tuple(timed),
            )
            for audio, timed in zip(checked, segments, strict=True)
        ]

    def _decode_again(
        self,
        encoder: ort.InferenceSession,
        decoder: ort.InferenceSession,
        window: tuple[np.ndarray, np.ndarray, CrossKV | None],
        first: Decoded,
        language: str,
        options: DecodeOptions,
        rng: np.random.Generator,
        prompt: list[int] | None,
        speech_end: float,
    ) -> Decoded:
        """A window the guards sent back (rare; ``first`` is how it came out), decoded again. ``window`` is its
        audio, its mel and its cross K/V where the decode left them as they were (the beam search rearranges them,
        so they are encoded again).

        A window fitted to its audio goes back to 30 s first, decoded as before: fitting is this engine's shortcut,
        not what Whisper was trained on, and after a short clip the model can fail to close the phrase and say it
        again through the padding. Measured on the bundled voice saying a 2.1 s sentence, 3 clips in 150 looped
        so fitted with 5 s, greedy and beam search alike; hotter samples then came back as that loop or as noise
        words ("Clay clip P glue the sheet ... Fill Put Use C You"), while the 30 s window read all three right at
        temperature 0. Only a window still sent back goes on to rising temperatures (``decode_hotter``)."""
        audio, mel, cross = window
        if mel.shape[-1] < CHUNK_FRAMES:
            mel = window_features(audio, self.config.n_mels)
            cross = self._encode(encoder, [mel])
            again, _ = self._decode(decoder, cross, 1, language, options, rng, prompt, [speech_end])
            first = again[0]
            if not first.needs_fallback:
                return first
            if _searches(options):
                cross = None  # rearranged by the search
        if cross is None:
            cross = self._encode(encoder, [mel])
        return self._whisper.decode_hotter(decoder, cross, first, language, rng, prompt, speech_end)

    def _decode(
        self,
        decoder: ort.InferenceSession,
        cross: CrossKV,
        rows: int,
        language: str | None,
        options: DecodeOptions,
        rng: np.random.Generator,
        prompt: list[int] | None,
        speech_ends: list[float],
    ) -> tuple[list[Decoded], str]:
        """``rows`` windows (those of ``cross``) decoded as ``options`` say: by beam search, which rearranges
        ``cross`` as windows finish, or greedily (sampled above temperature 0)."""
        if _searches(options):
            return beam_decode(self._whisper, decoder, cross, rows, language, options.beam_size, prompt, speech_ends)
        return self._whisper.decode(decoder, cross, rows, language, options.temperature, rng, prompt, speech_ends)

    def detect_language(self, audio: np.ndarray) -> str:
        """The language of the first window with speech (of the start, when the VAD hears none): one encoder pass
        and one decoder step, so a server can pick the model for a clip before transcribing it."""
        audio = self._check_input(audio, None)
        encoder, decoder = self._sessions()
        windows = self.plan(audio)
        first = windows[0].audio(audio) if windows else audio
        return self._detect_language(encoder, decoder, first, {})

    def plan(self, audio: np.ndarray) -> list[Window]:
        """The windows ``transcribe`` decodes, none if the VAD hears no speech: a clip of up to 30 s whole, a
        longer one's speech cut in its pauses and packed into windows of at most 30 s."""
        return self._plan(audio)[0]

    def _plan(self, audio: np.ndarray) -> tuple[list[Window], np.ndarray]:
        """The windows, and the VAD's speech probability per step of the audio."""
        probabilities = self._vad.probabilities(audio)
        if len(audio) <= CHUNK_SAMPLES:
            is_heard = bool(np.any(probabilities >= SPEECH_THRESHOLD))
            return ([Window((Span(0, len(audio)),))] if is_heard else []), probabilities
        return plan_windows(probabilities, len(audio), CHUNK_SAMPLES), probabilities

    def _detect_language(
        self, encoder: ort.InferenceSession, decoder: ort.InferenceSession, audio: np.ndarray, timings: dict
    ) -> str:
        """The most likely language of the first window, for a recording without speech to decode."""
        if not self.config.is_multilingual:
            return "en"
        started = time.perf_counter()
        cross = self._encode(encoder, [window_features(audio[:CHUNK_SAMPLES], self.config.n_mels)])
        language = self._whisper.language_of(decoder, cross)
        _add(timings, "encode", started)
        return language

    def _drafts(
        self,
        encoder: ort.InferenceSession,
        decoder: ort.InferenceSession,
        audios: list[np.ndarray],
        language: str | None,
        timings: dict[str, float],
        prefix: str,
    ) -> list[Transcription]:
        started = time.perf_counter()
        mels = [draft_features(audio, self.config.n_mels, DRAFT_PAD_S, DRAFT_QUANTUM_S) for audio in audios]
        _add(timings, "features", started)
        started = time.perf_counter()
        cross = self._encode(encoder, mels)
        _add(timings, "encode", started)
        started = time.perf_counter()
        forced = self._whisper.tokens_of(prefix) if prefix.strip() else None
        decoded, language = self._whisper.decode(decoder, cross, len(audios), language, 0.0, None, prefix=forced)
        _add(timings, "decode", started)
        results = []
        for audio, result in zip(audios, decoded, strict=True):
            seconds = len(audio) / SAMPLE_RATE
            # Settled words stay even when the rest sounds like silence: a stream's committed text never shrinks.
            is_heard = result.text and (forced or not result.is_silence)
            segments = (self._segment(0.0, seconds, result),) if is_heard else ()
            results.append(
                Transcription(
                    text=segments[0].text if segments else "",
                    language=language,
                    model_version=self.version,
                    audio_seconds=seconds,
                    timings=dict(timings),
                    segments=segments,
                )
            )
        return results

    def _encode(self, encoder: ort.InferenceSession, mels: Sequence[np.ndarray]) -> CrossKV:
        """Cross K/V of a batch of windows (each mel [n_mels, F], F may differ between windows), with
        ``cross_frames``, how many of the frames are each window's own. Windows of one length on the GPU are one run;
        otherwise one run per window (on the CPU a batch does not pay and would hold every window's activations at
        once), written straight into the batch's arrays, or, for windows shorter than the longest, copied in and
        padded with zeros the decoder masks."""
        frames = np.array([mel.shape[-1] // 2 for mel in mels], np.int64)
        if len(mels) == 1 or (self._device == "cuda" and len(set(frames)) == 1):
            binding = encoder.io_binding()
            binding.bind_cpu_input("mel", np.ascontiguousarray(np.stack(mels)))
            for name in self._encoder_outputs:
                binding.bind_output(name, self._device)
            encoder.run_with_iobinding(binding)
            return {**dict(zip(self._encoder_outputs, binding.get_outputs(), strict=True)), "cross_frames": frames}
        cfg, most = self.config, int(frames.max())
        # Keys are stored transposed, [heads, head_dim, frames], so a decoder step attends without a transpose.
        key, value = (cfg.n_heads, cfg.head_dim, most), (cfg.n_heads, most, cfg.head_dim)
        # A window shorter than the longest leaves zeros in its K/V's tail, which the decoder masks.
        allocate = np.empty if most == int(frames.min()) else np.zeros
        arrays = {
            name: allocate((len(mels), *(key if name.startswith("cross_k") else value)), np.float32)
            for name in self._encoder_outputs
        }
        for row, mel in enumerate(mels):
            one = np.ascontiguousarray(mel[None])
            own = int(frames[row])
            if own < most:  # its K/V fill part of the frame axis, which no output binding can point at
                outputs = encoder.run(self._encoder_outputs, {"mel": one})
                for name, output in zip(self._encoder_outputs, outputs, strict=True):
                    part = arrays[name][row, ..., :own] if name.startswith("cross_k") else arrays[name][row, :, :own]
                    part[...] = output[0]
                continue
            binding = encoder.io_binding()
            binding.bind_cpu_input("mel", one)
            for name, array in arrays.items():
                binding.bind_ortvalue_output(name, ort.OrtValue.ortvalue_from_numpy(array[row : row + 1]))
            encoder.run_with_iobinding(binding)
        return {**arrays, "cross_frames": frames}

    def _timed_segments(self, window: Window, decoded: Decoded, after: float) -> list[Segment]:
        """A window's phrases as segments timed in the recording by Whisper's timestamps, each starting no earlier
        than ``after`` (the previous segment's end) and the one before it in the window; a phrase without a
        timestamp on one side takes the window's edge (or the previous phrase's end) there."""
        segments = []
        for phrase in self._whisper.phrases(decoded):
            begins = window.start if phrase.start is None else window.sample_at(phrase.start)
            ends = window.end if phrase.end is None else window.sample_at(phrase.end, is_end=True)
            begins_s = max(after, begins / SAMPLE_RATE)
            segment = self._segment(begins_s, max(begins_s, ends / SAMPLE_RATE), decoded, phrase.text, phrase.tokens)
            segments.append(segment)
            after = segment.end
        return segments

    @staticmethod
    def _segment(
        start: float, end: float, decoded: Decoded, text: str | None = None, tokens: list[int] | None = None
    ) -> Segment:
        # Milliseconds rounded down keep every segment inside the audio and apart from the next.
        return Segment(
            start=math.floor(start * 1000) / 1000,
            end=math.floor(end * 1000) / 1000,
            text=decoded.text if text is None else text,
            avg_logprob=round(decoded.avg_logprob, 4),
            compression_ratio=round(decoded.compression_ratio, 4),
            no_speech_prob=round(decoded.no_speech_prob, 4),
            temperature=decoded.temperature,
            tokens=tuple(decoded.tokens if tokens is None else tokens),
        )

    def close(self) -> None:
        """Drop both sessions; later calls raise ``ModelError`` instead of touching freed memory."""
        self._encoder = None
        self._decoder = None


def _searches(options: DecodeOptions) -> bool:
    """Whether ``options`` decode by beam search (at temperature 0 only; sampling takes one hypothesis a window)."""
    return options.temperature == 0 and options.beam_size > 1


def _row(cross: CrossKV, row: int) -> CrossKV:
    """One window's cross K/V out of a batch's."""
    return {name: np.ascontiguousarray(on_host(value)[row : row + 1]) for name, value in cross.items()}


def _add(timings: dict[str, float], stage: str, started: float) -> None:
    timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - started


def load_engine(model_dir: Path, *, threads: int | None = None, batch: int | None = None) -> WhisperOnnxEngine:
    """Verify ``model_dir`` against its manifest, then load it; raises ``ModelError`` naming any bad file."""
    return WhisperOnnxEngine(Path(model_dir), threads=threads, batch=batch)
