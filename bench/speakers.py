"""Speaker verification accuracy: the equal error rate of the served embedder on synthetic voices.

    python -m bench.speakers [--quick] [--enrol-clips 2] [--out bench/results/speakers.json]

Each voice (espeak-ng voices and variants, flite's built-in speakers: as the test suite synthesizes them) is
enrolled from its first ``--enrol-clips`` sentences exactly as ``POST /v1/speakers/{id}/enroll`` does (VAD, then
the embedder, clip voiceprints averaged); every later sentence of every voice is then scored against every
enrolment, as ``verify`` scores it. Trials of a voice against its own enrolment are genuine, all others impostor.
The equal error rate is where the false accept and false reject rates meet as the threshold moves; the threshold
there is a starting point for ``SPEECH_SPEAKERS__THRESHOLD`` (synthetic voices are far easier than real speakers
over real microphones, so measure on real enrolments before relying on it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from bench.asr_speed import REPO, SENTENCE_FILES, load_test_helpers
from serving.settings import SpeakerSettings
from serving.speakers.embedder import SpeakerEmbedder
from serving.speakers.service import SpeakerService

VOICES: tuple[tuple[str, str], ...] = (
    ("en-us", "espeak-ng"),
    ("en-us+m1", "espeak-ng"),
    ("en-us+m7", "espeak-ng"),
    ("en-us+f1", "espeak-ng"),
    ("en-us+f3", "espeak-ng"),
    ("en-us+klatt", "espeak-ng"),
    ("slt", "flite"),
    ("rms", "flite"),
    ("awb", "flite"),
    ("kal16", "flite"),
)
QUICK_VOICES = (VOICES[0], VOICES[4], VOICES[6], VOICES[7])
DEFAULT_OUT = REPO / "bench" / "results" / "speakers.json"


@dataclass(frozen=True)
class Trial:
    enrolled: str
    probe: str
    score: float

    @property
    def is_genuine(self) -> bool:
        return self.enrolled == self.probe


@dataclass(frozen=True)
class ErrorRates:
    eer: float
    threshold: float  # the score threshold at which false accepts and false rejects meet
    genuine_min: float
    impostor_max: float


def equal_error_rate(genuine: np.ndarray, impostor: np.ndarray) -> ErrorRates:
    """The EER over every candidate threshold (each observed score): the point where the false accept rate (impostor
    scores at or above it) and the false reject rate (genuine scores below it) are closest, as their mean."""
    candidates = np.unique(np.concatenate([genuine, impostor]))
    false_accept = (impostor[np.newaxis, :] >= candidates[:, np.newaxis]).mean(axis=1)
    false_reject = (genuine[np.newaxis, :] < candidates[:, np.newaxis]).mean(axis=1)
    best = int(np.argmin(np.abs(false_accept - false_reject)))
    return ErrorRates(
        eer=float((false_accept[best] + false_reject[best]) / 2),
        threshold=float(candidates[best]),
        genuine_min=float(genuine.min()),
        impostor_max=float(impostor.max()),
    )


def english_sentences() -> list[str]:
    """The English sentences of the bench's and the tests' sentence files (``<language> <sentence>`` lines)."""
    texts = []
    for path in SENTENCE_FILES:
        for line in path.read_text(encoding="utf-8").splitlines():
            language, _, text = line.partition(" ")
            if language == "en":
                texts.append(text.strip())
    return texts


def run_trials(voices: tuple[tuple[str, str], ...], sentences: list[str], enrol_clips: int) -> list[Trial]:
    helpers = load_test_helpers()
    speakers = SpeakerService(SpeakerSettings(), SpeakerEmbedder(threads=os.cpu_count() or 1))
    min_speech = speakers.settings.min_speech_s

    def voiceprint(text: str, voice: tuple[str, str]) -> np.ndarray:
        return speakers.embedder.embed(helpers.synthesize(text, *voice), min_speech).vector

    enrolled = {voice: [voiceprint(t, voice) for t in sentences[:enrol_clips]] for voice in voices}
    trials = []
    for probe_voice in voices:
        for text in sentences[enrol_clips:]:
            probe = voiceprint(text, probe_voice)
            for voice, clips in enrolled.items():
                score = speakers.verdict(clips, probe).score
                trials.append(Trial(_name(voice), _name(probe_voice), score))
    return trials


def _pairs(trials: list[Trial]) -> list[dict]:
    """Scores per (enrolled voice, probe voice): which voices the embedder finds alike."""
    by_pair: dict[tuple[str, str], list[float]] = {}
    for trial in trials:
        by_pair.setdefault((trial.enrolled, trial.probe), []).append(trial.score)
    return [
        {
            "enrolled": enrolled,
            "probe": probe,
            "trials": len(s),
            "min": min(s),
            "mean": round(sum(s) / len(s), 4),
            "max": max(s),
        }
        for (enrolled, probe), s in by_pair.items()
    ]


def _name(voice: tuple[str, str]) -> str:
    return f"{voice[1]}:{voice[0]}"


def main(argv: list[str] | None = None) -> ErrorRates:
    parser = argparse.ArgumentParser(prog="python -m bench.speakers", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 voices and 5 sentences: proves it runs")
    parser.add_argument("--enrol-clips", type=int, default=2)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    voices = QUICK_VOICES if args.quick else VOICES
    sentences = english_sentences()[: 5 if args.quick else 12]
    if len(sentences) <= args.enrol_clips:
        parser.error(f"--enrol-clips {args.enrol_clips} leaves no sentence to verify with ({len(sentences)} in all)")
    started = time.perf_counter()
    trials = run_trials(voices, sentences, args.enrol_clips)
    genuine = np.array([t.score for t in trials if t.is_genuine])
    impostor = np.array([t.score for t in trials if not t.is_genuine])
    rates = equal_error_rate(genuine, impostor)
    configured = SpeakerSettings().threshold
    trials_line = f"{len(genuine)} genuine and {len(impostor)} impostor trials"
    print(f"{len(voices)} voices, {args.enrol_clips} enrolment clips each, {trials_line}")
    print(f"equal error rate {rates.eer:.2%} at threshold {rates.threshold:.3f}")
    print(f"genuine scores >= {rates.genuine_min:.3f}, impostor scores <= {rates.impostor_max:.3f}")
    print(
        f"at the default threshold {configured}: false accepts {float((impostor >= configured).mean()):.2%}, "
        f"false rejects {float((genuine < configured).mean()):.2%}"
    )
    report = {
        "command": "python -m bench.speakers" + (" --quick" if args.quick else ""),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "seconds": round(time.perf_counter() - started, 1),
        "voices": [_name(v) for v in voices],
        "enrol_clips": args.enrol_clips,
        "sentences": len(sentences),
        "default_threshold": configured,
        **asdict(rates),
        "pairs": _pairs(trials),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    return rates


if __name__ == "__main__":
    main()
