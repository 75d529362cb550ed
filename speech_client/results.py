"""What calls return: plain frozen values, each naming the region that served it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Segment:
    start: float
    end: float
    text: str


@dataclass(frozen=True)
class Transcription:
    """A batch transcription (``POST /v1/asr``)."""

    text: str
    language: str
    model: str
    model_version: str
    audio_seconds: float
    segments: tuple[Segment, ...]
    region: str  # the region that served it, as the server named itself
    timings: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_json(cls, body: dict[str, Any], region: str) -> Transcription:
        return cls(
            text=body["text"],
            language=body["language"],
            model=body["model"],
            model_version=body["model_version"],
            audio_seconds=float(body["audio_seconds"]),
            segments=tuple(Segment(float(s["start"]), float(s["end"]), s["text"]) for s in body["segments"]),
            region=region,
            timings=dict(body.get("timings", {})),
        )


@dataclass(frozen=True)
class StreamMessage:
    """A ``partial`` (a draft that may still change) or ``final`` of one utterance of a stream."""

    type: str
    utterance: int
    text: str
    start_s: float
    end_s: float
    model_version: str
    language: str | None = None

    @property
    def is_final(self) -> bool:
        return self.type == "final"

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> StreamMessage:
        return cls(
            type=body["type"],
            utterance=int(body["utterance"]),
            text=body["text"],
            start_s=float(body["start_s"]),
            end_s=float(body["end_s"]),
            model_version=body["model_version"],
            language=body.get("language"),
        )


@dataclass(frozen=True)
class Speech:
    """Synthesized audio (``POST /v1/tts``)."""

    audio: bytes
    media_type: str
    is_cache_hit: bool  # the server's X-Speech-Cache: hit
    region: str
