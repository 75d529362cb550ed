"""``POST /v1/audio/transcriptions``: OpenAI's transcription API on our batch pipeline, so OpenAI's clients work
unchanged (``OpenAI(base_url="https://<host>/v1", api_key=<key>).audio.transcriptions.create(...)``).

The request is OpenAI's multipart form: ``file``, ``model`` (``whisper-1`` is an alias of the model this server
runs), ``language``, ``prompt``, ``temperature``, ``response_format`` (json, text, srt, vtt, verbose_json) and
``timestamp_granularities[]`` (segment). Admission, auth, limits, decoding and metrics are ``/v1/asr``'s
(``serving/batch.py``); errors are OpenAI-shaped (``serving/openai_errors.py``). The form is parsed in memory:
the gate bounds the body, and audio never touches the disk.
"""

from __future__ import annotations

import math
import re
from collections.abc import AsyncGenerator
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.datastructures import FormData, Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from contract.service import OPENAI_TRANSCRIPTIONS_PATH
from serving import audio, captions, languages
from serving.batch import BatchJob, BatchResult, transcribe_request
from serving.engine import DecodeOptions, Segment
from serving.openai_errors import InvalidRequest
from serving.registry import EngineLease
from serving.state import ServingState, serving_state

State = Annotated[ServingState, Depends(serving_state)]
UPLOAD_PATHS = frozenset({OPENAI_TRANSCRIPTIONS_PATH})
ALIAS = "whisper-1"
FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
GRANULARITIES = ("segment",)
# Form fields OpenAI's transcription API takes that this server honours; ``stream`` only as false.
_FIELDS = {
    "file", "model", "language", "prompt", "temperature", "response_format", "timestamp_granularities[]",
    "timestamp_granularities", "stream",
}  # fmt: skip
_FIELD_BYTES = 64 * 1024  # a prompt is a few hundred tokens at most; no text field needs more
_LANGUAGE = re.compile(r"^[a-z]{2,3}$")

router = APIRouter(prefix="/v1/audio", tags=["openai"])


@router.post("/transcriptions", responses={200: {"description": "the transcript in the requested format"}})
async def create_transcription(request: Request, state: State) -> Response:
    """OpenAI's ``audio.transcriptions.create``: the transcript of ``file`` as ``response_format`` asks."""
    asked: dict[str, str] = {}  # what the form asked for besides the job: the response format

    async def job_of(body: bytes, lease: EngineLease) -> BatchJob:
        form = await _form(body, request.headers.get("content-type", ""))
        try:
            job, response_format = await _job(form, lease, state.settings.model.name)
        finally:
            await form.close()
        asked["response_format"] = response_format
        return job

    done = await transcribe_request(request, state, job_of)
    return _response(done, asked["response_format"])


async def _form(body: bytes, content_type: str) -> FormData:
    if not content_type.lower().startswith("multipart/form-data"):
        raise InvalidRequest(
            f"the request is {content_type or 'without a Content-Type'}; send multipart/form-data with the audio "
            "as the 'file' field, as OpenAI's clients do",
            None,
        )

    async def chunks() -> AsyncGenerator[bytes, None]:  # the parser takes a stream; the gate already read the body
        yield body

    parser = MultiPartParser(
        Headers({"content-type": content_type}), chunks(), max_files=1, max_fields=16, max_part_size=_FIELD_BYTES
    )
    # Files over the spool size would be written to a temporary file; the gate already bounds the body, so the
    # upload stays in memory and audio never rests on disk.
    parser.spool_max_size = len(body) + 1
    try:
        return await parser.parse()
    except MultiPartException as exc:
        raise InvalidRequest(f"the multipart form could not be read: {exc.message}", None) from exc


