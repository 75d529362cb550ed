"""Segments as caption files: SubRip (``.srt``) and WebVTT, as OpenAI's ``response_format`` srt and vtt return them."""

from __future__ import annotations

from collections.abc import Iterable

from serving.engine import Segment


def srt(segments: Iterable[Segment]) -> str:
    """Numbered cues from 1, ``HH:MM:SS,mmm --> HH:MM:SS,mmm``, a blank line after each."""
    cues = (
        f"{number}\n{_clock(s.start, ',')} --> {_clock(s.end, ',')}\n{s.text}\n"
        for number, s in enumerate(segments, start=1)
    )
    return "\n".join(cues)


def vtt(segments: Iterable[Segment]) -> str:
    """The ``WEBVTT`` header, then ``HH:MM:SS.mmm --> HH:MM:SS.mmm`` cues, a blank line before each."""
    cues = "".join(f"\n{_clock(s.start, '.')} --> {_clock(s.end, '.')}\n{s.text}\n" for s in segments)
    return "WEBVTT\n" + cues


def _clock(seconds: float, decimal_mark: str) -> str:
    milliseconds = round(seconds * 1000)
    hours, milliseconds = divmod(milliseconds, 3_600_000)
    minutes, milliseconds = divmod(milliseconds, 60_000)
    seconds_part, milliseconds = divmod(milliseconds, 1000)
    return f"{hours:02d}:{minutes:02d}:{seconds_part:02d}{decimal_mark}{milliseconds:03d}"
