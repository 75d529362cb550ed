"""Text to phoneme ids as Piper makes them: espeak-ng's IPA with clause punctuation, ids from the voice's own map."""

from __future__ import annotations

import pytest

from serving.phonemes import EspeakPhonemizer, normalize_text, split_sentences, unsupported_characters
from serving.tts import PiperVoice


@pytest.fixture(scope="module")
def voice(bundled_voice_dir) -> PiperVoice:
    return PiperVoice(bundled_voice_dir)


def test_ids_are_bos_then_each_phoneme_followed_by_the_pad_then_eos(voice):
    ids_of = voice.config.phoneme_ids
    pad = ids_of["_"]
    assert voice.phoneme_ids("hə") == [*ids_of["^"], *pad, *ids_of["h"], *pad, *ids_of["ə"], *pad, *ids_of["$"]]


def test_a_phoneme_the_voice_has_no_id_for_is_skipped_as_piper_skips_it(voice):
    assert "\u4f60" not in voice.config.phoneme_ids
    assert voice.phoneme_ids("h\u4f60ə") == voice.phoneme_ids("hə")


def test_clauses_keep_their_punctuation_for_the_voice_to_pause_on():
    phonemizer = EspeakPhonemizer("en-us")
    phonemes = phonemizer.phonemize("Hello, world! Really?")
    assert phonemes.count(", ") == 1 and "!" in phonemes and phonemes.endswith("?"), phonemes
    assert phonemizer.phonemize("It costs $3.50 today") == phonemizer.phonemize("It costs $3.50 today").strip()
    assert not phonemizer.phonemize("It costs $3.50 today").endswith("."), "a decimal point ends no clause"


def test_text_is_cut_into_sentences_but_not_after_titles_and_keeps_closing_quotes():
    text = normalize_text('Hello,   world!\n"Is Dr. Smith in?" she asked. Yes.')
    assert split_sentences(text) == ["Hello, world!", '"Is Dr. Smith in?"', "she asked.", "Yes."]


def test_characters_a_latin_voice_cannot_say_are_named_once_each():
    assert unsupported_characters("Café, naïve “quotes” — fine… 42%") == []
    assert unsupported_characters("你好你 🙂 \x00") == ["你", "好", "🙂", "\x00"]
