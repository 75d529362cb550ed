"""Speaker routes: enrol a voice from clips, verify a clip against it, delete it.

They run the ASR routes' pipeline (``serving/uploads.py``): the gate's key, residency and body checks before any
byte is read, a request slot before the upload, the bounded decoder for any format ``/v1/asr`` accepts, and the
inference threads for the embedder. Every record belongs to the calling key's tenant: another tenant's speaker
of the same id is, to this caller, unknown.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable
from typing import Annotated, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response
from pydantic import AfterValidator, BaseModel, Field

from serving.engine import SAMPLE_RATE
from serving.names import checked_name
from serving.speakers.embedder import Embedding, NotEnoughSpeechError
from serving.speakers.service import EMBEDDER_NAME, SpeakerService
from serving.speakers.store import SpeakerStoreError
from serving.state import ServingState, serving_state
from serving.uploads import admitted, decode_body, read_body

log = logging.getLogger(__name__)
T = TypeVar("T")
PREFIX = "/v1/speakers"
ENROLL_PATH = PREFIX + "/{speaker_id}/enroll"
VERIFY_PATH = PREFIX + "/{speaker_id}/verify"
SPEAKER_PATH = PREFIX + "/{speaker_id}"
UPLOAD_PATHS = frozenset({ENROLL_PATH, VERIFY_PATH})

State = Annotated[ServingState, Depends(serving_state)]
SpeakerId = Annotated[
    str,
    AfterValidator(lambda value: checked_name(value, "speaker id")),
    Path(description="1-64 letters, digits, '.', '_' or '-', starting with a letter or digit; yours alone"),
]
SampleRate = Annotated[
    int | None, Query(description="set for headerless little-endian mono PCM16; leave out for WAV, Ogg, FLAC")
]

router = APIRouter(prefix=PREFIX, tags=["speakers"])


class EnrollResponse(BaseModel):
    speaker_id: str
    clips: int = Field(description="enrolment clips now kept for this speaker (the oldest go beyond the limit)")
    speech_seconds: float = Field(description="speech found in this clip, pauses removed")


class VerifyResponse(BaseModel):
    speaker_id: str
    score: float = Field(description="cosine similarity to the enrolled voice, -1 to 1")
    match: bool = Field(description="score >= threshold")
    threshold: float
    speech_seconds: float


@router.post("/{speaker_id}/enroll", response_model=EnrollResponse)
async def enroll(
    request: Request, state: State, speaker_id: SpeakerId, sample_rate: SampleRate = None
) -> EnrollResponse:
    """Add a clip of the speaker to their voiceprint (creating it on the first call)."""
    speakers = state.speakers
    tenant = state.auth.tenant_of(request.headers)
    embedding = await _embed(request, state, sample_rate)
    clips = await _stored(state, speakers.store.add(tenant, speaker_id, embedding.vector))
    return EnrollResponse(speaker_id=speaker_id, clips=clips, speech_seconds=embedding.speech_seconds)


@router.post("/{speaker_id}/verify", response_model=VerifyResponse)
async def verify(
    request: Request, state: State, speaker_id: SpeakerId, sample_rate: SampleRate = None
) -> VerifyResponse:
    """Score a clip against the speaker's voiceprint; ``match`` compares it with ``SPEECH_SPEAKERS__THRESHOLD``."""
    speakers = state.speakers
    tenant = state.auth.tenant_of(request.headers)
    # Looked up first: an unknown speaker costs no upload or decode.
    enrolled = await _stored(state, speakers.store.vectors(tenant, speaker_id))
    if not enrolled:
        raise _unknown(speaker_id)
    embedding = await _embed(request, state, sample_rate)
    verdict = speakers.verdict(enrolled, embedding.vector)
    return VerifyResponse(
        speaker_id=speaker_id,
        score=verdict.score,
        match=verdict.is_match,
        threshold=verdict.threshold,
        speech_seconds=embedding.speech_seconds,
    )


@router.delete("/{speaker_id}", status_code=204)
async def delete(request: Request, state: State, speaker_id: SpeakerId) -> Response:
    """Erase the speaker's voiceprint: every stored embedding of every clip."""
    request.state.model_version = state.speakers.version
    tenant = state.auth.tenant_of(request.headers)
    if not await _stored(state, state.speakers.store.delete(tenant, speaker_id)):
        raise _unknown(speaker_id)
    return Response(status_code=204)


async def _embed(request: Request, state: ServingState, sample_rate: int | None) -> Embedding:
    speakers: SpeakerService = state.speakers
    version = speakers.version
    request.state.model_version = version
    with admitted(state):
        body = await read_body(request, state, version)
        clip = await decode_body(state, body, sample_rate, version)
        started = time.perf_counter()
        try:
            embedding = await state.inference.run(speakers.embedder.embed, clip, speakers.settings.min_speech_s)
        except NotEnoughSpeechError as exc:
            state.metrics.error(version, "bad_audio")
            raise HTTPException(422, str(exc)) from exc
    state.metrics.inference(EMBEDDER_NAME, version, "speaker", len(clip) / SAMPLE_RATE, time.perf_counter() - started)
    return embedding


async def _stored(state: ServingState, operation: Awaitable[T]) -> T:
    """``operation``'s result; a store that cannot be reached is the server's problem (503), never the client's."""
    try:
        return await operation
    except SpeakerStoreError as exc:
        log.warning("%s", exc)
        state.metrics.error(state.speakers.version, "speaker_store")
        raise HTTPException(503, "the speaker store is unavailable; retry shortly", {"Retry-After": "2"}) from exc


def _unknown(speaker_id: str) -> HTTPException:
    return HTTPException(
        404, f"speaker {speaker_id!r} is not enrolled for this API key; enrol it with POST {PREFIX}/{speaker_id}/enroll"
    )
