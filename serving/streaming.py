"""One streaming recognition session: VAD endpointing, one language, partial cadence, backpressure and limits.

Whisper is not a streaming model, so a session buffers the current utterance and re-decodes it as a draft (the
engine encodes only the utterance, not a padded 30 s window) each time ``partial_interval_ms`` of new audio has
arrived, or its last draft's time over ``partial_duty`` if that is longer: the cadence adapts to load; audio with
no new speech, or after the speaker paused, gets no draft (it would repeat the last partial and hold up the final).
Decodes run on the inference thread pool, in one batch with the other streams' decodes that queued alongside
(``serving/inference.py``). Words two drafts in a row agree on are committed (``serving/agreement.py``): later
partials keep them unchanged, and with ``partial_prefix`` the engine takes them as a forced prefix, so only the
unstable tail is decoded again. An utterance ends with a final decode when the VAD hears ``end_silence_ms`` of
silence, the utterance reaches ``max_utterance_s``, or the client sends ``flush``; finals are encoded on a window
fitted to the utterance plus ``final_window_pad_s`` of silence rather than a padded 30 s one. The final's decode
starts speculatively after the first ``speculative_final_ms`` of silence and is sent as it is when no more speech
came before the end, so the final arrives about ``end_silence_ms`` after the speech instead of that plus a decode.
The VAD runs on its own thread, never on the event loop.

The language is the stream's: the client's, or detected once, on a padded window of the first
``language_detect_s`` of speech (or of the whole first utterance if shorter; a draft of half a second misjudged
English as Arabic), and used for every later draft and final.

Partials are optional and finals are not. Staying in real time wins over completeness: a session keeps at most one
partial waiting and replaces it with a newer one rather than queue decodes the audio has already outrun, and under
overload (every inference thread busy) it skips partials and speculative finals altogether, so finals and other
streams go first. Finals are never dropped: when too many wait, the session stops taking audio, its bounded inbound
queue fills, the reader stops reading and TCP pushes back on the client. A client held back longer than
``backpressure_timeout_s`` stops being read, but every final of the audio already taken is still decoded and sent
before the stream closes; an utterance in which the VAD heard no speech gets an empty final instead of a decode of
silence.

The session knows nothing about WebSockets: the route feeds it frames (in the codec chosen at open,
``serving/stream_codec.py``), flushes and ends its input, sends what :meth:`StreamSession.run` produces, and turns
:class:`StreamError` into a close code.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np

from serving.agreement import LocalAgreement
from serving.engine import SAMPLE_RATE, DecodeOptions
from serving.inference import InferencePool
from serving.metrics import ServingMetrics
from serving.registry import EngineLease
from serving.settings import StreamSettings
from serving.stream_codec import CodecError, FrameDecoder, Pcm16Frames
from serving.vad import VadStream

log = logging.getLogger(__name__)

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_POLICY_VIOLATION = 1008
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL_ERROR = 1011
CLOSE_TRY_AGAIN_LATER = 1013
# Audio kept from before the VAD fires, so the first phoneme (which triggers it) is not clipped.
PREROLL_SAMPLES = SAMPLE_RATE * 3 // 10
# Queued frames are handed to the VAD together, up to this much audio, so a session that fell behind catches up
# in a few thread hops instead of one per 20 ms frame.
_MAX_STEP_SAMPLES = SAMPLE_RATE
_FLUSH = None  # in the inbound queue: end the open utterance here

Send = Callable[[dict], Awaitable[None]]


class StreamError(Exception):
    """Ends a stream with ``code``; ``detail`` is for the client's error message, ``reason`` fits a close frame."""

    def __init__(self, code: int, reason: str, detail: str | None = None) -> None:
        super().__init__(detail or reason)
        self.code = code
        self.reason = reason
        self.detail = detail or reason


@dataclass(frozen=True)
class _Job:
    kind: str  # "partial", "speculative" (a final decoded before the utterance is known to have ended) or "final"
    utterance: int
    audio: np.ndarray
    start: int  # samples from the start of the stream
    end: int
    speech_end: int  # where the VAD last heard speech in [start, end); start when it heard none

    @property
    def has_speech(self) -> bool:
        return self.speech_end > self.start


@dataclass(frozen=True)
class _Decoded:
    job: _Job
    text: str
    language: str | None
    timings: dict[str, float]
    seconds: float  # wall time of the decode


