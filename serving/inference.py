"""The inference threads, how busy they are, and the batching of concurrent streams' decodes.

Blocking engine calls run here, never on the event loop, so health checks answer while transcribing. The pool
counts the jobs it holds (running or queued) so that streaming sessions can shed optional work under overload:
a partial is only worth decoding when a thread is free for it; a final, or a batch request, always queues.

Streams' drafts and finals go through :meth:`InferencePool.transcribe`, which batches them across streams. A decode
never waits for company, only for a thread, as it would alone: each queues one job, as any other call, and the job
that gets a thread first takes every decode queued by then that can share its decoder steps (same engine, draft or
final, language, committed prefix and options) and runs them as one ``transcribe_batch``; the later jobs find their
decode taken and return at once. One stream alone is decoded the moment a thread is free, as before. Under load,
decodes pile up while the threads are busy and go together: a decoder step costs about the same for one row as for
several (its time is reading the weights), so four streams' drafts cost about what two cost one by one. The engine
gives each recording the same transcript in a batch as alone (``tests/serving/test_stream_batching.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import ParamSpec, TypeVar

import numpy as np

from serving.engine import AsrEngine, DecodeOptions, Transcription

P = ParamSpec("P")
T = TypeVar("T")


@dataclass(frozen=True)
class _Kind:
    """What decodes must share to be batched."""

    engine: object  # the engine object itself, by identity: a swapped-in version never shares a batch with the old one
    draft: bool
    language: str
    prefix: str
    options: DecodeOptions | None


@dataclass
class _Decode:
    audio: np.ndarray
    future: asyncio.Future[Transcription]
    loop: asyncio.AbstractEventLoop


class InferencePool:
    """A fixed set of inference threads shared by batch requests and every stream's decodes."""

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="inference")
        self._jobs = 0  # touched only on the event loop thread
        self._lock = threading.Lock()  # guards _queued, which the event loop fills and inference threads empty
        self._queued: dict[_Kind, list[_Decode]] = {}

    @property
    def jobs(self) -> int:
        """Jobs submitted and not finished: running on a thread or waiting for one."""
        return self._jobs

    @property
    def is_saturated(self) -> bool:
        """Whether a new job would have to wait for a thread."""
        return self._jobs >= self.threads

    async def run(self, function: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """``function(*args, **kwargs)`` on an inference thread.

        The job counts until the thread is done with it, even when the caller stops waiting (a stream that is
        cancelled mid-decode still occupies its thread until the decode returns).
        """
        loop = asyncio.get_running_loop()
        job = self._executor.submit(partial(function, *args, **kwargs))
        self._jobs += 1
        job.add_done_callback(lambda _: self._finished_on(loop))
        return await asyncio.wrap_future(job)

    async def transcribe(
        self,
        engine: AsrEngine,
        audio: np.ndarray,
        language: str,
        *,
        draft: bool = False,
        prefix: str = "",
        options: DecodeOptions | None = None,
    ) -> Transcription:
        """``engine.transcribe`` of a stream's ``audio`` (in a known ``language``), batched with the decodes of
        other streams that queued for a thread alongside it."""
        loop = asyncio.get_running_loop()
        kind = _Kind(engine, draft, language, prefix, options)
        decode = _Decode(audio, loop.create_future(), loop)
        with self._lock:
            self._queued.setdefault(kind, []).append(decode)
        try:
            await self.run(self._run_queued, engine, kind)
            return await decode.future
        finally:
            decode.future.cancel()  # a stream that stopped waiting: its decode is skipped if not yet taken

    def _run_queued(self, engine: AsrEngine, kind: _Kind) -> None:
        """On an inference thread: decode whatever of ``kind`` is queued (nothing, when an earlier job took it)."""
        with self._lock:
            queued = self._queued.get(kind, [])
            taken = [d for d in queued[: engine.batch] if not d.future.cancelled()]  # a closed stream's is skipped
            del queued[: engine.batch]
            if not queued:
                self._queued.pop(kind, None)
        if not taken:
            return
        try:
            results = engine.transcribe_batch(
                [d.audio for d in taken], kind.language, draft=kind.draft, prefix=kind.prefix, options=kind.options
            )
        except Exception as exc:  # every stream in the batch learns of it, as it would alone
            for decode in taken:
                _settle(decode, exc)
            return
        for decode, result in zip(taken, results, strict=True):
            _settle(decode, result)

    def _finished_on(self, loop: asyncio.AbstractEventLoop) -> None:
        with contextlib.suppress(RuntimeError):  # the loop has closed at shutdown: nobody is counting any more
            loop.call_soon_threadsafe(self._count_finished)

    def _count_finished(self) -> None:
        self._jobs -= 1

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _settle(decode: _Decode, outcome: Transcription | Exception) -> None:
    """Hand a decode's outcome to its stream, on the stream's event loop (unless it stopped waiting meanwhile)."""

    def settle() -> None:
        if decode.future.done():
            return
        if isinstance(outcome, Exception):
            decode.future.set_exception(outcome)
        else:
            decode.future.set_result(outcome)

    with contextlib.suppress(RuntimeError):  # the loop has closed at shutdown
        decode.loop.call_soon_threadsafe(settle)
