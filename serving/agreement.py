"""LocalAgreement-2 over a stream's drafts: the words two drafts in a row agree on are settled.

Each partial re-decodes the utterance so far; words near the end of the audio change from one draft to the next
while the model hears more of them, words well before it rarely do. A word both of the last two drafts put in the
same place, with more words after it in both (the last word of a draft may be cut off mid-word by the edge of the
audio), is *committed*: later partials of the utterance start with it unchanged, and the engine takes the
committed words as a forced prefix, so only the unstable tail is decoded again (Macháček et al., "Turning Whisper
into Real-Time Transcription System", 2023, whisper_streaming's LocalAgreement-n policy with n = 2).
"""

from __future__ import annotations

import string

# ASCII punctuation plus what Whisper writes in other languages: inverted marks, guillemets, curly quotes, ellipsis.
_PUNCTUATION = string.punctuation + "\u00bf\u00a1\u00ab\u00bb\u201c\u201d\u2018\u2019\u2026"


class LocalAgreement:
    """One utterance's committed words and the draft before the latest."""

    def __init__(self) -> None:
        self._committed: list[str] = []
        self._previous_tail: list[str] | None = None

    @property
    def committed(self) -> str:
        """The settled start of every later partial's text, "" until two drafts agree."""
        return " ".join(self._committed)

    def accept(self, draft: str) -> str:
        """Take a draft decoded with :attr:`committed` as its prefix and return the partial text to send: the
        committed words, then the draft's words after them. Commits what this draft and the last agree on."""
        words = draft.split()
        # An engine that honoured the prefix repeats it; one that could not (no draft mode) is aligned by position.
        tail = words[len(self._committed) :]
        if self._previous_tail is not None:
            agreed = _common_prefix(self._previous_tail[:-1], tail[:-1])
            self._committed += agreed
            tail = tail[len(agreed) :]
        self._previous_tail = tail
        return " ".join(self._committed + tail)


def _common_prefix(earlier: list[str], later: list[str]) -> list[str]:
    """The words both agree on, as ``later`` writes them: drafts change case and punctuation as they hear more
    ("please" becomes "Please", "her" becomes "her,"), which is no disagreement about the word."""
    agreed: list[str] = []
    for a, b in zip(earlier, later, strict=False):
        if _word(a) != _word(b):
            break
        agreed.append(b)
    return agreed


def _word(text: str) -> str:
    return text.strip(_PUNCTUATION).casefold()
