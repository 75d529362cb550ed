"""``speech.v1.Speech``: the gRPC face of the same session core, limits, keys, residency and metrics as HTTP.

``StreamingRecognize`` is the WebSocket stream over HTTP/2: admission, the engine lease, pacing, idle and backpressure
limits and the :class:`~serving.streaming.StreamSession` come from ``serving/stream_core.py``; only reading messages
and reporting the ending differ. ``Recognize`` is ``POST /v1/asr``: a batch slot, the same decoder threads and engine
call. Every way a call fails maps to one status code with a message a client can act on:

- ``UNAUTHENTICATED``: no or wrong API key (metadata ``authorization: Bearer <key>`` or ``x-api-key``);
- ``FAILED_PRECONDITION``: the key's tenant may not be served in this jurisdiction (the message names its
  endpoint), or the model is still loading;
- ``INVALID_ARGUMENT``: a bad config (rate, encoding, language), a missing or repeated streaming config, audio that
  is not whole PCM16 samples, a chunk over the frame limit, undecodable or too long audio;
- ``RESOURCE_EXHAUSTED``: too many streams or queued transcriptions, or a client held back too long;
- ``UNAVAILABLE``: the server is shutting down (a stream first gets every final of the audio it sent);
- ``OUT_OF_RANGE``: no audio for ``SPEECH_STREAM__IDLE_TIMEOUT_S``; ``INTERNAL``: the server logged why.

Metrics: ``route`` is the method's path (``/speech.v1.Speech/StreamingRecognize``), ``status`` the status code's
name, or ``client_abort`` for a call the client cancelled.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator
from functools import partial
from types import ModuleType
from typing import Any

import grpc
from fastapi import HTTPException

from contract.service import GRPC_SERVICE
from serving import api, batch
from serving.registry import RegistryClosedError
from serving.state import ServingState
from serving.stream_api import CLIENT_ABORT
from serving.stream_core import (
    MISDIRECTED,
    NOT_READY,
    OVERLOADED,
    SHUTTING_DOWN,
    UNAUTHORIZED,
    Admitted,
    Refusal,
    admit,
    caller_refusal,
    count_refusal,
    error_kind,
    feed,
    first_of,
    new_session,
    release,
    server_refusal,
    unsupported_language,
)
from serving.streaming import (
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL_ERROR,
    CLOSE_POLICY_VIOLATION,
    CLOSE_TOO_BIG,
    CLOSE_TRY_AGAIN_LATER,
    CLOSE_UNSUPPORTED_DATA,
    StreamError,
)
from serving.uploads import decode_body

log = logging.getLogger(__name__)
Code = grpc.StatusCode
STREAM_ROUTE = f"/{GRPC_SERVICE}/StreamingRecognize"
UNARY_ROUTE = f"/{GRPC_SERVICE}/Recognize"
STREAM_SAMPLE_RATE = 16_000
_LANGUAGE = re.compile(api.LANGUAGE_PATTERN)
_REFUSAL_CODES = {
    UNAUTHORIZED: Code.UNAUTHENTICATED,
    MISDIRECTED: Code.FAILED_PRECONDITION,
    NOT_READY: Code.FAILED_PRECONDITION,
    SHUTTING_DOWN: Code.UNAVAILABLE,
    OVERLOADED: Code.RESOURCE_EXHAUSTED,
}
# How a stream's ending (the session's close code) reads in gRPC.
_STREAM_CODES = {
    CLOSE_UNSUPPORTED_DATA: Code.INVALID_ARGUMENT,
    CLOSE_TOO_BIG: Code.INVALID_ARGUMENT,
    CLOSE_POLICY_VIOLATION: Code.OUT_OF_RANGE,  # idle: the session's only policy ending once admitted
    CLOSE_INTERNAL_ERROR: Code.INTERNAL,
    CLOSE_TRY_AGAIN_LATER: Code.RESOURCE_EXHAUSTED,
    CLOSE_GOING_AWAY: Code.UNAVAILABLE,
}
_HOW_TO_END = "half-close the call to end"


class InvalidConfigError(ValueError):
    """A config the server cannot honour; the message names the field, the value and what is accepted."""


def language_of(code: str) -> str | None:
    """The engine's language for a config's ``language_code`` ("en", "en-US"; empty: detect)."""
    if not code:
        return None
    primary = code.split("-", 1)[0].lower()
    if not _LANGUAGE.match(primary):
        raise InvalidConfigError(f"language_code {code[:20]!r} is not an ISO 639-1 code such as 'en' or 'en-US'")
    return primary


def draft_stability(previous: str | None, current: str) -> float:
    """The share of ``current``'s words that the previous draft of the utterance had in the same places."""
    words = current.split()
    if previous is None or not words:
        return 0.0
    same = 0
    for before, now in zip(previous.split(), words, strict=False):
        if before != now:
            break
        same += 1
    return same / len(words)


