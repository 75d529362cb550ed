"""The guards against loops and hallucinations, on crafted tokens, texts and scores."""

from __future__ import annotations

import pytest

from serving.decoding import (
    COMPRESSION_RATIO_THRESHOLD,
    Decoded,
    best_candidate,
    compression_ratio,
    final_choice,
    strip_loop,
    timed_pieces,
)


def decoded(text: str = "", tokens: list[int] | None = None, **scores: float | bool) -> Decoded:
    values = {"sum_logprob": -0.3 * len(tokens or [1]), "no_speech_prob": 0.01, "temperature": 0.0, **scores}
    return Decoded(tokens=tokens or [1], text=text, **values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("tokens", "expected"),
    [
        ([1, 2, 3], ([1, 2, 3], False)),
        ([5, 7, 7, 7, 7], ([5, 7], True)),
        ([9, 1, 2, 1, 2, 1, 2, 1, 2], ([9, 1, 2], True)),
        ([1, 2, 1, 2, 1, 2], ([1, 2, 1, 2, 1, 2], False)),
        ([4, *[11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26] * 4], ([4, *range(11, 27)], True)),
    ],
)
def test_a_decoding_loop_is_cut_to_one_copy(tokens, expected):
    assert strip_loop(tokens) == expected


def test_natural_text_compresses_little_and_a_repeated_phrase_a_lot():
    sentence = "The birch canoe slid on the smooth planks. Glue the sheet to the dark blue background."
    assert compression_ratio(sentence) < COMPRESSION_RATIO_THRESHOLD
    assert compression_ratio("Thank you for watching. " * 12) > COMPRESSION_RATIO_THRESHOLD
    assert compression_ratio("") == 0.0


def test_repetitive_improbable_or_looping_text_is_decoded_again_hotter():
    assert not decoded("The birch canoe slid on the smooth planks.").needs_fallback
    assert decoded("I'm going to go. " * 10).needs_fallback
    assert decoded("words", tokens=[1, 2, 3], sum_logprob=-6.0).needs_fallback  # mean -1.5 per token
    assert decoded("the the", is_loop=True).needs_fallback


def test_a_window_the_model_hears_as_silence_yields_nothing_and_is_not_retried():
    silence = decoded("you", tokens=[7], sum_logprob=-3.0, no_speech_prob=0.9)
    assert silence.is_silence and not silence.needs_fallback
    confident = decoded("Hello there.", tokens=[7, 8, 9], sum_logprob=-0.6, no_speech_prob=0.9)
    assert not confident.is_silence, "a confident transcript survives a high no-speech probability"


def test_when_every_temperature_fails_the_most_probable_readable_attempt_is_kept():
    looping = decoded("go go go go go go go go go go go go go go go go go go", sum_logprob=-0.1, is_loop=True)
    readable = decoded("Go to the store.", sum_logprob=-2.0)
    unlikely = decoded("Goat or the stove.", sum_logprob=-3.0)
    assert final_choice([looping, unlikely, readable]) is readable
    assert final_choice([looping]) is looping


def test_of_several_samples_the_one_with_the_most_probable_tokens_is_kept():
    short_but_unlikely = decoded("Go.", tokens=[1, 2], sum_logprob=-3.0)
    long_and_likely = decoded("Go to the store now.", tokens=[1, 2, 3, 4, 5, 6], sum_logprob=-1.2)
    assert best_candidate([short_but_unlikely, long_and_likely]) is long_and_likely


BEGIN = 1000  # the first timestamp token in these examples: <|0.00|>


@pytest.mark.parametrize(
    ("tokens", "expected"),
    [
        ([BEGIN, 5, 6, BEGIN + 50, BEGIN + 50, 7, BEGIN + 120], [(0.0, 1.0, [5, 6]), (1.0, 2.4, [7])]),
        ([BEGIN + 10, 5, BEGIN + 60, BEGIN + 75], [(0.2, 1.2, [5])]),
        ([BEGIN, 5, 6], [(0.0, None, [5, 6])]),
        ([5, BEGIN + 25], [(None, 0.5, [5])]),
        ([BEGIN, BEGIN + 5], []),
    ],
    ids=["two phrases", "a trailing start without text", "cut off before its end", "no start", "no text"],
)
def test_timestamp_tokens_split_a_window_into_timed_phrases(tokens, expected):
    assert timed_pieces(tokens, BEGIN) == expected
