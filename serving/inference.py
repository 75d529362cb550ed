"""The inference threads, and how busy they are.

Blocking engine calls run here, never on the event loop, so health checks answer while transcribing. The pool
counts the jobs it holds (running or queued) so that streaming sessions can shed optional work under overload:
a partial is only worth decoding when a thread is free for it; a final, or a batch request, always queues.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


class InferencePool:
    """A fixed set of inference threads shared by batch requests and every stream's decodes."""

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="inference")
        self._jobs = 0  # touched only on the event loop thread

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

    def _finished_on(self, loop: asyncio.AbstractEventLoop) -> None:
        with contextlib.suppress(RuntimeError):  # the loop has closed at shutdown: nobody is counting any more
            loop.call_soon_threadsafe(self._count_finished)

    def _count_finished(self) -> None:
        self._jobs -= 1

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
