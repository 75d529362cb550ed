"""SubRip and WebVTT captions from segments, as OpenAI's srt and vtt response formats write them."""

from __future__ import annotations

from serving.captions import srt, vtt
from serving.engine import Segment

SEGMENTS = (Segment(0.0, 2.5, "Hello there."), Segment(3661.25, 3662.001, "An hour later."))


def test_srt_numbers_cues_from_one_with_comma_milliseconds():
    assert srt(SEGMENTS) == (
        "1\n00:00:00,000 --> 00:00:02,500\nHello there.\n\n2\n01:01:01,250 --> 01:01:02,001\nAn hour later.\n"
    )


def test_vtt_has_its_header_and_dot_milliseconds():
    assert vtt(SEGMENTS) == (
        "WEBVTT\n\n00:00:00.000 --> 00:00:02.500\nHello there.\n\n01:01:01.250 --> 01:01:02.001\nAn hour later.\n"
    )


def test_no_segments_are_empty_captions():
    assert srt(()) == "" and vtt(()) == "WEBVTT\n"
