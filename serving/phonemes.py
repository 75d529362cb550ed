"""Text to phonemes for Piper voices: espeak-ng's IPA, clause by clause, with Piper's punctuation.

Piper voices were trained on the phonemes ``piper-phonemize`` makes with espeak-ng, so this module makes the same
ones: espeak-ng's IPA for each clause, decomposed (NFD), followed by the clause's punctuation (``.``, ``?``, ``!``,
or ``,`` ``:`` ``;`` plus a space), because the voices learned their pauses and intonation from those marks.

espeak-ng is called through ``ctypes`` on the system's ``libespeak-ng`` (Debian's ``libespeak-ng1``), not through
piper-phonemize or another Python binding, which are GPL-3.0 Python packages; the library itself is GPL-3.0 too
(see the README's licence note). It keeps global state, so every call holds one process-wide lock: a clause takes
well under a millisecond, next to hundreds for the voice.

Text is checked before it reaches espeak-ng: a voice says the letters of its language, digits and punctuation;
anything else (other scripts, emoji, control characters) is refused by name instead of being spelled out as
"Chinese letter" or silently dropped.
"""

from __future__ import annotations

import ctypes
import re
import threading
import unicodedata
from dataclasses import dataclass

_LIBRARY = "libespeak-ng.so.1"
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_CHARS_UTF8 = 1
_PHONEMES_IPA = 0x02
# espeak-ng reads one word past a clause's end, so the terminator is the punctuation before the last gap.
_TERMINATOR = re.compile(r"([.?!,:;])[\"')\]]*(?:\s+\S*)?$")
# Piper's marks after a clause: sentence ends as they are, pauses inside a sentence followed by a space.
_CLAUSE_MARKS = {".": ".", "?": "?", "!": "!", ",": ", ", ":": ": ", ";": "; "}
# A sentence ends at . ! ? (with any closing quotes or brackets) followed by white space.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[.!?][\"')\]\u201d\u2019])\s+")
# Words with a full stop that rarely end a sentence: "Dr. Smith" is one sentence.
_ABBREVIATIONS = frozenset({"mr.", "mrs.", "ms.", "dr.", "prof.", "st.", "jr.", "sr.", "vs.", "e.g.", "i.e.", "etc."})
# Typographic punctuation people paste from word processors, besides ASCII.
_EXTRA_PUNCTUATION = frozenset("\u2018\u2019\u201c\u201d\u2013\u2014\u2026\u00a0\u00ab\u00bb")


class PhonemizerError(RuntimeError):
    """espeak-ng is missing, or refused the voice's language."""


def unsupported_characters(text: str) -> list[str]:
    """The distinct characters of ``text`` a Latin-script voice cannot say, in order of appearance."""
    found: dict[str, None] = {}
    for char in text:
        if not _is_speakable(char):
            found.setdefault(char)
    return list(found)


def _is_speakable(char: str) -> bool:
    if char.isascii():
        return char.isprintable() or char in "\n\t"
    if char in _EXTRA_PUNCTUATION:
        return True
    return unicodedata.category(char).startswith(("L", "M")) and "LATIN" in unicodedata.name(char, "")


def describe_characters(chars: list[str]) -> str:
    """``'你' (U+4F60), ...`` for an error message."""
    return ", ".join(f"{char!r} (U+{ord(char):04X})" for char in chars)


def normalize_text(text: str) -> str:
    """What a voice will say, independent of how it was typed: NFC, one space for every run of white space."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def split_sentences(text: str) -> list[str]:
    """``text`` (normalized) cut after each . ! or ? that white space follows, except after a title such as Dr.;
    empty pieces dropped."""
    sentences: list[str] = []
    for piece in _SENTENCE_END.split(text):
        if sentences and sentences[-1].rsplit(" ", 1)[-1].lower() in _ABBREVIATIONS:
            sentences[-1] = f"{sentences[-1]} {piece}"
        elif piece.strip():
            sentences.append(piece)
    return sentences


@dataclass(frozen=True)
class _Espeak:
    library: ctypes.CDLL
    voice: bytes


class EspeakPhonemizer:
    """espeak-ng's IPA for one espeak voice (``en-us``), safe to call from several threads."""

    _lock = threading.Lock()  # espeak-ng's state is per process, so one lock for every instance
    _voice_set: bytes | None = None
    # Once per process: espeak_Initialize again reloads the phoneme tables and frees the old ones, which the voice
    # already selected still points into; the next call then reads freed memory ("Invalid instruction ... for
    # phoneme", then a segfault). A voice loaded beside another (hot swap, several servers in a test) would do that.
    _is_initialized = False

    def __init__(self, voice: str) -> None:
        try:
            library = ctypes.CDLL(_LIBRARY)
        except OSError as exc:
            raise PhonemizerError(
                f"{_LIBRARY} is not installed ({exc}); the voices need espeak-ng: apt-get install libespeak-ng1"
            ) from exc
        library.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        library.espeak_Initialize.restype = ctypes.c_int
        library.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        library.espeak_SetVoiceByName.restype = ctypes.c_int
        library.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int]
        library.espeak_TextToPhonemes.restype = ctypes.c_char_p
        with self._lock:
            if not EspeakPhonemizer._is_initialized:
                if library.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, None, 0) < 0:
                    raise PhonemizerError("espeak-ng failed to initialise; is espeak-ng-data installed?")
                EspeakPhonemizer._is_initialized = True
        self._espeak = _Espeak(library, voice.encode())
        self.phonemize("ready")  # fails now, not on the first request, if the voice is missing

    def phonemize(self, sentence: str) -> str:
        """Piper's phoneme string for one sentence: each clause's IPA and punctuation, NFD-decomposed."""
        data = sentence.encode()
        buffer = ctypes.create_string_buffer(data)
        start = ctypes.addressof(buffer)
        pointer = ctypes.c_void_p(start)
        parts: list[str] = []
        with self._lock:
            self._select_voice()
            while pointer.value:
                before = pointer.value
                phonemes = self._espeak.library.espeak_TextToPhonemes(ctypes.byref(pointer), _CHARS_UTF8, _PHONEMES_IPA)
                consumed = data[before - start : (pointer.value or start + len(data)) - start]
                parts.append((phonemes or b"").decode())
                terminator = _TERMINATOR.search(consumed.decode(errors="replace"))
                if terminator is not None:
                    parts.append(_CLAUSE_MARKS[terminator.group(1)])
                elif pointer.value:
                    parts.append(" ")
        return unicodedata.normalize("NFD", "".join(parts).strip())

    def _select_voice(self) -> None:
        voice = self._espeak.voice
        if EspeakPhonemizer._voice_set != voice:
            if self._espeak.library.espeak_SetVoiceByName(voice) != 0:
                raise PhonemizerError(f"espeak-ng has no voice {voice.decode()!r}; is espeak-ng-data installed?")
            EspeakPhonemizer._voice_set = voice
