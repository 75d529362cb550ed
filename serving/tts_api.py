"""Speech synthesis routes: ``POST /v1/tts`` and OpenAI's ``POST /v1/audio/speech``, both through the cache.

A request's text is normalized and checked (empty, too long, characters the voice cannot say) before a voice is
held. A cache hit answers the stored file at once; a miss synthesizes sentence by sentence on the inference
threads and streams each sentence's audio as soon as it is encoded (chunked transfer), so a long text starts
playing after its first sentence, then stores the whole file for the next request. The ``X-Speech-Cache`` header
says which it was, ``X-Speech-Model-Version`` which voice version spoke. A client that leaves mid-stream stops the
synthesis after the sentence in progress; a text that was not finished is not cached.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field

from contract.service import CACHE_HEADER, OPENAI_SPEECH_PATH, TTS_PATH
from serving.audio_encode import AudioEncoder, AudioFormat, media_type
from serving.model_manager import ModelManager
from serving.phonemes import describe_characters, normalize_text, split_sentences, unsupported_characters
from serving.registry import EngineLease, RegistryClosedError
from serving.state import ServingState, serving_state
from serving.tts import TtsEngine
from serving.tts_cache import CacheKey

log = logging.getLogger(__name__)
State = Annotated[ServingState, Depends(serving_state)]
VERSION_HEADER = "X-Speech-Model-Version"
MIN_SPEED, MAX_SPEED = 0.25, 4.0
# OpenAI's voice names: clients written for OpenAI send one of these; each is spoken by this server's voice.
OPENAI_VOICES = frozenset(
    {"alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer", "verse", "marin", "cedar"}
)
OPENAI_MODELS = frozenset({"tts-1", "tts-1-hd", "gpt-4o-mini-tts"})

router = APIRouter(prefix="/v1", tags=["tts"])


class TtsRequest(BaseModel):
    text: str = Field(description="what to say; sentences are synthesized and streamed one after the other")
    voice: str | None = Field(default=None, description="a served voice (GET /v1/models); default: the server's")
    format: Literal["wav", "ogg"] = Field(default="wav", description="wav: 16-bit PCM; ogg: Ogg Vorbis")
    speed: float = Field(default=1.0, ge=MIN_SPEED, le=MAX_SPEED, description="2.0 speaks twice as fast")


class OpenAiSpeechRequest(BaseModel):
    model: str = Field(description=f"one of {', '.join(sorted(OPENAI_MODELS))}: all speak with the same voice")
    input: str
    voice: str = Field(description="a served voice, or an OpenAI voice name (spoken by the server's voice)")
    response_format: Literal["mp3", "opus", "flac", "wav", "pcm"] = "mp3"
    speed: float = Field(default=1.0, ge=MIN_SPEED, le=MAX_SPEED)
    instructions: str | None = Field(default=None, description="accepted and ignored: the voice has one style")


@router.post(TTS_PATH.removeprefix("/v1"), response_class=Response)
async def tts(body: TtsRequest, request: Request, state: State) -> Response:
    """Synthesize ``text``; the answer streams sentence by sentence unless it came from the cache."""
    return await _speak(state, request, body.text, body.voice, body.format, body.speed)


@router.post(OPENAI_SPEECH_PATH.removeprefix("/v1"), response_class=Response)
async def openai_speech(body: OpenAiSpeechRequest, request: Request, state: State) -> Response:
    """OpenAI's speech route, so its clients work unchanged (``pcm`` is 16-bit mono at the voice's 22.05 kHz)."""
    try:
        if body.model not in OPENAI_MODELS:
            models = ", ".join(sorted(OPENAI_MODELS))
            raise HTTPException(400, f"model {body.model!r} is not served; use one of {models}")
        voice = None if body.voice in OPENAI_VOICES else body.voice
        return await _speak(state, request, body.input, voice, body.response_format, body.speed)
    except HTTPException as exc:
        # OpenAI's clients read the message from {"error": {"message"}}; `detail` stays for everyone else.
        kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
        error = {"message": exc.detail, "type": kind, "param": None, "code": None}
        return JSONResponse({"error": error, "detail": exc.detail}, exc.status_code, exc.headers)


async def _speak(
    state: ServingState, request: Request, text: str, voice: str | None, fmt: AudioFormat, speed: float
) -> Response:
    settings = state.settings.tts
    manager = _voice(state, voice)
    normalized = _checked_text(state, text)
    if state.is_draining:
        state.metrics.error(state.current_version(), "shutting_down")
        raise HTTPException(503, "the server is shutting down; retry (another replica will answer)", _RETRY)
    if not manager.is_ready:
        state.metrics.error("none", "not_ready")
        raise HTTPException(503, "the voice is still loading; retry shortly", _RETRY)
    try:
        lease = manager.registry.acquire()
    except RegistryClosedError as exc:
        raise HTTPException(503, str(exc), _RETRY) from exc
    version = lease.info.version
    request.state.model_version = version
    key = CacheKey(normalized, settings.voice, version, fmt, round(speed, 3))
    try:
        cached = await state.tts_cache.get(key)
    except BaseException:
        lease.release()
        raise
    engine = lease.engine
    if not isinstance(engine, TtsEngine):
        lease.release()
        raise HTTPException(500, "the voice model is not a TTS engine; the server logged why")
    audio_type = media_type(fmt, engine.sample_rate)
    if cached is not None:
        lease.release()
        return Response(cached, media_type=audio_type, headers={CACHE_HEADER: "hit", VERSION_HEADER: version})
    chunks = _synthesized(state, lease, engine, key, split_sentences(normalized), speed)
    return StreamingResponse(chunks, media_type=audio_type, headers={CACHE_HEADER: "miss", VERSION_HEADER: version})


async def _synthesized(
    state: ServingState, lease: EngineLease, engine: TtsEngine, key: CacheKey, sentences: list[str], speed: float
) -> AsyncIterator[bytes]:
    """Each sentence's encoded audio as soon as it is ready; the whole file goes to the cache at the end."""
    encoder = AudioEncoder(key.format, engine.sample_rate)  # type: ignore[arg-type]
    parts: list[bytes] = []
    audio_s = engine_s = 0.0
    try:
        for sentence in sentences:
            started = time.perf_counter()
            chunk, samples = await state.inference.run(_encoded_sentence, engine, encoder, sentence, speed)
            engine_s += time.perf_counter() - started
            audio_s += samples / engine.sample_rate
            if chunk:
                parts.append(chunk)
                yield chunk
        tail = encoder.finish()
        if tail:
            parts.append(tail)
            yield tail
    except Exception:
        log.exception("synthesis failed")
        state.metrics.error(key.model_version, "engine")
        raise
    finally:
        lease.release()
    state.metrics.inference(lease.info.name, key.model_version, "synthesis", audio_s, engine_s)
    await state.tts_cache.put(key, b"".join(parts))


