"""What Opus costs in accuracy: the test clips as PCM16 and through Opus at 16 and 24 kbps, transcribed alike.

    python -m bench.opus_wer [--bitrates 16000,24000] [--quick] [--profile base] [--threads N]
        [--out bench/results/opus_wer.json]

Every English clip of the test set (espeak-ng and flite) is encoded as a phone would send it on a stream: 20 ms
VoIP-mode packets, by the libopus that PyAV bundles, which is also what the server decodes with; the packets are
then decoded exactly as a stream's are (``serving/stream_codec.py``) and the engine transcribes each clip whole.
WER is jiwer's over Whisper's English normaliser, as the tests score; the bitrate column is what the packets
actually weigh. Accuracy only: the machine's load does not change these numbers.
"""

from __future__ import annotations

import argparse
import itertools
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from bench.asr_speed import REPO
from bench.longform import _machine
from serving.build.export import ensure_bundled_model
from serving.cpu import default_threads
from serving.engine import SAMPLE_RATE, DecodeOptions
from serving.stream_codec import OpusFrames
from serving.whisper_onnx import load_engine
from tests.serving.conftest import load_sentences, synthesize, word_error_rate
from tests.serving.server_fixtures import opus_packets

RESULTS = REPO / "bench" / "results" / "opus_wer.json"
QUICK_CLIPS = 4
# ``--quick`` proves the bench runs and reports, not the figures: it decodes as the suite's servers do (greedy, on
# windows fitted with 5 s), a third of the CPU of the full run's 5 beams on 30 s windows.
QUICK_DECODING = DecodeOptions(beam_size=1, window_pad_s=5.0)


@dataclass
class Row:
    audio: str
    kbps: float
    wer: float
    wer_espeak: float
    wer_flite: float


def through_opus(audio: np.ndarray, bitrate: int) -> tuple[np.ndarray, int]:
    """``audio`` after a stream's round trip through Opus, and the bytes its packets took."""
    packets = opus_packets(audio, bitrate)
    decoder = OpusFrames()
    return np.concatenate([decoder.decode(packet) for packet in packets]), sum(map(len, packets))


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(prog="python -m bench.opus_wer", description=__doc__.splitlines()[0])
    parser.add_argument("--bitrates", default="16000,24000", help="Opus bitrates in bit/s (default 16000,24000)")
    parser.add_argument("--profile", default="base", help="bundled model profile (base, tiny.en)")
    parser.add_argument("--threads", type=int, default=default_threads(), help="onnxruntime intra-op threads")
    parser.add_argument(
        "--quick", action="store_true", help=f"a smoke run on {QUICK_CLIPS} clips, decoded greedily on fitted windows"
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"JSON results (default {RESULTS})")
    args = parser.parse_args(argv)
    texts = [s.text for s in load_sentences() if s.language == "en"]
    texts = texts[: QUICK_CLIPS // 2] if args.quick else texts
    clips = [(text, tts, synthesize(text, engine=tts)) for tts in ("espeak-ng", "flite") for text in texts]
    engine = load_engine(ensure_bundled_model(args.profile), threads=args.threads)
    seconds = sum(len(audio) for *_, audio in clips) / SAMPLE_RATE
    print(f"{len(clips)} clips, {seconds:.0f} s, whisper {args.profile}; machine {_machine()}")
    print(f"{'audio':<14} {'kbps':>6} {'WER':>6} {'espeak-ng':>9} {'flite':>6}")
    received = {
        bitrate: [(audio, 2 * len(audio)) if bitrate is None else through_opus(audio, bitrate) for *_, audio in clips]
        for bitrate in [None, *(int(b) for b in args.bitrates.split(","))]
    }
    # One batch of every clip at every bitrate: each clip's text is the one transcribe gives it alone, at a fraction
    # of the decoder's cost.
    every_clip = [audio for got in received.values() for audio, _ in got]
    options = QUICK_DECODING if args.quick else DecodeOptions()
    heard = iter(engine.transcribe_batch(every_clip, "en", options=options))
    rows = []
    for bitrate, got in received.items():
        hypotheses: dict[str, list[str]] = {"espeak-ng": [], "flite": []}
        references: dict[str, list[str]] = {"espeak-ng": [], "flite": []}
        sent = sum(size for _, size in got)
        for (text, tts, _), transcription in zip(clips, itertools.islice(heard, len(clips)), strict=True):
            hypotheses[tts].append(transcription.text)
            references[tts].append(text)
        every = references["espeak-ng"] + references["flite"], hypotheses["espeak-ng"] + hypotheses["flite"]
        row = Row(
            audio="PCM16" if bitrate is None else f"Opus {bitrate // 1000} kbps",
            kbps=round(sent * 8 / seconds / 1000, 1),
            wer=round(word_error_rate(*every), 4),
            wer_espeak=round(word_error_rate(references["espeak-ng"], hypotheses["espeak-ng"]), 4),
            wer_flite=round(word_error_rate(references["flite"], hypotheses["flite"]), 4),
        )
        rows.append(row)
        print(f"{row.audio:<14} {row.kbps:>6.1f} {row.wer:>6.1%} {row.wer_espeak:>9.1%} {row.wer_flite:>6.1%}")
    engine.close()
    report = {
        "machine": _machine(),
        "clips": len(clips),
        "seconds": round(seconds, 1),
        "rows": [asdict(r) for r in rows],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()
