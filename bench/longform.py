"""Long-form accuracy and speed: our engine against faster-whisper on one long recording, the same Whisper weights.

    python -m bench.longform [--minutes 10] [--quick] [--profile base] [--threads N] [--compute-type int8] [--passes 1]
                             [--beams 5,1]

The recording is built by the test suite's ``long_recording``: Harvard sentences read in turn by two espeak-ng
and two flite voices, pauses from 0.1 s to 10 s, a sentence across every 30 s boundary, a -60 dBFS noise floor;
deterministic. Each engine transcribes the whole recording in one call, as a user would, with the language
detected (``--profile tiny.en``, a cheaper smoke run, is English-only: nothing to detect). WER is jiwer's over
Whisper's English normaliser, deletions and insertions shown apart (lost words against hallucinated ones). RTF
is processing seconds per second of audio, the best of ``--passes`` with the engines taking turns, so load from
other processes skews all engines alike.

faster-whisper runs as shipped: ``transcribe`` (sequential 30 s windows moved on by timestamps, temperature
fallback, conditioned on the previous text) and ``BatchedInferencePipeline`` (Silero VAD chunks, batches of 8),
each at its default beam of 5 and with greedy search (beam 1); ours the same way (``--beams``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from bench.asr_speed import REPO, faster_whisper_dir, load_test_helpers
from serving.build.export import ensure_bundled_model
from serving.bundled import PROFILES
from serving.cpu import default_threads
from serving.engine import SAMPLE_RATE, DecodeOptions
from serving.whisper_onnx import load_engine

SENTENCES = REPO / "bench" / "harvard_sentences.txt"
RESULTS = REPO / "bench" / "results" / "longform.json"
FASTER_WHISPER_RUNS = {
    "sequential beam 5 (default)": ("sequential", 5),
    "sequential greedy": ("sequential", 1),
    "batched beam 5 (default)": ("batched", 5),
    "batched greedy": ("batched", 1),
}
QUICK_MINUTES = 1.0
QUICK_RUNS = ("sequential beam 5 (default)",)  # its default; bench.load runs the batched pipeline


@dataclass
class Row:
    engine: str
    wer: float
    substitutions: int
    deletions: int
    insertions: int
    rtf: float
    seconds: float
    segments: int


def faster_whisper_model(model_dir: Path, compute_type: str, threads: int, workers: int = 1):
    """faster-whisper's ``WhisperModel`` on CPU; ``workers`` calls may run at once from different threads (its
    ``num_workers``). One model serves every run: its sequential and batched modes share the weights."""
    from faster_whisper import WhisperModel

    return WhisperModel(
        str(model_dir), device="cpu", compute_type=compute_type, cpu_threads=threads, num_workers=workers
    )


def faster_whisper_transcriber(model, mode: str, beam: int) -> Callable[[np.ndarray], tuple[str, int]]:
    """faster-whisper as shipped, ``mode`` "sequential" (``model.transcribe``) or "batched"
    (``BatchedInferencePipeline``): audio -> (text, segments)."""
    from faster_whisper import BatchedInferencePipeline

    if mode == "batched":
        pipeline = BatchedInferencePipeline(model)

        def batched(audio: np.ndarray) -> tuple[str, int]:
            segments, _ = pipeline.transcribe(audio, beam_size=beam)
            return _joined(list(segments))

        return batched

    def sequential(audio: np.ndarray) -> tuple[str, int]:
        segments, _ = model.transcribe(audio, beam_size=beam)
        return _joined(list(segments))

    return sequential


def _joined(segments: list) -> tuple[str, int]:
    return " ".join(s.text.strip() for s in segments), len(segments)


def _machine() -> dict:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(prog="python -m bench.longform", description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the recording (default 10)")
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK_MINUTES:g} min, faster-whisper's default run only"
    )
    parser.add_argument("--profile", choices=sorted(PROFILES), default="base", help="bundled model (default base)")
    parser.add_argument("--threads", type=int, default=default_threads())
    parser.add_argument("--passes", type=int, default=1, help="timed runs per engine; the fastest counts")
    parser.add_argument("--compute-type", default="int8", help="faster-whisper compute type (int8, default)")
    parser.add_argument("--batches", default="", help="our window batch sizes to compare, e.g. 1,4 (default: ours)")
    parser.add_argument("--beams", default="5", help="our beam sizes to compare, e.g. 5,1 (1: greedy; default 5)")
    parser.add_argument("--runs", default=",".join(FASTER_WHISPER_RUNS), help="faster-whisper runs, comma-separated")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"JSON results (default {RESULTS})")
    args = parser.parse_args(argv)
    minutes = QUICK_MINUTES if args.quick else args.minutes
    runs = QUICK_RUNS if args.quick else [r for r in args.runs.split(",") if r]
    unknown = sorted(set(runs) - set(FASTER_WHISPER_RUNS))
    if unknown:
        parser.error(f"unknown --runs {', '.join(unknown)}; choose from {', '.join(FASTER_WHISPER_RUNS)}")

    helpers = load_test_helpers()
    texts = [s.text for s in helpers.load_sentences(SENTENCES)]
    recording = helpers.long_recording(texts, minutes * 60)
    audio_seconds = len(recording.audio) / SAMPLE_RATE
    model_dir = ensure_bundled_model(args.profile)
    engines: dict[str, Callable[[np.ndarray], tuple[str, int]]] = {}
    batches: list[int | None] = [int(b) for b in args.batches.split(",") if b] or [None]
    for batch in batches:
        ours = load_engine(model_dir, threads=args.threads, batch=batch)
        for beam in [int(b) for b in args.beams.split(",") if b]:

            def transcribe(audio: np.ndarray, engine=ours, beam=beam) -> tuple[str, int]:
                result = engine.transcribe(audio, options=DecodeOptions(beam_size=beam))
                return result.text, len(result.segments)

            search = "greedy" if beam == 1 else f"beam {beam}"
            engines[f"ours (onnxruntime {ours.name} {ours.version}, batch {ours.batch}, {search})"] = transcribe
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="fw-model-") as tmp:
        fw_model = faster_whisper_model(faster_whisper_dir(args.profile, Path(tmp)), args.compute_type, args.threads)
        for run in runs:
            mode, beam = FASTER_WHISPER_RUNS[run]
            engines[f"faster-whisper {args.compute_type} {run}"] = faster_whisper_transcriber(fw_model, mode, beam)
        warm_up = helpers.synthesize(texts[0])
        for run_engine in engines.values():
            run_engine(warm_up)  # first-call allocations and thread pools, outside the timing
        best: dict[str, float] = dict.fromkeys(engines, float("inf"))
        outputs: dict[str, tuple[str, int]] = {}
        for _ in range(args.passes):
            for name, run_engine in engines.items():
                started = time.perf_counter()
                outputs[name] = run_engine(recording.audio)
                best[name] = min(best[name], time.perf_counter() - started)
    rows = []
    for name, (text, segments) in outputs.items():
        errors = helpers.word_errors([recording.text], [text])
        rows.append(
            Row(
                engine=name,
                wer=errors.wer,
                substitutions=errors.substitutions,
                deletions=errors.deletions,
                insertions=errors.insertions,
                rtf=best[name] / audio_seconds,
                seconds=best[name],
                segments=segments,
            )
        )
    words = len(helpers.normalize_text(recording.text).split())
    print(
        f"{audio_seconds / 60:.1f} min recording, {len(recording.sentences)} sentences, {words} words; "
        f"{args.threads} threads, best of {args.passes}; load average {load_before[0]:.2f} before"
    )
    print(f"{'engine':60s} {'WER':>6s} {'sub':>5s} {'del':>5s} {'ins':>5s} {'RTF':>7s} {'seconds':>8s} {'segs':>5s}")
    for row in rows:
        print(
            f"{row.engine:60s} {row.wer:6.1%} {row.substitutions:5d} {row.deletions:5d} {row.insertions:5d} "
            f"{row.rtf:7.3f} {row.seconds:8.1f} {row.segments:5d}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "command": "python -m bench.longform " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {**_machine(), "load_average_before": [round(x, 2) for x in load_before]},
        "recording": {"seconds": round(audio_seconds, 1), "sentences": len(recording.sentences), "words": words},
        "threads": args.threads,
        "passes": args.passes,
        "rows": [asdict(row) for row in rows],
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()