class SpeechService:
    """The servicer of ``speech.v1.Speech`` for one app's state; ``pb`` is the generated ``speech_pb2``."""

    def __init__(self, state: ServingState, pb: ModuleType) -> None:
        self._state = state
        self._pb = pb

    async def StreamingRecognize(self, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> None:
        state = self._state
        started = time.perf_counter()
        admitted = admit(state, _metadata(context))
        if isinstance(admitted, Refusal):
            count_refusal(state, admitted, STREAM_ROUTE)
            code = _REFUSAL_CODES[admitted.kind]
            state.metrics.request(state.current_version(), STREAM_ROUTE, code.name, time.perf_counter() - started)
            await context.abort(code, admitted.detail)
        ending: tuple[grpc.StatusCode, str] | None = None
        status = CLIENT_ABORT  # what a call cancelled under us (the client left) counts as
        try:
            ending = await self._stream(context, admitted)
            status = (ending[0] if ending else Code.OK).name
        finally:
            state.metrics.request(admitted.lease.info.version, STREAM_ROUTE, status, time.perf_counter() - started)
            release(state, admitted)
        if ending is not None:
            await context.abort(*ending)

    async def _stream(
        self, context: grpc.aio.ServicerContext, admitted: Admitted
    ) -> tuple[grpc.StatusCode, str] | None:
        """Run the session to its end; None when it ended normally, else the status code and message to end with."""
        state, lease = self._state, admitted.lease
        settings = state.settings.stream
        try:
            async with asyncio.timeout(settings.idle_timeout_s):
                first = await context.read()
            config = self._streaming_config(first)
            language = language_of(config.config.language_code)
        except TimeoutError:
            return Code.OUT_OF_RANGE, f"no streaming_config within {settings.idle_timeout_s:g} s of the call's start"
        except InvalidConfigError as exc:
            state.metrics.error(lease.info.version, "bad_config")
            return Code.INVALID_ARGUMENT, str(exc)
        unsupported = unsupported_language(lease, language)
        if unsupported is not None:
            state.metrics.error(lease.info.version, "bad_config")
            return Code.INVALID_ARGUMENT, unsupported
        session = new_session(state, lease, language, interim_results=config.interim_results)
        send = partial(self._send, context, {})
        ending: StreamError | None = None
        reader = None
        try:
            async with asyncio.TaskGroup() as tasks:
                reader = tasks.create_task(
                    feed(session, partial(_next_audio, context), settings, state.metrics, _HOW_TO_END)
                )
                admitted.live.attach(session, reader)
                tasks.create_task(session.run(send))
        except* StreamError as group:
            ending = first_of(group, StreamError)
        except* Exception as group:
            log.error("gRPC stream failed", exc_info=first_of(group, Exception))
            ending = StreamError(CLOSE_INTERNAL_ERROR, "internal error", "internal error; the server logged why")
        if ending is None:
            # Every final was sent; the stream ends for the reason its input ended.
            ending = admitted.live.ending or (None if reader is None or reader.cancelled() else reader.result())
        if ending is None:
            return None
        if ending.code != CLOSE_GOING_AWAY:
            state.metrics.error(lease.info.version, error_kind(ending.code))
        return _STREAM_CODES.get(ending.code, Code.INTERNAL), ending.detail

    def _streaming_config(self, first: Any) -> Any:
        if first is grpc.aio.EOF:
            raise InvalidConfigError("the call ended before its first message; send a streaming_config first")
        if first.WhichOneof("streaming_request") != "streaming_config":
            raise InvalidConfigError(
                "the first message must be a streaming_config (sample rate, language, interim_results); audio follows"
            )
        config = first.streaming_config
        encoding, rate = config.config.encoding, config.config.sample_rate_hertz
        if encoding not in (self._pb.RecognitionConfig.ENCODING_UNSPECIFIED, self._pb.RecognitionConfig.LINEAR16):
            raise InvalidConfigError(f"encoding {encoding} is not supported for streaming; send LINEAR16")
        if rate not in (0, STREAM_SAMPLE_RATE):
            raise InvalidConfigError(
                f"sample_rate_hertz={rate} is not supported for streaming; send {STREAM_SAMPLE_RATE} Hz mono LINEAR16 "
                "(16-bit little-endian PCM)"
            )
        return config

    async def _send(self, context: grpc.aio.ServicerContext, drafts: dict[int, str], message: dict) -> None:
        """One session message (partial or final) as a StreamingRecognizeResponse; without ``interim_results`` the
        session decodes no partial to send."""
        pb = self._pb
        utterance, text = message["utterance"], message["text"]
        is_final = message["type"] == "final"
        result = pb.StreamingRecognitionResult(
            alternatives=[pb.SpeechRecognitionAlternative(transcript=text)],
            is_final=is_final,
            stability=0.0 if is_final else draft_stability(drafts.get(utterance), text),
            utterance=utterance,
            language_code=message.get("language") or "",
        )
        result.result_start_time.FromMilliseconds(round(message["start_s"] * 1000))
        result.result_end_time.FromMilliseconds(round(message["end_s"] * 1000))
        if is_final:
            drafts.pop(utterance, None)
        else:
            drafts[utterance] = text
        await context.write(pb.StreamingRecognizeResponse(results=[result], model_version=message["model_version"]))

    async def Recognize(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        state = self._state
        started = time.perf_counter()
        version = state.current_version()
        status = CLIENT_ABORT
        try:
            version, response = await self._recognize(request, context)
            status = Code.OK.name
            return response
        except _Failed as failure:
            status = failure.code.name
            await context.abort(failure.code, failure.detail)
        finally:
            state.metrics.request(version, UNARY_ROUTE, status, time.perf_counter() - started)

    async def _recognize(self, request: Any, context: grpc.aio.ServicerContext) -> tuple[str, Any]:
        state, pb = self._state, self._pb
        refusal = caller_refusal(state, _metadata(context)) or server_refusal(state)
        if refusal is not None:
            count_refusal(state, refusal, UNARY_ROUTE)
            raise _Failed(_REFUSAL_CODES[refusal.kind], refusal.detail)
        try:
            config = request.config
            language = language_of(config.language_code)
            sample_rate = _unary_sample_rate(pb, config)
        except InvalidConfigError as exc:
            state.metrics.error(state.current_version(), "bad_config")
            raise _Failed(Code.INVALID_ARGUMENT, str(exc)) from None
        if not state.batch_slots.try_enter():
            state.metrics.error(state.current_version(), OVERLOADED)
            raise _Failed(Code.RESOURCE_EXHAUSTED, "the server is at its limit of queued transcriptions; retry shortly")
        try:
            # A named language gets its specialised model, as on the WebSocket; without one, the multilingual model.
            with state.models.asr_for(language).registry.acquire() as lease:
                clip = await decode_body(state, request.audio.content, sample_rate, lease.info.version)
                result, _ = await batch.run_engine(state, lease, clip, language)
        except RegistryClosedError as exc:
            raise _Failed(Code.UNAVAILABLE, str(exc)) from None
        except HTTPException as exc:
            raise _Failed(_code_of_http(exc.status_code), str(exc.detail)) from None
        finally:
            state.batch_slots.leave()
        response = pb.RecognizeResponse(model_version=result.model_version, language_code=result.language)
        for segment in result.segments:
            item = response.results.add(language_code=result.language)
            item.alternatives.add(transcript=segment.text)
            item.result_start_time.FromMilliseconds(round(segment.start * 1000))
            item.result_end_time.FromMilliseconds(round(segment.end * 1000))
        response.total_billed_time.FromMilliseconds(round(len(clip) / STREAM_SAMPLE_RATE * 1000))
        return result.model_version, response


class _Failed(Exception):
    def __init__(self, code: grpc.StatusCode, detail: str) -> None:
        super().__init__(detail)
        self.code, self.detail = code, detail


async def _next_audio(context: grpc.aio.ServicerContext) -> bytes | None:
    """The next chunk of audio, or None once the client half-closes; a second config ends the stream."""
    request = await context.read()
    if request is grpc.aio.EOF:
        return None
    if request.WhichOneof("streaming_request") != "audio_content":
        raise StreamError(
            CLOSE_UNSUPPORTED_DATA,
            "a second streaming_config",
            "only the first message may be a streaming_config; send audio_content, then half-close the call",
        )
    return request.audio_content


def _unary_sample_rate(pb: ModuleType, config: Any) -> int | None:
    """The rate of headerless LINEAR16, or None for a container that carries its own."""
    if config.encoding == pb.RecognitionConfig.LINEAR16:
        if config.sample_rate_hertz <= 0:
            raise InvalidConfigError(
                f"sample_rate_hertz={config.sample_rate_hertz} with LINEAR16; give the audio's rate, e.g. 16000"
            )
        return config.sample_rate_hertz
    if config.encoding != pb.RecognitionConfig.ENCODING_UNSPECIFIED:
        raise InvalidConfigError(
            f"encoding {config.encoding} is not supported; use LINEAR16, or ENCODING_UNSPECIFIED for WAV, Ogg or FLAC"
        )
    return None


def _code_of_http(status: int) -> grpc.StatusCode:
    if status == 503:
        return Code.UNAVAILABLE
    return Code.INVALID_ARGUMENT if 400 <= status < 500 else Code.INTERNAL


def _metadata(context: grpc.aio.ServicerContext) -> dict[str, str]:
    """The call's text metadata (lower-case names, as HTTP/2 carries them): where the API key is."""
    return {key: value for key, value in context.invocation_metadata() or () if isinstance(value, str)}
