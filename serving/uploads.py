"""The steps every route that takes an audio upload shares: admission, reading the body, decoding it.

ASR and speaker routes run the same pipeline, so they refuse, bound and count uploads alike: a request takes its
queue slot before its body is read (a full server answers 503 at once instead of after reading megabytes it
cannot serve), the gate (``serving/gate.py``) bounds the body's size and upload time, and decoding runs on the
bounded decoder threads, never on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from functools import partial

import numpy as np
from fastapi import HTTPException, Request
from starlette.requests import ClientDisconnect

from serving import audio
from serving.state import ServingState

RETRY = {"Retry-After": "1"}


@contextlib.contextmanager
def admitted(state: ServingState) -> Iterator[None]:
    """Hold one of the server's request slots for the block; 503 when draining or full."""
    if state.is_draining:
        state.metrics.error(state.current_version(), "shutting_down")
        raise HTTPException(503, "the server is shutting down; retry (another replica will answer)", RETRY)
    if not state.batch_slots.try_enter():
        state.metrics.error(state.current_version(), "overloaded")
        raise HTTPException(503, "the server is at its limit of queued requests; retry shortly", RETRY)
    try:
        yield
    finally:
        state.batch_slots.leave()


async def read_body(request: Request, state: ServingState, model_version: str) -> bytes:
    """The request body; the gate bounds its size and how long it may take."""
    try:
        return await request.body()
    except ClientDisconnect:
        state.metrics.error(model_version, "client_abort")
        # 499, as nginx logs it: there is nobody left to read the answer, but the metrics and access log are right.
        raise HTTPException(499, "the client closed the connection before its upload was complete") from None


async def decode_body(state: ServingState, body: bytes, sample_rate: int | None, model_version: str) -> np.ndarray:
    """The clip at 16 kHz, decoded on a decoder thread (bounded in number), never on the event loop."""
    loop = asyncio.get_running_loop()
    max_audio_s = state.settings.limits.max_audio_s
    try:
        return await loop.run_in_executor(
            state.decode_pool, partial(audio.decode, body, sample_rate=sample_rate, max_audio_s=max_audio_s)
        )
    except audio.AudioError as exc:
        state.metrics.error(model_version, "bad_audio")
        raise HTTPException(exc.status_code, str(exc)) from exc