class _AudioBuffer:
    """The stream's recent audio as chunks with absolute sample positions; joined only when a decode needs it."""

    def __init__(self) -> None:
        self._chunks: deque[tuple[int, np.ndarray]] = deque()
        self.start = 0
        self.end = 0

    def append(self, audio: np.ndarray) -> None:
        self._chunks.append((self.end, audio))
        self.end += len(audio)

    def slice(self, start: int, end: int) -> np.ndarray:
        parts = [
            chunk[max(0, start - at) : end - at] for at, chunk in self._chunks if at < end and at + len(chunk) > start
        ]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)

    def forget_before(self, position: int) -> None:
        while self._chunks and self._chunks[0][0] + len(self._chunks[0][1]) <= position:
            at, chunk = self._chunks.popleft()
            self.start = at + len(chunk)


class StreamSession:
    """Turns one client's audio frames into partial and final transcripts from one engine version."""

    def __init__(
        self,
        lease: EngineLease,
        vad: VadStream,
        settings: StreamSettings,
        inference: InferencePool,
        vad_executor: Executor,
        metrics: ServingMetrics,
        language: str | None = None,
        frames: FrameDecoder | None = None,
        *,
        interim_results: bool = True,
    ) -> None:
        self._lease = lease
        self._vad = vad
        self._settings = settings
        self._inference = inference
        self._vad_executor = vad_executor
        self._metrics = metrics
        languages = lease.engine.languages
        self.language = language or (languages[0] if len(languages) == 1 else None)
        self._frames = frames or Pcm16Frames()
        self.seconds_received = 0.0
        self._inbound: deque[np.ndarray | None] = deque()
        self._has_input = asyncio.Event()
        self._has_room = asyncio.Event()
        self._is_input_ended = False
        self._buffer = _AudioBuffer()
        self._utterance_start: int | None = None
        self._utterance = 0
        self._last_partial_at = 0
        self._next_start_floor = 0  # a new utterance's pre-roll never reaches back into the previous one
        # Without interim results no draft is decoded at all: a client that wants only finals costs no partials' CPU.
        self._interim_results = interim_results
        self._min_partial_every = settings.partial_interval_ms * SAMPLE_RATE // 1000
        self._partial_every = self._min_partial_every
        self._detect_after = int(settings.language_detect_s * SAMPLE_RATE)
        self._max_utterance = int(settings.max_utterance_s * SAMPLE_RATE)
        self._finals: deque[_Job] = deque()
        self._partial: _Job | None = None
        self._speculative: _Job | None = None
        self._speculated: _Decoded | None = None
        self._agreement = LocalAgreement()
        self._agreement_utterance = 0
        self._is_segmenting_done = False
        self._work = asyncio.Event()  # a job was queued or segmenting ended
        self._final_taken = asyncio.Event()

    @property
    def model_version(self) -> str:
        return self._lease.info.version

    @property
    def partial_interval_s(self) -> float:
        """Audio between partials now: ``partial_interval_ms``, or more while drafts are slow."""
        return self._partial_every / SAMPLE_RATE

    @property
    def codec(self) -> str:
        return self._frames.codec

    async def put_frame(self, frame: bytes) -> bool:
        """Decode one binary frame and queue its audio, waiting (backpressure) while the session is behind.

        Returns False, without taking the frame, when the session stayed behind for ``backpressure_timeout_s``.
        """
        limit = self._settings.max_frame_bytes
        if len(frame) > limit:
            raise StreamError(
                CLOSE_TOO_BIG,
                f"frame of {len(frame)} bytes exceeds {limit}",
                f"a frame of {len(frame)} bytes exceeds the limit of {limit} bytes; send 20 ms frames "
                "(640 bytes of 16 kHz mono PCM16, or one Opus packet)",
            )
        if not frame and self.codec == "pcm16":
            return True
        try:
            audio = self._frames.decode(frame)
        except CodecError as exc:
            reason = "frame is not whole PCM16 samples" if self.codec == "pcm16" else "bad Opus frame"
            raise StreamError(CLOSE_UNSUPPORTED_DATA, reason, str(exc)) from exc
        if not await self._wait_for_room():
            return False
        self.seconds_received += len(audio) / SAMPLE_RATE
        self._inbound.append(audio)
        self._has_input.set()
        return True

    async def flush(self) -> bool:
        """End the open utterance after the audio already taken, so its final comes now (push-to-talk, end of a
        turn); with no utterance open there is nothing to finalise. False when held back as :meth:`put_frame`."""
        if not await self._wait_for_room():
            return False
        self._inbound.append(_FLUSH)
        self._has_input.set()
        return True

    async def _wait_for_room(self) -> bool:
        try:
            async with asyncio.timeout(self._settings.backpressure_timeout_s):
                while len(self._inbound) >= self._settings.inbound_queue_frames:
                    self._has_room.clear()
                    await self._has_room.wait()
        except TimeoutError:
            return False
        return True

    def end_input(self) -> None:
        """No more audio: the audio already taken is segmented, the open utterance finalised, and :meth:`run`
        returns once every final is sent. Never waits, so it also serves to stop a stream from outside."""
        self._is_input_ended = True
        self._has_input.set()

    async def run(self, send: Send) -> None:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._segment())
            tasks.create_task(self._decode(send))

    async def _next_input(self) -> np.ndarray | None:
        """The queued audio (up to ``_MAX_STEP_SAMPLES``) joined, or ``_FLUSH``; raises EOFError once input has
        ended and is used."""
        while not self._inbound:
            if self._is_input_ended:
                raise EOFError
            self._has_input.clear()
            await self._has_input.wait()
        self._has_room.set()
        if self._inbound[0] is _FLUSH:
            return self._inbound.popleft()
        parts: list[np.ndarray] = []
        size = 0
        while self._inbound and (head := self._inbound[0]) is not _FLUSH:
            if parts and size + len(head) > _MAX_STEP_SAMPLES:
                break
            self._inbound.popleft()
            parts.append(head)
            size += len(head)
        return np.concatenate(parts)

    async def _segment(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                audio = await self._next_input()
            except EOFError:
                break
            if audio is _FLUSH:
                if self._utterance_start is not None:
                    await self._finish_utterance(self._utterance_start, self._buffer.end)
                    self._vad.end_speech()
                continue
            self._buffer.append(audio)
            events = await loop.run_in_executor(self._vad_executor, self._vad.feed, audio)
            await self._accept(events)
        if self._utterance_start is not None:
            await self._finish_utterance(self._utterance_start, self._buffer.end)
        self._is_segmenting_done = True
        self._work.set()

    async def _accept(self, events: list) -> None:
        for event in events:
            if event.kind == "start" and self._utterance_start is None:
                self._begin_utterance(max(event.sample - PREROLL_SAMPLES, self._next_start_floor, self._buffer.start))
            elif event.kind == "pause" and self._utterance_start is not None:
                self._queue_speculative(self._utterance_start, event.sample)
            elif event.kind == "end" and self._utterance_start is not None:
                await self._finish_utterance(self._utterance_start, event.sample)
        start = self._utterance_start
        if start is None:
            self._buffer.forget_before(self._buffer.end - PREROLL_SAMPLES)
            return
        if self._buffer.end - start >= self._max_utterance:
            cut = start + self._max_utterance
            await self._finish_utterance(start, cut)
            if self._vad.is_speech:
                self._begin_utterance(cut)
        elif (
            self._interim_results
            and self._buffer.end - self._last_partial_at >= self._partial_every
            and (self.language is not None or self._buffer.end - start >= self._detect_after)
        ):
            if self._is_new_speech_heard():
                self._queue_partial(start, self._buffer.end)
            else:
                self._last_partial_at = self._buffer.end  # nothing new to show: the cadence starts again from here

    def _is_new_speech_heard(self) -> bool:
        """Whether a partial now would hold speech the last one did not, the speaker not having paused since. A draft
        of the silence after the speech repeats the last partial, and in the pause before an utterance ends it would
        run ahead of the final on this stream's decode queue."""
        return self._vad.last_speech_end > self._last_partial_at and not self._vad.is_paused

    def _begin_utterance(self, start: int) -> None:
        self._utterance_start = self._last_partial_at = start

    def _job(self, kind: str, start: int, end: int) -> _Job:
        speech_end = max(start, min(end, self._vad.last_speech_end))
        return _Job(kind, self._utterance, self._buffer.slice(start, end), start, end, speech_end)

    def _queue_partial(self, start: int, end: int) -> None:
        if self._partial is not None:
            self._metrics.partial_dropped(self.model_version, "superseded")
        self._partial = self._job("partial", start, end)
        self._last_partial_at = end
        self._work.set()

    def _queue_speculative(self, start: int, end: int) -> None:
        if self._settings.speculative_final_ms is None:
            return
        self._speculative = self._job("speculative", start, end)
        self._work.set()

    async def _finish_utterance(self, start: int, end: int) -> None:
        self._finals.append(self._job("final", start, end))
        if self._partial is not None and self._partial.utterance == self._utterance:
            self._partial = None  # the final supersedes it
        self._utterance += 1
        self._utterance_start = None
        self._next_start_floor = end
        self._work.set()
        while len(self._finals) > self._settings.max_pending_finals:
            self._final_taken.clear()
            await self._final_taken.wait()

    async def _next_job(self) -> _Job | None:
        while True:
            if self._finals:
                self._final_taken.set()
                return self._finals.popleft()
            for slot in ("_speculative", "_partial"):
                job = getattr(self, slot)
                if job is not None:
                    setattr(self, slot, None)
                    return job
            if self._is_segmenting_done:
                return None
            self._work.clear()
            await self._work.wait()

    async def _decode(self, send: Send) -> None:
        version = self.model_version
        while (job := await self._next_job()) is not None:
            if job.kind != "final" and self._inference.is_saturated:
                if job.kind == "partial":
                    self._metrics.partial_dropped(version, "overload")
                continue
            if job.kind == "speculative":
                if job.utterance == self._utterance and job.has_speech:  # its utterance is still open
                    self._discard_speculation()
                    self._speculated = await self._decoded(job)
                continue
            started = time.perf_counter()
            decoded = self._reused(job) or await self._decoded(job)
            message = {
                "type": job.kind,
                "utterance": job.utterance,
                "text": decoded.text,
                "start_s": round(job.start / SAMPLE_RATE, 3),
                "end_s": round(job.end / SAMPLE_RATE, 3),
                "model_version": version,
                "language": decoded.language,
            }
            if job.kind == "partial":
                message["committed"] = self._agreement.committed
                # The cadence follows the load: a draft that took long (other streams share the threads) spaces
                # the next one out, so partials take at most `partial_duty` of this stream's time.
                spacing = int(decoded.seconds / self._settings.partial_duty * SAMPLE_RATE)
                self._partial_every = max(self._min_partial_every, spacing)
            else:
                total = decoded.seconds if decoded.job is not job else time.perf_counter() - started
                message["timings"] = {**decoded.timings, "total": round(total, 4)}
            await send(message)

    def _reused(self, final: _Job) -> _Decoded | None:
        """The speculative decode of ``final``'s utterance, if it already holds all of the utterance's speech."""
        speculated = self._speculated
        if final.kind != "final" or speculated is None:
            return None
        job = speculated.job
        if job.utterance != final.utterance or job.start != final.start or job.end < final.speech_end:
            self._discard_speculation()
            return None
        self._speculated = None
        self._metrics.speculative_final(self.model_version, "used")
        self._metrics.inference(
            self._lease.info.name, self.model_version, "final", len(job.audio) / SAMPLE_RATE, speculated.seconds
        )
        return speculated

    def _discard_speculation(self) -> None:
        """Speech went on after the speculative decode: its work counts as speculation, not as a final."""
        if (speculated := self._speculated) is not None:
            self._speculated = None
            self._metrics.speculative_final(self.model_version, "wasted")
            seconds = len(speculated.job.audio) / SAMPLE_RATE
            self._metrics.inference(
                self._lease.info.name, self.model_version, "speculative", seconds, speculated.seconds
            )

    async def _decoded(self, job: _Job) -> _Decoded:
        if not job.has_speech:
            return _Decoded(job, "", self.language, {}, 0.0)
        started = time.perf_counter()
        language = self.language = self.language or await self._detected_language(job)
        prefix = ""
        if job.kind == "partial":
            if self._agreement_utterance != job.utterance:
                self._agreement, self._agreement_utterance = LocalAgreement(), job.utterance
            if self._settings.partial_prefix:
                prefix = self._agreement.committed
        options = DecodeOptions(
            beam_size=self._settings.final_beam_size, window_pad_s=self._settings.final_window_pad_s
        )
        try:  # batched with other streams' decodes of the same kind (serving/inference.py)
            result = await self._inference.transcribe(
                self._lease.engine,
                job.audio,
                language,
                draft=job.kind == "partial",
                prefix=prefix,
                options=options,
            )
        except Exception as exc:
            raise self._failed(job, exc) from exc
        elapsed = time.perf_counter() - started
        if job.kind != "speculative":  # counted once its fate is known
            self._metrics.inference(
                self._lease.info.name, self.model_version, job.kind, len(job.audio) / SAMPLE_RATE, elapsed
            )
        text = self._agreement.accept(result.text) if job.kind == "partial" else result.text
        return _Decoded(job, text, language, result.timings, elapsed)

    async def _detected_language(self, job: _Job) -> str:
        try:
            language: str = await self._inference.run(
                self._lease.engine.detect_language, job.audio[: self._detect_after]
            )
        except Exception as exc:
            raise self._failed(job, exc) from exc
        return language

    @staticmethod
    def _failed(job: _Job, exc: Exception) -> StreamError:
        log.error("decoding utterance %d of a stream failed", job.utterance, exc_info=exc)
        return StreamError(
            CLOSE_INTERNAL_ERROR,
            "internal error while decoding",
            f"decoding utterance {job.utterance} failed; the server logged why",
        )
