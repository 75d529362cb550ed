"""The asyncio client: batch and streaming ASR and TTS, with retries, per-region breakers and failover."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from contract.service import BATCH_PATH, TTS_PATH
from speech_client.core import (
    CLOSE_NORMAL,
    MAX_STREAM_MESSAGE_BYTES,
    Attempt,
    Core,
    parse_stream_message,
)
from speech_client.errors import StreamClosedError
from speech_client.results import Speech, StreamMessage, Transcription

_STOP = json.dumps({"type": "stop"})


class AsyncSpeechClient(Core[httpx.AsyncClient]):
    """Speech API client for asyncio code. One instance per caller area; reuse it (it keeps connections open).

    Arguments as for :class:`~speech_client.core.Core`. Close it with ``await client.aclose()`` or use it as
    ``async with``.
    """

    async def transcribe(
        self, audio: bytes, *, sample_rate: int | None = None, language: str | None = None
    ) -> Transcription:
        """Transcribe one clip: WAV, Ogg, FLAC, or raw little-endian mono PCM16 with ``sample_rate``."""
        params = self.batch_params(sample_rate, language)
        response, region = await self._post(BATCH_PATH, content=audio, params=params)
        return Transcription.from_json(response.json(), region)

    async def synthesize(
        self, text: str, *, voice: str | None = None, audio_format: str = "wav", speed: float = 1.0
    ) -> Speech:
        """Speak ``text``; ``is_cache_hit`` says whether the server had it cached."""
        body = self.tts_body(text, voice, audio_format, speed)
        response, region = await self._post(TTS_PATH, json=body)
        return self.speech_from(response.content, response.headers, region)

    def stream(self, *, language: str | None = None, interim_results: bool = True) -> AsyncStream:
        """A streaming session: ``async with client.stream() as s``; send PCM16 with ``s.send``, ``s.finish()``,
        and iterate ``s`` for partial and final messages (finals only with ``interim_results=False``). Opening it
        fails over like a batch call does."""
        return AsyncStream(self, self.stream_query(language, interim_results))

    async def _post(self, path: str, **kwargs: object) -> tuple[httpx.Response, str]:
        plan = self._plan()
        for attempt in plan:
            if attempt.delay_s:
                await asyncio.sleep(attempt.delay_s)
            try:
                response = await self._client(attempt).post(path, **kwargs)  # type: ignore[arg-type]
            except httpx.TransportError as exc:
                plan.failed(attempt, exc)
                continue
            if response.is_success:
                return response, plan.succeeded(attempt, self.served_by(response.headers))
            plan.answered(attempt, response.status_code, response.headers, response.content)
        raise AssertionError("a plan ends by succeeding or raising")

    def _client(self, attempt: Attempt) -> httpx.AsyncClient:
        key = attempt.region.key
        if key not in self._pools:
            self._pools[key] = httpx.AsyncClient(
                base_url=attempt.base_url, headers=self.headers, timeout=self.timeout_s
            )
        return self._pools[key]

    async def aclose(self) -> None:
        for client in self._pools.values():
            await client.aclose()
        self._pools.clear()

    async def __aenter__(self) -> AsyncSpeechClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class AsyncStream:
    """One streaming session, opened on the first region of the chain that accepts it.

    Once ``ready`` has arrived the session is bound to its region: audio already sent cannot move, so a failure
    mid-stream raises :class:`StreamClosedError` (after every message received before it) instead of failing over.
    """

    def __init__(self, core: Core[Any], query: str) -> None:
        self._core = core
        self._query = query
        self._ws: ClientConnection | None = None
        self.region = ""
        self.ready: dict = {}

    async def __aenter__(self) -> AsyncStream:
        core = self._core
        plan = core._plan()
        for attempt in plan:
            if attempt.delay_s:
                await asyncio.sleep(attempt.delay_s)
            try:
                ws = await connect(
                    attempt.stream_url + self._query,
                    additional_headers=core.headers,
                    max_size=MAX_STREAM_MESSAGE_BYTES,
                    open_timeout=core.timeout_s,
                )
            except InvalidStatus as exc:
                plan.answered(attempt, exc.response.status_code, exc.response.headers, bytes(exc.response.body or b""))
                continue
            except (OSError, InvalidHandshake, TimeoutError) as exc:
                plan.failed(attempt, exc)
                continue
            try:
                first = parse_stream_message(await ws.recv())
            except ConnectionClosed as exc:
                plan.refused_stream(attempt, *_close_of(exc), None)
                continue
            if first["type"] != "ready":
                detail = first.get("detail")
                await ws.wait_closed()
                plan.refused_stream(attempt, ws.close_code or 1006, ws.close_reason or "", detail)
                continue
            self.region = plan.succeeded(attempt, core.served_by(ws.response.headers if ws.response else {}))
            self.ready, self._ws = first, ws
            return self
        raise AssertionError("a plan ends by succeeding or raising")

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._ws is not None:
            await self._ws.close()

    async def send(self, pcm16: bytes) -> None:
        """Send 16 kHz mono little-endian PCM16 audio (20 ms = 640 bytes a frame is the intended size)."""
        await self._open().send(pcm16)

    async def finish(self) -> None:
        """Say the audio is complete; the server sends the remaining finals, then closes."""
        await self._open().send(_STOP)

    def __aiter__(self) -> AsyncIterator[StreamMessage]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[StreamMessage]:
        ws = self._open()
        detail = None
        try:
            async for raw in ws:
                message = parse_stream_message(raw)
                if message["type"] == "error":
                    detail = message.get("detail")
                    continue
                yield StreamMessage.from_json(message)
        except ConnectionClosed:
            pass
        code = ws.close_code or 1006
        if code != CLOSE_NORMAL:
            raise StreamClosedError(self.region, code, ws.close_reason or "", detail)

    def _open(self) -> ClientConnection:
        if self._ws is None:
            raise RuntimeError("the stream is not open: use it as `async with client.stream() as stream`")
        return self._ws


def _close_of(exc: ConnectionClosed) -> tuple[int, str]:
    frame = exc.rcvd or exc.sent
    return (frame.code, frame.reason) if frame else (1006, "connection lost")