async def _job(form: FormData, lease: EngineLease, configured: str) -> tuple[BatchJob, str]:
    unknown = sorted(set(form.keys()) - _FIELDS)
    if unknown:
        raise InvalidRequest(
            f"unknown field(s) {', '.join(unknown)}; this server takes {', '.join(sorted(_FIELDS))}", unknown[0]
        )
    file = form.get("file")
    if not isinstance(file, UploadFile):
        raise InvalidRequest("the audio must be sent as a file in the 'file' field", "file", "missing_file")
    body = await file.read()
    if body and audio.container_of(body) is None:
        raise InvalidRequest(
            f"the file {file.filename or ''!r} is not WAV, Ogg (Opus or Vorbis) or FLAC audio; convert it to one of "
            "those (e.g. ffmpeg -i in.mp3 out.ogg)",
            "file",
            "unsupported_file_format",
        )
    _check_model(_text(form, "model"), lease, configured)
    response_format = _text(form, "response_format") or "json"
    if response_format not in FORMATS:
        raise InvalidRequest(
            f"response_format {response_format!r} is not supported; use one of {', '.join(FORMATS)}",
            "response_format",
        )
    _check_granularities(form, response_format)
    if (_text(form, "stream") or "false").lower() not in ("false", "0"):
        raise InvalidRequest("streaming responses are not supported here; use the /v1/asr/stream WebSocket", "stream")
    options = DecodeOptions(prompt=_text(form, "prompt"), temperature=_temperature(_text(form, "temperature")))
    return BatchJob(body, language=_language(_text(form, "language"), lease), options=options), response_format


def _text(form: FormData, name: str) -> str | None:
    value = form.get(name)
    if isinstance(value, UploadFile):
        raise InvalidRequest(f"'{name}' must be a text field, not a file", name)
    return value.strip() if value and value.strip() else None


def _check_model(model: str | None, lease: EngineLease, configured: str) -> None:
    accepted = sorted({ALIAS, configured, lease.info.name})
    if model is None:
        raise InvalidRequest(f"'model' is required; use one of {', '.join(accepted)}", "model", "missing_model")
    if model not in accepted:
        raise InvalidRequest(
            f"model {model!r} is not served here; use one of {', '.join(accepted)} ({ALIAS} is an alias of "
            f"{lease.info.name})",
            "model",
            "model_not_found",
            status_code=404,
        )


def _language(language: str | None, lease: EngineLease) -> str | None:
    if language is None:
        return None
    code = languages.code_of(language)
    if not _LANGUAGE.match(code) or code not in lease.engine.languages:
        raise InvalidRequest(
            f"language {language!r} is not supported by {lease.info.name}; leave it out to detect, or give an ISO "
            f"639-1 code such as {', '.join(lease.engine.languages[:8])}",
            "language",
        )
    return code


def _temperature(value: str | None) -> float:
    if value is None:
        return 0.0
    try:
        temperature = float(value)
    except ValueError:
        temperature = math.nan
    if not 0 <= temperature <= 1:
        raise InvalidRequest(f"temperature {value!r} is not a number from 0 to 1", "temperature")
    return temperature


def _check_granularities(form: FormData, response_format: str) -> None:
    asked = [*form.getlist("timestamp_granularities[]"), *form.getlist("timestamp_granularities")]
    for granularity in asked:
        if granularity not in GRANULARITIES:
            raise InvalidRequest(
                f"timestamp granularity {granularity!r} is not supported; this server times segments only ('segment')",
                "timestamp_granularities",
            )
    if asked and response_format != "verbose_json":
        raise InvalidRequest(
            f"timestamp_granularities needs response_format 'verbose_json', not {response_format!r}",
            "timestamp_granularities",
        )


def _response(done: BatchResult, response_format: str) -> Response:
    result = done.transcription
    if response_format == "text":
        return PlainTextResponse(result.text + "\n")
    if response_format == "srt":
        return PlainTextResponse(captions.srt(result.segments))
    if response_format == "vtt":
        return PlainTextResponse(captions.vtt(result.segments), media_type="text/vtt")
    usage = {"type": "duration", "seconds": math.ceil(done.audio_seconds)}
    if response_format == "json":
        return JSONResponse({"text": result.text, "usage": usage})
    return JSONResponse(
        {
            "task": "transcribe",
            "language": languages.name_of(result.language),
            "duration": done.audio_seconds,
            "text": result.text,
            "segments": [_segment(index, segment) for index, segment in enumerate(result.segments)],
            "usage": usage,
        }
    )


def _segment(index: int, segment: Segment) -> dict:
    return {
        "id": index,
        # OpenAI's seek is the 10 ms frame its 30 s window starts at; our windows skip pauses and start nowhere in
        # particular, so it is the frame the segment starts at.
        "seek": round(segment.start * 100),
        "start": segment.start,
        "end": segment.end,
        "text": segment.text,
        "tokens": list(segment.tokens),
        "temperature": segment.temperature,
        "avg_logprob": segment.avg_logprob,
        "compression_ratio": segment.compression_ratio,
        "no_speech_prob": segment.no_speech_prob,
    }
