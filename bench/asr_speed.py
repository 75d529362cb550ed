"""Speed and accuracy of our onnxruntime Whisper against faster-whisper on the very same CTranslate2 weights.

    pip install -e '.[bench]'        # or bash scripts/setup.sh, which includes it
    python -m bench.asr_speed [--profile base] [--threads N] [--passes 3] [--compute-types int8,default] [--limit N]
                              [--beam 1]

Both engines get the same synthesized clips (espeak-ng and flite, as the tests make them), the same thread count,
greedy decoding (``--beam`` 1, no temperature fallback), no VAD, no timestamps, language detection on. Engines take
turns clip by clip and each clip's latency is the best of ``--passes`` runs, so load from other processes on a
shared machine skews all engines alike instead of whichever ran during a burst.
faster-whisper's ``default`` compute type runs these fp16 weights as fp32 on CPU; ``int8`` is its INT8 path.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from serving.build.export import bundled_weights, ensure_bundled_model
from serving.bundled import PROFILES, package_file
from serving.cpu import default_threads
from serving.engine import SAMPLE_RATE, DecodeOptions
from serving.whisper_onnx import load_engine

REPO = Path(__file__).resolve().parents[1]
SENTENCE_FILES = (REPO / "tests" / "data" / "asr_sentences.txt", REPO / "bench" / "harvard_sentences.txt")


def load_test_helpers():
    """The test suite's synthesis and WER, loaded by path so bench and tests score clips identically."""
    path = REPO / "tests" / "serving" / "conftest.py"
    spec = importlib.util.spec_from_file_location("serving_test_helpers", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load the test helpers from {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is created
    spec.loader.exec_module(module)
    return module


@dataclass
class Clip:
    tts: str
    text: str
    audio: np.ndarray


@dataclass
class Result:
    latencies: list[float] = field(default_factory=list)
    hypotheses: list[str] = field(default_factory=list)


def faster_whisper_dir(profile: str, into: Path) -> Path:
    """A faster-whisper model directory: the concatenated model.bin next to the CT2 config and tokenizer."""
    source = PROFILES[profile]
    (into / "model.bin").write_bytes(bundled_weights(profile))
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copyfile(package_file(source.package, f"{source.data_dir}/{name}"), into / name)
    return into


def _faster_whisper(model_dir: Path, compute_type: str, threads: int, beam: int) -> Callable[[np.ndarray], str]:
    from faster_whisper import WhisperModel

    model = WhisperModel(str(model_dir), device="cpu", compute_type=compute_type, cpu_threads=threads, num_workers=1)

    def transcribe(audio: np.ndarray) -> str:
        segments, _ = model.transcribe(
            audio,
            beam_size=beam,
            best_of=1,
            temperature=0.0,
            vad_filter=False,
            without_timestamps=True,
            condition_on_previous_text=False,
        )
        return " ".join(s.text.strip() for s in segments)

    return transcribe


def _clips(helpers, profile: str, limit: int | None = None) -> list[Clip]:
    """The first ``limit`` clips (all by default); only those are synthesized."""
    wanted: list[tuple[str, str, str]] = []  # (tts, voice, text)
    for path in SENTENCE_FILES:
        for sentence in helpers.load_sentences(path):
            if sentence.language != "en" and profile.endswith(".en"):
                continue
            voice = helpers.ESPEAK_VOICES[sentence.language]
            engines = ("espeak-ng", "flite") if sentence.language == "en" else ("espeak-ng",)
            wanted += [(tts, voice, sentence.text) for tts in engines]
    return [Clip(tts, text, helpers.synthesize(text, voice, tts)) for tts, voice, text in wanted[:limit]]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.asr_speed", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="base")
    parser.add_argument("--model-dir", type=Path, default=None, help="our model directory (default: the bundled one)")
    parser.add_argument("--threads", type=int, default=default_threads())
    parser.add_argument("--passes", type=int, default=3, help="timed runs per clip; the fastest counts")
    parser.add_argument("--compute-types", default="int8,default", help="faster-whisper compute types to compare")
    parser.add_argument("--limit", type=int, default=None, help="only the first N clips (a quick check)")
    parser.add_argument("--beam", type=int, default=1, help="beam size of both engines (1: greedy, the default)")
    args = parser.parse_args(argv)

    helpers = load_test_helpers()
    clips = _clips(helpers, args.profile, args.limit)
    audio_seconds = sum(len(c.audio) for c in clips) / SAMPLE_RATE
    ours = load_engine(args.model_dir or ensure_bundled_model(args.profile), threads=args.threads)
    engines: dict[str, Callable[[np.ndarray], str]] = {
        f"onnxruntime ({ours.name} {ours.version})": lambda a: (
            ours.transcribe(a, options=DecodeOptions(beam_size=args.beam)).text
        )
    }
    with tempfile.TemporaryDirectory(prefix="fw-model-") as tmp:
        fw_dir = faster_whisper_dir(args.profile, Path(tmp))
        for compute_type in filter(None, args.compute_types.split(",")):
            engines[f"faster-whisper ({compute_type})"] = _faster_whisper(fw_dir, compute_type, args.threads, args.beam)
        results = {name: Result() for name in engines}
        for transcribe in engines.values():
            transcribe(clips[0].audio)  # warm-up: first-call allocations and thread pools
        for clip in clips:
            for name, transcribe in engines.items():
                best = float("inf")
                for _ in range(args.passes):
                    started = time.perf_counter()
                    text = transcribe(clip.audio)
                    best = min(best, time.perf_counter() - started)
                results[name].latencies.append(best)
                results[name].hypotheses.append(text)

    print(f"{len(clips)} clips, {audio_seconds:.1f} s of audio, {args.threads} threads, best of {args.passes} passes")
    columns = f"{'WER espeak':>10s} {'WER flite':>10s} {'WER all':>8s} {'RTF':>7s} {'p50 s':>7s} {'mean s':>7s}"
    print(f"{'engine':44s} {columns}")
    for name, result in results.items():
        wers = []
        for tts in ("espeak-ng", "flite", None):
            picked = [(c.text, h) for c, h in zip(clips, result.hypotheses, strict=True) if tts in (None, c.tts)]
            wers.append(helpers.word_error_rate([r for r, _ in picked], [h for _, h in picked]))
        rtf = sum(result.latencies) / audio_seconds
        print(
            f"{name:44s} {wers[0]:10.1%} {wers[1]:10.1%} {wers[2]:8.1%} {rtf:7.3f} "
            f"{statistics.median(result.latencies):7.3f} {statistics.mean(result.latencies):7.3f}"
        )


if __name__ == "__main__":
    main()