def _encoded_sentence(engine: TtsEngine, encoder: AudioEncoder, sentence: str, speed: float) -> tuple[bytes, int]:
    """Synthesis and encoding, on an inference thread: compressed formats cost real CPU too."""
    audio = engine.synthesize(sentence, speed)
    return encoder.encode(audio), len(audio)


def _voice(state: ServingState, voice: str | None) -> ModelManager:
    settings = state.settings.tts
    voices = [settings.voice] if settings.enabled else []
    if voice is not None and voice not in voices:
        state.metrics.error(state.current_version(), "bad_request")
        served = ", ".join(voices) or "none (SPEECH_TTS__ENABLED is false)"
        raise HTTPException(400, f"voice {voice!r} is not served here; voices: {served}")
    if not voices:
        raise HTTPException(404, "speech synthesis is off on this server (SPEECH_TTS__ENABLED=false)")
    (manager,) = state.models.of_kind("tts")
    return manager


def _checked_text(state: ServingState, text: str) -> str:
    limit = state.settings.tts.max_chars
    normalized = normalize_text(text)
    problem: tuple[int, str] | None = None
    if not normalized:
        problem = 422, f"text is empty; send 1 to {limit} characters of text to speak"
    elif len(normalized) > limit:
        problem = (
            413,
            (
                f"text has {len(normalized)} characters; the limit is {limit} (SPEECH_TTS__MAX_CHARS): split it into "
                "several requests"
            ),
        )
    elif unsupported := unsupported_characters(normalized):
        problem = (
            422,
            (
                f"text has characters the voice cannot say: {describe_characters(unsupported[:10])}; "
                "use Latin letters, digits and punctuation"
            ),
        )
    if problem is None:
        return normalized
    state.metrics.error(state.current_version(), "bad_request")
    raise HTTPException(*problem)


_RETRY = {"Retry-After": "2"}
