"""Enrolment and verification over the embedder and the store: the speaker routes' only collaborator."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from serving.settings import SpeakerSettings
from serving.speakers.embedder import SpeakerEmbedder, unit
from serving.speakers.store import SpeakerStore, store_from

EMBEDDER_NAME = "speaker-embedder"


@dataclass(frozen=True)
class Verdict:
    score: float
    is_match: bool
    threshold: float
    clips: int  # enrolment clips the voiceprint was averaged from


class SpeakerService:
    """One app's speaker embedder and store, with the configured threshold."""

    def __init__(self, settings: SpeakerSettings, embedder: SpeakerEmbedder | None = None) -> None:
        self.settings = settings
        self.embedder = embedder or SpeakerEmbedder()
        self.store: SpeakerStore = store_from(settings)

    @property
    def version(self) -> str:
        """The ``model_version`` label of speaker work: the embedder's package and version."""
        return self.embedder.version

    def verdict(self, enrolled: list[np.ndarray], probe: np.ndarray) -> Verdict:
        """Cosine similarity of ``probe`` to the mean of the enrolled clips' voiceprints, and whether it matches."""
        voiceprint = unit(np.mean(enrolled, axis=0))
        score = round(float(np.dot(voiceprint, probe)), 4)
        threshold = self.settings.threshold
        return Verdict(score, score >= threshold, threshold, len(enrolled))

    async def close(self) -> None:
        await self.store.close()
