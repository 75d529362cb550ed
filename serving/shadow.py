"""The shadow model: a candidate version run on a sample of batch requests, off the response path, and compared.

With ``SPEECH_SHADOW__VERSION`` set, each replica loads the candidate after its served model is ready (same store,
verification and warm-up, `ModelManager.load_detached`) and offers it a sampled fraction
(``SPEECH_SHADOW__SAMPLE_RATE``) of batch requests once their answer is ready. The comparison runs as a background
task on its own single thread, so it never delays or changes an answer, and it is shed before any user's work:
a sample is skipped (and counted, by reason) while the inference threads are all busy, while the previous
comparison still runs, or before the candidate has loaded. What it records, per served and candidate version:
the WER of the candidate's transcript against the served one (both through Whisper's normaliser), and the
candidate's engine seconds minus the served model's on the same audio. The canary gates and the dashboard read
those (`infra.k8s.gates`, `infra.k8s.dashboard`).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from concurrent.futures import ThreadPoolExecutor

import jiwer
import numpy as np
from whisper_normalizer.basic import BasicTextNormalizer
from whisper_normalizer.english import EnglishTextNormalizer

from serving.engine import AsrEngine, DecodeOptions, Transcription
from serving.inference import InferencePool
from serving.metrics import ServingMetrics
from serving.model_manager import ModelManager
from serving.settings import ShadowSettings

log = logging.getLogger(__name__)
_ENGLISH, _BASIC = EnglishTextNormalizer(), BasicTextNormalizer()


def transcript_wer(reference: str, hypothesis: str, language: str) -> float:
    """WER of ``hypothesis`` against ``reference`` after Whisper's normaliser; two empty transcripts agree."""
    normalize = _ENGLISH if language == "en" else _BASIC
    ref, hyp = normalize(reference).strip(), normalize(hypothesis).strip()
    if not ref:
        return 0.0 if not hyp else 1.0
    return float(jiwer.wer(ref, hyp))


class ShadowModel:
    """The candidate engine of one replica and the comparisons it runs; at most one runs at a time."""

    def __init__(
        self,
        settings: ShadowSettings,
        models: ModelManager,
        inference: InferencePool,
        metrics: ServingMetrics,
        sampler: random.Random | None = None,
    ) -> None:
        if settings.version is None:
            raise ValueError("a shadow model needs SPEECH_SHADOW__VERSION")
        self.version: str = settings.version
        self._settings = settings
        self._models = models
        self._inference = inference
        self._metrics = metrics
        self._sampler = sampler or random.Random()
        self._engine: AsrEngine | None = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="shadow")
        self._running: asyncio.Task[None] | None = None
        self.load_error: str | None = None

    @property
    def is_loaded(self) -> bool:
        return self._engine is not None

    @property
    def is_busy(self) -> bool:
        """Whether a comparison is running (the next sample would be skipped)."""
        return self._running is not None and not self._running.done()

    async def load(self) -> None:
        """Load the candidate; a failure is logged and leaves the replica serving without a shadow."""
        try:
            engine, info = await self._models.load_detached(self.version, self._settings.profile)
        except Exception as exc:
            self.load_error = str(exc)
            log.exception("the shadow candidate %s could not be loaded; serving without a shadow", self.version)
            return
        if not isinstance(engine, AsrEngine):
            engine.close()
            self.load_error = f"the shadow candidate {self.version} is not a speech-recognition model"
            log.error("%s; serving without a shadow", self.load_error)
            return
        self._engine = engine
        log.info("shadow candidate %s loaded from %s", info.version, info.source)

    def offer(
        self,
        clip: np.ndarray,
        language: str | None,
        served: Transcription,
        engine_seconds: float,
        options: DecodeOptions | None = None,
    ) -> bool:
        """Maybe compare the candidate on ``clip``, after the answer ``served``, decoding with the ``options`` the
        served model decoded it with; True when a comparison started."""
        if self._sampler.random() >= self._settings.sample_rate:
            return False
        engine, reason = self._engine, self._skip_reason()
        if engine is None or reason is not None:
            self._metrics.shadow_skipped(served.model_version, reason or "not_loaded")
            return False
        self._running = asyncio.get_running_loop().create_task(
            self._compare(engine, clip, language or served.language, served, engine_seconds, options)
        )
        return True

    def _skip_reason(self) -> str | None:
        if self._engine is None:
            return "not_loaded"
        if self.is_busy:
            return "shadow_busy"
        if self._inference.is_saturated:
            return "inference_busy"
        return None

    async def _compare(
        self,
        engine: AsrEngine,
        clip: np.ndarray,
        language: str,
        served: Transcription,
        served_seconds: float,
        options: DecodeOptions | None,
    ) -> None:
        started = time.perf_counter()
        try:
            candidate = await asyncio.get_running_loop().run_in_executor(
                self._thread, lambda: engine.transcribe(clip, language, options=options)
            )
        except ValueError:
            # The engine's verdict on input the served model answered (e.g. a language an English-only candidate
            # lacks): served in its place, the candidate would have answered nothing, and the gate must see that.
            seconds = time.perf_counter() - started
            wer = 1.0 if served.text else 0.0
        except Exception:
            log.exception("the shadow candidate %s failed on a sampled request", self.version)
            self._metrics.shadow_skipped(served.model_version, "candidate_failed")
            return
        else:
            seconds = time.perf_counter() - started
            wer = transcript_wer(served.text, candidate.text, language)
        self._metrics.shadow_compared(served.model_version, self.version, wer, seconds - served_seconds)

    def close(self) -> None:
        if self._running is not None:
            self._running.cancel()
        self._thread.shutdown(wait=False, cancel_futures=True)
        if self._engine is not None:
            self._engine.close()
