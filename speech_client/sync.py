"""The blocking client: the same calls and failover rules as :class:`~speech_client.aio.AsyncSpeechClient`."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterable, Iterator

import httpx
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.sync.client import ClientConnection, connect

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


class SpeechClient(Core[httpx.Client]):
    """Speech API client for blocking code; thread-safe. Arguments as for :class:`~speech_client.core.Core`.

    Close it with :meth:`close` or use it as ``with SpeechClient(...) as client``.
    """

    def transcribe(self, audio: bytes, *, sample_rate: int | None = None, language: str | None = None) -> Transcription:
        """Transcribe one clip: WAV, Ogg, FLAC, or raw little-endian mono PCM16 with ``sample_rate``."""
        params = self.batch_params(sample_rate, language)
        response, region = self._post(BATCH_PATH, content=audio, params=params)
        return Transcription.from_json(response.json(), region)

    def synthesize(
        self, text: str, *, voice: str | None = None, audio_format: str = "wav", speed: float = 1.0
    ) -> Speech:
        """Speak ``text``; ``is_cache_hit`` says whether the server had it cached."""
        body = self.tts_body(text, voice, audio_format, speed)
        response, region = self._post(TTS_PATH, json=body)
        return self.speech_from(response.content, response.headers, region)

    def transcribe_stream(
        self, chunks: Iterable[bytes], *, language: str | None = None, interim_results: bool = True
    ) -> Iterator[StreamMessage]:
        """Stream PCM16 ``chunks`` (16 kHz mono; pace them yourself for live audio) and yield partial and final
        messages as they arrive (finals only with ``interim_results=False``). The chunks are sent from a helper
        thread so messages flow while audio does."""
        ws, region = self._open_stream(self.stream_query(language, interim_results))
        sender = threading.Thread(target=_send_all, args=(ws, chunks), name="speech-stream-sender", daemon=True)
        sender.start()
        detail = None
        try:
            for raw in ws:
                message = parse_stream_message(raw)
                if message["type"] == "error":
                    detail = message.get("detail")
                    continue
                yield StreamMessage.from_json(message)
        except ConnectionClosed:
            pass
        finally:
            ws.close()
            sender.join()
        code = ws.close_code or 1006
        if code != CLOSE_NORMAL:
            raise StreamClosedError(region, code, ws.close_reason or "", detail)

    def _open_stream(self, query: str) -> tuple[ClientConnection, str]:
        plan = self._plan()
        for attempt in plan:
            if attempt.delay_s:
                time.sleep(attempt.delay_s)
            try:
                ws = connect(
                    attempt.stream_url + query,
                    additional_headers=self.headers,
                    max_size=MAX_STREAM_MESSAGE_BYTES,
                    open_timeout=self.timeout_s,
                )
            except InvalidStatus as exc:
                plan.answered(attempt, exc.response.status_code, exc.response.headers, bytes(exc.response.body or b""))
                continue
            except (OSError, InvalidHandshake, TimeoutError) as exc:
                plan.failed(attempt, exc)
                continue
            with contextlib.ExitStack() as refused:
                refused.enter_context(ws)  # closed unless handed to the caller below
                try:
                    first = parse_stream_message(ws.recv())
                except ConnectionClosed:
                    plan.refused_stream(attempt, ws.close_code or 1006, ws.close_reason or "", None)
                    continue
                if first["type"] != "ready":
                    with contextlib.suppress(ConnectionClosed):
                        for _ in ws:
                            pass
                    plan.refused_stream(attempt, ws.close_code or 1006, ws.close_reason or "", first.get("detail"))
                    continue
                region = plan.succeeded(attempt, self.served_by(ws.response.headers if ws.response else {}))
                refused.pop_all()
                return ws, region
        raise AssertionError("a plan ends by succeeding or raising")

    def _post(self, path: str, **kwargs: object) -> tuple[httpx.Response, str]:
        plan = self._plan()
        for attempt in plan:
            if attempt.delay_s:
                time.sleep(attempt.delay_s)
            try:
                response = self._client(attempt).post(path, **kwargs)  # type: ignore[arg-type]
            except httpx.TransportError as exc:
                plan.failed(attempt, exc)
                continue
            if response.is_success:
                return response, plan.succeeded(attempt, self.served_by(response.headers))
            plan.answered(attempt, response.status_code, response.headers, response.content)
        raise AssertionError("a plan ends by succeeding or raising")

    def _client(self, attempt: Attempt) -> httpx.Client:
        key = attempt.region.key
        with self._pools_lock:
            if key not in self._pools:
                self._pools[key] = httpx.Client(base_url=attempt.base_url, headers=self.headers, timeout=self.timeout_s)
            return self._pools[key]

    def close(self) -> None:
        with self._pools_lock:
            for client in self._pools.values():
                client.close()
            self._pools.clear()

    def __enter__(self) -> SpeechClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _send_all(ws: ClientConnection, chunks: Iterable[bytes]) -> None:
    try:
        for chunk in chunks:
            ws.send(chunk)
        ws.send(_STOP)
    except ConnectionClosed:
        pass  # the server closed first; the reader reports why
