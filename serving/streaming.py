"""One streaming recognition session: VAD endpointing, partial cadence, backpressure and limits.

Whisper is not a streaming model, so a session buffers the current utterance and re-decodes it (on the inference
thread pool) each time ``partial_interval_ms`` of new audio has arrived, as a draft (the engine encodes only the
utterance, not a padded 30 s window) so partials keep pace; an utterance ends with a final decode when
the VAD hears ``end_silence_ms`` of silence or the utterance reaches ``max_utterance_s``. The VAD runs on its own
thread, never on the event loop.

Partials are optional and finals are not. Staying in real time wins over completeness: a session keeps at most one
partial waiting and replaces it with a newer one rather than queue decodes the audio has already outrun, and under
overload (every inference thread busy) it skips partials altogether, so finals and other streams go first. Finals
are never dropped: when too many wait, the session stops taking audio, its bounded inbound queue fills, the reader
stops reading and TCP pushes back on the client. A client held back longer than ``backpressure_timeout_s`` stops
being read, but every final of the audio already taken is still decoded and sent before the stream closes; an
utterance in which the VAD heard no speech gets an empty final instead of a decode of silence.

The session knows nothing about WebSockets: the route feeds it frames, ends its input, sends what
:meth:`StreamSession.run` produces, and turns :class:`StreamError` into a close code.
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

from serving.audio import pcm16_to_float
from serving.engine import SAMPLE_RATE
from serving.inference import InferencePool
from serving.metrics import ServingMetrics
from serving.registry import EngineLease
from serving.settings import StreamSettings
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
_MAX_STEP_BYTES = 2 * SAMPLE_RATE

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
    kind: str  # "partial" or "final"
    utterance: int
    audio: np.ndarray
    start: int  # samples from the start of the stream
    end: int
    has_speech: bool  # the VAD heard speech somewhere in [start, end)


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
    """Turns one client's 16 kHz PCM16 frames into partial and final transcripts from one engine version."""

    def __init__(
        self,
        lease: EngineLease,
        vad: VadStream,
        settings: StreamSettings,
        inference: InferencePool,
        vad_executor: Executor,
        metrics: ServingMetrics,
        language: str | None = None,
    ) -> None:
        self._lease = lease
        self._vad = vad
        self._settings = settings
        self._inference = inference
        self._vad_executor = vad_executor
        self._metrics = metrics
        self._language = language
        self._inbound: deque[bytes] = deque()
        self._has_input = asyncio.Event()
        self._has_room = asyncio.Event()
        self._is_input_ended = False
        self._buffer = _AudioBuffer()
        self._utterance_start: int | None = None
        self._utterance = 0
        self._last_partial_at = 0
        self._next_start_floor = 0  # a new utterance's pre-roll never reaches back into the previous one
        self._partial_every = settings.partial_interval_ms * SAMPLE_RATE // 1000
        self._max_utterance = int(settings.max_utterance_s * SAMPLE_RATE)
        self._finals: deque[_Job] = deque()
        self._partial: _Job | None = None
        self._is_segmenting_done = False
        self._work = asyncio.Event()  # a job was queued or segmenting ended
        self._final_taken = asyncio.Event()

    @property
    def model_version(self) -> str:
        return self._lease.info.version

    async def put_frame(self, frame: bytes) -> bool:
        """Queue one binary frame, waiting (backpressure) while the session is behind.

        Returns False, without taking the frame, when the session stayed behind for ``backpressure_timeout_s``.
        """
        limit = self._settings.max_frame_bytes
        if len(frame) > limit:
            raise StreamError(
                CLOSE_TOO_BIG,
                f"frame of {len(frame)} bytes exceeds {limit}",
                f"a frame of {len(frame)} bytes exceeds the limit of {limit} bytes; send 20 ms frames "
                "(640 bytes of 16 kHz mono PCM16)",
            )
        if len(frame) % 2:
            raise StreamError(
                CLOSE_UNSUPPORTED_DATA,
                "frame is not whole PCM16 samples",
                f"a frame of {len(frame)} bytes is not a whole number of 2-byte PCM16 samples",
            )
        if not frame:
            return True
        try:
            async with asyncio.timeout(self._settings.backpressure_timeout_s):
                while len(self._inbound) >= self._settings.inbound_queue_frames:
                    self._has_room.clear()
                    await self._has_room.wait()
        except TimeoutError:
            return False
        self._inbound.append(frame)
        self._has_input.set()
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

    async def _next_audio(self) -> np.ndarray | None:
        """The queued frames (up to ``_MAX_STEP_BYTES``) as float audio, or None once input has ended and is used."""
        while not self._inbound:
            if self._is_input_ended:
                return None
            self._has_input.clear()
            await self._has_input.wait()
        frames: list[bytes] = []
        size = 0
        while self._inbound and (not frames or size + len(self._inbound[0]) <= _MAX_STEP_BYTES):
            frames.append(self._inbound.popleft())
            size += len(frames[-1])
        self._has_room.set()
        return pcm16_to_float(b"".join(frames))

    async def _segment(self) -> None:
        loop = asyncio.get_running_loop()
        while (audio := await self._next_audio()) is not None:
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
        elif self._buffer.end - self._last_partial_at >= self._partial_every:
            self._queue_partial(start, self._buffer.end)

    def _begin_utterance(self, start: int) -> None:
        self._utterance_start = self._last_partial_at = start

    def _job(self, kind: str, start: int, end: int) -> _Job:
        has_speech = self._vad.last_speech_end > start
        return _Job(kind, self._utterance, self._buffer.slice(start, end), start, end, has_speech)

    def _queue_partial(self, start: int, end: int) -> None:
        if self._partial is not None:
            self._metrics.partial_dropped(self.model_version, "superseded")
        self._partial = self._job("partial", start, end)
        self._last_partial_at = end
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
            if self._partial is not None:
                job, self._partial = self._partial, None
                return job
            if self._is_segmenting_done:
                return None
            self._work.clear()
            await self._work.wait()

    async def _decode(self, send: Send) -> None:
        version = self.model_version
        while (job := await self._next_job()) is not None:
            if job.kind == "partial" and self._inference.is_saturated:
                self._metrics.partial_dropped(version, "overload")
                continue
            started = time.perf_counter()
            text, language = "", self._language
            timings: dict[str, float] = {}
            if job.has_speech:
                text, language, timings = await self._transcribe(job)
                elapsed = time.perf_counter() - started
                self._metrics.inference(self._lease.info.name, version, job.kind, len(job.audio) / SAMPLE_RATE, elapsed)
            message = {
                "type": job.kind,
                "utterance": job.utterance,
                "text": text,
                "start_s": round(job.start / SAMPLE_RATE, 3),
                "end_s": round(job.end / SAMPLE_RATE, 3),
                "model_version": version,
            }
            if job.kind == "final":
                message["language"] = language
                message["timings"] = {**timings, "total": round(time.perf_counter() - started, 4)}
            await send(message)

    async def _transcribe(self, job: _Job) -> tuple[str, str, dict[str, float]]:
        engine = self._lease.engine
        try:
            result = await self._inference.run(
                engine.transcribe, job.audio, self._language, draft=job.kind == "partial"
            )
        except Exception as exc:
            log.error("decoding utterance %d of a stream failed", job.utterance, exc_info=exc)
            raise StreamError(
                CLOSE_INTERNAL_ERROR,
                "internal error while decoding",
                f"decoding utterance {job.utterance} failed; the server logged why",
            ) from exc
        return result.text, result.language, result.timings
